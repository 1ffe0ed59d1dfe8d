//! The adapters on small fixture files in each published layout.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use marlhf_data::{prepare, PrepareOptions, Prepared, Task};
use marlhf_testkit::TempDir;

fn fixtures(root: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(root)
}

fn run(task: Task, root: &str) -> Prepared {
    prepare(task, &fixtures(root), &PrepareOptions::default()).unwrap()
}

/// Every kept row is in exactly one output (prompts may merge duplicates),
/// and ids are unique across the four files.
fn check_accounting(p: &Prepared) {
    let r = &p.report;
    assert_eq!(r.raw_rows, r.kept_rows + r.dropped_total(), "{r:#?}");
    assert_eq!(r.kept_rows, r.split_rows.values().sum::<u64>());
    assert_eq!(r.split_rows["sft"], p.sft.len() as u64);
    assert_eq!(r.split_rows["rm"], p.pairs.len() as u64);
    assert_eq!(
        r.split_rows["ppo"] + r.split_rows["eval"],
        (p.prompts.len() + p.validation_prompts.len() + p.eval_prompts.len()) as u64
            + r.duplicate_prompts_merged
    );
    assert_eq!(r.validation_prompts, p.validation_prompts.len() as u64);
    let mut ids = HashSet::new();
    let all = p
        .sft
        .iter()
        .map(|r| r.id)
        .chain(p.pairs.iter().map(|r| r.id))
        .chain(p.prompts.iter().map(|r| r.id))
        .chain(p.validation_prompts.iter().map(|r| r.id))
        .chain(p.eval_prompts.iter().map(|r| r.id));
    for id in all {
        assert!(ids.insert(id), "id {id} used twice");
        assert!(id < r.raw_rows);
    }
    // No eval prompt appears in any training file.
    let eval: HashSet<&str> = p.eval_prompts.iter().map(|r| r.prompt.as_str()).collect();
    for prompt in p
        .sft
        .iter()
        .map(|r| &r.prompt)
        .chain(p.pairs.iter().map(|r| &r.prompt))
        .chain(p.prompts.iter().map(|r| &r.prompt))
        .chain(p.validation_prompts.iter().map(|r| &r.prompt))
    {
        assert!(
            !eval.contains(prompt.as_str()),
            "eval prompt leaked: {prompt:?}"
        );
    }
    // No validation prompt is a PPO prompt.
    let ppo: HashSet<&str> = p.prompts.iter().map(|r| r.prompt.as_str()).collect();
    for v in &p.validation_prompts {
        assert!(!ppo.contains(v.prompt.as_str()), "{:?}", v.prompt);
    }
}

