//! One typed row per file of the contract (DESIGN.md, "Stages and their
//! files"), with readers that check the schema and values and atomic writers.

mod advantages;
mod eval;
mod gold;
mod metrics;
mod rollouts;
mod segments;
mod text;

use std::path::Path;

use arrow::array::RecordBatch;

use crate::atomic::FileSet;
use crate::error::Result;
use crate::parquet_io::{read_table, stage_table, write_table};

pub use advantages::{read_advantages, write_advantages, AdvantageRow};
pub use eval::{
    read_judgements, read_passk, read_responses, read_responses_from, write_judgements,
    write_passk, write_responses, JudgementRow, PasskRow, ResponseRow, Verdict,
};
pub use gold::{gold_arrays, gold_fields, read_gold, Gold, GOLD_COLUMNS};
pub use metrics::{append_metrics, read_metrics, write_metrics, MetricsRow};
pub use rollouts::{read_rollouts, write_rollouts, RolloutRow};
pub use segments::{read_segments, write_segments, SegmentRow};
pub use text::{
    read_pairs, read_prompts, read_sft, write_pairs, write_prompts, write_sft, PairRow, PromptRow,
    SftRow,
};

/// A row type with a fixed Parquet layout. `path` is only used to name the
/// file in error messages.
pub trait Table: Sized {
    /// Builds the table, checking the same invariants the reader checks, so a
    /// writer never produces a file its reader would reject.
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch>;
    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>>;
}

pub fn read_rows<T: Table>(path: &Path) -> Result<Vec<T>> {
    let batch = read_table(path)?;
    T::from_batch(path, &batch)
}

pub fn write_rows<T: Table>(path: &Path, rows: &[T]) -> Result<()> {
    write_table(path, &T::to_batch(path, rows)?)
}

/// Stages rows for `path` in a [`FileSet`], to commit with other files.
pub fn stage_rows<T: Table>(set: &mut FileSet, path: &Path, rows: &[T]) -> Result<()> {
    stage_table(set, path, &T::to_batch(path, rows)?)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::error::DataError;
    use marlhf_testkit::TempDir;

    /// Write, read back, compare; and writing twice gives the same bytes.
    pub fn round_trip<T: Table + PartialEq + std::fmt::Debug>(rows: &[T]) {
        let dir = TempDir::new("roundtrip");
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write_rows(&a, rows).unwrap();
        write_rows(&b, rows).unwrap();
        let back: Vec<T> = read_rows(&a).unwrap();
        assert_eq!(back, rows);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    /// Writes an arbitrary batch and returns the reader's error for it.
    pub fn read_error<T: Table + std::fmt::Debug>(batch: RecordBatch) -> DataError {
        let dir = TempDir::new("readerr");
        let path = dir.path().join("t.parquet");
        write_table(&path, &batch).unwrap();
        let err = read_rows::<T>(&path).unwrap_err();
        // Tests compare messages without the temp directory.
        let shown = err.to_string();
        let prefix = format!("{}: ", path.display());
        assert!(shown.starts_with(&prefix), "{shown}");
        DataError::invalid(shown[prefix.len()..].to_string())
    }
}
