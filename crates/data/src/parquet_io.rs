//! Parquet in and out, plus typed column access that turns every schema or
//! value problem into an error naming the file, the column and the row.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, ListArray, PrimitiveArray,
    RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, FieldRef, Float32Type, Float64Type, Schema, UInt32Type,
    UInt64Type,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::atomic::{self, FileSet};
use crate::error::{DataError, Result};

/// Reads a whole Parquet file into one record batch. Page checksums are
/// verified when the file has them (marlhf's files always do), and a
/// decoder that panics on damaged bytes is an error naming the file.
pub fn read_table(path: &Path) -> Result<RecordBatch> {
    guard_decoder(path, || read_table_unguarded(path))
}

/// Runs `decode` (reading `path`), turning a panic inside it into an error
/// naming the file. The panic hook stays silent for it: the user gets the
/// error, one line, not the hook's message too.
pub fn guard_decoder<T>(path: &Path, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    quiet_panics::install();
    let result =
        quiet_panics::silenced(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)));
    result.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".to_string());
        Err(DataError::file(
            path,
            format!("damaged Parquet data (the decoder failed: {what})"),
        ))
    })
}

/// A panic hook that says nothing for panics on a thread inside
/// [`silenced`](quiet_panics::silenced) and defers to the previous hook
/// otherwise (installed once, wrapping whatever hook was there).
mod quiet_panics {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        static SILENT: Cell<bool> = const { Cell::new(false) };
    }

    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !SILENT.with(Cell::get) {
                    previous(info);
                }
            }));
        });
    }

    pub fn silenced<T>(f: impl FnOnce() -> T) -> T {
        let before = SILENT.with(|s| s.replace(true));
        let out = f();
        SILENT.with(|s| s.set(before));
        out
    }
}

fn read_table_unguarded(path: &Path) -> Result<RecordBatch> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::file(path, "file not found"),
        _ => DataError::file(path, format!("cannot open: {e}")),
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| DataError::file(path, format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let reader = builder
        .build()
        .map_err(|e| DataError::file(path, format!("cannot read Parquet: {e}")))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches
            .push(batch.map_err(|e| DataError::file(path, format!("cannot read Parquet: {e}")))?);
    }
    concat_batches(&schema, &batches)
        .map_err(|e| DataError::file(path, format!("cannot assemble Parquet batches: {e}")))
}

/// Encodes a batch as Parquet bytes with a CRC in every page header.
/// Fixed writer settings and no clock or host in the metadata, so the same
/// batch always gives the same bytes. Statistics are kept per column chunk
/// (no page index: the stages read whole files).
pub fn encode_parquet(path: &Path, batch: &RecordBatch) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true)
        .set_created_by("marlhf-data".to_string())
        .build();
    let err = |e: parquet::errors::ParquetError| {
        DataError::file(path, format!("cannot encode Parquet: {e}"))
    };
    let mut bytes = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props.clone())).map_err(err)?;
    writer.write(batch).map_err(err)?;
    writer.close().map_err(err)?;
    crate::page_crc::add_page_crcs(bytes, props).map_err(err)
}

/// Writes `bytes` to `tmp`, blaming `path` (the name the user knows) on error.
pub(crate) fn write_bytes(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(tmp, bytes).map_err(|e| DataError::file(path, format!("cannot write: {e}")))
}

/// Writes a batch to `path` atomically.
pub fn write_table(path: &Path, batch: &RecordBatch) -> Result<()> {
    let bytes = encode_parquet(path, batch)?;
    atomic::write_file(path, |tmp| write_bytes(tmp, path, &bytes))
}

/// Stages a batch for `path` in a [`FileSet`] (all-or-nothing multi-file writes).
pub fn stage_table(set: &mut FileSet, path: &Path, batch: &RecordBatch) -> Result<()> {
    let bytes = encode_parquet(path, batch)?;
    set.stage(path, |tmp| write_bytes(tmp, path, &bytes))
}

