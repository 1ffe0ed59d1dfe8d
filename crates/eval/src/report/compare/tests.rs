use super::*;

fn curve(values: &[f64]) -> Vec<(u32, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect()
}

fn run(seed: u64, gold: &[f64], score: &[f64], scores: &[f64]) -> SeedRun {
    SeedRun {
        seed,
        curves: BTreeMap::from([
            ("gold_mean".to_string(), curve(gold)),
            ("score_mean".to_string(), curve(score)),
        ]),
        scores: BTreeMap::from([("gold reward".to_string(), scores.to_vec())]),
        early: None,
    }
}

fn group(name: &str, label: &str, runs: Vec<SeedRun>) -> Group {
    Group {
        name: name.into(),
        label: label.into(),
        runs,
    }
}

fn input(groups: Vec<Group>) -> CompareInput {
    CompareInput {
        title: "t".into(),
        task: "stories".into(),
        baseline: "ppo-n1".into(),
        groups,
        curves: vec![("gold_mean".into(), "mean gold".into())],
        score_kinds: vec!["gold reward".into()],
        ..Default::default()
    }
}

/// Two seeds each: too few for a verdict.
fn two_seeds() -> CompareInput {
    input(vec![
        group(
            "ppo-n1",
            "fixed:1",
            vec![
                run(1, &[0.0, 0.2, 0.4], &[-1.0, 0.0, 1.0], &[0.0, 1.0]),
                run(2, &[0.0, 0.3, 0.6], &[-1.0, 0.5, 2.0], &[0.25, 0.75]),
            ],
        ),
        group(
            "ppo-n5",
            "fixed:5",
            vec![
                run(1, &[0.0, 0.5, 0.7], &[-1.0, -2.0, -3.0], &[1.0, 2.0]),
                run(2, &[0.1, 0.5, 0.9], &[-1.0, 0.0, 1.0], &[1.25, 1.75]),
            ],
        ),
    ])
}

/// Five seeds each, one prompt: the fixed:5 − fixed:1 differences per seed
/// are 0.1, 0.2, 0.3, 0.4, 0.5.
fn five_seeds() -> CompareInput {
    let runs = |offsets: &[f64]| -> Vec<SeedRun> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, &o)| {
                run(
                    10 + i as u64,
                    &[0.1 + o, 0.2 + o, 0.3 + o],
                    &[0.0, 1.0, 2.0],
                    &[0.5 + o],
                )
            })
            .collect()
    };
    input(vec![
        group("ppo-n1", "fixed:1", runs(&[0.0, 0.1, -0.1, 0.2, 0.0])),
        group("ppo-n5", "fixed:5", runs(&[0.1, 0.3, 0.2, 0.6, 0.5])),
    ])
}

#[test]
fn figures_golden() {
    let f = figures(&two_seeds()).unwrap();
    // Baseline [[0, 1], [0.25, 0.75]]: seed means 0.5 and 0.5, prompt
    // means 0.125, 0.875: MS_seeds 0, MS_prompts 2·2·0.375² = 0.5625,
    // residuals ±0.125 so MS_resid 0.0625; Var = (0 + 0.5625 − 0.0625)/4 =
    // 0.125 and df = 0.5²/(0.5625² + 0.0625²) = 0.25/0.3203125.
    let own = f[0].scores[0].own;
    assert_eq!(own.estimate, 0.5);
    assert!((own.se - 0.125f64.sqrt()).abs() < 1e-12, "{own:?}");
    assert!((own.df - 0.25 / 0.320_312_5).abs() < 1e-9, "{own:?}");
    assert!(f[0].scores[0].diff.is_none());
    // fixed:5 beats the baseline by exactly 1 on every seed and prompt:
    // a paired difference with no spread.
    let d = f[1].scores[0].diff.unwrap();
    assert_eq!(d.pairing, Pairing::Paired);
    assert_eq!((d.est.estimate, d.est.se), (1.0, 0.0));
    assert_eq!(d.seeds, (2, 2));
    // No early-stopped policies were given.
    assert!(f[1].early.is_empty());
}

