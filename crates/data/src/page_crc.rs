//! Page checksums for the Parquet files marlhf writes.
//!
//! The format gives every page header an optional CRC-32 of the page's
//! bytes as stored (after compression). The `parquet` crate verifies it when
//! reading (its `crc` feature) but does not write it yet, so
//! [`add_page_crcs`] rewrites a file the crate has just written: every
//! column chunk is copied page by page with the CRC added to each header,
//! and spliced into a new file through the crate's own
//! `append_column`, which recomputes the offsets in the footer. The page
//! data, the schema and the key-value metadata are unchanged; the result is
//! as deterministic as the input.
//!
//! Page headers are Thrift compact-protocol structs; the small reader below
//! copies each top-level field verbatim and re-emits the field headers with
//! field 4 (`crc`) among them.

use std::sync::Arc;

use bytes::Bytes;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

/// Thrift compact-protocol type ids.
const T_STOP: u8 = 0;
const T_BOOL_TRUE: u8 = 1;
const T_BOOL_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_I16: u8 = 4;
const T_I32: u8 = 5;
const T_I64: u8 = 6;
const T_DOUBLE: u8 = 7;
const T_BINARY: u8 = 8;
const T_LIST: u8 = 9;
const T_SET: u8 = 10;
const T_MAP: u8 = 11;
const T_STRUCT: u8 = 12;

/// PageHeader field ids (parquet.thrift).
const FIELD_TYPE: i16 = 1;
const FIELD_COMPRESSED_SIZE: i16 = 3;
const FIELD_CRC: i16 = 4;
/// PageType values.
const DICTIONARY_PAGE: i64 = 2;

fn corrupt(what: &str) -> ParquetError {
    ParquetError::General(format!("damaged column chunk: {what}"))
}

/// A cursor over Thrift compact-protocol bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| corrupt("page header ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("varint too long"))
    }

    fn zigzag(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        if self.at + n > self.bytes.len() {
            return Err(corrupt("page header ends early"));
        }
        self.at += n;
        Ok(())
    }

    /// Skips one value of type `t` as it appears in a list (where a bool is
    /// one byte).
    fn skip_value(&mut self, t: u8, depth: usize) -> Result<()> {
        if depth > 32 {
            return Err(corrupt("page header nested too deeply"));
        }
        match t {
            T_BOOL_TRUE | T_BOOL_FALSE | T_BYTE => self.skip(1),
            T_I16 | T_I32 | T_I64 => self.varint().map(drop),
            T_DOUBLE => self.skip(8),
            T_BINARY => {
                let n = self.varint()? as usize;
                self.skip(n)
            }
            T_LIST | T_SET => {
                let head = self.byte()?;
                let n = match head >> 4 {
                    15 => self.varint()? as usize,
                    n => n as usize,
                };
                for _ in 0..n {
                    self.skip_value(head & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            T_MAP => {
                let n = self.varint()? as usize;
                if n > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..n {
                        self.skip_value(kinds >> 4, depth + 1)?;
                        self.skip_value(kinds & 0x0f, depth + 1)?;
                    }
                }
                Ok(())
            }
            T_STRUCT => {
                let mut last = 0i16;
                while let Some((_, t)) = self.field_header(&mut last)? {
                    self.skip_field(t, depth + 1)?;
                }
                Ok(())
            }
            other => Err(corrupt(&format!("unknown Thrift type {other}"))),
        }
    }

    /// Skips a struct field's value: a bool field has none (its value is in
    /// the field header's type).
    fn skip_field(&mut self, t: u8, depth: usize) -> Result<()> {
        match t {
            T_BOOL_TRUE | T_BOOL_FALSE => Ok(()),
            t => self.skip_value(t, depth),
        }
    }

    /// The next field's id and type, or `None` at the end of the struct.
    fn field_header(&mut self, last: &mut i16) -> Result<Option<(i16, u8)>> {
        let b = self.byte()?;
        let t = b & 0x0f;
        if t == T_STOP {
            return Ok(None);
        }
        let id = match b >> 4 {
            0 => self.zigzag()? as i16,
            delta => *last + i16::from(delta),
        };
        *last = id;
        Ok(Some((id, t)))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// One page header re-encoded with `crc`, the page's size (stored) and
/// whether it is a dictionary page.
struct Header {
    bytes: Vec<u8>,
    page_size: usize,
    dictionary: bool,
}

/// Reads the page header at the start of `bytes` and re-encodes it with a
/// CRC of the page that follows; returns it and the old header's length.
fn rewrite_header(bytes: &[u8]) -> Result<(Header, usize)> {
    let mut c = Cursor { bytes, at: 0 };
    // (id, type, the value's bytes); a bool's value is its type.
    let mut fields: Vec<(i16, u8, &[u8])> = Vec::new();
    let mut last = 0i16;
    let (mut page_type, mut page_size) = (None, None);
    while let Some((id, t)) = c.field_header(&mut last)? {
        let start = c.at;
        if (id == FIELD_TYPE || id == FIELD_COMPRESSED_SIZE) && t == T_I32 {
            let v = c.zigzag()?;
            if id == FIELD_TYPE {
                page_type = Some(v);
            } else {
                page_size = Some(v);
            }
        } else {
            c.skip_field(t, 0)?;
        }
        fields.push((id, t, &bytes[start..c.at]));
    }
    let header_len = c.at;
    let page_size = page_size
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| corrupt("page header without a size"))?;
    let page = bytes
        .get(header_len..header_len + page_size)
        .ok_or_else(|| corrupt("page runs past its column chunk"))?;
    let crc = crc32fast::hash(page) as i32;
    let mut crc_bytes = Vec::new();
    put_zigzag(&mut crc_bytes, i64::from(crc));
    fields.retain(|(id, _, _)| *id != FIELD_CRC);
    fields.push((FIELD_CRC, T_I32, &crc_bytes));
    fields.sort_by_key(|(id, _, _)| *id);

    let mut out = Vec::with_capacity(header_len + 6);
    let mut last = 0i16;
    for (id, t, value) in fields {
        let delta = id - last;
        if (1..=15).contains(&delta) {
            out.push(((delta as u8) << 4) | t);
        } else {
            out.push(t);
            put_zigzag(&mut out, i64::from(id));
        }
        out.extend_from_slice(value);
        last = id;
    }
    out.push(T_STOP);
    Ok((
        Header {
            bytes: out,
            page_size,
            dictionary: page_type == Some(DICTIONARY_PAGE),
        },
        header_len,
    ))
}

/// A column chunk's pages with checksums, and the offset of its first data
/// page within the new chunk.
fn rewrite_chunk(chunk: &[u8]) -> Result<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(chunk.len() + 64);
    let mut at = 0;
    let mut first_data = None;
    while at < chunk.len() {
        let (header, old_len) = rewrite_header(&chunk[at..])?;
        if !header.dictionary && first_data.is_none() {
            first_data = Some(out.len());
        }
        out.extend_from_slice(&header.bytes);
        let page = at + old_len;
        out.extend_from_slice(&chunk[page..page + header.page_size]);
        at = page + header.page_size;
    }
    let first_data = first_data.ok_or_else(|| corrupt("a column chunk without data pages"))?;
    Ok((out, first_data))
}

/// `file` (a complete Parquet file written with `props`) with a CRC in
/// every page header.
pub fn add_page_crcs(file: Vec<u8>, props: WriterProperties) -> Result<Vec<u8>> {
    let file = Bytes::from(file);
    let meta: ParquetMetaData = ParquetMetaDataReader::new().parse_and_finish(&file)?;
    let props = WriterProperties::into_builder(props)
        .set_key_value_metadata(meta.file_metadata().key_value_metadata().cloned())
        .build();
    let schema = meta.file_metadata().schema_descr().root_schema_ptr();
    let mut out = Vec::with_capacity(file.len() + 1024);
    let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(props))?;
    for group in meta.row_groups() {
        let mut rows = writer.next_row_group()?;
        for column in group.columns() {
            let (start, len) = column.byte_range();
            let chunk = file
                .get(start as usize..(start + len) as usize)
                .ok_or_else(|| corrupt("column chunk outside the file"))?;
            let (pages, first_data) = rewrite_chunk(chunk)?;
            let metadata = column
                .clone()
                .into_builder()
                .set_total_compressed_size(pages.len() as i64)
                .set_dictionary_page_offset(column.dictionary_page_offset().map(|_| 0))
                .set_data_page_offset(first_data as i64)
                .set_index_page_offset(None)
                .set_offset_index_offset(None)
                .set_offset_index_length(None)
                .set_column_index_offset(None)
                .set_column_index_length(None)
                .set_bloom_filter_offset(None)
                .set_bloom_filter_length(None)
                .build()?;
            let close = ColumnCloseResult {
                bytes_written: pages.len() as u64,
                rows_written: group.num_rows() as u64,
                metadata,
                bloom_filter: None,
                column_index: None,
                offset_index: None,
            };
            rows.append_column(&Bytes::from(pages), close)?;
        }
        rows.close()?;
    }
    writer.close()?;
    Ok(out)
}

