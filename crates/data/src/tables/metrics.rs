//! metrics.parquet: one row per training step, `step` and `iteration` then
//! one Float64 column per figure. Stages log different figures over time, so
//! the columns are the union of all rows' keys and a figure a row lacks is
//! null in the file and simply absent when read back.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;

use super::{read_rows, write_rows, Table};
use crate::error::{DataError, Result};
use crate::parquet_io::{batch, f64_array, optional, required, u32_array, u64_array, Columns};

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    pub step: u64,
    pub iteration: u32,
    /// Figure name → value, in the order the stage logs them.
    pub values: Vec<(String, f64)>,
}

impl MetricsRow {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// The union of keys in order of first appearance: stable, and it keeps a
/// stage's own ordering (loss first, say) in the file.
fn columns(path: &Path, rows: &[MetricsRow]) -> Result<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        for (j, (key, _)) in row.values.iter().enumerate() {
            if key == "step" || key == "iteration" {
                return Err(DataError::cell(
                    path,
                    i + 1,
                    key,
                    "is a reserved metrics column",
                ));
            }
            if row.values[..j].iter().any(|(k, _)| k == key) {
                return Err(DataError::cell(
                    path,
                    i + 1,
                    key,
                    "appears twice in one row",
                ));
            }
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    Ok(keys)
}

impl Table for MetricsRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        let keys = columns(path, rows)?;
        let mut fields = vec![
            required("step", DataType::UInt64),
            required("iteration", DataType::UInt32),
        ];
        let mut arrays = vec![
            u64_array(rows.iter().map(|r| r.step)),
            u32_array(rows.iter().map(|r| r.iteration)),
        ];
        for key in &keys {
            fields.push(optional(key, DataType::Float64));
            arrays.push(f64_array(rows.iter().map(|r| r.get(key)).collect()));
        }
        batch(path, fields, arrays)
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let steps = c.u64("step")?;
        let iterations = c.u32("iteration")?;
        let mut rows: Vec<MetricsRow> = steps
            .into_iter()
            .zip(iterations)
            .map(|(step, iteration)| MetricsRow {
                step,
                iteration,
                values: Vec::new(),
            })
            .collect();
        for name in c.names() {
            if name == "step" || name == "iteration" {
                continue;
            }
            for (row, value) in rows.iter_mut().zip(c.opt_f64(&name)?) {
                if let Some(v) = value {
                    row.values.push((name.clone(), v));
                }
            }
        }
        Ok(rows)
    }
}

pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    read_rows(path)
}

pub fn write_metrics(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    write_rows(path, rows)
}

/// Adds rows to `path` (creating it if absent) by rewriting it atomically.
pub fn append_metrics(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    let mut all = if path.exists() {
        read_metrics(path)?
    } else {
        Vec::new()
    };
    all.extend_from_slice(rows);
    write_metrics(path, &all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_io::read_table;
    use crate::tables::test_support::round_trip;
    use marlhf_testkit::TempDir;

    fn row(step: u64, values: &[(&str, f64)]) -> MetricsRow {
        MetricsRow {
            step,
            iteration: (step / 10) as u32,
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn metrics_round_trip() {
        round_trip(&[
            row(0, &[("loss", 2.5), ("kl", 0.01)]),
            row(1, &[("loss", 2.0), ("kl", 0.02)]),
        ]);
    }

    #[test]
    fn append_unions_columns_and_skips_missing_values() {
        let dir = TempDir::new("metrics");
        let path = dir.path().join("metrics.parquet");
        append_metrics(&path, &[row(0, &[("loss", 3.0)])]).unwrap();
        append_metrics(&path, &[row(1, &[("reward_mean", 0.5), ("loss", 2.0)])]).unwrap();
        let table = read_table(&path).unwrap();
        let names: Vec<_> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["step", "iteration", "loss", "reward_mean"]);
        let back = read_metrics(&path).unwrap();
        assert_eq!(back[0], row(0, &[("loss", 3.0)]));
        // Read back in file column order.
        assert_eq!(back[1], row(1, &[("loss", 2.0), ("reward_mean", 0.5)]));
    }

    #[test]
    fn reserved_and_duplicate_keys_are_refused() {
        let err = write_metrics(Path::new("m.parquet"), &[row(0, &[("step", 1.0)])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.parquet: row 1, column \"step\": is a reserved metrics column"
        );
        let err = write_metrics(Path::new("m.parquet"), &[row(0, &[("a", 1.0), ("a", 2.0)])])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.parquet: row 1, column \"a\": appears twice in one row"
        );
    }
}