#[test]
fn validation_prompts_are_a_seeded_quarter_at_most_of_the_ppo_prompts() {
    let none = prepare(
        Task::HhRlhf,
        &fixtures("raw"),
        &PrepareOptions {
            validation_prompts: 0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(none.validation_prompts.is_empty());
    let all_ppo = none.prompts.len();
    assert!(all_ppo >= 4, "the fixture has {all_ppo} PPO prompts");
    // The default asks for 500: capped at a quarter, with a note.
    let p = run(Task::HhRlhf, "raw");
    check_accounting(&p);
    assert_eq!(p.validation_prompts.len(), all_ppo / 4);
    assert_eq!(p.prompts.len() + p.validation_prompts.len(), all_ppo);
    assert!(p
        .report
        .notes
        .iter()
        .any(|n| n.contains("at most a quarter")));
    // PPO ∪ validation is the PPO split, each in its original order; the
    // other files do not change.
    let mut both: Vec<u64> = p
        .prompts
        .iter()
        .chain(&p.validation_prompts)
        .map(|r| r.id)
        .collect();
    both.sort_unstable();
    assert_eq!(both, none.prompts.iter().map(|r| r.id).collect::<Vec<_>>());
    assert!(p.validation_prompts.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        (&p.sft, &p.pairs, &p.eval_prompts),
        (&none.sft, &none.pairs, &none.eval_prompts)
    );
    // One asked for: exactly one, chosen by the seed.
    let one = |seed| {
        prepare(
            Task::HhRlhf,
            &fixtures("raw"),
            &PrepareOptions {
                validation_prompts: 1,
                seed,
                ..Default::default()
            },
        )
        .unwrap()
        .validation_prompts
    };
    assert_eq!(one(1234).len(), 1);
    assert_eq!(one(1234), one(1234));
}

#[test]
fn hh_rlhf_anthropic_layout_test_only() {
    let p = run(Task::HhRlhf, "raw");
    check_accounting(&p);
    let r = &p.report;
    assert_eq!(r.layout, "anthropic");
    assert_eq!(r.raw_rows, 19);
    assert_eq!(r.dropped["empty chosen completion"], 1);
    assert_eq!(r.dropped["no Assistant turn"], 1);
    assert_eq!(r.dropped_total(), 2);
    assert_eq!(r.chosen_equals_rejected, 1);
    assert_eq!(r.eval_fraction, Some(0.1));
    // 17 kept, in groups of one row except one pair of rows,
    // so every bucket is present.
    for s in ["sft", "rm", "ppo", "eval"] {
        assert!(r.split_rows[s] > 0, "{s} empty: {r:#?}");
    }
    // Completions keep their leading space; prompts end at `Assistant:`.
    for row in &p.sft {
        assert!(row.prompt.starts_with("\n\nHuman: ") && row.prompt.ends_with("\n\nAssistant:"));
        assert!(row.completion.starts_with(' '));
    }
    for row in &p.pairs {
        assert!(row.prompt.ends_with("\n\nAssistant:"));
    }
    // The response that runs on into its own Assistant turn is kept whole.
    let solar: Vec<String> = p
        .sft
        .iter()
        .map(|r| r.completion.clone())
        .chain(p.pairs.iter().map(|r| r.chosen.clone()))
        .chain(
            p.prompts
                .iter()
                .chain(&p.eval_prompts)
                .filter_map(|r| r.reference.clone()),
        )
        .filter(|c| c.contains("Just a second"))
        .collect();
    assert_eq!(
        solar,
        vec![" Umm. Just a second...\n\nAssistant: About $300 each.".to_string()]
    );
}

#[test]
fn hh_rlhf_train_and_test_files_make_the_eval_split() {
    let p = run(Task::HhRlhf, "raw-split");
    check_accounting(&p);
    let r = &p.report;
    assert_eq!(r.raw_rows, 14);
    assert_eq!(r.eval_fraction, None);
    // The test row that repeats a training prompt is dropped, not leaked.
    assert_eq!(r.dropped["eval prompt also in the training data"], 1);
    assert_eq!(p.eval_prompts.len(), 3);
    assert!(p
        .eval_prompts
        .iter()
        .all(|e| e.prompt.contains("Test question")));
    assert_eq!(
        (r.split_rows["sft"], r.split_rows["rm"], r.split_rows["ppo"]),
        (2, 4, 4)
    );
}

#[test]
fn hh_rlhf_dahoas_parquet_layout() {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;
    let dir = TempDir::new("dahoas");
    let data = dir.path().join("hh-rlhf/data");
    std::fs::create_dir_all(&data).unwrap();
    let write = |name: &str, n: usize, tag: &str| {
        let col = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values((0..n).map(f)))
        };
        let batch = RecordBatch::try_from_iter([
            (
                "prompt",
                col(&|i| format!("\n\nHuman: {tag} {i}?\n\nAssistant:")),
            ),
            ("response", col(&|i| format!(" good {i}"))),
            ("chosen", col(&|i| format!(" good {i}"))),
            (
                "rejected",
                col(&|i| {
                    if i == 1 {
                        " ".into()
                    } else {
                        format!(" bad {i}")
                    }
                }),
            ),
        ])
        .unwrap();
        marlhf_data::write_table(&data.join(name), &batch).unwrap();
    };
    write("train-00000-of-00001.parquet", 10, "train");
    write("test-00000-of-00001.parquet", 5, "test");
    let p = prepare(Task::HhRlhf, dir.path(), &PrepareOptions::default()).unwrap();
    check_accounting(&p);
    assert_eq!(p.report.layout, "dahoas");
    assert_eq!(p.report.raw_rows, 15);
    assert_eq!(p.report.dropped["empty rejected completion"], 2);
    assert_eq!(p.eval_prompts.len(), 4);
    assert!(p.eval_prompts.iter().all(|e| e.prompt.contains("test")));
    assert!(p
        .sft
        .iter()
        .chain(&[])
        .all(|r| r.completion.starts_with(" good")));
}