#[test]
fn a_verdict_names_its_test_seeds_and_power() {
    let (md, _) = render(&five_seeds()).unwrap();
    // Differences 0.1 … 0.5: mean 0.3, se 0.0707107, t(0.975, 4) =
    // 2.776445: [0.104, 0.496]. 80% power at 3.761060 standard errors
    // (noncentral t, mpmath): ±0.266.
    let want = "fixed:5 − fixed:1, final policies' mean gold reward: +0.300 (95% CI +0.104 to +0.496; paired t-test over 5 seeds, df 4.0): fixed:5 scores higher than fixed:1, distinguishable from noise (the interval excludes 0). Power: these seeds detect a true difference of ±0.266 with 80% probability";
    assert!(md.contains(want), "{md}");
    // Per-seed means and the table's test column.
    assert!(
        md.contains("| fixed:5 | 5 | 0.600, 0.800, 0.700, 1.100, 1.000 | 0.840 ["),
        "{md}"
    );
    assert!(
        md.contains("| paired t-test over 5 seeds, df 4.0 |"),
        "{md}"
    );
}

#[test]
fn fewer_than_five_seeds_give_no_verdict() {
    let (md, _) = render(&two_seeds()).unwrap();
    assert!(
        md.contains(
            "too few seeds for a verdict (2 < 5): the interval is shown, no conclusion is drawn."
        ),
        "{md}"
    );
    assert!(
        !md.contains("distinguishable from noise (the interval"),
        "{md}"
    );
}

#[test]
fn different_seeds_are_compared_by_welch() {
    let mut i = five_seeds();
    i.groups[1].runs[4].seed = 99;
    let f = figures(&i).unwrap();
    let d = f[1].scores[0].diff.unwrap();
    assert_eq!(d.pairing, Pairing::Welch);
    // Seed means 0.5 + offsets: a = 0.6, 0.8, 0.7, 1.1, 1.0; b = 0.5, 0.6,
    // 0.4, 0.7, 0.5 — Welch on them (one prompt).
    let w = crate::stats::welch(&[0.6, 0.8, 0.7, 1.1, 1.0], &[0.5, 0.6, 0.4, 0.7, 0.5]);
    assert!((d.est.se - w.se).abs() < 1e-12 && (d.est.df - w.df).abs() < 1e-9);
    let (md, _) = render(&i).unwrap();
    assert!(md.contains("Welch t-test over 5 and 5 seeds, df"), "{md}");
}

#[test]
fn early_stopped_policies_are_reported_beside_the_final_ones() {
    let mut i = five_seeds();
    for g in &mut i.groups {
        for r in &mut g.runs {
            let final_score = r.scores["gold reward"][0];
            r.early = Some(EarlyStopped {
                iteration: 2,
                validation: vec![(1, 0.1), (2, 0.2)],
                scores: BTreeMap::from([("gold reward".to_string(), vec![final_score + 0.05])]),
            });
        }
    }
    i.selection = Some(Selection {
        kind: "gold reward".into(),
        prompts: 100,
    });
    let (md, _) = render(&i).unwrap();
    for needle in [
        "## Early-stopped policies: gold reward",
        "Selection criterion: each run's checkpoint (policies after iterations 1, 2) with the highest mean gold reward on 100 validation prompts",
        "fixed:5 − fixed:1, early-stopped policies' mean gold reward: +0.300",
        "| checkpoint per seed |",
        "| 2, 2, 2, 2, 2 |",
        "| fixed:1 | 0.100 [0.100, 0.100] | 0.200 [0.200, 0.200] |",
    ] {
        assert!(md.contains(needle), "{needle:?} not in\n{md}");
    }
}

#[test]
fn failed_seeds_are_counted_with_their_definition() {
    let (md, _) = render(&two_seeds()).unwrap();
    assert!(
        md.contains("A seed fails to learn when the proxy reward"),
        "{md}"
    );
    // fixed:5 seed 1's proxy falls from −1 to −3; seed 2's rises.
    assert!(md.contains("| fixed:5 | 1 | 2 | 1 |"), "{md}");
    assert!(md.contains("| fixed:1 | 0 | 2 | – |"), "{md}");
}

#[test]
fn parity_reads_the_difference_from_the_baselines_end() {
    let i = five_seeds();
    let f = figures(&i).unwrap();
    // Baseline at its last iteration: 0.3 + offsets. fixed:5 at iteration
    // k: 0.1·(k + 1) + its offsets; the per-seed differences at k are
    // 0.1·(k − 2) + (0.1, 0.2, 0.3, 0.4, 0.5).
    // k = 0: mean 0.1 − 0.2 = +0.1 ≥ 0: the seed-means cross at once;
    // its interval [−0.096, +0.296]: at k = 0 the lower end is below 0,
    // k = 1: 0.2 ± 0.196 → lower end +0.004 > 0: beyond noise from 1.
    let p = f[1].parity.clone().unwrap();
    assert_eq!(
        (p.reached, p.plausible, p.beyond_noise, p.baseline_last),
        (Some(0), Some(0), Some(1), 2)
    );
    // The baseline reaches its own end at its end, never beyond noise.
    let p = f[0].parity.clone().unwrap();
    assert_eq!((p.reached, p.beyond_noise), (Some(2), None));
}

