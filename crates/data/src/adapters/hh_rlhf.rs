//! Anthropic HH-RLHF, in either published layout:
//!
//! - Anthropic's own: `<root>/<subset>/{train,test}.jsonl(.gz)` (or the
//!   files directly in `<root>`), each line `{"chosen", "rejected"}` holding a
//!   whole dialogue `\n\nHuman: ...\n\nAssistant: ...`.
//! - Dahoas/full-hh-rlhf: Parquet files (`train-*.parquet`, `test-*.parquet`)
//!   in `<root>` or `<root>/data` with `prompt`, `chosen`, `rejected` (the
//!   last two completions only).
//!
//! The prompt of a dialogue is its shared prefix with the rejected dialogue,
//! up to and including the last `\n\nAssistant:` in it; the completions are
//! what follows, leading space kept (as Dahoas/full-hh-rlhf does). For rows
//! whose two dialogues agree up to the chosen dialogue's last
//! `\n\nAssistant:` this is exactly that turn. For the few rows where a
//! response itself contains `\n\nAssistant:` (or `Human:`) it still finds the
//! true last shared turn instead of dropping the row.

use std::path::{Path, PathBuf};

use super::{assemble, nonempty, Example, Intake, Origin, Plan, PrepareOptions, Prepared, Task};
use crate::error::{DataError, Result};
use crate::parquet_io::{read_table, Columns};
use crate::raw::{find_file, for_each_json_line, list_dirs, list_files};

const ASSISTANT: &str = "\n\nAssistant:";

pub fn prepare(root: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    if !root.is_dir() {
        return Err(DataError::file(
            root,
            format!("directory not found: {}", expected()),
        ));
    }
    let anthropic = anthropic_files(root)?;
    if !anthropic.is_empty() {
        let mut intake = Intake::new(Task::HhRlhf, "anthropic", opts);
        for (path, origin) in &anthropic {
            if intake.full() {
                break;
            }
            intake.source(path);
            for_each_json_line(path, |r| {
                let row = split_dialogue(r.str("chosen")?, r.str("rejected")?);
                Ok(intake.take(*origin, row))
            })?;
        }
        return assemble(intake, opts, &Plan::default(), root);
    }
    let dahoas = dahoas_files(root)?;
    if !dahoas.is_empty() {
        let mut intake = Intake::new(Task::HhRlhf, "dahoas", opts);
        for (path, origin) in &dahoas {
            if intake.full() {
                break;
            }
            intake.source(path);
            let table = read_table(path)?;
            if table.num_rows() == 0 {
                return Err(DataError::file(path, "empty dataset: no rows"));
            }
            let c = Columns::new(path, &table);
            let (prompts, chosen, rejected) = (
                c.string("prompt")?,
                c.string("chosen")?,
                c.string("rejected")?,
            );
            for ((p, ch), rj) in prompts.into_iter().zip(chosen).zip(rejected) {
                if !intake.take(*origin, completions(p, ch, rj)) {
                    break;
                }
            }
        }
        return assemble(intake, opts, &Plan::default(), root);
    }
    Err(DataError::file(
        root,
        format!("no HH-RLHF files found: {}", expected()),
    ))
}

fn expected() -> &'static str {
    "expected <subset>/{train,test}.jsonl(.gz) (Anthropic layout) or train-*/test-*.parquet (Dahoas/full-hh-rlhf)"
}

/// The preference pairs of one raw HH-RLHF file as published by Anthropic
/// (`{train,test}.jsonl(.gz)`, whole dialogues), split into prompt and
/// completions like `prepare` does, without a train/test split: for
/// evaluating a reward model on a file as it is. Ids are line numbers.
/// Rows that cannot be split are counted by reason, never dropped silently.
pub fn read_raw_pairs(path: &Path, limit: Option<usize>) -> Result<RawPairs> {
    let mut pairs = Vec::new();
    let mut skipped: Vec<(String, usize)> = Vec::new();
    for_each_json_line(path, |r| {
        if limit.is_some_and(|n| pairs.len() + skipped.iter().map(|s| s.1).sum::<usize>() >= n) {
            return Ok(false);
        }
        match split_dialogue(r.str("chosen")?, r.str("rejected")?) {
            Ok(e) => pairs.push(crate::PairRow {
                id: r.line() as u64,
                prompt: e.prompt,
                chosen: e.chosen.unwrap_or_default(),
                rejected: e.rejected.unwrap_or_default(),
            }),
            Err(reason) => match skipped.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += 1,
                None => skipped.push((reason.to_string(), 1)),
            },
        }
        Ok(true)
    })?;
    Ok(RawPairs {
        pairs,
        unsplit: skipped,
    })
}

/// The pairs of a raw file, and the rows that could not be split, counted
/// by reason.
pub struct RawPairs {
    pub pairs: Vec<crate::PairRow>,
    pub unsplit: Vec<(String, usize)>,
}

