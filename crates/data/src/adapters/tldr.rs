//! Reddit TL;DR summarisation, in either published layout:
//!
//! - `<root>/comparisons/*.json(l)(.gz)`: OpenAI summarize-from-feedback
//!   human comparisons, one per line: `info` {`post`, `title`, `subreddit`,
//!   ...}, `summaries` [{`text`, `policy`}, ...], `choice` (index of the
//!   preferred summary), optionally `split` (`train`, `valid1`, `valid2`,
//!   `test`). Used when present, as it holds real human preferences.
//! - `<root>/samples_with_human_reference.jsonl(.gz)`: `query` (the formatted
//!   post ending in `TL;DR:`), `reference_response` (human-written) and
//!   `policy_sample` (a PPO policy's sample). Without human comparisons the
//!   pairs prefer the human reference over the policy sample.
//!
//! The prompt is `SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:`
//! (already so formatted in `query`); summaries follow it with a leading space.

use std::path::Path;

use super::{
    after_prompt, assemble, nonempty, Example, Intake, Origin, Plan, PrepareOptions, Prepared, Task,
};
use crate::error::{DataError, Result};
use crate::raw::{find_file, for_each_json_line, is_json_lines, list_files, Record};

const SAMPLES: [&str; 2] = [
    "samples_with_human_reference.jsonl.gz",
    "samples_with_human_reference.jsonl",
];

pub fn prepare(root: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    let comparisons = root.join("comparisons");
    if comparisons.is_dir() {
        return from_comparisons(root, &comparisons, opts);
    }
    if let Some(samples) = find_file(root, &SAMPLES) {
        return from_samples(root, &samples, opts);
    }
    Err(DataError::file(
        root,
        "no TL;DR files found: expected comparisons/*.jsonl (summarize-from-feedback) or samples_with_human_reference.jsonl(.gz)",
    ))
}

/// `r/xxx` from a formatted query's `SUBREDDIT:` line.
pub(crate) fn subreddit_of(query: &str) -> Option<String> {
    let line = query
        .lines()
        .find_map(|l| l.trim().strip_prefix("SUBREDDIT:"))?;
    let name = line.trim();
    let name = name.strip_prefix("r/").unwrap_or(name);
    nonempty(name).map(str::to_string)
}

pub(crate) fn format_post(subreddit: &str, title: &str, post: &str) -> String {
    format!(
        "SUBREDDIT: r/{}\n\nTITLE: {}\n\nPOST: {}\n\nTL;DR:",
        subreddit.trim(),
        title.trim(),
        post.trim()
    )
}

fn from_samples(root: &Path, path: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    let mut intake = Intake::new(Task::Tldr, "samples_with_human_reference", opts);
    intake.source(path);
    for_each_json_line(path, |r| {
        let query = r.str("query")?;
        let reference = r.str("reference_response")?;
        let sample = r.str("policy_sample")?;
        let row = if nonempty(query).is_none() {
            Err("empty prompt")
        } else if nonempty(reference).is_none() {
            Err("empty reference_response")
        } else if nonempty(sample).is_none() {
            Err("empty policy_sample")
        } else {
            Ok(Example {
                group: query.to_string(),
                prompt: query.to_string(),
                chosen: Some(reference.to_string()),
                rejected: Some(sample.to_string()),
                reference: Some(reference.to_string()),
                subreddit: subreddit_of(query),
                ..Default::default()
            })
        };
        Ok(intake.take(Origin::Unsplit, row))
    })?;
    intake.report.notes.push(
        "no human comparisons in this layout: pairs prefer the human reference summary over the policy sample"
            .to_string(),
    );
    assemble(intake, opts, &Plan::default(), root)
}

fn from_comparisons(root: &Path, dir: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    let files = list_files(dir, is_json_lines)?;
    if files.is_empty() {
        return Err(DataError::file(
            dir,
            "no comparison files (*.json, *.jsonl, optionally .gz)",
        ));
    }
    let mut intake = Intake::new(Task::Tldr, "summarize_from_feedback comparisons", opts);
    for path in &files {
        if intake.full() {
            break;
        }
        intake.source(path);
        for_each_json_line(path, |r| {
            let (origin, row) = comparison(r)?;
            Ok(intake.take(origin, row))
        })?;
    }
    assemble(intake, opts, &Plan::default(), root)
}

type Row = std::result::Result<Example, &'static str>;

fn comparison(r: &Record) -> Result<(Origin, Row)> {
    let origin = match r.opt_str("split")? {
        None => Origin::Unsplit,
        Some("train") => Origin::Train,
        Some(_) => Origin::Test,
    };
    let info = r.object("info")?;
    // CNN/DM comparisons share the files but carry `article`, not `post`.
    let Some(post) = info.opt_str("post")? else {
        return Ok((origin, Err("not a Reddit post (no info.post)")));
    };
    let title = info.opt_str("title")?.unwrap_or("");
    let subreddit = info.str("subreddit")?;
    let choice = r.f64("choice")?;
    let n = r.array("summaries")?.len();
    if n < 2 {
        return Err(r.error(
            "summaries",
            format!("expected at least 2 summaries, found {n}"),
        ));
    }
    if choice.fract() != 0.0 || choice < 0.0 || choice as usize >= n {
        return Err(r.error(
            "choice",
            format!("expected an index below {n}, found {choice}"),
        ));
    }
    let choice = choice as usize;
    let summary = |i: usize| r.element("summaries", i);
    let chosen = summary(choice)?.str("text")?;
    // With more than two summaries, the pair is the chosen one against the
    // first other one.
    let other = if choice == 0 { 1 } else { 0 };
    let rejected = summary(other)?.str("text")?;
    let mut reference = None;
    for i in 0..n {
        let s = summary(i)?;
        if s.opt_str("policy")? == Some("ref") {
            reference = Some(after_prompt(s.str("text")?.trim_end()));
        }
    }
    if nonempty(post).is_none() {
        return Ok((origin, Err("empty prompt")));
    }
    if nonempty(chosen).is_none() || nonempty(rejected).is_none() {
        return Ok((origin, Err("empty summary")));
    }
    let prompt = format_post(subreddit, title, post);
    Ok((
        origin,
        Ok(Example {
            group: prompt.clone(),
            prompt,
            chosen: Some(after_prompt(chosen.trim_end())),
            rejected: Some(after_prompt(rejected.trim_end())),
            reference,
            subreddit: nonempty(subreddit.trim()).map(|s| s.trim_start_matches("r/").to_string()),
            ..Default::default()
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subreddit_is_parsed_from_the_query() {
        assert_eq!(
            subreddit_of("SUBREDDIT: r/AskReddit\n\nTITLE: t\n\nPOST: p\n\nTL;DR:").as_deref(),
            Some("AskReddit")
        );
        assert_eq!(subreddit_of("TITLE: t\n\nTL;DR:"), None);
    }

    #[test]
    fn posts_are_formatted_like_the_tldr_queries() {
        assert_eq!(
            format_post("relationships", " My title ", "line one\nline two \n"),
            "SUBREDDIT: r/relationships\n\nTITLE: My title\n\nPOST: line one\nline two\n\nTL;DR:"
        );
    }
}
