//! OpenAI WebGPT comparisons (`<root>/*.jsonl(.gz)`, the
//! openai/webgpt_comparisons layout): `question` {`full_text`, ...},
//! `quotes_0`/`quotes_1` {`title`: [...], `extract`: [...]}, `answer_0`/
//! `answer_1`, `score_0`/`score_1`. The higher score is preferred; ties are
//! dropped and counted.
//!
//! Each answer was written from its own browsing quotes, but a pair needs one
//! prompt, so the prompt carries both answers' quotes (deduplicated, answer 0's
//! first):
//!
//! ```text
//! Question: {question}
//!
//! Quotes:
//! [1] {title}
//! {extract}
//!
//! [2] ...
//!
//! Answer:
//! ```
//!
//! (`Quotes:` and its list are left out when there are none.) The answer
//! follows with a single leading space. Rows split by question.

use std::path::Path;

use serde_json::Value;

use super::{assemble, nonempty, Example, Intake, Origin, Plan, PrepareOptions, Prepared, Task};
use crate::error::{DataError, Result};
use crate::raw::{for_each_json_line, is_json_lines, list_files, Record};

pub fn prepare(root: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    if !root.is_dir() {
        return Err(DataError::file(
            root,
            "directory not found: expected webgpt_comparisons *.jsonl(.gz)",
        ));
    }
    let files = list_files(root, is_json_lines)?;
    if files.is_empty() {
        return Err(DataError::file(
            root,
            "no WebGPT comparison files (*.jsonl, optionally .gz)",
        ));
    }
    let mut intake = Intake::new(Task::Webgpt, "webgpt_comparisons", opts);
    for path in &files {
        if intake.full() {
            break;
        }
        intake.source(path);
        for_each_json_line(path, |r| {
            let row = comparison(r)?;
            Ok(intake.take(Origin::Unsplit, row))
        })?;
    }
    assemble(intake, opts, &Plan::default(), root)
}

type Quote = (String, String);

/// The quotes of one answer, as `{title: [..], extract: [..]}` (the
/// published columnar form) or `[{title, extract}, ..]`.
fn quotes(r: &Record, field: &str) -> Result<Vec<Quote>> {
    let strings = |v: &Value, name: &str| -> Result<Vec<String>> {
        match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(r.error(name, "expected an array of strings")),
                })
                .collect(),
            _ => Err(r.error(name, "expected an array of strings")),
        }
    };
    match r.value(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(_)) => {
            let q = r.object(field)?;
            let titles = strings(
                q.value("title").unwrap_or(&Value::Array(vec![])),
                &format!("{field}.title"),
            )?;
            let extracts = strings(
                q.value("extract").unwrap_or(&Value::Array(vec![])),
                &format!("{field}.extract"),
            )?;
            if titles.len() != extracts.len() {
                return Err(r.error(
                    field,
                    format!("{} titles but {} extracts", titles.len(), extracts.len()),
                ));
            }
            Ok(titles.into_iter().zip(extracts).collect())
        }
        Some(Value::Array(items)) => (0..items.len())
            .map(|i| {
                let q = r.element(field, i)?;
                Ok((
                    q.opt_str("title")?.unwrap_or("").to_string(),
                    q.str("extract")?.to_string(),
                ))
            })
            .collect(),
        Some(_) => Err(r.error(field, "expected an object or an array of quotes")),
    }
}

pub(crate) fn format_prompt(question: &str, quotes: &[Quote]) -> String {
    let mut prompt = format!("Question: {}\n\n", question.trim());
    if !quotes.is_empty() {
        prompt.push_str("Quotes:\n");
        for (i, (title, extract)) in quotes.iter().enumerate() {
            prompt.push_str(&format!(
                "[{}] {}\n{}\n\n",
                i + 1,
                title.trim(),
                extract.trim()
            ));
        }
    }
    prompt.push_str("Answer:");
    prompt
}

fn comparison(r: &Record) -> Result<std::result::Result<Example, &'static str>> {
    let question = r.object("question")?.str("full_text")?;
    let answers = [r.str("answer_0")?, r.str("answer_1")?];
    let scores = [r.f64("score_0")?, r.f64("score_1")?];
    let mut all_quotes = quotes(r, "quotes_0")?;
    for q in quotes(r, "quotes_1")? {
        if !all_quotes.contains(&q) {
            all_quotes.push(q);
        }
    }
    if nonempty(question).is_none() {
        return Ok(Err("empty question"));
    }
    if scores[0] == scores[1] {
        return Ok(Err("tied scores"));
    }
    if answers.iter().any(|a| nonempty(a).is_none()) {
        return Ok(Err("empty answer"));
    }
    let (best, other) = if scores[0] > scores[1] {
        (0, 1)
    } else {
        (1, 0)
    };
    let chosen = format!(" {}", answers[best].trim());
    Ok(Ok(Example {
        group: question.trim().to_string(),
        prompt: format_prompt(question, &all_quotes),
        reference: Some(chosen.clone()),
        chosen: Some(chosen),
        rejected: Some(format!(" {}", answers[other].trim())),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lists_quotes_then_asks_for_the_answer() {
        assert_eq!(
            format_prompt(
                " Why? ",
                &[("T1".into(), "E1".into()), ("T2".into(), " E2\n".into())]
            ),
            "Question: Why?\n\nQuotes:\n[1] T1\nE1\n\n[2] T2\nE2\n\nAnswer:"
        );
        assert_eq!(format_prompt("Why?", &[]), "Question: Why?\n\nAnswer:");
    }
}