#[test]
fn tldr_samples_layout() {
    let p = run(Task::Tldr, "raw");
    check_accounting(&p);
    let r = &p.report;
    assert_eq!(r.raw_rows, 12);
    assert_eq!(r.dropped["empty reference_response"], 1);
    assert_eq!(r.chosen_equals_rejected, 1);
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("prefer the human reference")));
    for row in &p.pairs {
        assert!(row.prompt.ends_with("TL;DR:"));
        assert!(row.chosen.starts_with("  "));
    }
    for row in p.prompts.iter().chain(&p.eval_prompts) {
        let sub = row.subreddit.as_deref().unwrap();
        assert!(row.prompt.starts_with(&format!("SUBREDDIT: r/{sub}\n")));
        assert!(
            row.reference.as_deref().unwrap().contains("human summary")
                || row.reference.as_deref() == Some("  same text")
        );
    }
}

#[test]
fn tldr_comparisons_layout() {
    let p = run(Task::Tldr, "raw-comparisons");
    check_accounting(&p);
    let r = &p.report;
    assert_eq!(r.layout, "summarize_from_feedback comparisons");
    assert_eq!(r.raw_rows, 10);
    assert_eq!(r.dropped["not a Reddit post (no info.post)"], 1);
    // split "valid1" rows are the eval split
    assert_eq!(r.eval_fraction, None);
    let eval: Vec<&str> = p.eval_prompts.iter().map(|e| e.prompt.as_str()).collect();
    assert_eq!(eval.len(), 2);
    assert!(eval[0].starts_with(
        "SUBREDDIT: r/pettyrevenge\n\nTITLE: Need advice 6\n\nPOST: My post number 6."
    ));
    assert!(eval[0].ends_with("I need advice.\n\nTL;DR:"));
    // Row 0 and its repeat (choice flipped) share a group, so one split.
    let ids_with_post0: Vec<u64> = p
        .sft
        .iter()
        .map(|r| (r.id, &r.prompt))
        .chain(p.pairs.iter().map(|r| (r.id, &r.prompt)))
        .chain(p.prompts.iter().map(|r| (r.id, &r.prompt)))
        .filter(|(_, pr)| pr.contains("post number 0."))
        .map(|(id, _)| id)
        .collect();
    assert!(ids_with_post0.contains(&0));
    // The choice picks the chosen summary; summaries get a leading space.
    let all_pairs: Vec<_> = p.pairs.iter().collect();
    for pair in all_pairs {
        assert!(pair.chosen.starts_with(' ') && pair.rejected.starts_with(' '));
    }
    // policy "ref" summaries are the reference (rows 0, 3, 6).
    let e6 = &p.eval_prompts[0];
    assert_eq!(e6.reference.as_deref(), Some(" thing 6 happened"));
    assert_eq!(e6.subreddit.as_deref(), Some("pettyrevenge"));
}

