//! The evaluation's tables: `responses.parquet`, `judgements.parquet` and
//! `passk.parquet`. Like the other tables of the contract, each has a typed
//! row, a reader that names the file, row and column of anything wrong, and
//! an atomic deterministic writer.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use super::{
    gold_arrays, gold_fields, read_gold, read_rows, write_rows, Gold, Table, GOLD_COLUMNS,
};
use crate::error::DataError;
use crate::parquet_io::{
    batch, bool_array, check_unique_ids, f32_array, list_array, list_of, opt_str_array, str_array,
    u32_array, u64_array, Columns,
};
use arrow::array::{ArrayRef, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, UInt32Type};
use serde::{Deserialize, Serialize};

type Result<T> = std::result::Result<T, DataError>;

/// A pairwise judgement's outcome for the policy it is stored for
/// (`policy_a` in `judgements.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Win,
    Tie,
    Lose,
    /// The judge answered, but no choice could be read from its answer.
    Unparseable,
    /// No answer: the request failed (retries ran out, the server's reply
    /// was not a completion). Not a judgement: counted apart, and asked
    /// again when the judge runs again.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Win => "win",
            Self::Tie => "tie",
            Self::Lose => "lose",
            Self::Unparseable => "unparseable",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "win" => Self::Win,
            "tie" => Self::Tie,
            "lose" => Self::Lose,
            "unparseable" => Self::Unparseable,
            "error" => Self::Error,
            other => anyhow::bail!(
                "unknown verdict {other:?}: expected win, tie, lose, unparseable or error"
            ),
        })
    }
}

/// One policy's response to one evaluation prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRow {
    /// Unique within the file.
    pub id: u64,
    /// The `id` of the prompt in `eval_prompts.parquet`.
    pub prompt_id: u64,
    pub policy: String,
    /// 0 .. samples-per-prompt: several samples of one prompt (pass@k).
    pub sample: u32,
    pub prompt: String,
    pub response: String,
    /// The generated ids, EOS included when the response finished.
    pub response_tokens: Vec<u32>,
    /// The reward model's score of prompt + response.
    pub score: f32,
    /// Ended with EOS (false: cut at the token budget).
    pub finished: bool,
    /// The task's gold reward, when it has one (`stories`).
    pub gold: Option<Gold>,
}

/// One pairwise judgement, from `policy_a`'s side.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgementRow {
    pub prompt_id: u64,
    pub policy_a: String,
    pub policy_b: String,
    /// `reward model`, or the HTTP judge's model name.
    pub judge: String,
    /// Policy A's response was presented first (as "A").
    pub a_shown_first: bool,
    /// Stored as `win`, `tie`, `lose`, `unparseable` or `error`.
    pub verdict: Verdict,
    /// What the judge picked among the responses as presented: `A`, `B`,
    /// `E` (equal), or null when unparseable or an error.
    pub choice: Option<String>,
    /// The judge's answer (any API key's value redacted), or for an `error`
    /// row why the request failed.
    pub raw: String,
}

/// One APPS program (one response) run against its problem's tests.
#[derive(Debug, Clone, PartialEq)]
pub struct PasskRow {
    /// The response's `id` in `responses.parquet`.
    pub id: u64,
    pub prompt_id: u64,
    pub policy: String,
    pub sample: u32,
    /// Every test ran and passed.
    pub passed: bool,
    /// Fraction of the problem's tests passed (APPS "test case average").
    pub pass_fraction: f64,
    /// The first outcome that is not a pass (`pass` when none).
    pub outcome: String,
    /// How many tests the problem has.
    pub tests: u32,
}

pub fn read_responses(path: &Path) -> Result<Vec<ResponseRow>> {
    read_rows(path)
}

/// The responses of several files (one per policy, say) as one table. A
/// policy answers in one file only: the same name in two files is refused,
/// since their rows could not be told apart.
pub fn read_responses_from(paths: &[std::path::PathBuf]) -> Result<Vec<ResponseRow>> {
    let mut rows: Vec<ResponseRow> = Vec::new();
    let mut owner: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (i, path) in paths.iter().enumerate() {
        let file = read_responses(path)?;
        for r in &file {
            let first = *owner.entry(r.policy.clone()).or_insert(i);
            if first != i {
                return Err(DataError::file(
                    path,
                    format!(
                        "policy {:?} also answers in {}; give each policy's responses once",
                        r.policy,
                        paths[first].display()
                    ),
                ));
            }
        }
        rows.extend(file);
    }
    Ok(rows)
}

