//! APPS programming problems in the codeparrot/apps layout:
//! `<root>/train.jsonl(.gz)` (or `train_subset.jsonl`) and optionally
//! `<root>/test.jsonl(.gz)`, one problem per line with `problem_id`,
//! `question`, `solutions` (a JSON string: list of programs), `input_output`
//! (a JSON string: `inputs`, `outputs`, optional `fn_name`), `difficulty`,
//! `url`, `starter_code`.
//!
//! The prompt follows the APPS paper's generation script:
//! `\nQUESTION:\n{question}\n{starter_code}\nUse Call-Based format\nANSWER:\n`
//! (starter code line only when there is starter code; "Use Standard Input
//! format" when the tests have no `fn_name`). The SFT completion is the first
//! reference solution; prompts carry the `input_output` JSON as `tests`.
//! The reward for code is the unit tests, so there are no preference pairs:
//! pairs.parquet is empty and the paper's RM share goes to PPO (20% SFT, 80%
//! PPO).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{assemble, nonempty, Example, Intake, Origin, Plan, PrepareOptions, Prepared, Task};
use crate::error::{DataError, Result};
use crate::raw::{find_file, for_each_json_line, Record};
use crate::split::Split;

pub fn prepare(root: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    let train = find_file(
        root,
        &[
            "train.jsonl.gz",
            "train.jsonl",
            "train_subset.jsonl.gz",
            "train_subset.jsonl",
        ],
    );
    let test = find_file(root, &["test.jsonl.gz", "test.jsonl"]);
    let mut files: Vec<(PathBuf, Origin)> = Vec::new();
    files.extend(train.map(|p| (p, Origin::Train)));
    files.extend(test.map(|p| (p, Origin::Test)));
    if files.is_empty() {
        return Err(DataError::file(
            root,
            "no APPS files found: expected train.jsonl(.gz) (codeparrot/apps layout), optionally test.jsonl(.gz)",
        ));
    }
    let mut intake = Intake::new(Task::Apps, "codeparrot/apps", opts);
    for (path, origin) in &files {
        if intake.full() {
            break;
        }
        intake.source(path);
        for_each_json_line(path, |r| {
            let row = problem(r)?;
            Ok(intake.take(*origin, row))
        })?;
    }
    intake.report.notes.push(
        "no preference pairs: the APPS reward is unit tests; pairs.parquet is empty and the RM share goes to PPO"
            .to_string(),
    );
    let plan = Plan {
        train: vec![(Split::Sft, 0.2), (Split::Rm, 0.0), (Split::Ppo, 0.8)],
        prompts_need_tests: true,
    };
    assemble(intake, opts, &plan, root)
}

/// A field holding JSON inside a string; `""` means absent.
fn embedded_json(r: &Record, field: &str) -> Result<Option<Value>> {
    match r.opt_str(field)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => serde_json::from_str(s)
            .map(Some)
            .map_err(|e| r.error(field, format!("invalid embedded JSON: {e}"))),
    }
}

pub(crate) fn format_prompt(question: &str, starter_code: &str, call_based: bool) -> String {
    let mut prompt = format!("\nQUESTION:\n{question}");
    if !starter_code.trim().is_empty() {
        prompt.push('\n');
        prompt.push_str(starter_code);
    }
    prompt.push_str(if call_based {
        "\nUse Call-Based format"
    } else {
        "\nUse Standard Input format"
    });
    prompt.push_str("\nANSWER:\n");
    prompt
}

fn problem(r: &Record) -> Result<std::result::Result<Example, &'static str>> {
    let question = r.str("question")?;
    let starter = r.opt_str("starter_code")?.unwrap_or("");
    let solution = match embedded_json(r, "solutions")? {
        None => None,
        Some(Value::Array(list)) => match list.first() {
            None => None,
            Some(Value::String(s)) => nonempty(s).map(str::to_string),
            Some(_) => return Err(r.error("solutions", "expected a JSON list of strings")),
        },
        Some(_) => return Err(r.error("solutions", "expected a JSON list of strings")),
    };
    let tests = embedded_json(r, "input_output")?;
    let call_based = match &tests {
        None => false,
        Some(Value::Object(t)) => {
            for key in ["inputs", "outputs"] {
                if !matches!(t.get(key), Some(Value::Array(_))) {
                    return Err(r.error(
                        "input_output",
                        format!("expected a JSON object with an \"{key}\" list"),
                    ));
                }
            }
            t.get("fn_name").is_some_and(|f| !f.is_null())
        }
        Some(_) => return Err(r.error("input_output", "expected a JSON object")),
    };
    if nonempty(question).is_none() {
        return Ok(Err("empty question"));
    }
    let prompt = format_prompt(question, starter, call_based);
    Ok(Ok(Example {
        group: question.trim().to_string(),
        prompt,
        chosen: solution,
        tests: tests.is_some().then(|| {
            r.opt_str("input_output")
                .ok()
                .flatten()
                .unwrap_or("")
                .to_string()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_follows_the_apps_paper() {
        assert_eq!(
            format_prompt("Add two numbers.", "", false),
            "\nQUESTION:\nAdd two numbers.\nUse Standard Input format\nANSWER:\n"
        );
        assert_eq!(
            format_prompt("Is it prime?", "def is_prime(n):\n\t", true),
            "\nQUESTION:\nIs it prime?\ndef is_prime(n):\n\t\nUse Call-Based format\nANSWER:\n"
        );
    }
}
