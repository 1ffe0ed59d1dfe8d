//! `compare_runs` and `tune_report` on tiny synthetic runs: metrics
//! tables, final, validation and early-stopped responses, judgements,
//! written as the stages write them, read back into a report whose numbers
//! are checked by hand.

use std::path::{Path, PathBuf};

use marlhf_data::{
    write_judgements, write_metrics, write_responses, Gold, JudgementRow, MetricsRow, ResponseRow,
    Verdict,
};
use marlhf_stages::evaluate::comparing::{compare_runs, CompareConfig};
use marlhf_stages::evaluate::early_stopping::SelectBy;
use marlhf_stages::evaluate::tuning::{tune_report, TuneConfig};
use marlhf_testkit::TempDir;

fn response(policy: &str, prompt_id: u64, gold: f64, score: f64) -> ResponseRow {
    ResponseRow {
        id: prompt_id,
        prompt_id,
        policy: policy.into(),
        sample: 0,
        prompt: format!("prompt {prompt_id}"),
        response: format!("{policy} answers {prompt_id}"),
        response_tokens: vec![1, 2],
        score: score as f32,
        finished: true,
        gold: Some(Gold {
            reward: gold as f32,
            ending: true,
            callback: false,
        }),
    }
}

/// Writes responses with ids unique within the file.
fn write(path: &Path, mut rows: Vec<ResponseRow>) {
    for (i, r) in rows.iter_mut().enumerate() {
        r.id = i as u64;
    }
    write_responses(path, &rows).unwrap();
}

/// A run's metrics: `score_mean` and `gold_mean` over three iterations, and
/// the critic's explained variance when `critic` is set.
fn metrics(dir: &Path, score: [f64; 3], gold: [f64; 3], critic: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let rows: Vec<MetricsRow> = (0..3)
        .map(|k| {
            let mut values = vec![
                ("score_mean".to_string(), score[k]),
                ("gold_mean".to_string(), gold[k]),
            ];
            if critic {
                values.push(("critic_explained_variance".to_string(), 0.1 * k as f64));
            }
            MetricsRow {
                step: k as u64,
                iteration: k as u32,
                values,
            }
        })
        .collect();
    write_metrics(&dir.join("metrics.parquet"), &rows).unwrap();
}

struct Runs {
    _tmp: TempDir,
    cfg: CompareConfig,
    root: PathBuf,
}