pub fn required(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, false)
}

pub fn optional(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

fn item_field(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("item", data_type, false))
}

/// `List<item>` with non-nullable items: the contract's list columns.
pub fn list_of(data_type: DataType) -> DataType {
    DataType::List(item_field(data_type))
}

pub fn list_array<T: ArrowPrimitiveType>(lists: &[&[T::Native]]) -> ArrayRef
where
    PrimitiveArray<T>: From<Vec<T::Native>>,
{
    let values: Vec<T::Native> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    let offsets = OffsetBuffer::from_lengths(lists.iter().map(|l| l.len()));
    let values: ArrayRef = Arc::new(PrimitiveArray::<T>::from(values));
    Arc::new(ListArray::new(
        item_field(T::DATA_TYPE),
        offsets,
        values,
        None,
    ))
}

pub fn u64_array(values: impl IntoIterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(values))
}

pub fn u32_array(values: impl IntoIterator<Item = u32>) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(values))
}

pub fn f32_array(values: impl IntoIterator<Item = f32>) -> ArrayRef {
    Arc::new(Float32Array::from_iter_values(values))
}

pub fn f64_array(values: Vec<Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from(values))
}

pub fn bool_array(values: impl IntoIterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(
        values.into_iter().collect::<Vec<bool>>(),
    ))
}

pub fn str_array<'s>(values: impl IntoIterator<Item = &'s str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

pub fn opt_str_array<'s>(values: impl IntoIterator<Item = Option<&'s str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

pub fn batch(path: &Path, fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DataError::file(path, format!("cannot build table: {e}")))
}

/// A short human name for a type: `List<UInt32>` rather than arrow's Debug.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            format!("List<{}>", type_name(f.data_type()))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "Utf8".to_string(),
        other => format!("{other:?}"),
    }
}

/// Same logical type, different physical layout (as other writers such as
/// polars or pyarrow produce): large/view strings, large lists, nullable list
/// items. These are cast; any other mismatch is an error.
fn same_logical_type(have: &DataType, want: &DataType) -> bool {
    match (have, want) {
        (DataType::LargeUtf8 | DataType::Utf8View, DataType::Utf8) => true,
        (DataType::List(h) | DataType::LargeList(h) | DataType::ListView(h), DataType::List(w)) => {
            h.data_type() == w.data_type()
        }
        _ => false,
    }
}

