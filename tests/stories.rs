//! `make pipeline TASK=stories` and `make compare TASK=stories` end to end
//! on tiny settings with the real pretrained stories260K (from
//! `../shared/models`): prompts, import, gold-labelled pairs, the proxy
//! reward model, PPO and MA-PPO with gold curves, and the evaluation and
//! comparison files, each checked for content.
//!
//! Needs the release binaries (`make test` builds them first).

mod common;

use std::collections::HashMap;
use std::path::Path;

use marlhf_data::{read_metrics, read_pairs, read_prompts, read_rollouts, read_table};

fn make(run: &Path, extra: &[&str]) -> String {
    let settings = [
        "TASK=stories",
        "CARGO=true",
        "STORIES_PPO_PROMPTS=60",
        "STORIES_EVAL_PROMPTS=12",
        "STORIES_PAIR_PROMPTS=40",
        "STORIES_VALIDATION_PROMPTS=10",
        "VALIDATION_N=4",
        "MAX_COMPLETION_TOKENS=96",
        "RM_EPOCHS=1",
        // Few pairs at these sizes: hold out enough to measure accuracy.
        "RM_ARGS=--val-fraction 0.3",
        "ITERS=2",
        "PPO_ROLLOUT_BATCH=6",
        "PPO_BATCH=6",
        "EVAL_N=6",
        "EVAL_JUDGE_SAMPLE=3",
    ];
    let mut args: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    args.push(format!("RUN={}", run.display()));
    args.extend(extra.iter().map(|s| s.to_string()));
    common::make(&args)
}

/// (column name → f32 values) of a Parquet file's float columns we read.
fn column_f32(path: &Path, name: &str) -> Vec<Option<f32>> {
    use arrow::array::AsArray;
    let t = read_table(path).unwrap();
    let c = t
        .column_by_name(name)
        .unwrap_or_else(|| panic!("{}: no {name}", path.display()));
    c.as_primitive::<arrow::datatypes::Float32Type>()
        .iter()
        .collect()
}

fn column_str(path: &Path, name: &str) -> Vec<String> {
    use arrow::array::AsArray;
    let t = read_table(path).unwrap();
    t.column_by_name(name)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect()
}

