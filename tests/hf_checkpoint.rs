//! A real Hugging Face checkpoint through the method on the CPU: SFT from
//! the tiny Gemma 2 fixture (`../shared/fixtures/hf-tiny/gemma2`), a reward
//! model from that, and one PPO iteration (rollout, segment, update) as
//! processes, each output checked for content and for keeping the Hugging
//! Face layout and the Gemma 2 config.
//!
//! Needs the release binaries (`make test` builds them first).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use marlhf_data::{read_advantages, read_metrics, read_rollouts, read_segments};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin(name: &str) -> PathBuf {
    let p = root().join("target/release").join(name);
    assert!(
        p.exists(),
        "{}: build the binaries first: cargo build --release --workspace --bins",
        p.display()
    );
    p
}

fn run(name: &str, args: &[String]) -> String {
    let out = Command::new(bin(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{name} {args:?} failed:\n{err}");
    err
}

fn args(list: &[(&str, &dyn AsRef<std::ffi::OsStr>)]) -> Vec<String> {
    list.iter()
        .flat_map(|(k, v)| [k.to_string(), v.as_ref().to_string_lossy().into_owned()])
        .collect()
}

fn config(dir: &Path) -> serde_json::Map<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn keys(m: &serde_json::Map<String, Value>) -> BTreeSet<String> {
    m.keys().cloned().collect()
}

/// The checkpoint keeps the fixture's config (every key, the Gemma 2
/// settings unchanged) in the Hugging Face layout.
fn check_layout(dir: &Path, fixture: &Path, value_head: bool) {
    let (got, want) = (config(dir), config(fixture));
    assert_eq!(keys(&got), keys(&want), "{}", dir.display());
    for k in [
        "model_type",
        "layer_types",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "query_pre_attn_scalar",
        "sliding_window",
        "rope_parameters",
        "head_dim",
    ] {
        assert_eq!(got[k], want[k], "{}: {k}", dir.display());
    }
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(dir.join(f).is_file(), "{}: {f}", dir.display());
    }
    let names: BTreeSet<String> = candle_names(&dir.join("model.safetensors"))
        .into_iter()
        .collect();
    let fixture_names: BTreeSet<String> = candle_names(&fixture.join("model.safetensors"))
        .into_iter()
        .collect();
    let extra: Vec<&String> = names.difference(&fixture_names).collect();
    if value_head {
        assert_eq!(extra, vec!["v_head.weight"], "{}", dir.display());
    } else {
        assert!(extra.is_empty(), "{}: {extra:?}", dir.display());
    }
    assert!(fixture_names.is_subset(&names));
}

/// Tensor names of a safetensors file, from its JSON header.
fn candle_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs ../shared"]
fn gemma2_checkpoint_through_sft_rm_and_one_ppo_iteration() {
    let fixture = marlhf_testkit::shared("fixtures/hf-tiny/gemma2/config.json")
        .parent()
        .unwrap()
        .to_path_buf();
    let work = std::env::temp_dir().join(format!("marlhf-hf-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let data = work.join("data");
    run(
        "marlhf-prepare",
        &args(&[
            ("--task", &"hh-rlhf"),
            ("--raw", &marlhf_testkit::shared("data")),
            ("--out", &data),
            ("--limit", &"120"),
        ]),
    );
    let lengths: [(&str, &dyn AsRef<std::ffi::OsStr>); 2] = [
        ("--max-prompt-tokens", &"40"),
        ("--max-completion-tokens", &"12"),
    ];
    let train = |extra: &[(&str, &dyn AsRef<std::ffi::OsStr>)]| {
        let mut a = args(extra);
        a.extend(args(&lengths));
        a.extend(args(&[
            ("--lr", &"1e-3"),
            ("--max-steps", &"2"),
            ("--batch-size", &"2"),
            ("--val-fraction", &"0.1"),
        ]));
        a
    };
    let sft = work.join("sft");
    let out = run(
        "marlhf-sft",
        &train(&[
            ("--init", &fixture),
            ("--data", &data.join("sft.parquet")),
            ("--out", &sft),
        ]),
    );
    assert!(out.contains("steps"), "{out}");
    check_layout(&sft, &fixture, false);
    // Trained: the weights moved from the fixture's.
    assert_ne!(
        std::fs::read(sft.join("model.safetensors")).unwrap(),
        std::fs::read(fixture.join("model.safetensors")).unwrap()
    );
    let rm = work.join("rm");
    run(
        "marlhf-rm",
        &train(&[
            ("--init", &sft),
            ("--data", &data.join("pairs.parquet")),
            ("--out", &rm),
        ]),
    );
    check_layout(&rm, &fixture, true);

    let iter0 = work.join("ppo-n5/iter-000");
    let rollouts = iter0.join("rollouts.parquet");
    run(
        "marlhf-rollout",
        &args(&[
            ("--prompts", &data.join("prompts.parquet")),
            ("--actor", &sft),
            ("--reference", &sft),
            ("--critic", &rm),
            ("--reward-model", &rm),
            ("--out", &rollouts),
            ("--iteration", &"0"),
            ("--rollout-batch", &"4"),
            ("--batch-size", &"2"),
            ("--max-prompt-tokens", &"40"),
            ("--max-new-tokens", &"10"),
        ]),
    );
    let rows = read_rollouts(&rollouts).unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert!(!r.response_tokens.is_empty() && r.response_tokens.len() <= 10);
        assert!(r.response_tokens.iter().all(|&t| t < 512));
        assert_eq!(r.logprobs.len(), r.response_tokens.len());
        assert!(r.score.is_finite());
        assert!(r.values.iter().chain(&r.logprobs).all(|v| v.is_finite()));
        // Actor and reference are the same model at iteration 0.
        for (a, b) in r.logprobs.iter().zip(&r.ref_logprobs) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }
    let segments = iter0.join("segments.parquet");
    run(
        "marlhf-segment",
        &args(&[
            ("--rollouts", &rollouts),
            ("--out", &segments),
            ("--termination", &"fixed:5"),
            ("--tokenizer", &sft),
        ]),
    );
    let segs = read_segments(&segments).unwrap();
    assert_eq!(segs.len(), 4);
    let iter1 = work.join("ppo-n5/iter-001");
    let advantages = iter0.join("advantages.parquet");
    let metrics = work.join("ppo-n5/metrics.parquet");
    run(
        "marlhf-update",
        &args(&[
            ("--rollouts", &rollouts),
            ("--segments", &segments),
            ("--actor", &sft),
            ("--critic", &rm),
            ("--out-actor", &iter1.join("actor")),
            ("--out-critic", &iter1.join("critic")),
            ("--advantages", &advantages),
            ("--metrics", &metrics),
            ("--mini-batch", &"2"),
            ("--actor-lr", &"1e-3"),
            ("--critic-lr", &"1e-3"),
        ]),
    );
    let adv = read_advantages(&advantages).unwrap();
    assert_eq!(adv.len(), 4);
    for (a, r) in adv.iter().zip(&rows) {
        assert_eq!(a.advantages.len(), r.response_tokens.len());
        assert!(a.advantages.iter().chain(&a.returns).all(|v| v.is_finite()));
    }
    let m = read_metrics(&metrics).unwrap();
    assert_eq!(m.len(), 1);
    check_layout(&iter1.join("actor"), &fixture, false);
    check_layout(&iter1.join("critic"), &fixture, true);
    assert_ne!(
        std::fs::read(iter1.join("actor/model.safetensors")).unwrap(),
        std::fs::read(sft.join("model.safetensors")).unwrap(),
        "the update moved the actor"
    );
    std::fs::remove_dir_all(&work).ok();
}
