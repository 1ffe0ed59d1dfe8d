//! `marlhf-score` as a process on the hf-tiny fixtures: per-token
//! log-probabilities equal transformers' reference, text rows tokenized
//! like the stages, a reward model's pairwise accuracy with ties apart on
//! pairs.parquet and on a raw HH-RLHF file, and the bad inputs.

use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, UInt32Type};
use candle_core::Device;
use marlhf_data::parquet_io::{
    batch, list_array, list_of, required, str_array, u64_array, write_table, Columns,
};
use marlhf_data::{read_table, write_pairs, PairRow};
use marlhf_model::checkpoint::{self, save_into};
use marlhf_model::lm::Scored;
use marlhf_model::Checkpoint;
use marlhf_stages::rm::{score_pairs, Pair};
use marlhf_testkit::ppo::{run_stage, Exit};
use marlhf_testkit::TempDir;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_marlhf-score");

use marlhf_testkit::shared;

fn fixture(name: &str) -> PathBuf {
    let dir = shared("fixtures/hf-tiny").join(name);
    assert!(
        dir.join("reference.json").is_file(),
        "{}: fixture missing",
        dir.display()
    );
    dir
}

fn score(args: &[&str]) -> Exit {
    run_stage(EXE, args)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

struct Reference {
    ids: Vec<u32>,
    logprobs: Vec<f32>,
}

fn reference(dir: &Path) -> Reference {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    Reference {
        ids: v["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect(),
        logprobs: v["next_token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect(),
    }
}

fn write_token_rows(path: &Path, rows: &[(u64, Vec<u32>, Vec<u32>)]) {
    let p: Vec<&[u32]> = rows.iter().map(|r| r.1.as_slice()).collect();
    let q: Vec<&[u32]> = rows.iter().map(|r| r.2.as_slice()).collect();
    let b = batch(
        path,
        vec![
            required("id", DataType::UInt64),
            required("prompt_tokens", list_of(DataType::UInt32)),
            required("response_tokens", list_of(DataType::UInt32)),
        ],
        vec![
            u64_array(rows.iter().map(|r| r.0)),
            list_array::<UInt32Type>(&p),
            list_array::<UInt32Type>(&q),
        ],
    )
    .unwrap();
    write_table(path, &b).unwrap();
}

struct Output {
    ids: Vec<u64>,
    prompts: Vec<Vec<u32>>,
    responses: Vec<Vec<u32>>,
    logprobs: Vec<Vec<f32>>,
    sums: Vec<f64>,
    means: Vec<Option<f64>>,
}

fn read_output(path: &Path) -> Output {
    let t = read_table(path).unwrap();
    let c = Columns::new(path, &t);
    Output {
        ids: c.u64("id").unwrap(),
        prompts: c.list_u32("prompt_tokens").unwrap(),
        responses: c.list_u32("response_tokens").unwrap(),
        logprobs: c.list_f32("logprobs").unwrap(),
        sums: c.f64("sum_logprob").unwrap(),
        means: c.opt_f64("mean_logprob").unwrap(),
    }
}

#[test]
#[ignore = "needs ../shared"]
fn token_rows_give_transformers_log_probs() {
    let tmp = TempDir::new("score-tokens");
    for name in ["gemma2", "qwen3", "mistral-sharded"] {
        let dir = fixture(name);
        let r = reference(&dir);
        let data = tmp.path().join(format!("{name}.parquet"));
        let out = tmp.path().join(format!("{name}-out.parquet"));
        // The whole prompt as a response after its first token, and the
        // same after its first five tokens.
        write_token_rows(
            &data,
            &[
                (7, r.ids[..1].to_vec(), r.ids[1..].to_vec()),
                (9, r.ids[..5].to_vec(), r.ids[5..].to_vec()),
            ],
        );
        let exit = score(&[
            "logprobs",
            "--checkpoint",
            &s(&dir),
            "--data",
            &s(&data),
            "--out",
            &s(&out),
        ]);
        assert!(exit.success, "{name}: {}", exit.stderr);
        assert!(exit.stderr.contains("token ids"), "{}", exit.stderr);
        let o = read_output(&out);
        assert_eq!(o.ids, vec![7, 9]);
        for (row, skip) in [(0, 0), (1, 4)] {
            let want = &r.logprobs[skip..];
            assert_eq!(o.logprobs[row].len(), want.len());
            for (g, w) in o.logprobs[row].iter().zip(want) {
                assert!((g - w).abs() < 1e-4, "{name} row {row}: {g} vs {w}");
            }
            let sum: f64 = o.logprobs[row].iter().map(|&v| v as f64).sum();
            assert!((o.sums[row] - sum).abs() < 1e-9);
        }
    }
}

#[test]
#[ignore = "needs ../shared"]
fn text_rows_are_tokenized_like_the_stages() {
    let tmp = TempDir::new("score-text");
    let dir = fixture("gemma");
    let data = tmp.path().join("rows.parquet");
    let prompts = [
        "Human: How do I bake bread at home?\n\nAssistant:",
        "Human: Hi\n\nAssistant:",
    ];
    let responses = [" Mix flour, water and yeast.", ""];
    let b = batch(
        &data,
        vec![
            required("id", DataType::UInt64),
            required("prompt", DataType::Utf8),
            required("completion", DataType::Utf8),
        ],
        vec![u64_array([3, 4]), str_array(prompts), str_array(responses)],
    )
    .unwrap();
    write_table(&data, &b).unwrap();
    let ck = Checkpoint::load(&dir, &Device::Cpu).unwrap();
    let tok = &ck.tokenizer;
    for bos in [true, false] {
        let out = tmp.path().join(format!("out-{bos}.parquet"));
        let mut args = vec![
            "logprobs",
            "--checkpoint",
            dir.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if !bos {
            args.push("--no-bos");
        }
        let exit = score(&args);
        assert!(exit.success, "{}", exit.stderr);
        let o = read_output(&out);
        for i in 0..2 {
            let mut p: Vec<u32> = if bos {
                tok.bos.into_iter().collect()
            } else {
                Vec::new()
            };
            p.extend(tok.encode(prompts[i]).unwrap());
            assert_eq!(o.prompts[i], p);
            assert_eq!(o.responses[i], tok.encode(responses[i]).unwrap());
        }
        // The empty response: nothing scored, no mean.
        assert!(o.logprobs[1].is_empty() && o.means[1].is_none() && o.sums[1] == 0.0);
        // The same numbers as the model's own scoring of those ids.
        let seq = [o.prompts[0].clone(), o.responses[0].clone()].concat();
        let (lp, _) = ck
            .model
            .token_logprobs(&Scored {
                seqs: vec![seq],
                starts: vec![o.prompts[0].len()],
            })
            .unwrap();
        assert_eq!(o.logprobs[0], lp.to_vec1::<f32>().unwrap());
        let mean = o.sums[0] / o.logprobs[0].len() as f64;
        assert!((o.means[0].unwrap() - mean).abs() < 1e-12);
    }
}

#[test]
#[ignore = "needs ../shared"]
fn bad_inputs_get_one_line_and_no_output() {
    let tmp = TempDir::new("score-bad");
    let dir = fixture("llama");
    let out = tmp.path().join("out.parquet");
    let pairs = tmp.path().join("pairs.parquet");
    write_pairs(
        &pairs,
        &[PairRow {
            id: 1,
            prompt: "a".into(),
            chosen: "b".into(),
            rejected: "c".into(),
        }],
    )
    .unwrap();
    let e = score(&[
        "logprobs",
        "--checkpoint",
        &s(&dir),
        "--data",
        &s(&pairs),
        "--out",
        &s(&out),
    ]);
    let line = e.error_line();
    assert!(
        line.contains("pairs.parquet") && line.contains("expected columns prompt and response"),
        "{line}"
    );
    assert!(!out.exists());
    let long = tmp.path().join("long.parquet");
    write_token_rows(
        &long,
        &[(1, vec![5; 10], vec![6; 3]), (2, vec![5; 250], vec![6; 10])],
    );
    let e = score(&[
        "logprobs",
        "--checkpoint",
        &s(&dir),
        "--data",
        &s(&long),
        "--out",
        &s(&out),
    ]);
    assert!(
        e.error_line()
            .contains("row 2: 260 tokens, more than the model's 256 positions"),
        "{}",
        e.stderr
    );
    assert!(!out.exists());
    // Not a reward model.
    let e = score(&[
        "rm-accuracy",
        "--checkpoint",
        &s(&dir),
        "--pairs",
        &s(&pairs),
    ]);
    assert!(e.error_line().contains("no value head"), "{}", e.stderr);
}

/// A reward model: the llama fixture with a fresh value head.
fn reward_model(root: &Path) -> PathBuf {
    let dir = fixture("llama");
    let ck = Checkpoint::load(&dir, &Device::Cpu).unwrap();
    ck.model.params.add_value_head(&ck.model.config, 5).unwrap();
    let out = root.join("rm");
    std::fs::create_dir_all(&out).unwrap();
    save_into(
        &out,
        &ck.model.config,
        &ck.model.params,
        &dir.join(checkpoint::TOKENIZER),
    )
    .unwrap();
    out
}

#[test]
#[ignore = "needs ../shared"]
fn pairwise_accuracy_counts_ties_apart() {
    let tmp = TempDir::new("score-rm");
    let rm = reward_model(tmp.path());
    let texts = [
        (" Knead the dough.", " I don't know."),
        (" Preheat the oven.", " Bread is food."),
        (" Same answer.", " Same answer."),
        (" Let it rise for an hour.", " No."),
        (" Use warm water.", " Use cold water."),
    ];
    let rows: Vec<PairRow> = texts
        .iter()
        .enumerate()
        .map(|(i, (c, r))| PairRow {
            id: 100 + i as u64,
            prompt: "Human: How do I bake bread at home?\n\nAssistant:".into(),
            chosen: c.to_string(),
            rejected: r.to_string(),
        })
        .collect();
    let pairs = tmp.path().join("pairs.parquet");
    write_pairs(&pairs, &rows).unwrap();
    let out = tmp.path().join("scores.parquet");
    let exit = score(&[
        "rm-accuracy",
        "--checkpoint",
        &s(&rm),
        "--pairs",
        &s(&pairs),
        "--out",
        &s(&out),
        "--batch-size",
        "2",
    ]);
    assert!(exit.success, "{}", exit.stderr);
    assert!(
        exit.stderr.contains(
            "prompt 128 + completion 128 tokens (default, fitted to the model's 256 positions)"
        ),
        "{}",
        exit.stderr
    );
    let t = read_table(&out).unwrap();
    let c = Columns::new(&out, &t);
    let ids = c.u64("id").unwrap();
    let chosen = c.f32("chosen_score").unwrap();
    let rejected = c.f32("rejected_score").unwrap();
    let preferred = c.string("preferred").unwrap();
    assert_eq!(ids, vec![100, 101, 102, 103, 104]);
    // Each pair scored alone gives the same scores and verdict.
    let ck = Checkpoint::load(&rm, &Device::Cpu).unwrap();
    let tok = &ck.tokenizer;
    let (mut correct, mut wrong) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        // The default limits, 256 + 128, fitted to the fixture's 256
        // positions: 128 + 128.
        let seq = |t: &str| {
            let mut p = tok.encode_prompt(&r.prompt, 128).unwrap().ids;
            p.extend(tok.encode_completion(t, 128).unwrap().ids);
            p
        };
        let pair = Pair {
            id: r.id,
            chosen: seq(&r.chosen),
            rejected: seq(&r.rejected),
        };
        let (a, b) = score_pairs(&ck.model, &[&pair]).unwrap();
        let (a, b) = (
            a.to_vec1::<f32>().unwrap()[0],
            b.to_vec1::<f32>().unwrap()[0],
        );
        assert!(
            (a - chosen[i]).abs() < 1e-4 && (b - rejected[i]).abs() < 1e-4,
            "pair {i}"
        );
        let want = if r.chosen == r.rejected {
            "tie"
        } else if a > b {
            correct += 1;
            "chosen"
        } else {
            wrong += 1;
            "rejected"
        };
        assert_eq!(preferred[i], want, "pair {i}");
    }
    assert!(
        exit.stderr.contains(&format!("{correct} / {wrong} / 1")),
        "{}",
        exit.stderr
    );
    let acc = format!("{:.4}", correct as f64 / 5.0);
    let line = exit
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("accuracy "))
        .unwrap();
    assert!(line.ends_with(&acc), "{line} vs {acc}");
}

#[test]
#[ignore = "needs ../shared"]
fn pairwise_accuracy_on_a_raw_hh_rlhf_file() {
    let tmp = TempDir::new("score-raw");
    let rm = reward_model(tmp.path());
    let raw = shared("data/hh-rlhf/helpful-base/test.jsonl.gz");
    assert!(raw.is_file(), "{}: missing", raw.display());
    let out = tmp.path().join("scores.parquet");
    let exit = score(&[
        "rm-accuracy",
        "--checkpoint",
        &s(&rm),
        "--pairs",
        &s(&raw),
        "--out",
        &s(&out),
        "--limit",
        "6",
        "--max-prompt-tokens",
        "48",
        "--max-completion-tokens",
        "24",
    ]);
    assert!(exit.success, "{}", exit.stderr);
    let t = read_table(&out).unwrap();
    let c = Columns::new(&out, &t);
    // Ids are the file's line numbers; every one of the first six lines is
    // a well-formed dialogue pair.
    assert_eq!(c.u64("id").unwrap(), vec![1, 2, 3, 4, 5, 6]);
    let verdicts = c.string("preferred").unwrap();
    assert!(verdicts
        .iter()
        .all(|v| ["chosen", "rejected", "tie"].contains(&v.as_str())));
    assert!(exit.stderr.contains("pairs scored"), "{}", exit.stderr);
}

/// Issue 21, item 8: without length flags, a reward model is scored with
/// the limits it was trained with (its trainer_state.json), not 256 + 128;
/// each flag still overrides its own limit.
#[test]
#[ignore = "needs ../shared"]
fn rm_accuracy_takes_the_reward_models_own_length_limits() {
    let tmp = TempDir::new("score-rm-limits");
    let rm = reward_model(tmp.path());
    let settings = serde_json::json!({
        "stage": "rm",
        "step": 4,
        "total_steps": 4,
        "seed": 1,
        "optimizer": {"lr": 0.001, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.0},
        "finished": true,
        "settings": {"max_prompt_tokens": "12", "max_completion_tokens": "6"}
    });
    std::fs::write(rm.join("trainer_state.json"), settings.to_string()).unwrap();
    // The completions differ only far beyond their sixth token.
    let words = "one two three four five six seven eight nine ten eleven twelve";
    let pairs = tmp.path().join("pairs.parquet");
    write_pairs(
        &pairs,
        &[PairRow {
            id: 1,
            prompt: format!("Human: count {words} please\n\nAssistant:"),
            chosen: format!(" {words} thirteen"),
            rejected: format!(" {words} fourteen"),
        }],
    )
    .unwrap();
    let (rm_dir, pairs_file) = (s(&rm), s(&pairs));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "rm-accuracy",
            "--checkpoint",
            rm_dir.as_str(),
            "--pairs",
            pairs_file.as_str(),
        ];
        args.extend_from_slice(extra);
        let exit = score(&args);
        assert!(exit.success, "{}", exit.stderr);
        exit.stderr
    };
    let recorded = run(&[]);
    assert!(
        recorded.contains("prompt 12 + completion 6 tokens (trainer_state.json)"),
        "{recorded}"
    );
    // Cut at 6 tokens the two completions are the same: a tie.
    assert!(recorded.contains("0 / 0 / 1"), "{recorded}");
    let longer = run(&["--max-completion-tokens", "64"]);
    assert!(
        longer.contains("prompt 12 + completion 64 tokens (trainer_state.json / flag)"),
        "{longer}"
    );
    assert!(!longer.contains("0 / 0 / 1"), "{longer}");
    // Limits beyond the model's positions are one line, not a crash.
    let e = score(&[
        "rm-accuracy",
        "--checkpoint",
        &s(&rm),
        "--pairs",
        &s(&pairs),
        "--max-prompt-tokens",
        "100000",
    ]);
    assert!(
        e.error_line().contains("exceed the model's"),
        "{}",
        e.stderr
    );
}
