//! rollouts.parquet: one sampled response per row, with everything the
//! update needs per response token.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Float32Type, UInt32Type};

use super::{gold_arrays, gold_fields, read_gold, read_rows, write_rows, Gold, Table};
use crate::error::{DataError, Result};
use crate::parquet_io::{
    batch, bool_array, check_unique_ids, f32_array, f64_array, list_array, list_of, required,
    str_array, u32_array, u64_array, Columns,
};

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRow {
    pub id: u64,
    pub prompt_id: u64,
    pub iteration: u32,
    pub prompt_tokens: Vec<u32>,
    pub response_tokens: Vec<u32>,
    pub response: String,
    /// The next three are aligned with `response_tokens`.
    pub logprobs: Vec<f32>,
    pub ref_logprobs: Vec<f32>,
    pub values: Vec<f32>,
    /// Reward model score of the whole response.
    pub score: f32,
    /// Whether the response ended with EOS (rather than the length limit).
    pub finished: bool,
    /// The temperature the response was sampled at (0: greedy).
    pub temperature: f64,
    /// The temperature `logprobs` and `ref_logprobs` were computed at,
    /// log-softmax(logits / T): the sampling temperature unless the run
    /// asked for the released code's temperature-1 scoring. The update
    /// scores the new policy at the same temperature, so the PPO ratio is
    /// taken between two distributions of one kind.
    pub logprob_temperature: f64,
    /// The task's gold reward of the response, when it has one.
    pub gold: Option<Gold>,
}

impl RolloutRow {
    /// The column whose length disagrees with `response_tokens`, if any.
    fn misaligned(&self) -> Option<(&'static str, usize)> {
        [
            ("logprobs", self.logprobs.len()),
            ("ref_logprobs", self.ref_logprobs.len()),
            ("values", self.values.len()),
        ]
        .into_iter()
        .find(|(_, len)| *len != self.response_tokens.len())
    }
}