pub fn write_responses(path: &Path, rows: &[ResponseRow]) -> Result<()> {
    write_rows(path, rows)
}

pub fn read_judgements(path: &Path) -> Result<Vec<JudgementRow>> {
    read_rows(path)
}

pub fn write_judgements(path: &Path, rows: &[JudgementRow]) -> Result<()> {
    write_rows(path, rows)
}

pub fn read_passk(path: &Path) -> Result<Vec<PasskRow>> {
    read_rows(path)
}

pub fn write_passk(path: &Path, rows: &[PasskRow]) -> Result<()> {
    write_rows(path, rows)
}

const CHOICES: [&str; 3] = ["A", "B", "E"];

impl Table for ResponseRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        unique(path, "id", rows.iter().map(|r| r.id))?;
        let tokens: Vec<&[u32]> = rows.iter().map(|r| r.response_tokens.as_slice()).collect();
        build(
            path,
            vec![
                ("id", DataType::UInt64, u64_array(rows.iter().map(|r| r.id))),
                (
                    "prompt_id",
                    DataType::UInt64,
                    u64_array(rows.iter().map(|r| r.prompt_id)),
                ),
                (
                    "policy",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.policy.as_str())),
                ),
                (
                    "sample",
                    DataType::UInt32,
                    u32_array(rows.iter().map(|r| r.sample)),
                ),
                (
                    "prompt",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.prompt.as_str())),
                ),
                (
                    "response",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.response.as_str())),
                ),
                (
                    "response_tokens",
                    list_of(DataType::UInt32),
                    list_array::<UInt32Type>(&tokens),
                ),
                (
                    "score",
                    DataType::Float32,
                    f32_array(rows.iter().map(|r| r.score)),
                ),
                (
                    "finished",
                    DataType::Boolean,
                    bool_array(rows.iter().map(|r| r.finished)),
                ),
            ]
            .into_iter()
            .chain(
                GOLD_COLUMNS
                    .iter()
                    .zip(gold_fields())
                    .zip(gold_arrays(
                        &rows.iter().map(|r| r.gold).collect::<Vec<_>>(),
                    ))
                    .map(|((name, field), array)| (*name, field.data_type().clone(), array)),
            )
            .collect(),
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let ids = c.u64("id")?;
        unique(path, "id", ids.iter().copied())?;
        let prompt_ids = c.u64("prompt_id")?;
        let policies = c.string("policy")?;
        if let Some(row) = policies.iter().position(|p| p.is_empty()) {
            return Err(DataError::cell(path, row + 1, "policy", "empty string"));
        }
        // Older files without `sample` hold one sample per prompt.
        let samples = if batch.column_by_name("sample").is_some() {
            c.u32("sample")?
        } else {
            vec![0; ids.len()]
        };
        let prompts = c.string("prompt")?;
        let responses = c.string("response")?;
        let tokens = c.list_u32("response_tokens")?;
        let scores = c.f32("score")?;
        let finished = c.bool("finished")?;
        let gold = read_gold(path, &c)?;
        Ok((0..ids.len())
            .map(|i| ResponseRow {
                id: ids[i],
                prompt_id: prompt_ids[i],
                policy: policies[i].clone(),
                sample: samples[i],
                prompt: prompts[i].clone(),
                response: responses[i].clone(),
                response_tokens: tokens[i].clone(),
                score: scores[i],
                finished: finished[i],
                gold: gold[i],
            })
            .collect())
    }
}

