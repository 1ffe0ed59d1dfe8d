//! `marlhf-inspect`: a readable summary of any stage's Parquet file, so an
//! intermediate result can be checked without opening a notebook.

#![forbid(unsafe_code)]

pub mod column_stats;
pub mod load;
pub mod render;
pub mod summary;

use std::path::Path;

/// What to show; mirrors the binary's flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Leading rows to print (0 prints none).
    pub rows: usize,
    /// Longest rendering of one value, in characters.
    pub width: usize,
    /// Only these columns, in this order; empty means all.
    pub columns: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rows: 5,
            width: 80,
            columns: Vec::new(),
        }
    }
}

/// Reads `path` and returns the whole report as text.
pub fn inspect(path: &Path, opts: &Options) -> anyhow::Result<String> {
    let loaded = load::load(path, &opts.columns)?;
    summary::summarize(path, &loaded, opts)
}