#[test]
fn budget_table_gives_bands_differences_and_a_biased_peak() {
    let (md, _) = render(&two_seeds()).unwrap();
    assert!(
        md.contains("| configuration | iteration 0 | iteration 1 | iteration 2 | highest seed-mean (iteration), biased upwards |"),
        "{md}"
    );
    // fixed:5 at iteration 2: 0.7 and 0.9 → 0.8 ± 12.7062047·0.1.
    assert!(md.contains("| 0.800 [-0.471, 2.071] | 0.800 (2) |"), "{md}");
    // Its difference from fixed:1 at iteration 1: seeds 0.3, 0.2 → 0.25 ±
    // 12.7062047·0.05.
    assert!(md.contains("+0.250 [-0.385, +0.885]"), "{md}");
    assert!(
        md.contains("| paired t-test over 2 seeds, df 1.0 |"),
        "{md}"
    );
}

#[test]
fn win_rates_are_crossed_over_seeds_and_prompts() {
    let mut i = five_seeds();
    // Five seeds × two prompts: seed s wins prompt 1 and ties or loses
    // prompt 2.
    let mut verdicts = BTreeMap::new();
    for (k, r) in i.groups[1].runs.iter().enumerate() {
        let second = if k % 2 == 0 {
            Verdict::Tie
        } else {
            Verdict::Lose
        };
        verdicts.insert(r.seed, BTreeMap::from([(1, Verdict::Win), (2, second)]));
    }
    i.judged.insert(
        "ppo-n5".into(),
        Judged {
            judge: "reward model".into(),
            judge_is_score_model: true,
            verdicts,
        },
    );
    let w = win_rates(&i.judged["ppo-n5"]).unwrap();
    assert_eq!((w.win, w.tie, w.lose, w.unparseable), (5, 3, 2, 0));
    assert!(w.crossed);
    // Wins [[1, 0] × 5]: every seed the same, the prompts differ: MS_seeds
    // 0, MS_prompts 5·(0.25 + 0.25) = 2.5, MS_resid 0 → Var = 2.5/10, but
    // the prompt term has 1 degree of freedom: se 0.5, df 1.
    assert_eq!(w.win_rate.estimate, 0.5);
    assert!((w.win_rate.se - 0.5).abs() < 1e-12 && (w.win_rate.df - 1.0).abs() < 1e-12);
    let (md, _) = render(&i).unwrap();
    assert!(
        md.contains("**The judge is the reward model that also gives the RM scores above**"),
        "{md}"
    );
    assert!(
        md.contains("| fixed:5 | 5 × 2 | 5 | 3 | 2 | 0 | 50.0% ["),
        "{md}"
    );
    // Different prompts per seed: the interval is over the seeds' rates.
    let j = i.judged.get_mut("ppo-n5").unwrap();
    j.verdicts.get_mut(&10).unwrap().insert(3, Verdict::Win);
    let w = win_rates(&i.judged["ppo-n5"]).unwrap();
    assert!(!w.crossed);
    assert_eq!(w.win_rate.df, 4.0);
}

#[test]
fn report_has_its_plots_and_refuses_an_unknown_baseline() {
    let (md, plots) = render(&two_seeds()).unwrap();
    assert_eq!(plots.len(), 1);
    assert_eq!(plots[0].0, "curve_gold_mean.png");
    assert!(plots[0].1.starts_with(b"\x89PNG"));
    assert!(md.contains("![curve_gold_mean.png](curve_gold_mean.png)"));
    assert!(
        md.contains("| fixed:5 | `gold_mean` | 1, 2 | 0.050 |"),
        "{md}"
    );
    let mut bad = two_seeds();
    bad.baseline = "nope".into();
    assert!(render(&bad).unwrap_err().to_string().contains("\"nope\""));
}

#[test]
fn budgets_are_quarters_and_the_end() {
    assert_eq!(budget_iterations(11), vec![3, 6, 9, 11]);
    assert_eq!(budget_iterations(15), vec![4, 8, 12, 15]);
    assert_eq!(budget_iterations(2), vec![0, 1, 2]);
    assert_eq!(budget_iterations(0), vec![0]);
}
