//! The text tables prepare writes: sft, pairs, prompts / eval_prompts.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;

use super::{read_rows, write_rows, Table};
use crate::error::{DataError, Result};
use crate::parquet_io::{
    batch, check_unique_ids, opt_str_array, optional, required, str_array, u64_array, Columns,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftRow {
    pub id: u64,
    pub prompt: String,
    pub completion: String,
}

/// `chosen` and `rejected` are completions only: the text after `prompt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRow {
    pub id: u64,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

/// A prompt for rollouts (prompts.parquet) or evaluation (eval_prompts.parquet).
/// The optional columns are always present in the file, null when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRow {
    pub id: u64,
    pub prompt: String,
    /// A reference response to compare against: the human reference summary
    /// (TL;DR) or the preferred response (HH-RLHF, WebGPT).
    pub reference: Option<String>,
    pub subreddit: Option<String>,
    /// APPS unit tests: the `input_output` JSON, including `fn_name`.
    pub tests: Option<String>,
}

fn check_text<'r>(path: &Path, column: &str, values: impl Iterator<Item = &'r str>) -> Result<()> {
    for (i, v) in values.enumerate() {
        if v.is_empty() {
            return Err(DataError::cell(path, i + 1, column, "empty string"));
        }
    }
    Ok(())
}

impl Table for SftRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        check_unique_ids(path, "id", &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
        check_text(path, "prompt", rows.iter().map(|r| r.prompt.as_str()))?;
        check_text(
            path,
            "completion",
            rows.iter().map(|r| r.completion.as_str()),
        )?;
        batch(
            path,
            vec![
                required("id", DataType::UInt64),
                required("prompt", DataType::Utf8),
                required("completion", DataType::Utf8),
            ],
            vec![
                u64_array(rows.iter().map(|r| r.id)),
                str_array(rows.iter().map(|r| r.prompt.as_str())),
                str_array(rows.iter().map(|r| r.completion.as_str())),
            ],
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let ids = c.unique_ids("id")?;
        let prompts = c.text("prompt")?;
        let completions = c.text("completion")?;
        Ok(ids
            .into_iter()
            .zip(prompts)
            .zip(completions)
            .map(|((id, prompt), completion)| SftRow {
                id,
                prompt,
                completion,
            })
            .collect())
    }
}

impl Table for PairRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        check_unique_ids(path, "id", &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
        check_text(path, "prompt", rows.iter().map(|r| r.prompt.as_str()))?;
        check_text(path, "chosen", rows.iter().map(|r| r.chosen.as_str()))?;
        check_text(path, "rejected", rows.iter().map(|r| r.rejected.as_str()))?;
        batch(
            path,
            vec![
                required("id", DataType::UInt64),
                required("prompt", DataType::Utf8),
                required("chosen", DataType::Utf8),
                required("rejected", DataType::Utf8),
            ],
            vec![
                u64_array(rows.iter().map(|r| r.id)),
                str_array(rows.iter().map(|r| r.prompt.as_str())),
                str_array(rows.iter().map(|r| r.chosen.as_str())),
                str_array(rows.iter().map(|r| r.rejected.as_str())),
            ],
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let ids = c.unique_ids("id")?;
        let prompts = c.text("prompt")?;
        let chosen = c.text("chosen")?;
        let rejected = c.text("rejected")?;
        Ok(ids
            .into_iter()
            .zip(prompts)
            .zip(chosen.into_iter().zip(rejected))
            .map(|((id, prompt), (chosen, rejected))| PairRow {
                id,
                prompt,
                chosen,
                rejected,
            })
            .collect())
    }
}

impl Table for PromptRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        check_unique_ids(path, "id", &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
        check_text(path, "prompt", rows.iter().map(|r| r.prompt.as_str()))?;
        batch(
            path,
            vec![
                required("id", DataType::UInt64),
                required("prompt", DataType::Utf8),
                optional("reference", DataType::Utf8),
                optional("subreddit", DataType::Utf8),
                optional("tests", DataType::Utf8),
            ],
            vec![
                u64_array(rows.iter().map(|r| r.id)),
                str_array(rows.iter().map(|r| r.prompt.as_str())),
                opt_str_array(rows.iter().map(|r| r.reference.as_deref())),
                opt_str_array(rows.iter().map(|r| r.subreddit.as_deref())),
                opt_str_array(rows.iter().map(|r| r.tests.as_deref())),
            ],
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let ids = c.unique_ids("id")?;
        let prompts = c.text("prompt")?;
        let references = c.opt_string("reference")?;
        let subreddits = c.opt_string("subreddit")?;
        let tests = c.opt_string("tests")?;
        Ok(ids
            .into_iter()
            .zip(prompts)
            .zip(references.into_iter().zip(subreddits).zip(tests))
            .map(
                |((id, prompt), ((reference, subreddit), tests))| PromptRow {
                    id,
                    prompt,
                    reference,
                    subreddit,
                    tests,
                },
            )
            .collect())
    }
}

pub fn read_sft(path: &Path) -> Result<Vec<SftRow>> {
    read_rows(path)
}

pub fn write_sft(path: &Path, rows: &[SftRow]) -> Result<()> {
    write_rows(path, rows)
}

pub fn read_pairs(path: &Path) -> Result<Vec<PairRow>> {
    read_rows(path)
}

pub fn write_pairs(path: &Path, rows: &[PairRow]) -> Result<()> {
    write_rows(path, rows)
}