/// Typed access to the columns of one table, for the readers.
pub struct Columns<'a> {
    path: &'a Path,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    pub fn new(path: &'a Path, batch: &'a RecordBatch) -> Self {
        Self { path, batch }
    }

    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn names(&self) -> Vec<String> {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn get(&self, name: &str, want: &DataType) -> Result<ArrayRef> {
        let col = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| DataError::column(self.path, name, "is missing"))?;
        let have = col.data_type();
        if have == want {
            return Ok(col.clone());
        }
        if same_logical_type(have, want) {
            return cast(col, want).map_err(|e| {
                DataError::column(
                    self.path,
                    name,
                    format!("cannot be read as {}: {e}", type_name(want)),
                )
            });
        }
        Err(DataError::column(
            self.path,
            name,
            format!("has type {}, expected {}", type_name(have), type_name(want)),
        ))
    }

    fn no_nulls(&self, name: &str, col: &dyn Array) -> Result<()> {
        if col.null_count() > 0 {
            let row = (0..col.len()).find(|&i| col.is_null(i)).unwrap_or(0);
            return Err(DataError::cell(
                self.path,
                row + 1,
                name,
                "null in a required column",
            ));
        }
        Ok(())
    }

    fn primitive<T: ArrowPrimitiveType>(&self, name: &str) -> Result<Vec<T::Native>> {
        let col = self.get(name, &T::DATA_TYPE)?;
        self.no_nulls(name, col.as_ref())?;
        Ok(col.as_primitive::<T>().values().to_vec())
    }

    pub fn u64(&self, name: &str) -> Result<Vec<u64>> {
        self.primitive::<UInt64Type>(name)
    }

    pub fn u32(&self, name: &str) -> Result<Vec<u32>> {
        self.primitive::<UInt32Type>(name)
    }

    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        self.primitive::<Float32Type>(name)
    }

    pub fn f64(&self, name: &str) -> Result<Vec<f64>> {
        self.primitive::<Float64Type>(name)
    }

    pub fn bool(&self, name: &str) -> Result<Vec<bool>> {
        let col = self.get(name, &DataType::Boolean)?;
        self.no_nulls(name, col.as_ref())?;
        Ok(col
            .as_boolean()
            .iter()
            .map(|v| v.unwrap_or(false))
            .collect())
    }

    pub fn opt_bool(&self, name: &str) -> Result<Vec<Option<bool>>> {
        let col = self.get(name, &DataType::Boolean)?;
        Ok(col.as_boolean().iter().collect())
    }

    pub fn opt_string(&self, name: &str) -> Result<Vec<Option<String>>> {
        let col = self.get(name, &DataType::Utf8)?;
        Ok(col
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    }

    pub fn string(&self, name: &str) -> Result<Vec<String>> {
        let col = self.get(name, &DataType::Utf8)?;
        self.no_nulls(name, col.as_ref())?;
        Ok(col
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    }

    /// A required string column whose values must not be empty.
    pub fn text(&self, name: &str) -> Result<Vec<String>> {
        let values = self.string(name)?;
        if let Some(row) = values.iter().position(|v| v.is_empty()) {
            return Err(DataError::cell(self.path, row + 1, name, "empty string"));
        }
        Ok(values)
    }

    fn list<T: ArrowPrimitiveType>(&self, name: &str) -> Result<Vec<Vec<T::Native>>> {
        let col = self.get(name, &list_of(T::DATA_TYPE))?;
        self.no_nulls(name, col.as_ref())?;
        let list = col.as_list::<i32>();
        let mut out = Vec::with_capacity(list.len());
        for i in 0..list.len() {
            let values = list.value(i);
            if values.null_count() > 0 {
                return Err(DataError::cell(
                    self.path,
                    i + 1,
                    name,
                    "null inside the list",
                ));
            }
            out.push(values.as_primitive::<T>().values().to_vec());
        }
        Ok(out)
    }

    pub fn list_u32(&self, name: &str) -> Result<Vec<Vec<u32>>> {
        self.list::<UInt32Type>(name)
    }

    pub fn list_f32(&self, name: &str) -> Result<Vec<Vec<f32>>> {
        self.list::<Float32Type>(name)
    }

    /// Any numeric column as optional f64 (nulls are missing values).
    pub fn opt_f64(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let col = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| DataError::column(self.path, name, "is missing"))?;
        if !col.data_type().is_numeric() {
            return Err(DataError::column(
                self.path,
                name,
                format!(
                    "has type {}, expected a number (Float64)",
                    type_name(col.data_type())
                ),
            ));
        }
        let col = cast(col, &DataType::Float64).map_err(|e| {
            DataError::column(self.path, name, format!("cannot be read as Float64: {e}"))
        })?;
        Ok(col.as_primitive::<Float64Type>().iter().collect())
    }

    /// Ids must be unique within a table: later stages join on them.
    pub fn unique_ids(&self, name: &str) -> Result<Vec<u64>> {
        let ids = self.u64(name)?;
        check_unique_ids(self.path, name, &ids)?;
        Ok(ids)
    }
}

pub fn check_unique_ids(path: &Path, name: &str, ids: &[u64]) -> Result<()> {
    let mut seen: HashMap<u64, usize> = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if let Some(first) = seen.insert(*id, i) {
            return Err(DataError::cell(
                path,
                i + 1,
                name,
                format!("duplicate id {id} (first at row {})", first + 1),
            ));
        }
    }
    Ok(())
}