impl Table for JudgementRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        for (i, r) in rows.iter().enumerate() {
            check_choice(path, i, r.choice.as_deref())?;
        }
        build(
            path,
            vec![
                (
                    "prompt_id",
                    DataType::UInt64,
                    u64_array(rows.iter().map(|r| r.prompt_id)),
                ),
                (
                    "policy_a",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.policy_a.as_str())),
                ),
                (
                    "policy_b",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.policy_b.as_str())),
                ),
                (
                    "judge",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.judge.as_str())),
                ),
                (
                    "a_shown_first",
                    DataType::Boolean,
                    bool_array(rows.iter().map(|r| r.a_shown_first)),
                ),
                (
                    "verdict",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.verdict.as_str())),
                ),
                (
                    "choice",
                    DataType::Utf8,
                    opt_str_array(rows.iter().map(|r| r.choice.as_deref())),
                ),
                (
                    "raw",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.raw.as_str())),
                ),
            ],
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let prompt_ids = c.u64("prompt_id")?;
        let a = c.string("policy_a")?;
        let b = c.string("policy_b")?;
        let judge = c.string("judge")?;
        let first = c.bool("a_shown_first")?;
        let verdict = c.string("verdict")?;
        let choice = if batch.column_by_name("choice").is_some() {
            c.opt_string("choice")?
        } else {
            vec![None; prompt_ids.len()]
        };
        let raw = c.string("raw")?;
        let verdict = verdict
            .iter()
            .enumerate()
            .map(|(i, v)| {
                check_choice(path, i, choice[i].as_deref())?;
                v.parse::<Verdict>().map_err(|_| {
                    DataError::cell(
                        path,
                        i + 1,
                        "verdict",
                        format!("{v:?} is not one of win, tie, lose, unparseable, error"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((0..prompt_ids.len())
            .map(|i| JudgementRow {
                prompt_id: prompt_ids[i],
                policy_a: a[i].clone(),
                policy_b: b[i].clone(),
                judge: judge[i].clone(),
                a_shown_first: first[i],
                verdict: verdict[i],
                choice: choice[i].clone(),
                raw: raw[i].clone(),
            })
            .collect())
    }
}

fn check_choice(path: &Path, row: usize, choice: Option<&str>) -> Result<()> {
    if let Some(c) = choice {
        if !CHOICES.contains(&c) {
            return Err(DataError::cell(
                path,
                row + 1,
                "choice",
                format!("{c:?} is not one of A, B, E"),
            ));
        }
    }
    Ok(())
}

impl Table for PasskRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        unique(path, "id", rows.iter().map(|r| r.id))?;
        build(
            path,
            vec![
                ("id", DataType::UInt64, u64_array(rows.iter().map(|r| r.id))),
                (
                    "prompt_id",
                    DataType::UInt64,
                    u64_array(rows.iter().map(|r| r.prompt_id)),
                ),
                (
                    "policy",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.policy.as_str())),
                ),
                (
                    "sample",
                    DataType::UInt32,
                    u32_array(rows.iter().map(|r| r.sample)),
                ),
                (
                    "passed",
                    DataType::Boolean,
                    bool_array(rows.iter().map(|r| r.passed)),
                ),
                (
                    "pass_fraction",
                    DataType::Float64,
                    Arc::new(Float64Array::from_iter_values(
                        rows.iter().map(|r| r.pass_fraction),
                    )),
                ),
                (
                    "outcome",
                    DataType::Utf8,
                    str_array(rows.iter().map(|r| r.outcome.as_str())),
                ),
                (
                    "tests",
                    DataType::UInt32,
                    u32_array(rows.iter().map(|r| r.tests)),
                ),
            ],
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let ids = c.u64("id")?;
        unique(path, "id", ids.iter().copied())?;
        let prompt_ids = c.u64("prompt_id")?;
        let policy = c.string("policy")?;
        let sample = c.u32("sample")?;
        let passed = c.bool("passed")?;
        let fraction = c.f64("pass_fraction")?;
        let outcome = c.string("outcome")?;
        let tests = c.u32("tests")?;
        Ok((0..ids.len())
            .map(|i| PasskRow {
                id: ids[i],
                prompt_id: prompt_ids[i],
                policy: policy[i].clone(),
                sample: sample[i],
                passed: passed[i],
                pass_fraction: fraction[i],
                outcome: outcome[i].clone(),
                tests: tests[i],
            })
            .collect())
    }
}

fn unique(path: &Path, column: &str, ids: impl Iterator<Item = u64>) -> Result<()> {
    check_unique_ids(path, column, &ids.collect::<Vec<_>>())
}

/// A batch of non-nullable columns, except the string column `choice`.
fn build(path: &Path, columns: Vec<(&str, DataType, ArrayRef)>) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, ty, _)| {
            Field::new(
                *name,
                ty.clone(),
                *name == "choice" || GOLD_COLUMNS.contains(name),
            )
        })
        .collect();
    let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, _, a)| a).collect();
    batch(path, fields, arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;
    use marlhf_testkit::TempDir;

    fn response(id: u64, policy: &str) -> ResponseRow {
        ResponseRow {
            id,
            prompt_id: 100 + id / 2,
            policy: policy.to_string(),
            sample: (id % 2) as u32,
            prompt: format!("prompt {id}"),
            response: format!("response {id} | with a pipe"),
            response_tokens: (0..id as u32).collect(),
            score: id as f32 - 1.5,
            finished: id.is_multiple_of(3),
            gold: id.is_multiple_of(2).then_some(Gold {
                reward: 0.25,
                ending: false,
                callback: true,
            }),
        }
    }

    #[test]
    fn responses_round_trip_byte_stable() {
        let dir = TempDir::new("eval-tables");
        let rows: Vec<ResponseRow> = (0..5)
            .map(|i| response(i, if i < 3 { "sft" } else { "ppo" }))
            .collect();
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write_responses(&a, &rows).unwrap();
        write_responses(&b, &rows).unwrap();
        assert_eq!(read_responses(&a).unwrap(), rows);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let mut dup = rows.clone();
        dup[4].id = 1;
        let err = write_responses(&a, &dup).unwrap_err().to_string();
        assert!(
            err.ends_with("row 5, column \"id\": duplicate id 1 (first at row 2)"),
            "{err}"
        );
    }

    #[test]
    fn judgements_round_trip_and_reject_unknown_verdicts() {
        let dir = TempDir::new("eval-tables");
        let rows = vec![
            JudgementRow {
                prompt_id: 1,
                policy_a: "ma-ppo".into(),
                policy_b: "ppo".into(),
                judge: "reward model".into(),
                a_shown_first: true,
                verdict: Verdict::Win,
                choice: Some("A".into()),
                raw: "A".into(),
            },
            JudgementRow {
                prompt_id: 2,
                policy_a: "ma-ppo".into(),
                policy_b: "ppo".into(),
                judge: "gpt-4o".into(),
                a_shown_first: false,
                verdict: Verdict::Unparseable,
                choice: None,
                raw: "hmm".into(),
            },
            JudgementRow {
                prompt_id: 3,
                policy_a: "ma-ppo".into(),
                policy_b: "ppo".into(),
                judge: "gpt-4o".into(),
                a_shown_first: true,
                verdict: Verdict::Error,
                choice: None,
                raw: "HTTP 503: overloaded".into(),
            },
        ];
        let path = dir.path().join("j.parquet");
        write_judgements(&path, &rows).unwrap();
        assert_eq!(read_judgements(&path).unwrap(), rows);
        // A file another program wrote, with a verdict the enum cannot hold.
        let good = JudgementRow::to_batch(&path, &rows).unwrap();
        let at = good.schema().index_of("verdict").unwrap();
        let mut columns = good.columns().to_vec();
        columns[at] = Arc::new(arrow::array::StringArray::from(vec![
            "win", "draw", "error",
        ]));
        let bad = RecordBatch::try_new(good.schema(), columns).unwrap();
        crate::write_table(&path, &bad).unwrap();
        let err = read_judgements(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "row 2, column \"verdict\": \"draw\" is not one of win, tie, lose, unparseable, error"
            ),
            "{err}"
        );
    }

    #[test]
    fn readers_name_missing_and_mistyped_columns() {
        let dir = TempDir::new("eval-tables");
        let path = dir.path().join("p.parquet");
        let rows = vec![PasskRow {
            id: 1,
            prompt_id: 2,
            policy: "sft".into(),
            sample: 0,
            passed: false,
            pass_fraction: 0.5,
            outcome: "fail".into(),
            tests: 2,
        }];
        write_passk(&path, &rows).unwrap();
        assert_eq!(read_passk(&path).unwrap(), rows);
        // A passk file is not a responses file.
        let err = read_responses(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: column \"prompt\" is missing", path.display())
        );
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
            vec![str_array(["x"].into_iter())],
        )
        .unwrap();
        crate::write_table(&path, &batch).unwrap();
        let err = read_passk(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: column \"id\" has type Utf8, expected UInt64",
                path.display()
            )
        );
    }
}
