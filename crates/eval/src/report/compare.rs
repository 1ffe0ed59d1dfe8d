//! The comparison report of `make compare`: several training
//! configurations (termination conditions, recipes), each run with several
//! seeds from the same SFT model and reward model, evaluated on the same
//! prompts. Every figure comes with a 95% interval (see [`crate::stats`]):
//!
//! - training curves: per iteration, the mean over seeds with a Student-t
//!   band;
//! - final evaluation scores: the mean over seeds of the mean over prompts,
//!   with a two-level bootstrap interval over seeds and prompts; the
//!   difference with the baseline likewise, paired by prompt;
//! - iterations to parity: the first iteration whose seed-mean training
//!   curve reaches the baseline's final seed-mean;
//! - pairwise judgements against the baseline's run of the same seed,
//!   pooled over seeds, with Wilson intervals;
//! - one sentence per configuration saying whether its difference from the
//!   baseline is distinguishable from noise (its interval excludes 0).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::plot::{band_curves_png, BandSeries};
use super::{cell, num};
use crate::stats::{
    bootstrap_mean, first_reaching, mean, t_interval, wilson, Interval, SeedScores,
};

/// Bootstrap replicates of every interval.
pub const REPLICATES: usize = 10_000;

/// One seed's run of a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedRun {
    pub seed: u64,
    /// Training metric → (iteration, value), in iteration order.
    pub curves: BTreeMap<String, Vec<(u32, f64)>>,
    /// Evaluation score kind (e.g. "RM score") → one score per evaluation
    /// prompt, the prompts in the same order in every run.
    pub scores: BTreeMap<String, Vec<f64>>,
}

/// One configuration: a termination condition, a recipe…
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The name runs are known by (e.g. `ppo-n5`).
    pub name: String,
    /// What the report calls it (e.g. `fixed:5`).
    pub label: String,
    pub runs: Vec<SeedRun>,
}

/// Pairwise verdicts of one configuration against the baseline, pooled
/// over seeds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdicts {
    pub win: usize,
    pub tie: usize,
    pub lose: usize,
    pub unparseable: usize,
    pub judge: String,
}

impl Verdicts {
    pub fn n(&self) -> usize {
        self.win + self.tie + self.lose + self.unparseable
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompareInput {
    pub title: String,
    pub task: String,
    /// Free lines under the title (settings, wall time…).
    pub notes: Vec<String>,
    /// The name of the group the others are compared with.
    pub baseline: String,
    pub groups: Vec<Group>,
    /// Training metrics drawn as curves; the first is the one "iterations
    /// to parity" is read on. (metric, axis label).
    pub curves: Vec<(String, String)>,
    /// Evaluation score kinds, in the order of the tables; the first one is
    /// the headline of the sentence.
    pub score_kinds: Vec<String>,
    /// Group name → its verdicts against the baseline.
    pub verdicts: BTreeMap<String, Verdicts>,
    /// The proxy reward model against known labels on held-out pairs:
    /// (chosen, rejected, tie) counts, when the task has a gold reward.
    pub rm_accuracy: Option<(usize, usize, usize)>,
    /// Seeds the bootstrap.
    pub seed: u64,
}

/// A curve's mean over seeds with its band, at the iterations every seed
/// reached.
pub fn band(runs: &[SeedRun], metric: &str) -> Vec<(u32, Interval)> {
    let mut by_iteration: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for &(it, v) in r.curves.get(metric).map(Vec::as_slice).unwrap_or(&[]) {
            if v.is_finite() {
                by_iteration.entry(it).or_default().push(v);
            }
        }
    }
    by_iteration
        .into_iter()
        .filter(|(_, v)| v.len() == runs.len())
        .map(|(it, v)| (it, t_interval(&v)))
        .collect()
}

/// Per seed, the scores of one kind.
fn seed_scores(g: &Group, kind: &str) -> Option<SeedScores> {
    g.runs.iter().map(|r| r.scores.get(kind).cloned()).collect()
}

/// The figures of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupFigures {
    /// Per score kind: the final score, and the difference with the
    /// baseline (None for the baseline itself).
    pub scores: Vec<(Interval, Option<Interval>)>,
    /// Iteration at which the seed-mean of the first curve first reaches
    /// the baseline's final seed-mean (the baseline's own included), and
    /// the iterations the baseline ran.
    pub parity: Option<(Option<u32>, u32)>,
}

