//! advantages.parquet: what the update computed per macro action and per
//! token, kept for inspection and plots.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Float32Type};

use super::{read_rows, write_rows, Table};
use crate::error::{DataError, Result};
use crate::parquet_io::{
    batch, check_unique_ids, list_array, list_of, required, u64_array, Columns,
};

#[derive(Debug, Clone, PartialEq)]
pub struct AdvantageRow {
    pub id: u64,
    /// One per macro action.
    pub macro_advantages: Vec<f32>,
    pub macro_returns: Vec<f32>,
    /// One per response token.
    pub advantages: Vec<f32>,
    pub returns: Vec<f32>,
    pub rewards: Vec<f32>,
}

fn check(path: &Path, rows: &[AdvantageRow]) -> Result<()> {
    check_unique_ids(path, "id", &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
    for (i, r) in rows.iter().enumerate() {
        if r.macro_returns.len() != r.macro_advantages.len() {
            return Err(DataError::cell(
                path,
                i + 1,
                "macro_returns",
                format!(
                    "has {} values but macro_advantages has {}",
                    r.macro_returns.len(),
                    r.macro_advantages.len()
                ),
            ));
        }
        for (name, len) in [("returns", r.returns.len()), ("rewards", r.rewards.len())] {
            if len != r.advantages.len() {
                return Err(DataError::cell(
                    path,
                    i + 1,
                    name,
                    format!("has {len} values but advantages has {}", r.advantages.len()),
                ));
            }
        }
    }
    Ok(())
}

impl Table for AdvantageRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        check(path, rows)?;
        let lists = |f: fn(&AdvantageRow) -> &[f32]| {
            list_array::<Float32Type>(&rows.iter().map(f).collect::<Vec<_>>())
        };
        batch(
            path,
            vec![
                required("id", DataType::UInt64),
                required("macro_advantages", list_of(DataType::Float32)),
                required("macro_returns", list_of(DataType::Float32)),
                required("advantages", list_of(DataType::Float32)),
                required("returns", list_of(DataType::Float32)),
                required("rewards", list_of(DataType::Float32)),
            ],
            vec![
                u64_array(rows.iter().map(|r| r.id)),
                lists(|r| &r.macro_advantages),
                lists(|r| &r.macro_returns),
                lists(|r| &r.advantages),
                lists(|r| &r.returns),
                lists(|r| &r.rewards),
            ],
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let ids = c.u64("id")?;
        let mut macro_advantages = c.list_f32("macro_advantages")?.into_iter();
        let mut macro_returns = c.list_f32("macro_returns")?.into_iter();
        let mut advantages = c.list_f32("advantages")?.into_iter();
        let mut returns = c.list_f32("returns")?.into_iter();
        let mut rewards = c.list_f32("rewards")?.into_iter();
        let rows: Vec<AdvantageRow> = ids
            .into_iter()
            .map(|id| AdvantageRow {
                id,
                macro_advantages: macro_advantages.next().unwrap_or_default(),
                macro_returns: macro_returns.next().unwrap_or_default(),
                advantages: advantages.next().unwrap_or_default(),
                returns: returns.next().unwrap_or_default(),
                rewards: rewards.next().unwrap_or_default(),
            })
            .collect();
        check(path, &rows)?;
        Ok(rows)
    }
}

pub fn read_advantages(path: &Path) -> Result<Vec<AdvantageRow>> {
    read_rows(path)
}

pub fn write_advantages(path: &Path, rows: &[AdvantageRow]) -> Result<()> {
    write_rows(path, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::test_support::round_trip;

    #[test]
    fn advantages_round_trip_and_check_lengths() {
        let row = AdvantageRow {
            id: 4,
            macro_advantages: vec![0.5, -1.0],
            macro_returns: vec![1.0, 2.0],
            advantages: vec![0.5, 0.5, -1.0],
            returns: vec![1.0, 1.0, 2.0],
            rewards: vec![0.0, -0.1, 2.5],
        };
        round_trip(std::slice::from_ref(&row));
        let mut bad = row;
        bad.rewards.pop();
        let err = write_advantages(Path::new("a.parquet"), &[bad]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.parquet: row 1, column \"rewards\": has 2 values but advantages has 3"
        );
    }
}
