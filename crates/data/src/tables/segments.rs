//! segments.parquet: where each macro action of a rollout begins.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, UInt32Type};

use super::{read_rows, write_rows, Table};
use crate::error::{DataError, Result};
use crate::parquet_io::{
    batch, check_unique_ids, list_array, list_of, required, str_array, u64_array, Columns,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRow {
    /// The rollout's id.
    pub id: u64,
    /// The termination condition that produced the segments (`fixed`, `ppl`…).
    pub termination: String,
    /// Offsets into the response where each macro action begins: 0 first,
    /// strictly increasing. Empty only for an empty response.
    pub starts: Vec<u32>,
}

fn check(path: &Path, rows: &[SegmentRow]) -> Result<()> {
    check_unique_ids(path, "id", &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
    // One file, one termination condition: rows labelled with another are
    // another run's, and a mix would train on two conditions at once.
    if let Some(first) = rows.first() {
        if let Some(i) = rows.iter().position(|r| r.termination != first.termination) {
            return Err(DataError::cell(
                path,
                i + 1,
                "termination",
                format!(
                    "{:?} differs from row 1's {:?}: a segments file holds one termination condition",
                    rows[i].termination, first.termination
                ),
            ));
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let bad = |msg: String| Err(DataError::cell(path, i + 1, "starts", msg));
        if let Some(&first) = row.starts.first() {
            if first != 0 {
                return bad(format!("must begin at 0, begins at {first}"));
            }
        }
        if let Some(k) = row.starts.windows(2).position(|w| w[1] <= w[0]) {
            return bad(format!(
                "must be strictly increasing, but {} follows {}",
                row.starts[k + 1],
                row.starts[k]
            ));
        }
    }
    Ok(())
}

impl Table for SegmentRow {
    fn to_batch(path: &Path, rows: &[Self]) -> Result<RecordBatch> {
        check(path, rows)?;
        batch(
            path,
            vec![
                required("id", DataType::UInt64),
                required("termination", DataType::Utf8),
                required("starts", list_of(DataType::UInt32)),
            ],
            vec![
                u64_array(rows.iter().map(|r| r.id)),
                str_array(rows.iter().map(|r| r.termination.as_str())),
                list_array::<UInt32Type>(
                    &rows.iter().map(|r| r.starts.as_slice()).collect::<Vec<_>>(),
                ),
            ],
        )
    }

    fn from_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<Self>> {
        let c = Columns::new(path, batch);
        let ids = c.u64("id")?;
        let terminations = c.string("termination")?;
        let starts = c.list_u32("starts")?;
        let rows: Vec<SegmentRow> = ids
            .into_iter()
            .zip(terminations)
            .zip(starts)
            .map(|((id, termination), starts)| SegmentRow {
                id,
                termination,
                starts,
            })
            .collect();
        check(path, &rows)?;
        Ok(rows)
    }
}

pub fn read_segments(path: &Path) -> Result<Vec<SegmentRow>> {
    read_rows(path)
}

pub fn write_segments(path: &Path, rows: &[SegmentRow]) -> Result<()> {
    write_rows(path, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::test_support::{read_error, round_trip};

    fn seg(id: u64, starts: Vec<u32>) -> SegmentRow {
        SegmentRow {
            id,
            termination: "fixed".into(),
            starts,
        }
    }

    #[test]
    fn segments_round_trip() {
        round_trip(&[seg(0, vec![0, 5, 10, 12]), seg(1, vec![0]), seg(2, vec![])]);
    }

    /// The table as another writer could produce it, bypassing our checks.
    fn raw(rows: &[SegmentRow]) -> RecordBatch {
        let ok: Vec<SegmentRow> = rows.iter().map(|r| seg(r.id, vec![])).collect();
        let b = SegmentRow::to_batch(Path::new("x"), &ok).unwrap();
        let mut cols = b.columns().to_vec();
        cols[2] =
            list_array::<UInt32Type>(&rows.iter().map(|r| r.starts.as_slice()).collect::<Vec<_>>());
        RecordBatch::try_new(b.schema(), cols).unwrap()
    }

    #[test]
    fn starts_must_begin_at_zero_and_increase() {
        let err = read_error::<SegmentRow>(raw(&[seg(0, vec![0, 2]), seg(1, vec![1, 2])]));
        assert_eq!(
            err.to_string(),
            "row 2, column \"starts\": must begin at 0, begins at 1"
        );
        let err = read_error::<SegmentRow>(raw(&[seg(0, vec![0, 3, 3])]));
        assert_eq!(
            err.to_string(),
            "row 1, column \"starts\": must be strictly increasing, but 3 follows 3"
        );
        let err = read_error::<SegmentRow>(raw(&[seg(0, vec![0, 4, 2])]));
        assert!(err.to_string().contains("but 2 follows 4"));
    }

    /// Issue 21, item 8: rows labelled with another termination condition
    /// are another run's.
    #[test]
    fn one_termination_per_file() {
        let mut other = seg(2, vec![0, 1]);
        other.termination = "fixed:1".into();
        let b = SegmentRow::to_batch(Path::new("x"), &[seg(0, vec![0]), seg(1, vec![0])]).unwrap();
        let mut cols = b.columns().to_vec();
        cols[1] = std::sync::Arc::new(arrow::array::StringArray::from(vec!["fixed:5", "fixed:1"]));
        let err = read_error::<SegmentRow>(RecordBatch::try_new(b.schema(), cols).unwrap());
        assert_eq!(
            err.to_string(),
            "row 2, column \"termination\": \"fixed:1\" differs from row 1's \"fixed:5\": a segments file holds one termination condition"
        );
        let err = write_segments(
            Path::new("/nonexistent/s.parquet"),
            &[seg(0, vec![0]), other],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("row 2, column \"termination\""),
            "{err}"
        );
    }
}