pub fn figures(input: &CompareInput) -> Result<Vec<GroupFigures>> {
    let Some(base) = input.groups.iter().find(|g| g.name == input.baseline) else {
        bail!("the baseline {:?} is not among the runs", input.baseline);
    };
    let first_curve = input.curves.first().map(|c| c.0.as_str());
    let base_final = first_curve
        .map(|m| band(&base.runs, m))
        .and_then(|b| b.last().map(|&(it, i)| (it, i.estimate)));
    let mut out = Vec::new();
    for (gi, g) in input.groups.iter().enumerate() {
        let mut scores = Vec::new();
        for (ki, kind) in input.score_kinds.iter().enumerate() {
            let (Some(mine), Some(theirs)) = (seed_scores(g, kind), seed_scores(base, kind)) else {
                bail!("{}: no {kind:?} scores for every seed", g.name);
            };
            let seed = input.seed ^ ((gi as u64) << 32) ^ ki as u64;
            let own = bootstrap_mean(&mine, None, REPLICATES, seed);
            let diff = (g.name != base.name)
                .then(|| bootstrap_mean(&mine, Some(&theirs), REPLICATES, seed ^ 0xd1ff))
                .flatten();
            let Some(own) = own else {
                bail!(
                    "{}: the {kind:?} scores of its seeds cover different prompts",
                    g.name
                );
            };
            if g.name != base.name && diff.is_none() {
                bail!(
                    "{} and {}: the {kind:?} scores cover different prompts",
                    g.name,
                    base.name
                );
            }
            scores.push((own, diff));
        }
        let parity = match (first_curve, base_final) {
            (Some(metric), Some((last, target))) => {
                let b = band(&g.runs, metric);
                let means: Vec<f64> = b.iter().map(|(_, i)| i.estimate).collect();
                Some((first_reaching(&means, target).map(|k| b[k].0), last))
            }
            _ => None,
        };
        out.push(GroupFigures { scores, parity });
    }
    Ok(out)
}

/// The iterations the budget table reads a curve at: the ends of the
/// run's first three quarters and its last iteration.
pub fn budget_iterations(last: u32) -> Vec<u32> {
    let runs = u64::from(last) + 1;
    let mut its: Vec<u32> = (1..4u64).map(|k| (k * runs / 4) as u32).collect();
    its.push(last);
    its.retain(|&it| it <= last);
    its.dedup();
    its
}

/// The headline curve at fixed iteration budgets, and its peak: a reward
/// that rises and then falls (an over-optimised proxy, a collapse) shows
/// here, where the final figures alone would hide it.
fn budget_table(md: &mut String, input: &CompareInput, metric: &str) {
    let bands: Vec<Vec<(u32, Interval)>> =
        input.groups.iter().map(|g| band(&g.runs, metric)).collect();
    let Some(last) = bands.iter().filter_map(|b| b.last().map(|p| p.0)).min() else {
        return;
    };
    let its = budget_iterations(last);
    let _ = writeln!(md, "## `{metric}` at iteration budgets\n");
    md.push_str("The seed-mean of the rollouts at a few iterations (the policy after that many updates) with its 95% Student-t band over seeds, and the highest seed-mean of the run.\n\n");
    md.push_str("| configuration |");
    for it in &its {
        let _ = write!(md, " iteration {it} |");
    }
    md.push_str(" peak [95% band] (iteration) |\n| --- |");
    md.push_str(&" ---: |".repeat(its.len() + 1));
    md.push('\n');
    for (g, b) in input.groups.iter().zip(&bands) {
        let _ = write!(md, "| {} |", cell(&g.label));
        for it in &its {
            let at = b.iter().find(|p| p.0 == *it);
            let _ = write!(
                md,
                " {} |",
                at.map_or("–".to_string(), |(_, i)| interval(i, 3))
            );
        }
        let peak = b
            .iter()
            .filter(|p| p.0 <= last && p.1.estimate.is_finite())
            .fold(None::<&(u32, Interval)>, |best, p| match best {
                Some(q) if q.1.estimate >= p.1.estimate => Some(q),
                _ => Some(p),
            });
        let _ = writeln!(
            md,
            " {} |",
            peak.map_or("–".to_string(), |(it, i)| format!(
                "{} ({it})",
                interval(i, 3)
            ))
        );
    }
    md.push('\n');
}