/// Checks every page checksum `file` has: the first mismatch, as "column
/// `name`, page N: …", when a page's bytes are not the ones written.
/// Pages without a checksum (other writers) pass.
pub fn verify_page_crcs(file: &[u8]) -> std::result::Result<(), String> {
    let pages = page_crcs(file).map_err(|e| e.to_string())?;
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for (column, stored, computed) in pages {
        let n = seen.entry(column.clone()).or_default();
        *n += 1;
        if stored.is_some_and(|c| c != computed) {
            return Err(format!(
                "column `{column}`, page {n}: page checksum mismatch (the bytes are damaged)"
            ));
        }
    }
    Ok(())
}

/// Every page of `file`: its column, its CRC as stored and as computed.
pub fn page_crcs(file: &[u8]) -> Result<Vec<(String, Option<i32>, i32)>> {
    let bytes = Bytes::copy_from_slice(file);
    let meta = ParquetMetaDataReader::new().parse_and_finish(&bytes)?;
    let mut found = Vec::new();
    for group in meta.row_groups() {
        for column in group.columns() {
            let (start, len) = column.byte_range();
            let chunk = file
                .get(start as usize..(start + len) as usize)
                .ok_or_else(|| corrupt("column chunk outside the file"))?;
            let name = column.column_path().string();
            let mut at = 0;
            while at < chunk.len() {
                let mut c = Cursor {
                    bytes: &chunk[at..],
                    at: 0,
                };
                let mut last = 0i16;
                let (mut crc, mut size) = (None, 0usize);
                while let Some((id, t)) = c.field_header(&mut last)? {
                    match (id, t) {
                        (FIELD_CRC, T_I32) => crc = Some(c.zigzag()? as i32),
                        (FIELD_COMPRESSED_SIZE, T_I32) => size = c.zigzag()? as usize,
                        _ => c.skip_field(t, 0)?,
                    }
                }
                let page = chunk
                    .get(at + c.at..at + c.at + size)
                    .ok_or_else(|| corrupt("page runs past its column chunk"))?;
                found.push((name.clone(), crc, crc32fast::hash(page) as i32));
                at += c.at + size;
            }
        }
    }
    Ok(found)
}