/// For both prompts.parquet and eval_prompts.parquet.
pub fn read_prompts(path: &Path) -> Result<Vec<PromptRow>> {
    read_rows(path)
}

pub fn write_prompts(path: &Path, rows: &[PromptRow]) -> Result<()> {
    write_rows(path, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_io::{opt_str_array, u32_array};
    use crate::tables::test_support::{read_error, round_trip};
    use arrow::array::{ArrayRef, LargeStringArray};
    use marlhf_testkit::TempDir;
    use std::sync::Arc;

    fn pair(id: u64) -> PairRow {
        PairRow {
            id,
            prompt: format!("\n\nHuman: q{id}\n\nAssistant:"),
            chosen: " yes ✓".into(),
            rejected: " no".into(),
        }
    }

    #[test]
    fn text_tables_round_trip_byte_identically() {
        round_trip(&[
            SftRow {
                id: 3,
                prompt: "p".into(),
                completion: " c\n\nwith ünïcode".into(),
            },
            SftRow {
                id: 1,
                prompt: "q".into(),
                completion: "d".into(),
            },
        ]);
        round_trip(&[pair(0), pair(7)]);
        round_trip(&[
            PromptRow {
                id: 9,
                prompt: "SUBREDDIT: r/a\n\nTL;DR:".into(),
                reference: Some(" ref".into()),
                subreddit: Some("a".into()),
                tests: None,
            },
            PromptRow {
                id: 10,
                prompt: "x".into(),
                reference: None,
                subreddit: None,
                tests: Some("{}".into()),
            },
        ]);
        round_trip::<PairRow>(&[]);
    }

    #[test]
    fn empty_pairs_file_keeps_its_schema() {
        let dir = TempDir::new("empty-pairs");
        let path = dir.path().join("pairs.parquet");
        write_pairs(&path, &[]).unwrap();
        let table = crate::parquet_io::read_table(&path).unwrap();
        let names: Vec<_> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "prompt", "chosen", "rejected"]);
        assert!(read_pairs(&path).unwrap().is_empty());
    }

    fn table(cols: Vec<(&str, ArrayRef, bool)>) -> RecordBatch {
        let fields = cols
            .iter()
            .map(|(n, a, nullable)| {
                arrow::datatypes::Field::new(*n, a.data_type().clone(), *nullable)
            })
            .collect::<Vec<_>>();
        let arrays = cols.into_iter().map(|(_, a, _)| a).collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap()
    }

    #[test]
    fn reader_names_missing_mistyped_null_and_empty_columns() {
        let ids = u64_array(vec![1, 2]);
        let prompts = str_array(["a", "b"]);
        let err = read_error::<PairRow>(table(vec![
            ("id", ids.clone(), false),
            ("prompt", prompts.clone(), false),
            ("rejected", prompts.clone(), false),
        ]));
        assert_eq!(err.to_string(), "column \"chosen\" is missing");

        let err = read_error::<PairRow>(table(vec![
            ("id", u32_array(vec![1, 2]), false),
            ("prompt", prompts.clone(), false),
        ]));
        assert_eq!(
            err.to_string(),
            "column \"id\" has type UInt32, expected UInt64"
        );

        let err = read_error::<SftRow>(table(vec![
            ("id", ids.clone(), false),
            ("prompt", prompts.clone(), false),
            ("completion", opt_str_array([Some("x"), None]), true),
        ]));
        assert_eq!(
            err.to_string(),
            "row 2, column \"completion\": null in a required column"
        );

        let err = read_error::<SftRow>(table(vec![
            ("id", ids.clone(), false),
            ("prompt", str_array(["a", ""]), false),
            ("completion", prompts.clone(), false),
        ]));
        assert_eq!(err.to_string(), "row 2, column \"prompt\": empty string");

        let err = read_error::<SftRow>(table(vec![
            ("id", u64_array(vec![4, 4]), false),
            ("prompt", prompts.clone(), false),
            ("completion", prompts.clone(), false),
        ]));
        assert_eq!(
            err.to_string(),
            "row 2, column \"id\": duplicate id 4 (first at row 1)"
        );
    }

    #[test]
    fn reader_accepts_large_strings_from_other_writers() {
        let dir = TempDir::new("large-utf8");
        let path = dir.path().join("sft.parquet");
        let large: ArrayRef = Arc::new(LargeStringArray::from(vec!["p1", "p2"]));
        let b = table(vec![
            ("id", u64_array(vec![1, 2]), false),
            ("prompt", large.clone(), false),
            ("completion", large, false),
            ("extra", u32_array(vec![0, 0]), false),
        ]);
        crate::parquet_io::write_table(&path, &b).unwrap();
        let rows = read_sft(&path).unwrap();
        assert_eq!(
            rows[1],
            SftRow {
                id: 2,
                prompt: "p2".into(),
                completion: "p2".into()
            }
        );
    }

    #[test]
    fn writer_refuses_rows_its_reader_would_reject() {
        let dir = TempDir::new("bad-write");
        let path = dir.path().join("pairs.parquet");
        let mut bad = pair(1);
        bad.rejected.clear();
        let err = write_pairs(&path, &[pair(0), bad]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("row 2, column \"rejected\": empty string"),
            "{err}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn missing_file_is_named() {
        let err = read_sft(Path::new("nowhere/sft.parquet")).unwrap_err();
        assert_eq!(err.to_string(), "nowhere/sft.parquet: file not found");
    }
}