#[test]
#[ignore = "needs ../shared"]
fn stories_task_end_to_end() {
    // The task's make fragment reads it from ../shared.
    marlhf_testkit::stories260k();
    let run = std::env::temp_dir().join(format!("marlhf-stories-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    make(&run, &["pipeline"]);

    // Prompts: four disjoint sets of story openings.
    let sets: Vec<Vec<String>> = [
        "prompts",
        "eval_prompts",
        "pair_prompts",
        "validation_prompts",
    ]
    .iter()
    .map(|f| {
        read_prompts(&run.join(format!("data/{f}.parquet")))
            .unwrap()
            .into_iter()
            .map(|r| r.prompt)
            .collect()
    })
    .collect();
    assert_eq!(
        sets.iter().map(Vec::len).collect::<Vec<_>>(),
        [60, 12, 40, 10]
    );
    let all: std::collections::HashSet<&String> = sets.iter().flatten().collect();
    assert_eq!(all.len(), 122);

    // The imported model ends a story at BOS, as llama2.c's run.c does.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("sft/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["eos_token_id"], serde_json::json!([1, 2]));

    // Pairs: every chosen story has the higher gold reward of the two.
    let samples = run.join("data/pair_samples.parquet");
    let texts = column_str(&samples, "response");
    let prompts = column_str(&samples, "prompt");
    let golds = column_f32(&samples, "gold");
    assert_eq!(texts.len(), 40 * 4);
    let gold_of: HashMap<(&str, &str), f32> = prompts
        .iter()
        .zip(&texts)
        .zip(&golds)
        .map(|((p, t), g)| ((p.as_str(), t.as_str()), g.expect("every sample has gold")))
        .collect();
    let mut pairs = read_pairs(&run.join("data/pairs.parquet")).unwrap();
    pairs.extend(read_pairs(&run.join("data/pairs_heldout.parquet")).unwrap());
    assert!(!pairs.is_empty());
    for p in &pairs {
        let c = gold_of[&(p.prompt.as_str(), p.chosen.as_str())];
        let r = gold_of[&(p.prompt.as_str(), p.rejected.as_str())];
        assert!(c > r, "pair {}: chosen gold {c} ≤ rejected gold {r}", p.id);
    }
    assert!(run.join("rm/gold_accuracy.parquet").is_file());

    // Rollouts and metrics carry gold next to the proxy score.
    for dir in ["ppo-n1/seed-1234", "ppo-n5/seed-1234"] {
        let rows = read_rollouts(&run.join(dir).join("iter-001/rollouts.parquet")).unwrap();
        assert!(rows.iter().all(|r| r.gold.is_some() && r.score.is_finite()));
        let m = read_metrics(&run.join(dir).join("metrics.parquet")).unwrap();
        for row in &m {
            let g = row.get("gold_mean").unwrap();
            assert!((0.0..=1.0).contains(&g), "{g}");
            assert!(row.get("gold_ending_rate").is_some());
        }
    }

    // Evaluation: gold and proxy columns, and the report's gold table.
    let responses = run.join("eval/responses.parquet");
    assert!(column_f32(&responses, "gold").iter().all(Option::is_some));
    assert!(column_f32(&responses, "score")
        .iter()
        .all(|s| s.unwrap().is_finite()));
    let report = std::fs::read_to_string(run.join("eval/report.md")).unwrap();
    assert!(report.contains("## Gold reward"), "{report}");

    // The comparison over two seeds: gold first, proxy second, curves of
    // both with bands, the over-optimisation picture and the proxy's
    // accuracy against gold.
    make(&run, &["compare", "SEEDS=1234 1235"]);
    let cmp = std::fs::read_to_string(run.join("compare/report.md")).unwrap();
    for needle in [
        "proxy reward model against gold labels on",
        "fixed:5 − fixed:1, final policies' mean gold reward:",
        "fixed:5 − fixed:1, early-stopped policies' mean gold reward:",
        "too few seeds for a verdict (2 < 5)",
        "## Final policies: gold reward",
        "## Final policies: RM score",
        "## Early-stopped policies: gold reward",
        "with the highest mean gold reward on 4 validation prompts",
        "## Seeds that fail to learn",
        "## `gold_mean` at iteration budgets",
        "highest seed-mean (iteration), biased upwards",
        "## Gold reward against KL",
        "`gold_mean`",
    ] {
        assert!(
            cmp.contains(needle),
            "compare report lacks {needle:?}:\n{cmp}"
        );
    }
    // Each run's early-stopped policy is its checkpoint with the best mean
    // validation gold (a tie: the earlier); when that is the final one, it
    // answers exactly as the final policy did.
    for name in ["ppo-n1.1234", "ppo-n5.1235"] {
        let v =
            marlhf_data::read_responses(&run.join(format!("compare/validation/{name}.parquet")))
                .unwrap();
        let mean = |p: &str| {
            let g: Vec<f64> = v
                .iter()
                .filter(|r| r.policy == p)
                .map(|r| r.gold.unwrap().reward as f64)
                .collect();
            assert_eq!(g.len(), 4, "{name} {p}");
            g.iter().sum::<f64>() / 4.0
        };
        let final_wins = mean("iter-002") > mean("iter-001");
        let early = marlhf_data::read_responses(&run.join(format!("compare/early/{name}.parquet")))
            .unwrap();
        let last =
            marlhf_data::read_responses(&run.join(format!("compare/responses/{name}.parquet")))
                .unwrap();
        let texts = |rows: &[marlhf_data::ResponseRow]| {
            rows.iter().map(|r| r.response.clone()).collect::<Vec<_>>()
        };
        assert_eq!(texts(&early) == texts(&last), final_wins, "{name}");
    }
    for png in [
        "curve_gold_mean.png",
        "curve_score_mean.png",
        "gold_vs_kl.png",
    ] {
        assert!(run.join("compare").join(png).is_file(), "{png}");
    }
    std::fs::remove_dir_all(&run).ok();
}
