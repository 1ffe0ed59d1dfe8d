//! The Parquet contract between marlhf stages (see DESIGN.md): typed rows
//! with checked readers and atomic, deterministic writers; the raw-data
//! adapters and the split that prepare uses.

#![forbid(unsafe_code)]

pub mod adapters;
pub mod atomic;
pub mod error;
pub mod page_crc;
pub mod parquet_io;
mod raw;
pub mod seed;
pub mod split;
pub mod stories;
pub mod tables;

pub use adapters::{prepare, write_prepared, PrepareOptions, PrepareReport, Prepared, Task};
pub use error::{DataError, Result};
pub use parquet_io::{read_table, write_table};
pub use split::Split;
pub use tables::*;
