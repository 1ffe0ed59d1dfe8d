//! What marlhf's tests share, kept out of the release code: every crate
//! and binary takes it as a dev-dependency only.
//!
//! - [`TempDir`]: a self-deleting scratch directory;
//! - [`shared`] and [`stories260k`]: the workplace's read-only data beside
//!   the repository (`../shared`). A test that reads it is marked
//!   `#[ignore = "needs ../shared"]`, so a plain `cargo test` on a machine
//!   without it lists the test as ignored, and `make test` runs it with
//!   `--include-ignored`, where a missing file fails the test in one line;
//! - [`ppo`]: a tiny random Llama over stories260K's vocabulary, prompts
//!   and synthetic rollouts for the PPO stages' tests, and a runner for
//!   stage binaries;
//! - [`eval`]: stories260K as policy and reward model, and a run directory
//!   with what the eval stage reads.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

pub mod eval;
pub mod ppo;
mod temp;

pub use temp::TempDir;

/// `rel` under the workplace's shared data (`../shared` beside the
/// repository, or `$MARLHF_SHARED`). Panics, naming the path, when it is
/// not there: a test that needs it must fail, never pass unchecked.
pub fn shared(rel: &str) -> PathBuf {
    let root = std::env::var_os("MARLHF_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = root.join(rel);
    assert!(
        path.exists(),
        "{}: missing (the workplace's shared data; set MARLHF_SHARED to its directory)",
        path.display()
    );
    path
}

/// The pretrained stories260K (llama2.c: `stories260K.bin`, `tok512.bin`).
pub fn stories260k() -> PathBuf {
    shared("models/stories260K")
}

/// Every file under `dir`, recursively (nothing when `dir` is missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
