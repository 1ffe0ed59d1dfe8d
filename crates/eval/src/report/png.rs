//! A minimal PNG encoder for 8-bit RGB pixels. Written here rather than
//! pulled in through `image` to keep the build small, and because a fixed
//! filter and fixed deflate settings make the bytes a pure function of the
//! pixels, so reports are byte-for-byte reproducible.

use std::io::Write;

use flate2::write::ZlibEncoder;
use flate2::Compression;

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
/// PNG filter type "Up": each byte minus the byte above it. Plots are mostly
/// flat colour, which this turns into long runs of zeros.
const FILTER_UP: u8 = 2;

/// Encodes `rgb` (row-major, 3 bytes a pixel) as a PNG file.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let stride = width as usize * 3;
    assert_eq!(rgb.len(), stride * height as usize, "pixel buffer size");
    let mut filtered = Vec::with_capacity((stride + 1) * height as usize);
    let zeros = vec![0u8; stride];
    for y in 0..height as usize {
        let row = &rgb[y * stride..(y + 1) * stride];
        let above = if y == 0 {
            &zeros[..]
        } else {
            &rgb[(y - 1) * stride..y * stride]
        };
        filtered.push(FILTER_UP);
        filtered.extend(row.iter().zip(above).map(|(c, a)| c.wrapping_sub(*a)));
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::new(6));
    z.write_all(&filtered).expect("writing to memory");
    let idat = z.finish().expect("writing to memory");

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut png = SIGNATURE.to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// CRC-32 as PNG (and zlib, gzip) define it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn crc_matches_the_standard_check_value() {
        // The CRC-32 check value of "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // The CRC of an IEND chunk, found at the end of every PNG file.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    /// Parses the file back: chunk layout, CRCs, header, and the pixels
    /// after inflating and undoing the filter.
    #[test]
    fn round_trips_pixels() {
        let (w, h) = (5u32, 3u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
        let png = encode_rgb(w, h, &rgb);
        assert_eq!(&png[..8], &SIGNATURE);
        let mut at = 8;
        let mut chunks = Vec::new();
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc, crc32(&png[at + 4..at + 8 + len]));
            chunks.push((kind.to_vec(), data.to_vec()));
            at += 12 + len;
        }
        let kinds: Vec<&[u8]> = chunks.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(kinds, vec![&b"IHDR"[..], b"IDAT", b"IEND"]);
        assert_eq!(&chunks[0].1[..8], &[0, 0, 0, 5, 0, 0, 0, 3]);
        let mut raw = Vec::new();
        ZlibDecoder::new(&chunks[1].1[..])
            .read_to_end(&mut raw)
            .unwrap();
        let stride = (w * 3) as usize;
        let mut pixels: Vec<u8> = Vec::new();
        for y in 0..h as usize {
            let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
            assert_eq!(line[0], FILTER_UP);
            for x in 0..stride {
                let above = if y == 0 {
                    0
                } else {
                    pixels[(y - 1) * stride + x]
                };
                pixels.push(line[1 + x].wrapping_add(above));
            }
        }
        assert_eq!(pixels, rgb);
    }
}