fn check(path: &Path, rows: &[RolloutRow]) -> Result<()> {
    check_unique_ids(path, "id", &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
    for (i, row) in rows.iter().enumerate() {
        if let Some((column, len)) = row.misaligned() {
            return Err(DataError::cell(
                path,
                i + 1,
                column,
                format!(
                    "has {len} values but response_tokens has {}",
                    row.response_tokens.len()
                ),
            ));
        }
        // A NaN or infinity in a log-prob, value or score would turn every
        // loss of the update into NaN; refused where it is read.
        for (column, values) in [
            ("logprobs", &row.logprobs),
            ("ref_logprobs", &row.ref_logprobs),
            ("values", &row.values),
        ] {
            if let Some(t) = values.iter().position(|v| !v.is_finite()) {
                return Err(DataError::cell(
                    path,
                    i + 1,
                    column,
                    format!("is {} at response token {t}", values[t]),
                ));
            }
        }
        if !row.score.is_finite() {
            return Err(DataError::cell(
                path,
                i + 1,
                "score",
                format!("is {}; a reward-model score is a finite number", row.score),
            ));
        }
        if !(row.temperature.is_finite() && row.temperature >= 0.0) {
            return Err(DataError::cell(
                path,
                i + 1,
                "temperature",
                format!(
                    "is {}; a sampling temperature is a number ≥ 0",
                    row.temperature
                ),
            ));
        }
        if !(row.logprob_temperature.is_finite() && row.logprob_temperature > 0.0) {
            return Err(DataError::cell(
                path,
                i + 1,
                "logprob_temperature",
                format!(
                    "is {}; a scoring temperature is a number > 0",
                    row.logprob_temperature
                ),
            ));
        }
    }
    Ok(())
}

impl Table for RolloutRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        check(path, rows)?;
        let lists_u32 = |f: fn(&RolloutRow) -> &[u32]| {
            list_array::<UInt32Type>(&rows.iter().map(f).collect::<Vec<_>>())
        };
        let lists_f32 = |f: fn(&RolloutRow) -> &[f32]| {
            list_array::<Float32Type>(&rows.iter().map(f).collect::<Vec<_>>())
        };
        batch(
            path,
            vec![
                required("id", DataType::UInt64),
                required("prompt_id", DataType::UInt64),
                required("iteration", DataType::UInt32),
                required("prompt_tokens", list_of(DataType::UInt32)),
                required("response_tokens", list_of(DataType::UInt32)),
                required("response", DataType::Utf8),
                required("logprobs", list_of(DataType::Float32)),
                required("ref_logprobs", list_of(DataType::Float32)),
                required("values", list_of(DataType::Float32)),
                required("score", DataType::Float32),
                required("finished", DataType::Boolean),
                required("temperature", DataType::Float64),
                required("logprob_temperature", DataType::Float64),
            ]
            .into_iter()
            .chain(gold_fields())
            .collect(),
            vec![
                u64_array(rows.iter().map(|r| r.id)),
                u64_array(rows.iter().map(|r| r.prompt_id)),
                u32_array(rows.iter().map(|r| r.iteration)),
                lists_u32(|r| &r.prompt_tokens),
                lists_u32(|r| &r.response_tokens),
                str_array(rows.iter().map(|r| r.response.as_str())),
                lists_f32(|r| &r.logprobs),
                lists_f32(|r| &r.ref_logprobs),
                lists_f32(|r| &r.values),
                f32_array(rows.iter().map(|r| r.score)),
                bool_array(rows.iter().map(|r| r.finished)),
                f64_array(rows.iter().map(|r| Some(r.temperature)).collect()),
                f64_array(rows.iter().map(|r| Some(r.logprob_temperature)).collect()),
            ]
            .into_iter()
            .chain(gold_arrays(
                &rows.iter().map(|r| r.gold).collect::<Vec<_>>(),
            ))
            .collect(),
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let id = c.u64("id")?;
        let prompt_id = c.u64("prompt_id")?;
        let iteration = c.u32("iteration")?;
        let prompt_tokens = c.list_u32("prompt_tokens")?;
        let response_tokens = c.list_u32("response_tokens")?;
        let response = c.string("response")?;
        let logprobs = c.list_f32("logprobs")?;
        let ref_logprobs = c.list_f32("ref_logprobs")?;
        let values = c.list_f32("values")?;
        let score = c.f32("score")?;
        let finished = c.bool("finished")?;
        let temperature = c.f64("temperature")?;
        let logprob_temperature = c.f64("logprob_temperature")?;
        let gold = read_gold(path, &c)?;
        let mut rows = Vec::with_capacity(c.len());
        let mut cols = (
            prompt_tokens.into_iter(),
            response_tokens.into_iter(),
            response.into_iter(),
            logprobs.into_iter(),
            ref_logprobs.into_iter(),
            values.into_iter(),
        );
        for i in 0..c.len() {
            rows.push(RolloutRow {
                id: id[i],
                prompt_id: prompt_id[i],
                iteration: iteration[i],
                prompt_tokens: cols.0.next().unwrap_or_default(),
                response_tokens: cols.1.next().unwrap_or_default(),
                response: cols.2.next().unwrap_or_default(),
                logprobs: cols.3.next().unwrap_or_default(),
                ref_logprobs: cols.4.next().unwrap_or_default(),
                values: cols.5.next().unwrap_or_default(),
                score: score[i],
                finished: finished[i],
                temperature: temperature[i],
                logprob_temperature: logprob_temperature[i],
                gold: gold[i],
            });
        }
        check(path, &rows)?;
        Ok(rows)
    }
}

pub fn read_rollouts(path: &Path) -> Result<Vec<RolloutRow>> {
    read_rows(path)
}