#[test]
fn webgpt_layout() {
    let p = run(Task::Webgpt, "raw");
    check_accounting(&p);
    let r = &p.report;
    assert_eq!(r.raw_rows, 9);
    assert_eq!(r.dropped["tied scores"], 2);
    let all: Vec<(&str, &str)> = p
        .sft
        .iter()
        .map(|s| (s.prompt.as_str(), s.completion.as_str()))
        .chain(
            p.pairs
                .iter()
                .map(|s| (s.prompt.as_str(), s.chosen.as_str())),
        )
        .collect();
    for (prompt, chosen) in all {
        assert!(prompt.starts_with("Question: Why does thing "));
        assert!(prompt.ends_with("\n\nAnswer:"));
        assert!(chosen.starts_with(' '));
    }
    // Both answers' quotes, deduplicated.
    let q0 = p
        .sft
        .iter()
        .map(|s| &s.prompt)
        .chain(p.pairs.iter().map(|s| &s.prompt))
        .chain(p.prompts.iter().chain(&p.eval_prompts).map(|s| &s.prompt))
        .find(|pr| pr.contains("thing 0 happen"))
        .unwrap();
    assert_eq!(
        q0.as_str(),
        "Question: Why does thing 0 happen?\n\nQuotes:\n[1] Source A0\nThing 0 happens because of reason A.\n\n\
         [2] Source B0\nReason B also matters for 0.\n\nAnswer:"
    );
    // Score 1.0 for answer 0 in row 0: answer 0 preferred.
    if let Some(s) = p.sft.iter().find(|s| s.id == 0) {
        assert_eq!(s.completion, " Because of reason A [1].");
    }
    if let Some(s) = p.pairs.iter().find(|s| s.id == 0) {
        assert_eq!(
            (s.chosen.as_str(), s.rejected.as_str()),
            (" Because of reason A [1].", " Reasons A and B [1][2].")
        );
    }
}

#[test]
fn apps_layout() {
    let p = run(Task::Apps, "raw");
    check_accounting(&p);
    let r = &p.report;
    assert_eq!(r.raw_rows, 8);
    assert!(p.pairs.is_empty());
    assert_eq!(r.split_rows["rm"], 0);
    assert_eq!(p.eval_prompts.len(), 2);
    let call = p
        .eval_prompts
        .iter()
        .find(|e| e.prompt.contains("k-th missing"))
        .unwrap();
    assert!(call
        .prompt
        .ends_with("-> int:\n        \nUse Call-Based format\nANSWER:\n"));
    assert!(call
        .tests
        .as_deref()
        .unwrap()
        .contains("\"fn_name\": \"findKthPositive\""));
    for e in p.prompts.iter().chain(&p.eval_prompts) {
        assert!(e.tests.is_some());
        assert!(e.prompt.starts_with("\nQUESTION:\n"));
    }
    for s in &p.sft {
        assert!(s.prompt.ends_with("\nANSWER:\n"));
        assert!(!s.completion.trim().is_empty());
    }
}

#[test]
fn same_seed_same_output_other_seed_other_split() {
    let a = run(Task::HhRlhf, "raw");
    let b = run(Task::HhRlhf, "raw");
    assert_eq!(a.sft, b.sft);
    assert_eq!(a.pairs, b.pairs);
    assert_eq!(a.prompts, b.prompts);
    assert_eq!(a.eval_prompts, b.eval_prompts);
    let opts = PrepareOptions {
        seed: 99,
        ..Default::default()
    };
    let c = prepare(Task::HhRlhf, &fixtures("raw"), &opts).unwrap();
    assert_ne!(
        a.pairs.iter().map(|r| r.id).collect::<Vec<_>>(),
        c.pairs.iter().map(|r| r.id).collect::<Vec<_>>()
    );
}

#[test]
fn limit_takes_the_first_raw_rows() {
    let opts = PrepareOptions {
        limit: Some(5),
        ..Default::default()
    };
    let p = prepare(Task::HhRlhf, &fixtures("raw"), &opts).unwrap();
    assert_eq!(p.report.raw_rows, 5);
    check_accounting(&p);
}

