//! One error type for everything that reads or writes data, so every message
//! a user sees names the file and, where known, the line or row (1-based) and
//! the column or field at fault.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a file an error sits. Lines are for text inputs (JSON lines),
/// rows for tables (Parquet); both count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Line(usize),
    Row(usize),
}

/// What part of a record an error concerns: a Parquet column or a JSON field
/// (dotted for nested fields, e.g. `info.post`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Column(String),
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DataError {
    path: Option<PathBuf>,
    position: Option<Position>,
    key: Option<Key>,
    message: String,
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    fn new(
        path: Option<&Path>,
        position: Option<Position>,
        key: Option<Key>,
        message: String,
    ) -> Self {
        Self {
            path: path.map(Path::to_path_buf),
            position,
            key,
            message,
        }
    }

    /// An error about a file as a whole: `path: message`.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::new(Some(path), None, None, message.into())
    }

    /// `path: line N: message`.
    pub fn line(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self::new(Some(path), Some(Position::Line(line)), None, message.into())
    }

    /// `path: line N, field "f": message`.
    pub fn field(path: &Path, line: usize, field: &str, message: impl Into<String>) -> Self {
        Self::new(
            Some(path),
            Some(Position::Line(line)),
            Some(Key::Field(field.to_string())),
            message.into(),
        )
    }

    /// `path: row N: message`.
    pub fn row(path: &Path, row: usize, message: impl Into<String>) -> Self {
        Self::new(Some(path), Some(Position::Row(row)), None, message.into())
    }

    /// `path: row N, column "c": message`.
    pub fn cell(path: &Path, row: usize, column: &str, message: impl Into<String>) -> Self {
        Self::new(
            Some(path),
            Some(Position::Row(row)),
            Some(Key::Column(column.to_string())),
            message.into(),
        )
    }

    /// `path: column "c" <predicate>`, e.g. predicate `is missing`.
    pub fn column(path: &Path, column: &str, predicate: impl Into<String>) -> Self {
        Self::new(
            Some(path),
            None,
            Some(Key::Column(column.to_string())),
            predicate.into(),
        )
    }

    /// An error about the caller's options rather than a file.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(None, None, None, message.into())
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}: ", path.display())?;
        }
        let position = self.position.as_ref().map(|p| match p {
            Position::Line(n) => format!("line {n}"),
            Position::Row(n) => format!("row {n}"),
        });
        let key = self.key.as_ref().map(|k| match k {
            Key::Column(c) => format!("column \"{c}\""),
            Key::Field(c) => format!("field \"{c}\""),
        });
        match (position, key) {
            (Some(p), Some(k)) => write!(f, "{p}, {k}: {}", self.message),
            (Some(p), None) => write!(f, "{p}: {}", self.message),
            // A bare column reads as a sentence: `column "chosen" is missing`.
            (None, Some(k)) => write!(f, "{k} {}", self.message),
            (None, None) => write!(f, "{}", self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_position_and_key() {
        let p = Path::new("data/pairs.parquet");
        assert_eq!(
            DataError::column(p, "chosen", "is missing").to_string(),
            "data/pairs.parquet: column \"chosen\" is missing"
        );
        assert_eq!(
            DataError::cell(p, 5, "prompt", "empty string").to_string(),
            "data/pairs.parquet: row 5, column \"prompt\": empty string"
        );
        let j = Path::new("hh-rlhf/helpful-base/test.jsonl.gz");
        assert_eq!(
            DataError::line(j, 17, "invalid JSON: EOF").to_string(),
            "hh-rlhf/helpful-base/test.jsonl.gz: line 17: invalid JSON: EOF"
        );
        assert_eq!(
            DataError::field(j, 3, "chosen", "is missing").to_string(),
            "hh-rlhf/helpful-base/test.jsonl.gz: line 3, field \"chosen\": is missing"
        );
        assert_eq!(DataError::invalid("bad option").to_string(), "bad option");
    }

    #[test]
    fn converts_into_anyhow_keeping_the_message() {
        let e: anyhow::Error = DataError::row(Path::new("x.parquet"), 2, "boom").into();
        assert_eq!(e.to_string(), "x.parquet: row 2: boom");
    }
}
