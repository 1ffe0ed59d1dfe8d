//! What the end-to-end tests share: running make in the repository.

use std::path::PathBuf;
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs make in the repository with `args`; returns stdout and stderr
/// together, and fails the test (showing both) when make fails.
pub fn make<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new("make")
        .current_dir(root())
        .args(args)
        .output()
        .expect("make runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(out.status.success(), "make {shown:?} failed:\n{text}");
    text
}
