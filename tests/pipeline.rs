//! `make pipeline` end to end on the real HH-RLHF data at the smallest
//! settings: every stage runs as a process through the Makefile, and the
//! content of every output is checked. Then the make caching contract:
//! a rerun does nothing, touching an input reruns exactly its dependants,
//! and deleting a PPO iteration continues from there.
//!
//! Needs the release binaries (`make test` builds them first).

mod common;

use std::path::Path;

use common::root;

use marlhf_data::{
    read_advantages, read_metrics, read_pairs, read_prompts, read_rollouts, read_segments,
    read_sft, read_table,
};

/// The smallest settings that still run every stage for real.
fn settings(run: &Path) -> Vec<String> {
    [
        "TASK=hh-rlhf",
        "PRESET=tiny",
        "CARGO=true",
        "PREPARE_ARGS=--limit 300",
        "VOCAB_SIZE=512",
        "MODEL_HIDDEN=32",
        "MODEL_LAYERS=1",
        "MODEL_HEADS=2",
        "MODEL_MLP=64",
        "MAX_PROMPT_TOKENS=48",
        "MAX_COMPLETION_TOKENS=12",
        "SFT_ARGS=--max-steps 6",
        "RM_ARGS=--max-steps 4",
        "ITERS=2",
        "PPO_ROLLOUT_BATCH=6",
        "PPO_BATCH=3",
        "PPO_MINI_BATCH=3",
        "EVAL_N=6",
        "EVAL_BATCH=3",
        "EVAL_JUDGE_SAMPLE=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("RUN={}", run.display())])
    .collect()
}

fn make(run: &Path, extra: &[&str]) -> String {
    let mut args = settings(run);
    args.extend(extra.iter().map(|s| s.to_string()));
    common::make(&args)
}

fn stages_run(make_output: &str) -> Vec<String> {
    make_output
        .lines()
        .filter(|l| {
            l.starts_with("==> ")
                && !l.starts_with("==> pipeline")
                && !l.contains("iteration(s) in")
        })
        .map(|l| l.to_string())
        .collect()
}

fn touch(p: &Path) {
    let f = std::fs::File::options().append(true).open(p).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
}

fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

#[test]
#[ignore = "needs ../shared"]
fn pipeline_end_to_end_with_make_caching() {
    let bin = root().join("target/release/marlhf-prepare");
    assert!(
        bin.exists(),
        "build the binaries first: cargo build --release --bins"
    );
    let run = std::env::temp_dir().join(format!("marlhf-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);

    let first = make(&run, &["pipeline"]);

    // prepare: the 20/40/40 split of the first 300 real rows plus eval.
    let sft = read_sft(&run.join("data/sft.parquet")).unwrap();
    let pairs = read_pairs(&run.join("data/pairs.parquet")).unwrap();
    let prompts = read_prompts(&run.join("data/prompts.parquet")).unwrap();
    let validation = read_prompts(&run.join("data/validation_prompts.parquet")).unwrap();
    let eval_prompts = read_prompts(&run.join("data/eval_prompts.parquet")).unwrap();
    let total = sft.len() + pairs.len() + prompts.len() + validation.len() + eval_prompts.len();
    assert!((280..=300).contains(&total), "{total} rows");
    // Validation prompts: a quarter of the PPO split at this size (500
    // asked for), none of them a PPO or evaluation prompt.
    assert_eq!(validation.len(), (prompts.len() + validation.len()) / 4);
    let elsewhere: std::collections::HashSet<&str> = prompts
        .iter()
        .chain(&eval_prompts)
        .map(|r| r.prompt.as_str())
        .collect();
    assert!(validation
        .iter()
        .all(|r| !elsewhere.contains(r.prompt.as_str())));
    assert!(sft
        .iter()
        .all(|r| r.prompt.ends_with("\n\nAssistant:") && !r.completion.is_empty()));
    let ratio = pairs.len() as f64 / sft.len() as f64;
    assert!((1.6..2.4).contains(&ratio), "pairs/sft ratio {ratio}");

    // tokenizer
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("tokenizer.json")).unwrap())
            .unwrap();
    assert_eq!(tok["model"]["vocab"].as_object().unwrap().len(), 512);

    // sft and rm metrics
    let m = read_metrics(&run.join("sft/metrics.parquet")).unwrap();
    assert_eq!(m.len(), 6);
    assert!(m.iter().all(|r| r.get("loss").unwrap().is_finite()));
    assert!(m.last().unwrap().get("val_loss").unwrap().is_finite());
    let m = read_metrics(&run.join("rm/metrics.parquet")).unwrap();
    assert_eq!(m.len(), 4);
    let acc = m.last().unwrap().get("val_accuracy").unwrap();
    assert!((0.0..=1.0).contains(&acc));

    // PPO: both conditions, two iterations each.
    for (dir, n) in [("ppo-n1/seed-1234", 1u32), ("ppo-n5/seed-1234", 5)] {
        let metrics = read_metrics(&run.join(dir).join("metrics.parquet")).unwrap();
        assert_eq!(metrics.len(), 2, "{dir}: one metrics row per iteration");
        for k in 0..2 {
            let it = run.join(dir).join(format!("iter-{k:03}"));
            let rollouts = read_rollouts(&it.join("rollouts.parquet")).unwrap();
            assert_eq!(rollouts.len(), 6);
            // Sampling and scoring agree: at iteration 0 the actor is the
            // reference, so the two log-probabilities are one number.
            for r in &rollouts {
                assert_eq!(r.iteration, k);
                assert_eq!(r.logprob_temperature, r.temperature);
                if k == 0 {
                    assert_eq!(r.logprobs, r.ref_logprobs);
                }
                assert!(r.response_tokens.len() <= 12);
                assert!(finite(&r.logprobs) && finite(&r.ref_logprobs) && finite(&r.values));
                assert!(r.score.is_finite());
                assert!(r.logprobs.iter().all(|&l| l <= 0.0));
            }
            let segments = read_segments(&it.join("segments.parquet")).unwrap();
            assert_eq!(segments.len(), rollouts.len());
            for (s, r) in segments.iter().zip(&rollouts) {
                let len = r.response_tokens.len() as u32;
                let expected: Vec<u32> = if len == 0 {
                    vec![]
                } else {
                    // fixed n-grams, the last token a macro action of its own
                    let mut v: Vec<u32> = (0..len - 1).step_by(n as usize).collect();
                    if len >= 2 || v.is_empty() {
                        v.push(len - 1);
                    }
                    v.dedup();
                    v
                };
                assert_eq!(s.starts, expected, "{dir} iter {k} rollout {}", s.id);
            }
            let adv = read_advantages(&it.join("advantages.parquet")).unwrap();
            assert_eq!(adv.len(), rollouts.len());
            for (a, s) in adv.iter().zip(&segments) {
                assert_eq!(a.macro_advantages.len(), s.starts.len());
                assert!(finite(&a.advantages) && finite(&a.returns) && finite(&a.rewards));
            }
        }
        assert!(run
            .join(dir)
            .join("iter-002/actor/model.safetensors")
            .exists());
    }

    // eval
    let responses = read_table(&run.join("eval/responses.parquet")).unwrap();
    assert_eq!(responses.num_rows(), 3 * 6);
    let judgements = read_table(&run.join("eval/judgements.parquet")).unwrap();
    assert_eq!(
        judgements.num_rows(),
        2 * 4,
        "ma-ppo vs ppo and vs sft on 4 prompts"
    );
    let report = std::fs::read_to_string(run.join("eval/report.md")).unwrap();
    for needle in ["sft", "ppo", "ma-ppo", "accuracy", "win"] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    assert!(first.contains("==> pipeline"));

    // Rerunning does nothing.
    let again = make(&run, &["pipeline"]);
    assert!(stages_run(&again).is_empty(), "rerun ran stages:\n{again}");

    // Touching the SFT checkpoint (the reward model's input) reruns rm and
    // everything after it, but not prepare, the tokenizer or sft.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    touch(&run.join("sft/model.safetensors"));
    let plan = make(&run, &["-n", "pipeline"]);
    assert!(plan.contains("marlhf-rm "), "{plan}");
    assert!(
        plan.contains("marlhf-rollout ") && plan.contains("marlhf-eval "),
        "{plan}"
    );
    for stage in ["marlhf-prepare ", "marlhf-tokenizer ", "marlhf-sft "] {
        assert!(!plan.contains(stage), "{stage} would rerun:\n{plan}");
    }
    let rerun = make(&run, &["pipeline"]);
    assert!(rerun.contains("==> rm"), "{rerun}");
    assert!(stages_run(&make(&run, &["pipeline"])).is_empty());

    // Deleting the last MA-PPO iteration continues from there: iteration 1's
    // update writes the final policy again, and only evaluation follows.
    let before =
        read_advantages(&run.join("ppo-n5/seed-1234/iter-001/advantages.parquet")).unwrap();
    std::fs::remove_dir_all(run.join("ppo-n5/seed-1234/iter-002")).unwrap();
    let resumed = make(&run, &["pipeline"]);
    let ran = stages_run(&resumed);
    assert_eq!(
        ran,
        vec![
            "==> ppo fixed:5 seed 1234: iteration 1 update".to_string(),
            "==> eval: generate".to_string(),
            "==> eval: judge (rm)".to_string(),
            "==> eval: report".to_string(),
        ],
        "{resumed}"
    );
    assert!(run
        .join("ppo-n5/seed-1234/iter-002/actor/model.safetensors")
        .exists());
    // The redone update is the same computation: same advantages.
    assert_eq!(
        read_advantages(&run.join("ppo-n5/seed-1234/iter-001/advantages.parquet")).unwrap(),
        before
    );
    assert_eq!(
        read_metrics(&run.join("ppo-n5/seed-1234/metrics.parquet"))
            .unwrap()
            .len(),
        2
    );

    // make compare with two seeds: the pipeline's seed-1234 runs are
    // reused, seed 1235 is trained for both conditions, and every final
    // policy is evaluated.
    let out = make(&run, &["compare", "SEEDS=1234 1235"]);
    let ran = stages_run(&out);
    assert!(
        ran.iter().all(|l| !l.contains("seed 1234")),
        "seed 1234 was trained again:\n{out}"
    );
    for cond in ["fixed:1", "fixed:5"] {
        assert!(
            ran.contains(&format!("==> ppo {cond} seed 1235: iteration 1 update")),
            "{out}"
        );
    }
    for name in ["ppo-n1.1234", "ppo-n1.1235", "ppo-n5.1234", "ppo-n5.1235"] {
        let r = read_table(&run.join(format!("compare/responses/{name}.parquet"))).unwrap();
        assert_eq!(r.num_rows(), 6, "{name}");
    }
    // Each MA-PPO policy against the PPO policy of its seed on 4 prompts.
    assert_eq!(
        read_table(&run.join("compare/judgements.parquet"))
            .unwrap()
            .num_rows(),
        2 * 4
    );
    // Early stopping: each run's checkpoints after iterations 1 and 2 on
    // the validation prompts, and the chosen one on the evaluation prompts.
    let validation_ids: std::collections::HashSet<u64> = validation.iter().map(|r| r.id).collect();
    for name in ["ppo-n1.1234", "ppo-n5.1235"] {
        let v =
            marlhf_data::read_responses(&run.join(format!("compare/validation/{name}.parquet")))
                .unwrap();
        let policies: std::collections::BTreeSet<&str> =
            v.iter().map(|r| r.policy.as_str()).collect();
        assert_eq!(
            policies.into_iter().collect::<Vec<_>>(),
            ["iter-001", "iter-002"]
        );
        assert!(v.iter().all(|r| validation_ids.contains(&r.prompt_id)));
        let e = marlhf_data::read_responses(&run.join(format!("compare/early/{name}.parquet")))
            .unwrap();
        assert_eq!(e.len(), 6);
        assert!(e.iter().all(|r| r.policy == name));
    }
    let report = std::fs::read_to_string(run.join("compare/report.md")).unwrap();
    for needle in [
        "## Verdict",
        "fixed:5 − fixed:1, final policies' mean RM score:",
        "fixed:5 − fixed:1, early-stopped policies' mean RM score:",
        "paired t-test over 2 seeds",
        "6 prompts)",
        "too few seeds for a verdict (2 < 5)",
        "Power: these seeds detect a true difference of ±",
        "## Early-stopped policies: RM score",
        "Selection criterion: each run's checkpoint (policies after iterations 1, 2) with the highest mean RM score",
        "## Seeds that fail to learn",
        "## Iterations to parity",
        "**The judge is the reward model that also gives the RM scores above**",
        "| fixed:5 | 2 × 4 |",
        "![curve_entropy.png](curve_entropy.png)",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    for m in ["score_mean", "kl_k1_token_mean", "entropy"] {
        assert!(run.join(format!("compare/curve_{m}.png")).is_file());
    }
    // A third seed: only its runs are trained and sampled.
    let plan = make(&run, &["-n", "compare", "SEEDS=1234 1235 1236"]);
    assert!(plan.contains("seed 1236: iteration 1 update"), "{plan}");
    assert!(
        !plan.contains("seed 1235: iteration") && !plan.contains("seed 1234: iteration"),
        "{plan}"
    );
    assert!(plan.contains("--policy ppo-n5.1236="), "{plan}");
    assert!(!plan.contains("--policy ppo-n5.1235="), "{plan}");
    assert!(plan.contains("--name ppo-n5.1236 "), "{plan}");
    assert!(!plan.contains("--name ppo-n5.1235 "), "{plan}");
    assert!(
        !plan.contains("compare/validation/ppo-n5.1235.parquet --policy"),
        "{plan}"
    );
    std::fs::remove_dir_all(&run).ok();
}
