//! The conventions every stage binary follows, in one place so the binaries
//! stay thin: errors are one line on stderr and a non-zero exit, long work
//! shows an indicatif bar on stderr, and each stage ends with a short summary.
//!
//! A library never picks the allocator of the program that links it, so
//! each stage binary installs mimalloc itself, beside its `main`:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;
//! ```
//!
//! Training allocates and frees large activation buffers every step; glibc
//! returns those to the OS and page-faults them back in, which cost more
//! than half of a CPU training step. mimalloc keeps and reuses them
//! ([`run`] sets it to keep them for good).

use std::fmt::Display;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The allocator every stage binary installs (see the crate's docs).
pub use mimalloc::MiMalloc;

#[cfg(feature = "stages")]
mod bars;
#[cfg(feature = "stages")]
pub mod lora_args;
#[cfg(feature = "stages")]
pub mod train_args;
#[cfg(feature = "stages")]
pub use bars::Bars;
#[cfg(feature = "stages")]
pub use lora_args::LoraArgs;
#[cfg(feature = "stages")]
pub use train_args::TrainArgs;

extern "C" {
    // mimalloc's option setter (libmimalloc-sys links the C library; the
    // Rust binding of the option list lacks this option's name).
    fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3).
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;

/// By default mimalloc hands freed memory back to the OS after 10 ms, so the
/// next training step page-faults (and the kernel zeroes) its activation
/// buffers again: a quarter of the CPU time of a step, measured. Memory
/// freed by one step is the next step's, so it is kept (-1: never purge).
fn keep_freed_memory() {
    // SAFETY: a plain option store, done before any other thread exists.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// candle runs its own element-wise ops on a thread pool beside rayon's,
/// whose workers spin between ops. On CPU the matmuls and fused kernels
/// (nearly all of a step) run on rayon, so on a machine with few cores
/// candle's spinning workers take cores from them: on the 2-core machine
/// (shared with other jobs) the training benchmark ran at 2,200 tokens/s
/// with candle's ops on the calling thread alone, 1,650 with candle's own
/// pool of 2. `CANDLE_NUM_THREADS` set by the user wins.
fn one_candle_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any candle op: its pool reads the variable when first used.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Portable arithmetic (`MARLHF_PORTABLE=1`, DESIGN.md "Reproducibility
/// across machines") for every product of this process, before any is
/// computed; a value other than 0 or 1 is an error.
#[cfg(feature = "model")]
fn arithmetic_from_env() -> anyhow::Result<()> {
    use marlhf_model::kernels::blocking;
    blocking::set_portable(blocking::portable_from_env().map_err(anyhow::Error::msg)?);
    Ok(())
}

#[cfg(not(feature = "model"))]
fn arithmetic_from_env() -> anyhow::Result<()> {
    Ok(())
}

/// Runs a stage's body, after setting up the process as every stage wants
/// it (mimalloc keeps freed memory, candle's ops on one thread, no library
/// backtraces, portable arithmetic if asked for). On error prints `error: <cause chain>` as one line on
/// stderr and exits with status 1; a panic (a bug, never bad input) is also
/// reduced to one line so users never face a backtrace.
pub fn stage_main<F>(stage: &str, body: F) -> !
where
    F: FnOnce() -> anyhow::Result<()>,
{
    // Libraries (candle) capture a backtrace into every error when
    // RUST_BACKTRACE is set, and print it as part of the message. Users get
    // the one line; MARLHF_BACKTRACE=1 keeps backtraces for debugging.
    if std::env::var_os("MARLHF_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    keep_freed_memory();
    one_candle_thread();
    let stage_name = stage.to_string();
    std::panic::set_hook(Box::new(move |info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown panic".to_string()
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: {stage_name}: internal error{at}: {msg}");
    }));
    let body = || {
        arithmetic_from_env()?;
        body()
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => std::process::exit(0),
        Ok(Err(e)) => {
            eprintln!("error: {}", one_line(&e));
            std::process::exit(1)
        }
        Err(_) => std::process::exit(101),
    }
}

/// Refuses, before any work, two outputs of one stage that name the same
/// file or directory (`flags` pairs a flag with its path): the second
/// write would replace the first, after the whole stage had run. Paths are
/// compared made absolute, `.` and `..` resolved and the existing part's
/// symbolic links followed.
pub fn distinct_outputs(flags: &[(&str, &std::path::Path)]) -> anyhow::Result<()> {
    let resolved: Vec<std::path::PathBuf> = flags.iter().map(|(_, p)| resolve(p)).collect();
    for i in 0..flags.len() {
        for j in 0..i {
            if resolved[i] == resolved[j] {
                anyhow::bail!(
                    "{} and {} are the same path ({}): each output needs its own",
                    flags[j].0,
                    flags[i].0,
                    flags[i].1.display()
                );
            }
        }
    }
    Ok(())
}

/// `path` absolute, with `.` and `..` resolved lexically below its deepest
/// existing ancestor, which is canonicalised (symbolic links followed).
fn resolve(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::{Component, PathBuf};
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut base = lexical.clone();
    let mut rest = Vec::new();
    while !base.exists() {
        match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                base = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
    let mut out = base.canonicalize().unwrap_or(base);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

/// The cause chain of an error joined into one line: `outer: inner: root`.
/// A backtrace some library wrote into a message is dropped.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = without_backtrace(&cause.to_string());
        // anyhow contexts often repeat their source's message; skip echoes.
        if parts.last().map(|p| p.ends_with(&s)).unwrap_or(false) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}

/// A message's lines up to the first frame of a backtrace (`   0: name`,
/// as `std::backtrace::Backtrace` prints them), joined by spaces.
fn without_backtrace(message: &str) -> String {
    let is_frame = |line: &str| {
        let t = line.trim_start();
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && t[digits..].starts_with(": ") && line.len() > t.len()
    };
    let mut kept: Vec<&str> = Vec::new();
    for line in message.lines() {
        if is_frame(line) || line.trim() == "stack backtrace:" {
            break;
        }
        if !line.trim().is_empty() {
            kept.push(line.trim_end());
        }
    }
    kept.join(" ")
}

/// A progress bar on stderr in the house style. Hidden automatically when
/// stderr is not a terminal (CI logs, pipes), so logs stay readable.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>10.bold} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// A spinner for work of unknown length.
pub fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10.bold} {spinner} {elapsed} {msg}")
            .expect("static template"),
    );
    pb.set_prefix(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// The one-screen summary printed at the end of a stage: aligned `key: value`
/// lines on stderr under a title, with the stage's wall time.
pub struct Summary {
    title: String,
    rows: Vec<(String, String)>,
    started: Instant,
}

impl Summary {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            rows: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn add(&mut self, key: &str, value: impl Display) -> &mut Self {
        self.rows.push((key.to_string(), value.to_string()));
        self
    }

    /// A `GPU memory` row when the stage ran on a GPU
    /// (`marlhf_model::device::memory_summary`); nothing on the CPU.
    #[cfg(feature = "stages")]
    pub fn gpu_memory(&mut self, device: &candle_core::Device) -> &mut Self {
        if let Some(m) = marlhf_model::device::memory_summary(device) {
            self.add("GPU memory", m);
        }
        self
    }

    pub fn print(&self) {
        eprint!("{}", self.render());
    }

    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("── {} ──\n", self.title);
        for (k, v) in &self.rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out.push_str(&format!(
            "  {:<width$}  {:.1}s\n",
            "wall time",
            self.started.elapsed().as_secs_f64()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_is_one_line() {
        let e = anyhow::anyhow!("column `chosen` missing\nsecond line")
            .context("reading data/pairs.parquet");
        assert_eq!(
            one_line(&e),
            "reading data/pairs.parquet: column `chosen` missing second line"
        );
    }

    #[test]
    fn backtraces_inside_messages_are_dropped() {
        // What candle's errors look like with RUST_BACKTRACE=1.
        let bt = std::backtrace::Backtrace::force_capture();
        let inner = anyhow::anyhow!("index-select invalid index 99999 with dim size 512\n{bt}");
        let e = inner.context("actor checkpoint");
        assert_eq!(
            one_line(&e),
            "actor checkpoint: index-select invalid index 99999 with dim size 512"
        );
        // A number followed by a colon inside a message is not a frame.
        let e = anyhow::anyhow!("row 3: 2: odd");
        assert_eq!(one_line(&e), "row 3: 2: odd");
    }

    #[test]
    fn the_same_output_twice_is_refused() {
        let dir = std::env::temp_dir();
        let a = dir.join("marlhf-cli-out/actor");
        let b = dir.join("marlhf-cli-out/./x/../actor");
        let err = distinct_outputs(&[
            ("--out-actor", &a),
            ("--out-critic", &b),
            ("--metrics", &dir.join("m.parquet")),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("--out-actor and --out-critic are the same path"),
            "{err}"
        );
        // Through a symbolic link to an existing directory.
        let link = dir.join(format!("marlhf-cli-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = distinct_outputs(&[("--a", &dir.join("o")), ("--b", &link.join("o"))]);
        std::fs::remove_file(&link).unwrap();
        assert!(err.is_err());
        distinct_outputs(&[("--a", &a), ("--b", &dir.join("marlhf-cli-out/critic"))]).unwrap();
    }

    #[test]
    fn summary_aligns_keys() {
        let mut s = Summary::new("prepare");
        s.add("rows", 10).add("truncated rows", 2);
        let text = s.render();
        assert!(text.starts_with("── prepare ──\n"));
        assert!(text.contains("  rows            10\n"));
        assert!(text.contains("  truncated rows  2\n"));
    }
}