fn write_raw(dir: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn error(task: Task, raw: &Path) -> String {
    match prepare(task, raw, &PrepareOptions::default()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_name_file_line_and_field() {
    let dir = TempDir::new("bad-raw");
    let raw = dir.path();
    // missing directory
    assert!(error(Task::Webgpt, raw).starts_with(&format!(
        "{}: directory not found",
        raw.join("webgpt").display()
    )));
    // malformed JSON on line 2
    let f = write_raw(raw, "hh-rlhf/s/test.jsonl", b"{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: b\",\"rejected\":\"\\n\\nHuman: a\\n\\nAssistant: c\"}\n{oops\n");
    assert!(
        error(Task::HhRlhf, raw).starts_with(&format!("{}: line 2: invalid JSON: ", f.display()))
    );
    // missing field
    std::fs::write(&f, b"{\"chosen\":\"x\"}\n").unwrap();
    assert_eq!(
        error(Task::HhRlhf, raw),
        format!("{}: line 1, field \"rejected\": missing", f.display())
    );
    // non-UTF-8 bytes
    std::fs::write(
        &f,
        b"{\"chosen\":\"a\",\"rejected\":\"b\"}\n{\"chosen\":\"\xc3\x28\",\"rejected\":\"b\"}\n",
    )
    .unwrap();
    assert_eq!(
        error(Task::HhRlhf, raw),
        format!(
            "{}: line 2: invalid UTF-8 at byte 12 of the line",
            f.display()
        )
    );
    // empty file
    std::fs::write(&f, b"").unwrap();
    assert_eq!(
        error(Task::HhRlhf, raw),
        format!("{}: empty dataset: no JSON records", f.display())
    );
    // gzipped file, bad line inside
    std::fs::remove_file(&f).unwrap();
    let gz = raw.join("hh-rlhf/s/test.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(b"{\"chosen\": 3, \"rejected\": \"b\"}\n")
        .unwrap();
    enc.finish().unwrap();
    assert_eq!(
        error(Task::HhRlhf, raw),
        format!(
            "{}: line 1, field \"chosen\": expected a string, found a number",
            gz.display()
        )
    );
    // only invalid rows
    let f = write_raw(
        raw,
        "tldr/samples_with_human_reference.jsonl",
        b"{\"query\":\"q\",\"reference_response\":\" \",\"policy_sample\":\"s\"}\n",
    );
    assert_eq!(
        error(Task::Tldr, raw),
        format!(
            "{}: empty dataset: no valid rows out of 1 (1 empty reference_response)",
            raw.join("tldr").display()
        )
    );
    std::fs::remove_file(f).unwrap();
    // nested field, with its path
    let f = write_raw(raw, "tldr/comparisons/b.jsonl", b"{\"info\":{\"post\":\"p\",\"title\":\"t\"},\"summaries\":[{\"text\":\"a\"},{\"text\":\"b\"}],\"choice\":0}\n");
    assert_eq!(
        error(Task::Tldr, raw),
        format!("{}: line 1, field \"info.subreddit\": missing", f.display())
    );
    // APPS embedded JSON
    let f = write_raw(
        raw,
        "apps/train.jsonl",
        b"{\"question\":\"q\",\"solutions\":\"[oops\",\"input_output\":\"\"}\n",
    );
    assert!(error(Task::Apps, raw).starts_with(&format!(
        "{}: line 1, field \"solutions\": invalid embedded JSON",
        f.display()
    )));
    // Dahoas Parquet without a column
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    let col: ArrayRef = std::sync::Arc::new(StringArray::from(vec!["x"]));
    let batch = RecordBatch::try_from_iter([("prompt", col.clone()), ("chosen", col)]).unwrap();
    let pq = raw.join("dh/hh-rlhf/train.parquet");
    std::fs::create_dir_all(pq.parent().unwrap()).unwrap();
    marlhf_data::write_table(&pq, &batch).unwrap();
    assert_eq!(
        error(Task::HhRlhf, &raw.join("dh")),
        format!("{}: column \"rejected\" is missing", pq.display())
    );
}
