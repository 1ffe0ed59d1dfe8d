//! `marlhf-bench --fingerprint` as a process: the numbers of a training step
//! and a sampling run do not depend on the thread count, portable mode
//! (`MARLHF_PORTABLE=1`) changes them exactly where this machine's GEMM
//! depth block is not the pinned 512, and a bad value is refused in one
//! line. (That portable mode gives the same bytes under other CPUs is
//! `make repro-check`'s, which emulates them.)

use std::process::{Command, Output};

fn fingerprint(portable: &str, threads: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_marlhf-bench"))
        .arg("--fingerprint")
        .env("MARLHF_PORTABLE", portable)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .expect("marlhf-bench runs")
}

/// The hash lines (the first line names the CPU and the blocking).
fn hashes(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "marlhf-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 6, "six hashes: {text}");
    lines
}

fn header(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn fingerprints_do_not_depend_on_threads_and_portable_mode_pins_the_depth() {
    let one = fingerprint("0", "1");
    let three = fingerprint("0", "3");
    assert_eq!(hashes(&one), hashes(&three), "1 vs 3 threads");
    let portable_one = fingerprint("1", "1");
    let portable_three = fingerprint("1", "3");
    assert_eq!(hashes(&portable_one), hashes(&portable_three));
    assert!(header(&portable_one).contains("portable (depth blocks of at most 512)"));

    // The depth block this machine's caches give (the header names it):
    // with 512 the two modes are the same arithmetic, otherwise the
    // training step's deeper products (and so every hash after them but
    // the sampled tokens, which are robust to last-bit changes) differ.
    let h = header(&one);
    let depth: usize = h
        .split("depth blocks of up to ")
        .nth(1)
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no depth block in {h:?}"));
    let (machine, pinned) = (hashes(&one), hashes(&portable_one));
    if depth == 512 {
        assert_eq!(machine, pinned);
    } else {
        for (m, p) in machine.iter().zip(&pinned) {
            if m.starts_with("sample: tokens") {
                continue;
            }
            assert_ne!(m, p, "depth {depth}: portable mode changed nothing");
        }
    }
}

#[test]
fn a_bad_portable_value_is_one_line() {
    let out = fingerprint("yes", "1");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("MARLHF_PORTABLE must be 0 or 1"), "{err}");
}
