//! Issue 13, item 7: damaged Parquet files. Bytes flipped anywhere in a
//! file either give an error naming the file (never a panic) or, where they
//! hit something the reader does not use, the original content — never
//! silently changed values.

use std::path::{Path, PathBuf};

use marlhf_data::{read_rollouts, write_rollouts, RolloutRow};
use marlhf_testkit::TempDir;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rows() -> Vec<RolloutRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    (0..64)
        .map(|i| {
            let n = rng.random_range(1..40);
            RolloutRow {
                id: i,
                prompt_id: 1000 + i,
                iteration: 2,
                prompt_tokens: (0..rng.random_range(1..30))
                    .map(|_| rng.random_range(0..4096))
                    .collect(),
                response_tokens: (0..n).map(|_| rng.random_range(0..4096)).collect(),
                response: format!("response number {i}"),
                logprobs: (0..n).map(|_| -rng.random::<f32>() * 5.0).collect(),
                ref_logprobs: (0..n).map(|_| -rng.random::<f32>() * 5.0).collect(),
                values: (0..n).map(|_| rng.random::<f32>() - 0.5).collect(),
                score: rng.random::<f32>(),
                finished: rng.random(),
                temperature: 0.8,
                logprob_temperature: 0.8,
                gold: None,
            }
        })
        .collect()
}

fn flip(bytes: &mut [u8], rng: &mut ChaCha8Rng, at: usize, n: usize) {
    for k in 0..n {
        let i = (at + k).min(bytes.len() - 1);
        bytes[i] ^= rng.random_range(1..=255u8);
    }
}

/// Reads `path`, turning a panic into a failure of this test.
fn read_guarded(path: &Path) -> Result<Vec<RolloutRow>, String> {
    match std::panic::catch_unwind(|| read_rollouts(path)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => panic!("reading {} panicked", path.display()),
    }
}

#[test]
fn flipped_bytes_are_detected_or_harmless() {
    let dir = TempDir::new("corrupt");
    let good: PathBuf = dir.path().join("rollouts.parquet");
    let original = rows();
    write_rollouts(&good, &original).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let bad = dir.path().join("bad.parquet");
    let (mut errors, mut harmless, mut checksum, mut panics) = (0, 0, 0, 0);
    for trial in 0..300 {
        let mut copy = bytes.clone();
        // Mostly inside the data (the first 90% of the file), sometimes in
        // the footer; 16 bytes from a random place, as in the report.
        let at = if trial % 5 == 4 {
            rng.random_range(bytes.len() * 9 / 10..bytes.len())
        } else {
            rng.random_range(4..bytes.len() * 9 / 10)
        };
        flip(&mut copy, &mut rng, at, 16);
        std::fs::write(&bad, &copy).unwrap();
        match read_guarded(&bad) {
            Ok(got) => {
                assert!(
                    got == original,
                    "trial {trial}: changed values accepted (16 bytes at {at})"
                );
                harmless += 1;
            }
            Err(e) => {
                assert!(e.contains(&bad.display().to_string()), "trial {trial}: {e}");
                assert!(!e.contains('\n'), "trial {trial}: {e}");
                errors += 1;
                checksum += usize::from(e.contains("checksum"));
                panics += usize::from(e.contains("decoder failed"));
            }
        }
    }
    eprintln!("{errors} errors ({checksum} checksum mismatches, {panics} decoder panics), {harmless} harmless");
    assert!(errors > 200, "{errors} errors, {harmless} harmless");
    assert!(checksum > 100, "{checksum} checksum mismatches");
}

#[test]
fn every_page_carries_its_checksum() {
    let dir = TempDir::new("crc");
    let path = dir.path().join("rollouts.parquet");
    write_rollouts(&path, &rows()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let pages = marlhf_data::page_crc::page_crcs(&bytes).unwrap();
    assert!(pages.len() >= 11, "{} pages", pages.len());
    for (_, stored, computed) in pages {
        assert_eq!(stored, Some(computed));
    }
    assert_eq!(marlhf_data::page_crc::verify_page_crcs(&bytes), Ok(()));
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 3] ^= 1;
    let err = marlhf_data::page_crc::verify_page_crcs(&damaged).unwrap_err();
    assert!(err.contains("page checksum mismatch"), "{err}");
    // Same rows, same bytes: the checksums keep the writer deterministic.
    let again = dir.path().join("again.parquet");
    write_rollouts(&again, &rows()).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
}

/// A decoder that panics on damaged bytes gives one line naming the file,
/// and says nothing else on stderr (checked in the reliability suite too).
#[test]
fn a_decoder_panic_is_an_error_naming_the_file() {
    let path = Path::new("/data/rollouts.parquet");
    let err = marlhf_data::parquet_io::guard_decoder(path, || -> marlhf_data::Result<()> {
        let v: Vec<u8> = Vec::new();
        let _ = v[3];
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "/data/rollouts.parquet: damaged Parquet data (the decoder failed: index out of bounds"
        ),
        "{err}"
    );
}