/// `(file, origin)` in read order: subsets by name, train before test.
fn anthropic_files(root: &Path) -> Result<Vec<(PathBuf, Origin)>> {
    let mut dirs = vec![root.to_path_buf()];
    dirs.extend(list_dirs(root)?);
    let mut files = Vec::new();
    for dir in dirs {
        if let Some(f) = find_file(&dir, &["train.jsonl.gz", "train.jsonl"]) {
            files.push((f, Origin::Train));
        }
        if let Some(f) = find_file(&dir, &["test.jsonl.gz", "test.jsonl"]) {
            files.push((f, Origin::Test));
        }
    }
    Ok(files)
}

fn dahoas_files(root: &Path) -> Result<Vec<(PathBuf, Origin)>> {
    let mut files = Vec::new();
    for dir in [root.to_path_buf(), root.join("data")] {
        if !dir.is_dir() {
            continue;
        }
        for path in list_files(&dir, |n| n.ends_with(".parquet"))? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let origin = if name.starts_with("train") {
                Origin::Train
            } else if name.starts_with("test") {
                Origin::Test
            } else {
                Origin::Unsplit
            };
            files.push((path, origin));
        }
    }
    // Train files first, so ids follow the same order as the Anthropic layout.
    files.sort_by_key(|(p, o)| (*o == Origin::Test, p.clone()));
    Ok(files)
}

/// Splits a chosen/rejected dialogue pair into prompt and two completions.
pub(crate) fn split_dialogue(
    chosen: &str,
    rejected: &str,
) -> std::result::Result<Example, &'static str> {
    let mut shared = chosen
        .bytes()
        .zip(rejected.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !chosen.is_char_boundary(shared) {
        shared -= 1;
    }
    let Some(at) = chosen[..shared].rfind(ASSISTANT) else {
        return Err(
            if chosen.contains(ASSISTANT) && rejected.contains(ASSISTANT) {
                "prompt mismatch: chosen and rejected differ before any Assistant turn"
            } else {
                "no Assistant turn"
            },
        );
    };
    let end = at + ASSISTANT.len();
    completions(
        chosen[..end].to_string(),
        chosen[end..].to_string(),
        rejected[end..].to_string(),
    )
}

fn completions(
    prompt: String,
    chosen: String,
    rejected: String,
) -> std::result::Result<Example, &'static str> {
    if nonempty(&prompt).is_none() {
        return Err("empty prompt");
    }
    if nonempty(&chosen).is_none() {
        return Err("empty chosen completion");
    }
    if nonempty(&rejected).is_none() {
        return Err("empty rejected completion");
    }
    Ok(Example {
        group: prompt.clone(),
        prompt,
        reference: Some(chosen.clone()),
        chosen: Some(chosen),
        rejected: Some(rejected),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ends_at_the_last_shared_assistant_turn() {
        let e = split_dialogue(
            "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye?\n\nAssistant: Bye!",
            "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye?\n\nAssistant: No.",
        )
        .unwrap();
        assert_eq!(
            e.prompt,
            "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye?\n\nAssistant:"
        );
        assert_eq!(e.chosen.as_deref(), Some(" Bye!"));
        assert_eq!(e.rejected.as_deref(), Some(" No."));
    }

    #[test]
    fn a_response_containing_an_assistant_turn_keeps_the_shared_prompt() {
        // As in the real data: the chosen response itself runs on into a
        // new Assistant turn; its own last `Assistant:` is not the prompt's.
        let e = split_dialogue(
            "\n\nHuman: cost?\n\nAssistant: Umm. Just a second...\n\nAssistant: About $100.",
            "\n\nHuman: cost?\n\nAssistant: It depends.",
        )
        .unwrap();
        assert_eq!(e.prompt, "\n\nHuman: cost?\n\nAssistant:");
        assert_eq!(
            e.chosen.as_deref(),
            Some(" Umm. Just a second...\n\nAssistant: About $100.")
        );
        assert_eq!(e.rejected.as_deref(), Some(" It depends."));
    }

    #[test]
    fn identical_dialogues_are_kept_and_bad_rows_get_reasons() {
        let same = "\n\nHuman: x\n\nAssistant: y";
        let e = split_dialogue(same, same).unwrap();
        assert_eq!(
            (e.chosen.as_deref(), e.rejected.as_deref()),
            (Some(" y"), Some(" y"))
        );
        assert_eq!(
            split_dialogue("\n\nHuman: x", "\n\nHuman: x").unwrap_err(),
            "no Assistant turn"
        );
        assert_eq!(
            split_dialogue(
                "\n\nHuman: x\n\nAssistant: ",
                "\n\nHuman: x\n\nAssistant: y"
            )
            .unwrap_err(),
            "empty chosen completion"
        );
        assert_eq!(
            split_dialogue(
                "\n\nHuman: a\n\nAssistant: y",
                "\n\nHuman: b\n\nAssistant: y"
            )
            .unwrap_err(),
            "prompt mismatch: chosen and rejected differ before any Assistant turn"
        );
    }

    #[test]
    fn shared_prefix_stops_on_a_char_boundary() {
        let e = split_dialogue(
            "\n\nHuman: é\n\nAssistant: ü",
            "\n\nHuman: é\n\nAssistant: ö",
        )
        .unwrap();
        assert_eq!(e.chosen.as_deref(), Some(" ü"));
    }
}
