//! Opening a Parquet file with errors that name the file and what is wrong,
//! instead of polars' generic messages.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context};
use polars::prelude::{DataFrame, ParquetReader, SerReader};

/// The frame plus what the report needs to know about the file itself.
pub struct Loaded {
    pub df: DataFrame,
    pub size_bytes: u64,
    /// Columns in the file, before any `--column` selection.
    pub file_columns: usize,
}

const MAGIC: &[u8; 4] = b"PAR1";

/// Reads `path`, keeping only `columns` (in that order) when it is not empty.
pub fn load(path: &Path, columns: &[String]) -> anyhow::Result<Loaded> {
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot open `{shown}`"))?;
    if !meta.is_file() {
        bail!("`{shown}` is not a file");
    }
    let mut file = File::open(path).with_context(|| format!("cannot open `{shown}`"))?;
    check_magic(&mut file, meta.len())
        .with_context(|| format!("`{shown}` is not a Parquet file"))?;
    // polars does not verify page checksums: a damaged file must not show
    // different values as if they were the data.
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{shown}`"))?;
    if let Err(e) = marlhf_data::page_crc::verify_page_crcs(&bytes) {
        bail!("`{shown}`: {e}");
    }

    let mut reader = ParquetReader::new(file);
    let schema = reader
        .schema()
        .with_context(|| format!("cannot read the Parquet schema of `{shown}`"))?;
    let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();

    let selected = select(&names, columns).with_context(|| format!("`{shown}`"))?;
    if let Some(sel) = &selected {
        reader = reader.with_columns(Some(sel.clone()));
    }
    let mut df = reader
        .finish()
        .with_context(|| format!("cannot read `{shown}` as Parquet"))?;
    // The projection returns file order; the user asked for their order.
    if let Some(sel) = selected {
        df = df
            .select(sel)
            .with_context(|| format!("cannot select columns of `{shown}`"))?;
    }
    Ok(Loaded {
        df,
        size_bytes: meta.len(),
        file_columns: names.len(),
    })
}

/// Parquet starts and ends with `PAR1`; checking both turns "not Parquet at
/// all" (CSV, JSON, a truncated download) into a plain message.
fn check_magic(file: &mut File, len: u64) -> anyhow::Result<()> {
    // Header magic, footer length (4 bytes) and footer magic at the least.
    if len < 12 {
        bail!("only {len} bytes; a Parquet file has at least 12");
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    file.read_exact(&mut head)?;
    file.seek(SeekFrom::End(-4))?;
    file.read_exact(&mut tail)?;
    file.seek(SeekFrom::Start(0))?;
    if &head != MAGIC {
        bail!("it does not start with the PAR1 magic bytes");
    }
    if &tail != MAGIC {
        bail!("it does not end with the PAR1 magic bytes (truncated?)");
    }
    Ok(())
}

/// Validates `--column` names against the file; `None` means all columns.
/// Repeated names are shown once.
fn select(names: &[String], wanted: &[String]) -> anyhow::Result<Option<Vec<String>>> {
    if wanted.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<String> = Vec::new();
    for w in wanted {
        if !names.contains(w) {
            bail!("unknown column `{w}` (columns: {})", names.join(", "));
        }
        if !out.contains(w) {
            out.push(w.clone());
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["id", "prompt", "score"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn selection_keeps_user_order_and_drops_repeats() {
        let wanted: Vec<String> = ["score", "id", "score"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            select(&names(), &wanted).unwrap(),
            Some(vec!["score".to_string(), "id".to_string()])
        );
        assert_eq!(select(&names(), &[]).unwrap(), None);
    }

    #[test]
    fn unknown_column_lists_the_real_ones() {
        let err = select(&names(), &["scor".to_string()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown column `scor` (columns: id, prompt, score)"
        );
    }
}
