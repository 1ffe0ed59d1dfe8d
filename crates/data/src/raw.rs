//! Reading raw datasets as published: JSON lines, gzipped or not, with every
//! problem reported by file, line and field.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};

use crate::error::{DataError, Result};

/// Opens a text file, transparently gunzipping it when it starts with the
/// gzip magic bytes (whatever its name says).
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::file(path, "file not found"),
        _ => DataError::file(path, format!("cannot open: {e}")),
    })?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
    let file = File::open(path).map_err(|e| DataError::file(path, format!("cannot open: {e}")))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(file))))
    } else if path.extension().is_some_and(|e| e == "gz") {
        Err(DataError::file(
            path,
            "not gzip data, although the name ends in .gz (a truncated or mislabelled download?)",
        ))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// The first of `names` that exists in `dir`.
pub(crate) fn find_file(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Files in `dir` (sorted by name, for a stable read order) accepted by `keep`.
pub(crate) fn list_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| DataError::file(dir, format!("cannot list: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::file(dir, format!("cannot list: {e}")))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_file() && !name.starts_with('.') && keep(&name) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a file name looks like JSON lines (optionally gzipped).
pub(crate) fn is_json_lines(name: &str) -> bool {
    let base = name.strip_suffix(".gz").unwrap_or(name);
    base.ends_with(".jsonl") || base.ends_with(".json")
}

/// Sorted subdirectories of `dir`.
pub(crate) fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| DataError::file(dir, format!("cannot list: {e}")))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| DataError::file(dir, format!("cannot list: {e}")))?
            .path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Calls `each` with every JSON object of a JSON-lines file, in order, until
/// it returns `Ok(false)`. Blank lines are skipped. A file without a single
/// record is an error: an empty download is never a dataset.
pub(crate) fn for_each_json_line(
    path: &Path,
    mut each: impl FnMut(&Record) -> Result<bool>,
) -> Result<()> {
    let mut reader = open_text(path)?;
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut records = 0usize;
    loop {
        buf.clear();
        line += 1;
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::line(path, line, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        let text = std::str::from_utf8(&buf).map_err(|e| {
            DataError::line(
                path,
                line,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
            )
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| DataError::line(path, line, format!("invalid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(DataError::line(
                path,
                line,
                format!("expected a JSON object, found {}", kind(&value)),
            ));
        };
        records += 1;
        let record = Record {
            path,
            line,
            prefix: String::new(),
            map: &map,
        };
        if !each(&record)? {
            return Ok(());
        }
    }
    if records == 0 {
        return Err(DataError::file(path, "empty dataset: no JSON records"));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One JSON object (or a nested object within one) with typed field access
/// whose errors name the file, the line and the (dotted) field.
pub(crate) struct Record<'a> {
    path: &'a Path,
    line: usize,
    prefix: String,
    map: &'a Map<String, Value>,
}

impl<'a> Record<'a> {
    pub fn line(&self) -> usize {
        self.line
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    pub fn error(&self, field: &str, message: impl Into<String>) -> DataError {
        DataError::field(self.path, self.line, &self.name(field), message)
    }

    fn required(&self, field: &str) -> Result<&'a Value> {
        match self.map.get(field) {
            None => Err(self.error(field, "missing")),
            Some(Value::Null) => Err(self.error(field, "is null")),
            Some(v) => Ok(v),
        }
    }

    fn wrong(&self, field: &str, want: &str, v: &Value) -> DataError {
        self.error(field, format!("expected {want}, found {}", kind(v)))
    }

    pub fn str(&self, field: &str) -> Result<&'a str> {
        match self.required(field)? {
            Value::String(s) => Ok(s),
            v => Err(self.wrong(field, "a string", v)),
        }
    }

    /// Absent and null both mean "not given".
    pub fn opt_str(&self, field: &str) -> Result<Option<&'a str>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(field, "a string", v)),
        }
    }

    pub fn f64(&self, field: &str) -> Result<f64> {
        match self.required(field)? {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| self.error(field, "number out of range")),
            v => Err(self.wrong(field, "a number", v)),
        }
    }

    pub fn array(&self, field: &str) -> Result<&'a Vec<Value>> {
        match self.required(field)? {
            Value::Array(a) => Ok(a),
            v => Err(self.wrong(field, "an array", v)),
        }
    }

    pub fn value(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }

    pub fn object(&self, field: &str) -> Result<Record<'a>> {
        match self.required(field)? {
            Value::Object(map) => Ok(self.nested(&self.name(field), map)),
            v => Err(self.wrong(field, "an object", v)),
        }
    }

    /// A view of an object found inside this one (e.g. an array element),
    /// named `path` in errors.
    pub fn nested(&self, path: &str, map: &'a Map<String, Value>) -> Record<'a> {
        Record {
            path: self.path,
            line: self.line,
            prefix: format!("{path}."),
            map,
        }
    }

    /// The element `i` of array `field`, which must be an object.
    pub fn element(&self, field: &str, i: usize) -> Result<Record<'a>> {
        let name = format!("{field}[{i}]");
        match self.array(field)?.get(i) {
            Some(Value::Object(map)) => Ok(self.nested(&self.name(&name), map)),
            Some(v) => Err(self.wrong(&name, "an object", v)),
            None => Err(self.error(&name, "missing")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlhf_testkit::TempDir;
    use std::io::Write;

    fn collect(path: &Path) -> Result<Vec<(usize, String)>> {
        let mut out = Vec::new();
        for_each_json_line(path, |r| {
            out.push((r.line(), r.str("a")?.to_string()));
            Ok(true)
        })?;
        Ok(out)
    }

    #[test]
    fn reads_plain_and_gzipped_lines_with_line_numbers() {
        let dir = TempDir::new("raw");
        let text = "{\"a\": \"x\"}\n\n{\"a\": \"y\"}\n";
        let plain = dir.path().join("p.jsonl");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("g.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let want = vec![(1, "x".to_string()), (3, "y".to_string())];
        assert_eq!(collect(&plain).unwrap(), want);
        assert_eq!(collect(&gz).unwrap(), want);
        // Issue 13, item 9: a .gz that is not gzip says so, not "invalid UTF-8".
        let fake = dir.path().join("f.jsonl.gz");
        std::fs::write(&fake, [0x50u8, 0x4b, 0x03, 0x04, 0xff, 0xfe]).unwrap();
        assert_eq!(
            collect(&fake).unwrap_err().to_string(),
            format!(
                "{}: not gzip data, although the name ends in .gz (a truncated or mislabelled download?)",
                fake.display()
            )
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = TempDir::new("raw-bad");
        let p = dir.path().join("f.jsonl");
        let check = |bytes: &[u8], want: &str| {
            std::fs::write(&p, bytes).unwrap();
            let err = collect(&p).unwrap_err().to_string();
            let shown = err
                .strip_prefix(&format!("{}: ", p.display()))
                .unwrap()
                .to_string();
            assert!(shown.starts_with(want), "{shown}");
        };
        check(b"{\"a\":\"x\"}\n{\"a\": \n", "line 2: invalid JSON: ");
        check(
            b"{\"a\":\"x\"}\n{\"a\":\"\xff\"}\n",
            "line 2: invalid UTF-8 at byte 7 of the line",
        );
        check(b"[1]\n", "line 1: expected a JSON object, found an array");
        check(b"{\"b\":1}\n", "line 1, field \"a\": missing");
        check(
            b"{\"a\":1}\n",
            "line 1, field \"a\": expected a string, found a number",
        );
        check(b"\n\n", "empty dataset: no JSON records");
    }

    #[test]
    fn nested_fields_are_named_with_their_path() {
        let dir = TempDir::new("raw-nested");
        let p = dir.path().join("f.jsonl");
        std::fs::write(
            &p,
            "{\"info\": {\"post\": 3}, \"s\": [{\"text\": \"t\"}, 5]}\n",
        )
        .unwrap();
        let mut errs = Vec::new();
        for_each_json_line(&p, |r| {
            errs.push(r.object("info")?.str("post").unwrap_err().to_string());
            assert_eq!(r.element("s", 0)?.str("text")?, "t");
            errs.push(r.element("s", 1).err().unwrap().to_string());
            errs.push(r.element("s", 2).err().unwrap().to_string());
            Ok(true)
        })
        .unwrap();
        let pre = format!("{}: line 1, ", p.display());
        assert_eq!(
            errs[0],
            format!("{pre}field \"info.post\": expected a string, found a number")
        );
        assert_eq!(
            errs[1],
            format!("{pre}field \"s[1]\": expected an object, found a number")
        );
        assert_eq!(errs[2], format!("{pre}field \"s[2]\": missing"));
    }

    #[test]
    fn missing_file_is_named() {
        let err = collect(Path::new("no/such.jsonl")).unwrap_err();
        assert_eq!(err.to_string(), "no/such.jsonl: file not found");
    }
}