fn signed(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:+.decimals$}")
    } else {
        "–".to_string()
    }
}

fn interval(i: &Interval, decimals: usize) -> String {
    format!(
        "{} [{}, {}]",
        num(i.estimate, decimals),
        num(i.lo, decimals),
        num(i.hi, decimals)
    )
}

/// The plain sentence about one configuration's difference from the
/// baseline on the headline score.
pub fn verdict_sentence(
    label: &str,
    base: &str,
    kind: &str,
    diff: &Interval,
    seeds: (usize, usize),
    prompts: usize,
) -> String {
    let what = format!(
        "{label} − {base}, final mean {kind}: {} (95% CI {} to {}; {} vs {} seeds × {prompts} prompts)",
        signed(diff.estimate, 3),
        signed(diff.lo, 3),
        signed(diff.hi, 3),
        seeds.0,
        seeds.1,
    );
    if diff.excludes(0.0) {
        let side = if diff.estimate > 0.0 {
            "higher"
        } else {
            "lower"
        };
        format!("{what}: {label} scores {side} than {base}, distinguishable from noise (the interval excludes 0).")
    } else {
        format!("{what}: not distinguishable from noise (the interval contains 0).")
    }
}

/// The over-optimisation picture's file and the metrics it reads.
pub const GOLD_VS_KL_FILE: &str = "gold_vs_kl.png";
pub const GOLD_METRIC: &str = "gold_mean";
pub const KL_METRIC: &str = "kl_k1_seq_sum";

/// Gold reward (y, with its band) against KL (x), per group, when the runs
/// have both curves.
fn gold_vs_kl(input: &CompareInput) -> Result<Option<Vec<u8>>> {
    let mut series = Vec::new();
    for g in &input.groups {
        let gold = band(&g.runs, GOLD_METRIC);
        let kl: BTreeMap<u32, f64> = band(&g.runs, KL_METRIC)
            .into_iter()
            .map(|(it, i)| (it, i.estimate))
            .collect();
        let points: Vec<(f64, f64, f64, f64)> = gold
            .iter()
            .filter_map(|(it, i)| kl.get(it).map(|&x| (x, i.estimate, i.lo, i.hi)))
            .collect();
        if points.is_empty() {
            return Ok(None);
        }
        series.push(BandSeries {
            label: g.label.clone(),
            points,
        });
    }
    if series.is_empty() {
        return Ok(None);
    }
    Ok(Some(band_curves_png(
        &series,
        "Gold reward against KL from the reference",
        "mean gold reward",
        "KL per response, k1 (nats)",
    )?))
}

/// File name of a curve's plot.
pub fn curve_file(metric: &str) -> String {
    format!("curve_{metric}.png")
}

/// A plot of the report: its file name and PNG bytes.
pub type Plot = (String, Vec<u8>);

