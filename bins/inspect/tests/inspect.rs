//! Runs the binary on a small Parquet file written by polars and checks the
//! printed figures against values computed by hand.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_marlhf-inspect"))
}

/// A temporary directory, removed when the test ends (pass or fail).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("marlhf-inspect-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 126 chars: the newlines must show as `⏎` and the middle must be elided.
fn long_text() -> String {
    format!("Tell me a story.\n{}\nThe end.", "a".repeat(100))
}

fn write_fixture(path: &Path) {
    let u32s = |v: &[u32]| Series::new("".into(), v);
    let f32s = |v: &[f32]| Series::new("".into(), v);
    let mut df = df!(
        "id" => [10u64, 11, 12, 13],
        "prompt" => ["Hello".to_string(), String::new(), long_text(), "Hello".to_string()],
        "score" => [0.5f32, f32::NAN, -1.5, 2.5],
        "finished" => [Some(true), None, Some(false), Some(true)],
        "tokens" => [
            u32s(&[1, 2, 3]),
            u32s(&[]),
            u32s(&[4]),
            u32s(&(5..=20).collect::<Vec<_>>()),
        ],
        "logprobs" => [
            f32s(&[-0.5, -1.0, 0.0]),
            f32s(&[]),
            f32s(&[f32::NAN]),
            f32s(&[0.25, -0.75]),
        ],
    )
    .unwrap();
    ParquetWriter::new(File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_has(lines: &[String], want: &str) {
    assert!(
        lines.iter().any(|l| l == want),
        "missing line {want:?} in:\n{}",
        lines.join("\n")
    );
}

#[test]
fn summarises_every_column_kind() {
    let dir = Scratch::new("summary");
    let file = dir.join("rollouts.parquet");
    write_fixture(&file);
    let size = std::fs::metadata(&file).unwrap().len();
    let lines = stdout_lines(&run(&[
        file.to_str().unwrap(),
        "--rows",
        "3",
        "--width",
        "40",
    ]));

    assert_has(&lines, &format!("file     {}", file.display()));
    // Polars' writer decides the exact size; the line must state it in bytes.
    let size_line = lines.iter().find(|l| l.starts_with("size ")).unwrap();
    assert!(
        size_line.ends_with(&format!(" KiB ({size} bytes)")),
        "{size_line}"
    );
    assert_has(&lines, "rows     4");
    assert_has(&lines, "columns  6");

    // Schema: name, dtype, null count.
    assert_has(&lines, "  column    dtype      nulls");
    assert_has(&lines, "  id        u64        0");
    assert_has(&lines, "  finished  bool       1");
    assert_has(&lines, "  tokens    list[u32]  0");
    assert_has(&lines, "  logprobs  list[f32]  0");

    // ids 10..=13: sample variance 5/3, std 1.290994...
    assert_has(&lines, "  id        min 10  max 13  mean 11.5  std 1.29099");
    // Lengths 5, 0, 126, 5.
    assert_has(
        &lines,
        "  prompt    chars min 0  mean 34  max 126  empty 1  distinct 3",
    );
    // 0.5, -1.5, 2.5 and a NaN: sample variance (0 + 4 + 4) / 2 = 4.
    assert_has(
        &lines,
        "  score     min -1.5  max 2.5  mean 0.5  std 2  NaN 1",
    );
    assert_has(&lines, "  finished  true 2  false 1");
    // Lengths sorted 0, 1, 3, 16: nearest-rank p50 = 2nd, p90 = 4th.
    assert_has(
        &lines,
        "  tokens    lengths min 0  p50 1  p90 16  max 16  mean 5  empty 1",
    );
    assert_has(&lines, "            values  min 1  mean 10.5  max 20");
    // Lengths 0, 1, 2, 3; values -0.5 -1 0 0.25 -0.75 (sum -2) and a NaN.
    assert_has(
        &lines,
        "  logprobs  lengths min 0  p50 1  p90 3  max 3  mean 1.5  empty 1",
    );
    assert_has(
        &lines,
        "            values  min -1  mean -0.4  max 0.25  NaN 1",
    );

    // Row preview.
    assert_has(&lines, "first 3 of 4 rows");
    assert_has(&lines, "  row 0");
    assert_has(&lines, "    tokens    [1, 2, 3]");
    assert_has(&lines, "    logprobs  [-0.5, -1, 0]");
    assert_has(&lines, "    prompt    \"\"");
    assert_has(&lines, "    tokens    []");
    assert_has(&lines, "    finished  null");
    assert_has(&lines, "    score     NaN");
    assert_has(&lines, "    logprobs  [NaN]");
    // 40 chars: the first 20, `…`, the last 19.
    let short = "    prompt    Tell me a story.⏎aaa…aaaaaaaaaa⏎The end.";
    assert_has(&lines, short);
    assert_eq!(
        short.trim_start_matches("    prompt    ").chars().count(),
        40
    );
    assert!(!lines.iter().any(|l| l.starts_with("  row 3")));
}

#[test]
fn long_lists_end_with_their_item_count() {
    let dir = Scratch::new("lists");
    let file = dir.join("rollouts.parquet");
    write_fixture(&file);
    let lines = stdout_lines(&run(&[
        file.to_str().unwrap(),
        "--width",
        "40",
        "--column",
        "tokens",
    ]));
    assert_has(&lines, "all 4 rows");
    assert_has(&lines, "    tokens  [5, 6, 7, 8, 9, 10, 11, … (16 items)]");
}

#[test]
fn column_selection_keeps_the_given_order() {
    let dir = Scratch::new("select");
    let file = dir.join("rollouts.parquet");
    write_fixture(&file);
    let lines = stdout_lines(&run(&[
        file.to_str().unwrap(),
        "-c",
        "score",
        "-c",
        "id",
        "-n",
        "0",
    ]));
    assert_has(&lines, "columns  2 of 6");
    let schema: Vec<&String> = lines
        .iter()
        .skip_while(|l| *l != "schema")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        schema,
        [
            "  column  dtype  nulls",
            "  score   f32    0",
            "  id      u64    0"
        ]
    );
    assert!(!lines.iter().any(|l| l.contains("prompt")));
    assert!(!lines.iter().any(|l| l.starts_with("  row ")));
}

#[test]
fn empty_file_has_schema_but_no_rows() {
    let dir = Scratch::new("empty");
    let file = dir.join("segments.parquet");
    let empty = |name: &str, dtype: DataType| Series::new_empty(name.into(), &dtype).into_column();
    let mut df = DataFrame::new(
        0,
        vec![
            empty("id", DataType::UInt64),
            empty("termination", DataType::String),
            empty("starts", DataType::List(Box::new(DataType::UInt32))),
        ],
    )
    .unwrap();
    ParquetWriter::new(File::create(&file).unwrap())
        .finish(&mut df)
        .unwrap();
    let lines = stdout_lines(&run(&[file.to_str().unwrap()]));
    assert_has(&lines, "rows     0");
    assert_has(&lines, "  id           u64        0");
    assert_has(&lines, "  starts       list[u32]  0");
    assert_has(&lines, "  starts       no non-null values");
    assert!(!lines.iter().any(|l| l.starts_with("  row ")));
}

fn assert_fails(args: &[&str], want: &str) {
    let out = run(args);
    assert_eq!(out.status.code(), Some(1), "args {args:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, format!("error: {want}\n"));
}

#[test]
fn bad_input_is_one_error_line() {
    let dir = Scratch::new("errors");
    let missing = dir.join("missing.parquet");
    assert_fails(
        &[missing.to_str().unwrap()],
        &format!(
            "cannot open `{}`: No such file or directory (os error 2)",
            missing.display()
        ),
    );

    let csv = dir.join("pairs.csv");
    std::fs::write(&csv, "id,prompt\n1,hello\n").unwrap();
    assert_fails(
        &[csv.to_str().unwrap()],
        &format!(
            "`{}` is not a Parquet file: it does not start with the PAR1 magic bytes",
            csv.display()
        ),
    );

    let tiny = dir.join("tiny.parquet");
    std::fs::write(&tiny, "PAR1").unwrap();
    assert_fails(
        &[tiny.to_str().unwrap()],
        &format!(
            "`{}` is not a Parquet file: only 4 bytes; a Parquet file has at least 12",
            tiny.display()
        ),
    );

    let good = dir.join("rollouts.parquet");
    write_fixture(&good);
    let truncated = dir.join("truncated.parquet");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(
        &[truncated.to_str().unwrap()],
        &format!(
            "`{}` is not a Parquet file: it does not end with the PAR1 magic bytes (truncated?)",
            truncated.display()
        ),
    );

    assert_fails(
        &[good.to_str().unwrap(), "--column", "scor"],
        &format!(
            "`{}`: unknown column `scor` (columns: id, prompt, score, finished, tokens, logprobs)",
            good.display()
        ),
    );

    assert_fails(
        &[dir.0.to_str().unwrap()],
        &format!("`{}` is not a file", dir.0.display()),
    );
}

#[test]
fn help_shows_defaults() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("[default: 5]"), "{help}");
    assert!(help.contains("[default: 80]"), "{help}");
    assert!(help.contains("--column <NAME>"), "{help}");
}
