//! Padding token sequences into rectangular batches.

use anyhow::Result;
use candle_core::{Device, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// A padded batch: ids [B, T] and B·T mask flags (1 = real token).
pub struct Padded {
    pub ids: Tensor,
    pub mask: Vec<u8>,
    pub b: usize,
    pub t: usize,
    /// Column where row r's sequence starts (non-zero only for left padding).
    pub offsets: Vec<usize>,
}

pub fn pad(seqs: &[Vec<u32>], pad_id: u32, side: Side, dev: &Device) -> Result<Padded> {
    let b = seqs.len();
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad_id; b * t];
    let mut mask = vec![0u8; b * t];
    let mut offsets = Vec::with_capacity(b);
    for (r, s) in seqs.iter().enumerate() {
        let off = match side {
            Side::Left => t - s.len(),
            Side::Right => 0,
        };
        offsets.push(off);
        ids[r * t + off..r * t + off + s.len()].copy_from_slice(s);
        mask[r * t + off..r * t + off + s.len()].fill(1);
    }
    Ok(Padded {
        ids: Tensor::from_vec(ids, (b, t), dev)?,
        mask,
        b,
        t,
        offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_both_sides() {
        let seqs = vec![vec![5, 6, 7], vec![8]];
        let p = pad(&seqs, 0, Side::Left, &Device::Cpu).unwrap();
        assert_eq!(
            p.ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![0, 0, 8]]
        );
        assert_eq!(p.mask, vec![1, 1, 1, 0, 0, 1]);
        assert_eq!(p.offsets, vec![0, 2]);
        let p = pad(&seqs, 0, Side::Right, &Device::Cpu).unwrap();
        assert_eq!(
            p.ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![8, 0, 0]]
        );
        assert_eq!(p.mask, vec![1, 1, 1, 1, 0, 0]);
    }
}