/// Five seeds × {ppo-n1, ppo-n5}, two evaluation prompts, two validation
/// prompts and checkpoints 1 and 2.
fn runs() -> Runs {
    let tmp = TempDir::new("compare-report");
    let root = tmp.path().to_path_buf();
    let mut cfg = CompareConfig {
        responses: vec![],
        validation: vec![],
        early_responses: vec![],
        select_by: SelectBy::Gold,
        judgements: None,
        runs: vec![],
        labels: vec![
            ("ppo-n1".into(), "fixed:1".into()),
            ("ppo-n5".into(), "fixed:5".into()),
        ],
        baseline: None,
        rm_accuracy: None,
        curves: vec!["gold_mean".into()],
        optional_curves: vec!["critic_explained_variance".into(), "not_written".into()],
        title: "synthetic".into(),
        task: "stories".into(),
        notes: vec![],
        out: root.join("compare/report.md"),
    };
    let mut judgements = Vec::new();
    for (g, lift) in [("ppo-n1", 0.0), ("ppo-n5", 0.1)] {
        for (i, seed) in (1234u64..1239).enumerate() {
            let name = format!("{g}.{seed}");
            let o = 0.01 * i as f64;
            let dir = root.join(g).join(format!("seed-{seed}"));
            // ppo-n5 seed 1234 fails to learn: its proxy falls.
            let score = if g == "ppo-n5" && seed == 1234 {
                [0.0, -1.0, -2.0]
            } else {
                [0.0, 1.0, 2.0]
            };
            metrics(
                &dir,
                score,
                [0.1, 0.2 + lift, 0.3 + o],
                g == "ppo-n1" || seed != 1238,
            );
            cfg.runs.push((name.clone(), dir));
            // Final policy: gold 0.2 + lift + o on prompt 1, 0.4 + lift + o
            // on prompt 2. Early-stopped: 0.05 more.
            let final_file = root.join(format!("responses/{name}.parquet"));
            let early_file = root.join(format!("early/{name}.parquet"));
            let val_file = root.join(format!("validation/{name}.parquet"));
            for d in ["responses", "early", "validation"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            write(
                &final_file,
                vec![
                    response(&name, 1, 0.2 + lift + o, 1.0),
                    response(&name, 2, 0.4 + lift + o, 1.0),
                ],
            );
            write(
                &early_file,
                vec![
                    response(&name, 1, 0.25 + lift + o, 1.0),
                    response(&name, 2, 0.45 + lift + o, 1.0),
                ],
            );
            // Validation: iter-001 is best for ppo-n1, iter-002 for ppo-n5.
            let (v1, v2) = if g == "ppo-n1" {
                (0.5, 0.3)
            } else {
                (0.3, 0.5)
            };
            write(
                &val_file,
                vec![
                    response("iter-001", 7, v1, 0.0),
                    response("iter-001", 8, v1, 0.0),
                    response("iter-002", 7, v2, 0.0),
                    response("iter-002", 8, v2, 0.0),
                ],
            );
            cfg.responses.push(final_file);
            cfg.early_responses.push(early_file);
            cfg.validation.push((name.clone(), val_file));
            if g == "ppo-n5" {
                for (p, v) in [(1, Verdict::Win), (2, Verdict::Lose)] {
                    judgements.push(JudgementRow {
                        prompt_id: p,
                        policy_a: name.clone(),
                        policy_b: format!("ppo-n1.{seed}"),
                        judge: "reward model".into(),
                        a_shown_first: true,
                        verdict: v,
                        choice: Some("A".into()),
                        raw: String::new(),
                    });
                }
            }
        }
    }
    let j = root.join("judgements.parquet");
    write_judgements(&j, &judgements).unwrap();
    cfg.judgements = Some(j);
    Runs {
        _tmp: tmp,
        cfg,
        root,
    }
}

#[test]
fn the_report_reads_every_file_and_gives_hand_checked_figures() {
    let r = runs();
    let out = compare_runs(&r.cfg).unwrap();
    assert_eq!((out.groups, out.runs, out.prompts), (2, 10, 2));
    let md = std::fs::read_to_string(&out.report).unwrap();
    // The paired difference is +0.1 on every seed and prompt: a point, and
    // with five seeds a verdict.
    for needle in [
        "fixed:5 − fixed:1, final policies' mean gold reward: +0.100 (95% CI +0.100 to +0.100; paired t-test over 5 seeds",
        "fixed:5 − fixed:1, early-stopped policies' mean gold reward: +0.100",
        "fixed:5 scores higher than fixed:1, distinguishable from noise",
        // Per-seed means: (0.2 + 0.4)/2 + 0.1 + 0.01·i for fixed:5.
        "| fixed:5 | 5 | 0.400, 0.410, 0.420, 0.430, 0.440 |",
        // Early-stopped: 0.05 more, the chosen checkpoints per seed.
        "| fixed:5 | 5 | 0.450, 0.460, 0.470, 0.480, 0.490 |",
        "| 1, 1, 1, 1, 1 |",
        "| 2, 2, 2, 2, 2 |",
        "with the highest mean gold reward on 2 validation prompts",
        "| fixed:1 | 0.500 [0.500, 0.500] | 0.300 [0.300, 0.300] |",
        // Seed 1234 of fixed:5 fails to learn.
        "| fixed:5 | 1 | 5 | 1234 |",
        "| fixed:5 | 5 × 2 | 5 | 0 | 5 | 0 | 50.0% [",
        "**The judge is the reward model that also gives the RM scores above**",
    ] {
        assert!(md.contains(needle), "{needle:?} not in\n{md}");
    }
    // The optional curve: drawn when every run has it. fixed:5 seed 1238
    // lacks it, so it is left out; a curve no run has is left out.
    assert!(!md.contains("critic_explained_variance"), "{md}");
    assert!(!r
        .root
        .join("compare/curve_critic_explained_variance.png")
        .exists());
}

#[test]
fn optional_curves_are_drawn_when_every_run_has_them() {
    let r = runs();
    let mut cfg = r.cfg.clone();
    // Leave out the run without the column: Welch with 4 against 5 seeds.
    cfg.runs.retain(|(n, _)| n != "ppo-n5.1238");
    cfg.responses
        .retain(|p| !p.ends_with("ppo-n5.1238.parquet"));
    cfg.early_responses
        .retain(|p| !p.ends_with("ppo-n5.1238.parquet"));
    cfg.validation.retain(|(n, _)| n != "ppo-n5.1238");
    let out = compare_runs(&cfg).unwrap();
    let md = std::fs::read_to_string(&out.report).unwrap();
    assert!(md.contains("`critic_explained_variance`"), "{md}");
    assert!(r
        .root
        .join("compare/curve_critic_explained_variance.png")
        .is_file());
    assert!(md.contains("Welch t-test over 4 and 5 seeds"), "{md}");
    assert!(md.contains("too few seeds for a verdict (4 < 5)"), "{md}");
}

#[test]
fn early_stopping_needs_every_runs_validation() {
    let r = runs();
    let mut cfg = r.cfg.clone();
    cfg.validation.pop();
    let e = compare_runs(&cfg).unwrap_err().to_string();
    assert!(e.contains("9 --validation for 10 runs"), "{e}");
    let mut cfg = r.cfg.clone();
    cfg.validation[0].0 = "ppo-n9.1".into();
    let e = compare_runs(&cfg).unwrap_err().to_string();
    assert!(e.contains("--validation ppo-n9.1="), "{e}");
    assert!(!cfg.out.exists());
}

#[test]
fn tuning_ranks_each_method_on_its_validation_scores() {
    let r = runs();
    // Two points, each method's runs of seeds 1234 and 1235 reused as
    // both points' validation files: point "a" takes them as they are,
    // point "b" takes the other method's, so ppo-n1 scores its final
    // checkpoint (iter-002) 0.3 at a and 0.5 at b.
    let file = |g: &str, s: u64| r.root.join(format!("validation/{g}.{s}.parquet"));
    let mut validation = Vec::new();
    for (point, swap) in [("a", false), ("b", true)] {
        for (g, other) in [("ppo-n1", "ppo-n5"), ("ppo-n5", "ppo-n1")] {
            for s in [1234, 1235] {
                let src = if swap { other } else { g };
                validation.push((format!("{point}/{g}.{s}"), file(src, s)));
            }
        }
    }
    let cfg = TuneConfig {
        validation,
        settings: vec![
            ("a".into(), "PPO_KL=0.1".into()),
            ("b".into(), "PPO_KL=0.05".into()),
        ],
        labels: r.cfg.labels.clone(),
        select_by: SelectBy::Gold,
        title: "t".into(),
        out: r.root.join("tune/report.md"),
    };
    let out = tune_report(&cfg).unwrap();
    assert_eq!(
        out.chosen,
        vec![
            ("ppo-n1".to_string(), "b".to_string()),
            ("ppo-n5".to_string(), "a".to_string())
        ]
    );
    let md = std::fs::read_to_string(&out.report).unwrap();
    assert!(md.contains("on 2 validation prompts"), "{md}");
    assert!(md.contains("`PPO_SETTINGS_fixed-1 = PPO_KL=0.05`"), "{md}");
}
