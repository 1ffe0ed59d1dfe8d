//! The gold-reward columns a task with a known reward (`stories`) adds to
//! `rollouts.parquet` and `responses.parquet`: `gold` (f32), `gold_ending`
//! and `gold_callback` (bool), null in every row of a task without one.

use std::path::Path;

use arrow::array::{ArrayRef, BooleanArray, Float32Array};
use arrow::datatypes::{DataType, Field};
use std::sync::Arc;

use crate::error::{DataError, Result};
use crate::parquet_io::{optional, Columns};

/// One response's gold reward and the two parts it is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gold {
    pub reward: f32,
    pub ending: bool,
    pub callback: bool,
}

/// The three column names, in order.
pub const GOLD_COLUMNS: [&str; 3] = ["gold", "gold_ending", "gold_callback"];

pub fn gold_fields() -> Vec<Field> {
    vec![
        optional(GOLD_COLUMNS[0], DataType::Float32),
        optional(GOLD_COLUMNS[1], DataType::Boolean),
        optional(GOLD_COLUMNS[2], DataType::Boolean),
    ]
}

pub fn gold_arrays(golds: &[Option<Gold>]) -> Vec<ArrayRef> {
    vec![
        Arc::new(Float32Array::from_iter(
            golds.iter().map(|g| g.map(|g| g.reward)),
        )),
        Arc::new(BooleanArray::from_iter(
            golds.iter().map(|g| g.map(|g| g.ending)),
        )),
        Arc::new(BooleanArray::from_iter(
            golds.iter().map(|g| g.map(|g| g.callback)),
        )),
    ]
}

/// A row's gold is all three columns or none of them.
pub fn read_gold(path: &Path, c: &Columns) -> Result<Vec<Option<Gold>>> {
    let reward = c.opt_f64(GOLD_COLUMNS[0])?;
    let ending = c.opt_bool(GOLD_COLUMNS[1])?;
    let callback = c.opt_bool(GOLD_COLUMNS[2])?;
    reward
        .into_iter()
        .zip(ending.into_iter().zip(callback))
        .enumerate()
        .map(|(i, (r, (e, cb)))| match (r, e, cb) {
            (Some(reward), Some(ending), Some(callback)) if reward.is_finite() => Ok(Some(Gold {
                reward: reward as f32,
                ending,
                callback,
            })),
            (None, None, None) => Ok(None),
            _ => Err(DataError::cell(
                path,
                i + 1,
                GOLD_COLUMNS[0],
                "gold, gold_ending and gold_callback must be all set (gold finite) or all null",
            )),
        })
        .collect()
}