pub fn write_rollouts(path: &Path, rows: &[RolloutRow]) -> Result<()> {
    write_rows(path, rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tables::test_support::{read_error, round_trip};

    pub fn rollout(id: u64, n: usize) -> RolloutRow {
        RolloutRow {
            id,
            prompt_id: 100 + id,
            iteration: 2,
            prompt_tokens: vec![1, 5, 6],
            response_tokens: (0..n as u32).map(|t| t + 10).collect(),
            response: "text".into(),
            logprobs: (0..n).map(|t| -(t as f32) * 0.5).collect(),
            ref_logprobs: (0..n).map(|t| -(t as f32) * 0.25).collect(),
            values: (0..n).map(|t| t as f32).collect(),
            score: 1.5,
            finished: n > 3,
            temperature: 0.8,
            logprob_temperature: 0.8,
            gold: (id % 2 == 1).then_some(Gold {
                reward: 0.5,
                ending: true,
                callback: false,
            }),
        }
    }

    #[test]
    fn rollouts_round_trip_byte_identically() {
        round_trip(&[rollout(0, 4), rollout(1, 0), rollout(2, 7)]);
    }

    #[test]
    fn misaligned_float_lists_are_rejected_by_row_and_column() {
        let mut bad = rollout(1, 3);
        bad.ref_logprobs.pop();
        let rows = [rollout(0, 2), bad];
        // Build the table bypassing the writer's check to test the reader.
        let mut unchecked = rows.clone();
        unchecked[1].ref_logprobs.push(0.0);
        let mut b = RolloutRow::to_batch(Path::new("x"), &unchecked).unwrap();
        let short = list_array::<Float32Type>(&[&rows[0].ref_logprobs, &rows[1].ref_logprobs]);
        let idx = b.schema().index_of("ref_logprobs").unwrap();
        let mut cols = b.columns().to_vec();
        cols[idx] = short;
        b = RecordBatch::try_new(b.schema(), cols).unwrap();
        let err = read_error::<RolloutRow>(b);
        assert_eq!(
            err.to_string(),
            "row 2, column \"ref_logprobs\": has 2 values but response_tokens has 3"
        );

        let err = write_rollouts(Path::new("/nonexistent/r.parquet"), &rows).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/nonexistent/r.parquet: row 2, column \"ref_logprobs\": has 2 values but response_tokens has 3"
        );
    }

    /// Issue 21, item 8: a NaN or an infinity in a rollout is refused where
    /// it is read (segment, update), with its row and column.
    #[test]
    fn non_finite_numbers_are_refused_by_row_and_column() {
        let fine = [rollout(0, 3), rollout(1, 3)];
        let table = |f: &dyn Fn(&mut RolloutRow)| {
            let mut b = RolloutRow::to_batch(Path::new("x"), &fine).unwrap();
            let mut bad = fine.clone();
            f(&mut bad[1]);
            // Each column from the bad rows, written without the check.
            let columns: Vec<_> = b
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(i, field)| {
                    let lists = |g: fn(&RolloutRow) -> &Vec<f32>| {
                        list_array::<Float32Type>(
                            &bad.iter().map(|r| g(r).as_slice()).collect::<Vec<_>>(),
                        )
                    };
                    match field.name().as_str() {
                        "logprobs" => lists(|r| &r.logprobs),
                        "ref_logprobs" => lists(|r| &r.ref_logprobs),
                        "values" => lists(|r| &r.values),
                        "score" => f32_array(bad.iter().map(|r| r.score)),
                        _ => b.column(i).clone(),
                    }
                })
                .collect();
            b = RecordBatch::try_new(b.schema(), columns).unwrap();
            read_error::<RolloutRow>(b).to_string()
        };
        assert_eq!(
            table(&|r| r.ref_logprobs[2] = f32::NAN),
            "row 2, column \"ref_logprobs\": is NaN at response token 2"
        );
        assert_eq!(
            table(&|r| r.values[0] = f32::INFINITY),
            "row 2, column \"values\": is inf at response token 0"
        );
        assert_eq!(
            table(&|r| r.logprobs[1] = f32::NEG_INFINITY),
            "row 2, column \"logprobs\": is -inf at response token 1"
        );
        assert_eq!(
            table(&|r| r.score = f32::NAN),
            "row 2, column \"score\": is NaN; a reward-model score is a finite number"
        );
        let mut nan = fine.clone();
        nan[0].values[1] = f32::NAN;
        assert!(write_rollouts(Path::new("/nonexistent/r.parquet"), &nan).is_err());
    }
}