/// The markdown of the report and its plots.
pub fn render(input: &CompareInput) -> Result<(String, Vec<Plot>)> {
    let figs = figures(input)?;
    let base = input
        .groups
        .iter()
        .find(|g| g.name == input.baseline)
        .expect("figures checked the baseline");
    let label = |name: &str| {
        input
            .groups
            .iter()
            .find(|g| g.name == name)
            .map_or(name.to_string(), |g| g.label.clone())
    };
    let mut md = format!("# {}\n\n", input.title);
    if !input.task.is_empty() {
        let _ = writeln!(md, "Task: `{}`\n", input.task);
    }
    for n in &input.notes {
        let _ = writeln!(md, "- {n}");
    }
    if !input.notes.is_empty() {
        md.push('\n');
    }

    if let Some((right, wrong, ties)) = input.rm_accuracy {
        let n = right + wrong + ties;
        let acc = wilson(right, n);
        let _ = writeln!(
            md,
            "- proxy reward model against gold labels on {n} held-out pairs: {}% correct [95% CI {}, {}], {ties} ties\n",
            num(100.0 * acc.estimate, 1),
            num(100.0 * acc.lo, 1),
            num(100.0 * acc.hi, 1)
        );
    }

    // The sentences first: what a reader came for.
    let headline = input.score_kinds.first();
    if let Some(kind) = headline {
        md.push_str("## Verdict\n\n");
        for (g, f) in input.groups.iter().zip(&figs) {
            if let Some((_, Some(diff))) = f.scores.first() {
                let prompts = g
                    .runs
                    .first()
                    .and_then(|r| r.scores.get(kind))
                    .map_or(0, Vec::len);
                let _ = writeln!(
                    md,
                    "- {}",
                    verdict_sentence(
                        &g.label,
                        &base.label,
                        kind,
                        diff,
                        (g.runs.len(), base.runs.len()),
                        prompts
                    )
                );
            }
        }
        md.push('\n');
    }

    for (ki, kind) in input.score_kinds.iter().enumerate() {
        let _ = writeln!(md, "## Final evaluation: {kind}\n");
        let _ = writeln!(
            md,
            "Mean over seeds of each seed's mean over the evaluation prompts, with a 95% bootstrap interval over seeds and prompts ({REPLICATES} replicates); the difference is paired by prompt.\n"
        );
        let _ = writeln!(
            md,
            "| configuration | seeds | per seed | mean [95% CI] | − {} [95% CI] |",
            cell(&base.label)
        );
        md.push_str("| --- | ---: | --- | ---: | ---: |\n");
        for (g, f) in input.groups.iter().zip(&figs) {
            let (own, diff) = &f.scores[ki];
            let per_seed: Vec<String> = g
                .runs
                .iter()
                .map(|r| num(r.scores.get(kind).map_or(f64::NAN, |s| mean(s)), 3))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                cell(&g.label),
                g.runs.len(),
                per_seed.join(", "),
                interval(own, 3),
                diff.as_ref().map_or("—".to_string(), |d| interval(d, 3))
            );
        }
        md.push('\n');
    }

    if let Some((metric, _)) = input.curves.first() {
        let _ = writeln!(md, "## Iterations to parity\n");
        let _ = writeln!(
            md,
            "The first iteration at which a configuration's seed-mean `{metric}` reaches {}'s final seed-mean.\n",
            base.label
        );
        md.push_str("The baseline's own row says when it first got there; a configuration reaching it sooner learns faster by this measure.\n\n");
        md.push_str("| configuration | reaches at iteration | baseline's iterations |\n| --- | ---: | ---: |\n");
        for (g, f) in input.groups.iter().zip(&figs) {
            if let Some((reached, last)) = f.parity {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    cell(&g.label),
                    reached.map_or("not reached".to_string(), |k| k.to_string()),
                    last + 1
                );
            }
        }
        md.push('\n');
    }

    if let Some((metric, _)) = input.curves.first() {
        budget_table(&mut md, input, metric);
    }

    if !input.verdicts.is_empty() {
        let judge = input
            .verdicts
            .values()
            .next()
            .map_or("", |v| v.judge.as_str());
        let _ = writeln!(md, "## Pairwise judgements against {}\n", base.label);
        let _ = writeln!(
            md,
            "Each configuration's final policy against {}'s of the same seed, judged by {}, pooled over seeds; 95% Wilson intervals. The decisive share leaves ties and unparseable answers out: above 50% beyond its interval means the judge prefers the configuration.\n",
            base.label,
            if judge.is_empty() { "the judge" } else { judge }
        );
        md.push_str("| configuration | n | win | tie | lose | unparseable | win rate [95% CI] | decisive win share [95% CI] |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (name, v) in &input.verdicts {
            let pct = |i: Interval| {
                format!(
                    "{}% [{}, {}]",
                    num(100.0 * i.estimate, 1),
                    num(100.0 * i.lo, 1),
                    num(100.0 * i.hi, 1)
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&label(name)),
                v.n(),
                v.win,
                v.tie,
                v.lose,
                v.unparseable,
                pct(wilson(v.win, v.n())),
                pct(wilson(v.win, v.win + v.lose))
            );
        }
        md.push('\n');
    }

    let mut plots = Vec::new();
    if !input.curves.is_empty() {
        md.push_str("## Training curves\n\n");
        md.push_str("Mean over seeds per iteration, with a 95% Student-t band over seeds (none for a single seed).\n\n");
        md.push_str("| configuration | metric | first iteration | last iteration [95% band] |\n| --- | --- | ---: | ---: |\n");
        for (metric, axis) in &input.curves {
            let series: Vec<BandSeries> = input
                .groups
                .iter()
                .map(|g| BandSeries {
                    label: g.label.clone(),
                    points: band(&g.runs, metric)
                        .into_iter()
                        .map(|(it, i)| (it as f64, i.estimate, i.lo, i.hi))
                        .collect(),
                })
                .collect();
            for s in &series {
                if let (Some(first), Some(last)) = (s.points.first(), s.points.last()) {
                    let _ = writeln!(
                        md,
                        "| {} | `{metric}` | {} | {} [{}, {}] |",
                        cell(&s.label),
                        num(first.1, 3),
                        num(last.1, 3),
                        num(last.2, 3),
                        num(last.3, 3)
                    );
                }
            }
            if series.iter().any(|s| !s.points.is_empty()) {
                let title = format!("{axis} over PPO iterations");
                plots.push((
                    curve_file(metric),
                    band_curves_png(&series, &title, axis, "PPO iteration")?,
                ));
            }
        }
        md.push('\n');
        for (file, _) in &plots {
            let _ = writeln!(md, "![{file}]({file})\n");
        }
    }
    if let Some(png) = gold_vs_kl(input)? {
        md.push_str("## Gold reward against KL\n\n");
        md.push_str("Each point is an iteration: the seed-mean KL from the reference (k1, per response) of the rollouts against their seed-mean gold reward, with its 95% band over seeds. A proxy that is over-optimised shows as gold falling while KL keeps growing.\n\n");
        let _ = writeln!(md, "![{GOLD_VS_KL_FILE}]({GOLD_VS_KL_FILE})\n");
        plots.push((GOLD_VS_KL_FILE.to_string(), png));
    }
    Ok((md, plots))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, curve: &[f64], scores: &[f64]) -> SeedRun {
        SeedRun {
            seed,
            curves: BTreeMap::from([(
                "score_mean".to_string(),
                curve
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (i as u32, v))
                    .collect(),
            )]),
            scores: BTreeMap::from([("RM score".to_string(), scores.to_vec())]),
        }
    }

    fn input() -> CompareInput {
        CompareInput {
            title: "t".into(),
            task: "hh-rlhf".into(),
            baseline: "ppo-n1".into(),
            groups: vec![
                Group {
                    name: "ppo-n1".into(),
                    label: "fixed:1".into(),
                    runs: vec![
                        run(1, &[0.0, 0.2, 0.4], &[0.0, 1.0]),
                        run(2, &[0.0, 0.3, 0.6], &[0.2, 0.8]),
                    ],
                },
                Group {
                    name: "ppo-n5".into(),
                    label: "fixed:5".into(),
                    runs: vec![
                        run(1, &[0.0, 0.5, 0.7], &[1.0, 2.0]),
                        run(2, &[0.1, 0.5, 0.9], &[1.2, 1.8]),
                    ],
                },
            ],
            curves: vec![("score_mean".into(), "mean RM score".into())],
            score_kinds: vec!["RM score".into()],
            verdicts: BTreeMap::from([(
                "ppo-n5".to_string(),
                Verdicts {
                    win: 8,
                    tie: 1,
                    lose: 1,
                    unparseable: 0,
                    judge: "reward model".into(),
                },
            )]),
            seed: 1,
            ..Default::default()
        }
    }

    #[test]
    fn figures_golden() {
        let f = figures(&input()).unwrap();
        // Baseline: seed means 0.5 and 0.5 → 0.5. fixed:5: 1.5 and 1.5.
        assert_eq!(f[0].scores[0].0.estimate, 0.5);
        assert!(f[0].scores[0].1.is_none());
        let (own, diff) = f[1].scores[0];
        assert_eq!(own.estimate, 1.5);
        let diff = diff.unwrap();
        assert_eq!(diff.estimate, 1.0);
        // Every prompt of every fixed:5 seed beats every baseline one by
        // ≥ 0.2 once paired… the interval stays above 0.
        assert!(diff.excludes(0.0), "{diff:?}");
        // Baseline final seed-mean (0.4 + 0.6)/2 = 0.5; fixed:5's curve
        // means 0.05, 0.5, 0.8 reach it at iteration 1 of 3.
        assert_eq!(f[1].parity, Some((Some(1), 2)));
        // The baseline's means 0, 0.25, 0.5 reach 0.5 at its last iteration.
        assert_eq!(f[0].parity, Some((Some(2), 2)));
    }

    #[test]
    fn bands_are_student_t_over_seeds() {
        let i = input();
        let b = band(&i.groups[0].runs, "score_mean");
        assert_eq!(b.len(), 3);
        // Iteration 2: [0.4, 0.6] → mean 0.5 ± 12.7062047·0.1414214/√2.
        let (it, iv) = b[2];
        assert_eq!(it, 2);
        assert!((iv.estimate - 0.5).abs() < 1e-12);
        assert!((iv.hi - 0.5 - 1.270_620_47).abs() < 1e-6, "{iv:?}");
        // An iteration only some seeds reached is left out.
        let mut runs = i.groups[0].runs.clone();
        runs[0].curves.get_mut("score_mean").unwrap().pop();
        assert_eq!(band(&runs, "score_mean").len(), 2);
    }

    #[test]
    fn budgets_are_quarters_and_the_end() {
        assert_eq!(budget_iterations(11), vec![3, 6, 9, 11]);
        assert_eq!(budget_iterations(15), vec![4, 8, 12, 15]);
        assert_eq!(budget_iterations(2), vec![0, 1, 2]);
        assert_eq!(budget_iterations(0), vec![0]);
    }

    #[test]
    fn report_says_what_is_noise() {
        let (md, plots) = render(&input()).unwrap();
        assert!(
            md.contains("fixed:5 − fixed:1, final mean RM score: +1.000"),
            "{md}"
        );
        assert!(
            md.contains("distinguishable from noise (the interval excludes 0)"),
            "{md}"
        );
        assert!(md.contains("| fixed:5 | 1 | 3 |"), "{md}");
        // 8 wins of 10: Wilson [49.0, 94.3]; decisive 8 of 9.
        assert!(
            md.contains("| fixed:5 | 10 | 8 | 1 | 1 | 0 | 80.0% [49.0, 94.3] |"),
            "{md}"
        );
        assert_eq!(plots.len(), 1);
        assert_eq!(plots[0].0, "curve_score_mean.png");
        assert!(plots[0].1.starts_with(b"\x89PNG"));

        // A difference within noise says so.
        let mut i = input();
        i.groups[1].runs[0]
            .scores
            .insert("RM score".into(), vec![0.0, 1.0]);
        i.groups[1].runs[1]
            .scores
            .insert("RM score".into(), vec![0.9, 0.3]);
        let (md, _) = render(&i).unwrap();
        assert!(
            md.contains("not distinguishable from noise (the interval contains 0)"),
            "{md}"
        );

        // The budget table: iterations 0, 1, 2 of three; fixed:5 peaks at
        // its last, 0.7 and 0.9 over two seeds: 0.8 ± t(0.975, 1) · 0.1.
        assert!(
            md.contains("| configuration | iteration 0 | iteration 1 | iteration 2 | peak [95% band] (iteration) |"),
            "{md}"
        );
        assert!(md.contains("0.800 [-0.471, 2.071] (2) |"), "{md}");

        let mut bad = input();
        bad.baseline = "nope".into();
        assert!(render(&bad).unwrap_err().to_string().contains("\"nope\""));
    }
}
