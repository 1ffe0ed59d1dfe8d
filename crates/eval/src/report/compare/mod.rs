//! The comparison report of `make compare`: several training
//! configurations (termination conditions, recipes), each run with several
//! seeds from the same SFT model and reward model, evaluated on the same
//! prompts. Every interval is a 95% Student-t interval over seeds whose
//! coverage is tested at 3, 5 and 10 seeds (`crate::stats`):
//!
//! - final evaluation scores: each seed's mean over the prompts, the mean
//!   over seeds, with the prompts as a crossed random factor; the
//!   difference with the baseline paired by seed (same seeds and prompts)
//!   or Welch's (different seeds);
//! - the same for each run's early-stopped policy (the checkpoint with the
//!   best validation score, on prompts disjoint from training and
//!   evaluation);
//! - one verdict per configuration and policy that names its test and seed
//!   count, a power line (the smallest difference these seeds detect), and
//!   no verdict at all below [`MIN_SEEDS`] seeds;
//! - training curves: per iteration, the mean over seeds with a t band; the
//!   headline curve at iteration budgets, with paired differences; the
//!   iterations to parity with the baseline's final value; seeds that fail
//!   to learn;
//! - judge win rates against the baseline's run of the same seed, with
//!   intervals over seeds and prompts.

mod figures;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::plot::{band_curves_png, BandSeries};
use super::{cell, num};
use crate::judge::Verdict;
use crate::stats::{mean, wilson, Interval, TEstimate};

pub use figures::{
    band, budget_iterations, difference, failed_seeds, naive_peak, parity, values_at, win_rates,
    Difference, Pairing, Parity, WinRates, MIN_SEEDS, POWER, PROXY_METRIC,
};

/// One seed's run of a configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeedRun {
    pub seed: u64,
    /// Training metric → (iteration, value), in iteration order.
    pub curves: BTreeMap<String, Vec<(u32, f64)>>,
    /// Evaluation score kind (e.g. "RM score") → one score per evaluation
    /// prompt of the final policy, the prompts in the same order in every
    /// run.
    pub scores: BTreeMap<String, Vec<f64>>,
    /// The run's early-stopped policy, when validation scores were given.
    pub early: Option<EarlyStopped>,
}

/// The checkpoint of a run chosen on validation prompts, and its
/// evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EarlyStopped {
    /// The chosen checkpoint (the policy after this many iterations).
    pub iteration: u32,
    /// Every candidate checkpoint's mean validation score.
    pub validation: Vec<(u32, f64)>,
    /// Score kind → one score per evaluation prompt, as in
    /// [`SeedRun::scores`].
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

/// One configuration's judgements against the baseline's policy of the
/// same seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judged {
    /// Who judged (a model name, or "reward model").
    pub judge: String,
    /// Whether the judge is the reward model that also gives the reports'
    /// RM scores (then its verdicts are not independent evidence).
    pub judge_is_score_model: bool,
    /// Seed → prompt id → verdict, from the configuration's side.
    pub verdicts: BTreeMap<u64, BTreeMap<u64, Verdict>>,
}

/// How each run's early-stopped checkpoint was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// The score kind maximised (e.g. "gold reward").
    pub kind: String,
    /// Validation prompts each checkpoint answered.
    pub prompts: usize,
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
    /// Training metrics drawn as curves; the first is the one the budget
    /// table and the iterations to parity read. (metric, axis label).
    pub curves: Vec<(String, String)>,
    /// Evaluation score kinds, in the order of the tables; the first one is
    /// the headline of the verdicts.
    pub score_kinds: Vec<String>,
    /// Group name → its judgements against the baseline.
    pub judged: BTreeMap<String, Judged>,
    /// The proxy reward model against known labels on held-out pairs:
    /// (chosen, rejected, tie) counts, when the task has a gold reward.
    pub rm_accuracy: Option<(usize, usize, usize)>,
    /// How the early-stopped checkpoints were chosen, when they were.
    pub selection: Option<Selection>,
}

/// The figures of one group for one score kind.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreFigures {
    pub own: TEstimate,
    /// The difference from the baseline (`None` for the baseline).
    pub diff: Option<Difference>,
}

/// The figures of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupFigures {
    /// Per score kind, the final policies.
    pub scores: Vec<ScoreFigures>,
    /// Per score kind, the early-stopped policies (empty without them).
    pub early: Vec<ScoreFigures>,
    /// When the first curve reaches the baseline's final value.
    pub parity: Option<Parity>,
}

fn score_figures(
    g: &Group,
    base: &Group,
    kind: &str,
    rows: for<'a> fn(&'a Group, &str) -> Option<figures::Rows<'a>>,
) -> Result<Option<ScoreFigures>> {
    let (Some(mine), Some(theirs)) = (rows(g, kind), rows(base, kind)) else {
        return Ok(None);
    };
    let Some(own) = figures::own(&mine) else {
        bail!(
            "{}: the {kind:?} scores of its seeds cover different numbers of prompts",
            g.name
        );
    };
    let diff = if g.name == base.name {
        None
    } else {
        match difference(&mine, &theirs) {
            Some(d) => Some(d),
            None => bail!(
                "{} and {}: the {kind:?} scores cover different numbers of prompts",
                g.name,
                base.name
            ),
        }
    };
    Ok(Some(ScoreFigures { own, diff }))
}

pub fn figures(input: &CompareInput) -> Result<Vec<GroupFigures>> {
    let Some(base) = input.groups.iter().find(|g| g.name == input.baseline) else {
        bail!("the baseline {:?} is not among the runs", input.baseline);
    };
    let first_curve = input.curves.first().map(|c| c.0.as_str());
    let mut out = Vec::new();
    for g in &input.groups {
        let mut scores = Vec::new();
        let mut early = Vec::new();
        for kind in &input.score_kinds {
            match score_figures(g, base, kind, figures::final_rows)? {
                Some(f) => scores.push(f),
                None => bail!("{}: no {kind:?} scores for every seed", g.name),
            }
            if let Some(f) = score_figures(g, base, kind, figures::early_rows)? {
                early.push(f);
            }
        }
        if !early.is_empty() && early.len() != scores.len() {
            early.clear();
        }
        let parity = first_curve.and_then(|m| parity(g, base, m));
        out.push(GroupFigures {
            scores,
            early,
            parity,
        });
    }
    Ok(out)
}

fn signed(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:+.decimals$}")
    } else {
        "–".to_string()
    }
}

fn interval(i: &Interval, decimals: usize) -> String {
    if !(i.lo.is_finite() && i.hi.is_finite()) {
        return num(i.estimate, decimals);
    }
    format!(
        "{} [{}, {}]",
        num(i.estimate, decimals),
        num(i.lo, decimals),
        num(i.hi, decimals)
    )
}

fn pct(e: &TEstimate) -> String {
    let i = e.interval();
    if !(i.lo.is_finite() && i.hi.is_finite()) {
        return format!("{}%", num(100.0 * i.estimate, 1));
    }
    format!(
        "{}% [{}, {}]",
        num(100.0 * i.estimate, 1),
        num(100.0 * i.lo, 1),
        num(100.0 * i.hi, 1)
    )
}

/// The sentence about one configuration's difference from the baseline:
/// the estimate and its interval, the test with its seed count, whether it
/// is distinguishable from noise (only with [`MIN_SEEDS`] seeds or more),
/// and the smallest difference these seeds detect.
pub fn verdict_sentence(label: &str, base: &str, what: &str, d: &Difference) -> String {
    let i = d.interval();
    let prompts = if d.prompts > 1 {
        format!(", {} prompts", d.prompts)
    } else {
        String::new()
    };
    if !(i.lo.is_finite() && i.hi.is_finite()) {
        return format!(
            "{label} − {base}, {what}: {} from a single seed: no interval and no verdict.",
            signed(i.estimate, 3)
        );
    }
    let head = format!(
        "{label} − {base}, {what}: {} (95% CI {} to {}; {}{prompts})",
        signed(i.estimate, 3),
        signed(i.lo, 3),
        signed(i.hi, 3),
        d.test(),
    );
    let call = if !d.enough_seeds() {
        format!(
            "too few seeds for a verdict ({} < {MIN_SEEDS}): the interval is shown, no conclusion is drawn.",
            d.seeds.0.min(d.seeds.1)
        )
    } else if i.excludes(0.0) {
        let side = if i.estimate > 0.0 { "higher" } else { "lower" };
        format!("{label} scores {side} than {base}, distinguishable from noise (the interval excludes 0).")
    } else {
        "not distinguishable from noise (the interval contains 0).".to_string()
    };
    format!(
        "{head}: {call} Power: these seeds detect a true difference of ±{} with {}% probability (two-sided α = 0.05, from the measured spread between seeds).",
        num(d.detectable(), 3),
        num(100.0 * POWER, 0)
    )
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

fn seed_list(g: &Group) -> String {
    g.runs
        .iter()
        .map(|r| r.seed.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The markdown of the report and its plots.
pub fn render(input: &CompareInput) -> Result<(String, Vec<Plot>)> {
    let figs = figures(input)?;
    let base = input
        .groups
        .iter()
        .find(|g| g.name == input.baseline)
        .expect("figures checked the baseline");
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
            "- proxy reward model against gold labels on {n} held-out pairs: {}% correct [95% Wilson interval {}, {}], {ties} ties\n",
            num(100.0 * acc.estimate, 1),
            num(100.0 * acc.lo, 1),
            num(100.0 * acc.hi, 1)
        );
    }

    verdicts(&mut md, input, &figs, base);
    md.push_str("How to read the intervals: every interval is a 95% Student-t interval with the seed as the unit (a seed is one training run); each seed's evaluation score is its mean over the evaluation prompts, and the prompts, shared by every seed and configuration, are a second random factor (two-way random-effects standard error, Satterthwaite's degrees of freedom). Differences are paired by seed when both configurations ran the same seeds, Welch's otherwise. Their coverage is tested by simulation at 3, 5 and 10 seeds (DESIGN.md, \"Statistics\").\n\n");

    for (ki, kind) in input.score_kinds.iter().enumerate() {
        let _ = writeln!(md, "## Final policies: {kind}\n");
        md.push_str("Each run's policy after its last iteration, on the evaluation prompts.\n\n");
        score_table(&mut md, input, base, (ki, kind), &figs, Policy::Final);
    }
    early_stopping(&mut md, input, &figs, base);
    failures(&mut md, input);
    if let Some((metric, _)) = input.curves.first() {
        parity_table(&mut md, input, &figs, base, metric);
        budget_table(&mut md, input, base, metric);
    }
    judgements(&mut md, input, base);
    let plots = curves(&mut md, input)?;
    Ok((md, plots))
}

fn verdicts(md: &mut String, input: &CompareInput, figs: &[GroupFigures], base: &Group) {
    let Some(kind) = input.score_kinds.first() else {
        return;
    };
    md.push_str("## Verdict\n\n");
    for (g, f) in input.groups.iter().zip(figs) {
        if let Some(d) = f.scores.first().and_then(|s| s.diff.as_ref()) {
            let what = format!("final policies' mean {kind}");
            let _ = writeln!(
                md,
                "- {}",
                verdict_sentence(&g.label, &base.label, &what, d)
            );
        }
        if let Some(d) = f.early.first().and_then(|s| s.diff.as_ref()) {
            let what = format!("early-stopped policies' mean {kind}");
            let _ = writeln!(
                md,
                "- {}",
                verdict_sentence(&g.label, &base.label, &what, d)
            );
        }
    }
    md.push('\n');
}

/// Which policy of each run a table is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Final,
    EarlyStopped,
}

/// A table of one score kind: per configuration its seeds, per-seed means,
/// mean with interval and difference from the baseline with its test (and,
/// for early-stopped policies, each seed's chosen checkpoint).
fn score_table(
    md: &mut String,
    input: &CompareInput,
    base: &Group,
    (ki, kind): (usize, &str),
    figs: &[GroupFigures],
    policy: Policy,
) {
    let early = policy == Policy::EarlyStopped;
    let _ = writeln!(
        md,
        "| configuration | seeds | per seed | mean [95% CI] | − {} [95% CI] | test |{}",
        cell(&base.label),
        if early { " checkpoint per seed |" } else { "" }
    );
    md.push_str("| --- | ---: | --- | ---: | ---: | --- |");
    md.push_str(if early { " --- |\n" } else { "\n" });
    for (g, f) in input.groups.iter().zip(figs) {
        let sf = if early {
            f.early.get(ki)
        } else {
            f.scores.get(ki)
        };
        let Some(sf) = sf else { continue };
        let per_seed: Vec<String> = g
            .runs
            .iter()
            .map(|r| {
                let s = if early {
                    r.early.as_ref().and_then(|e| e.scores.get(kind))
                } else {
                    r.scores.get(kind)
                };
                num(s.map_or(f64::NAN, |s| mean(s)), 3)
            })
            .collect();
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&g.label),
            g.runs.len(),
            per_seed.join(", "),
            interval(&sf.own.interval(), 3),
            sf.diff
                .as_ref()
                .map_or("—".to_string(), |d| interval(&d.interval(), 3)),
            sf.diff.as_ref().map_or("—".to_string(), Difference::test),
        );
        if early {
            let chosen: Vec<String> = g
                .runs
                .iter()
                .map(|r| {
                    r.early
                        .as_ref()
                        .map_or("–".to_string(), |e| e.iteration.to_string())
                })
                .collect();
            let _ = write!(md, " {} |", chosen.join(", "));
        }
        md.push('\n');
    }
    md.push('\n');
}

fn early_stopping(md: &mut String, input: &CompareInput, figs: &[GroupFigures], base: &Group) {
    let Some(sel) = &input.selection else {
        return;
    };
    if figs.iter().all(|f| f.early.is_empty()) {
        return;
    }
    let checkpoints: Vec<u32> = input
        .groups
        .iter()
        .flat_map(|g| &g.runs)
        .filter_map(|r| r.early.as_ref())
        .flat_map(|e| e.validation.iter().map(|v| v.0))
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    let its = checkpoints
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    for (ki, kind) in input.score_kinds.iter().enumerate() {
        let _ = writeln!(md, "## Early-stopped policies: {kind}\n");
        let _ = writeln!(
            md,
            "Selection criterion: each run's checkpoint (policies after iterations {its}) with the highest mean {} on {} validation prompts, disjoint from the training and evaluation prompts (a tie goes to the earlier checkpoint); that policy then answers the evaluation prompts, so a run that over-optimises is also measured near its peak rather than only after it.\n",
            sel.kind, sel.prompts
        );
        score_table(md, input, base, (ki, kind), figs, Policy::EarlyStopped);
    }
    // Where the validation score peaks, per configuration.
    let _ = writeln!(
        md,
        "Validation mean {} per checkpoint (mean over seeds [95% band]):\n",
        sel.kind
    );
    md.push_str("| configuration |");
    for it in &checkpoints {
        let _ = write!(md, " iteration {it} |");
    }
    md.push_str("\n| --- |");
    md.push_str(&" ---: |".repeat(checkpoints.len()));
    md.push('\n');
    for g in &input.groups {
        let _ = write!(md, "| {} |", cell(&g.label));
        for it in &checkpoints {
            let vals: Option<Vec<f64>> = g
                .runs
                .iter()
                .map(|r| {
                    r.early
                        .as_ref()?
                        .validation
                        .iter()
                        .find(|v| v.0 == *it)
                        .map(|v| v.1)
                })
                .collect();
            let _ = write!(
                md,
                " {} |",
                vals.map_or("–".to_string(), |v| interval(
                    &crate::stats::t_interval(&v),
                    3
                ))
            );
        }
        md.push('\n');
    }
    md.push('\n');
}

fn failures(md: &mut String, input: &CompareInput) {
    let rows: Vec<(&Group, Vec<u64>)> = input
        .groups
        .iter()
        .filter_map(|g| failed_seeds(g).map(|f| (g, f)))
        .collect();
    if rows.len() != input.groups.len() {
        return;
    }
    md.push_str("## Seeds that fail to learn\n\n");
    let _ = writeln!(
        md,
        "A seed fails to learn when the proxy reward of its rollouts (`{PROXY_METRIC}`) at the last iteration is below its value at the first.\n"
    );
    md.push_str("| configuration | failed | of seeds | which |\n| --- | ---: | ---: | --- |\n");
    for (g, failed) in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            cell(&g.label),
            failed.len(),
            g.runs.len(),
            if failed.is_empty() {
                "–".to_string()
            } else {
                failed
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    md.push('\n');
}

fn parity_table(
    md: &mut String,
    input: &CompareInput,
    figs: &[GroupFigures],
    base: &Group,
    metric: &str,
) {
    if figs.iter().all(|f| f.parity.is_none()) {
        return;
    }
    md.push_str("## Iterations to parity\n\n");
    let _ = writeln!(
        md,
        "When a configuration's `{metric}` reaches {}'s value at its last iteration, read on the difference (configuration at iteration k − baseline at its end) over seeds: the first iteration where the seed-means cross, the first where its 95% interval reaches 0 (parity cannot be ruled out from there), and the first where the interval lies above 0 (beyond noise). The baseline's own row says when it first got there.\n",
        base.label
    );
    md.push_str("| configuration | seed-means cross at | parity plausible from | beyond noise from | baseline's iterations |\n| --- | ---: | ---: | ---: | ---: |\n");
    let it = |x: Option<u32>| x.map_or("never".to_string(), |k| k.to_string());
    for (g, f) in input.groups.iter().zip(figs) {
        if let Some(p) = &f.parity {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                cell(&g.label),
                it(p.reached),
                it(p.plausible),
                it(p.beyond_noise),
                p.baseline_last + 1
            );
        }
    }
    md.push('\n');
}

/// The headline curve at fixed iteration budgets, with the differences from
/// the baseline: a reward that rises and then falls (an over-optimised
/// proxy, a collapse) shows here, where the final figures alone would hide
/// it.
fn budget_table(md: &mut String, input: &CompareInput, base: &Group, metric: &str) {
    let bands: Vec<Vec<(u32, Interval)>> =
        input.groups.iter().map(|g| band(&g.runs, metric)).collect();
    let Some(last) = bands.iter().filter_map(|b| b.last().map(|p| p.0)).min() else {
        return;
    };
    let its = budget_iterations(last);
    let _ = writeln!(md, "## `{metric}` at iteration budgets\n");
    md.push_str("The rollouts' seed-mean at a few iterations (the policy after that many updates) with its 95% t-interval over seeds. The highest seed-mean of the run is the maximum of noisy means, so it is biased upwards: no interval is given for it; the early-stopped policies above are its held-out counterpart.\n\n");
    md.push_str("| configuration |");
    for it in &its {
        let _ = write!(md, " iteration {it} |");
    }
    md.push_str(" highest seed-mean (iteration), biased upwards |\n| --- |");
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
        let peak = naive_peak(b);
        let _ = writeln!(
            md,
            " {} |",
            peak.map_or("–".to_string(), |(it, v)| format!("{} ({it})", num(v, 3)))
        );
    }
    md.push('\n');
    // The differences from the baseline at the same budgets.
    let others: Vec<&Group> = input
        .groups
        .iter()
        .filter(|g| g.name != base.name)
        .collect();
    if others.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "Difference from {} at the same iterations (95% interval; the test in the last column):\n",
        base.label
    );
    md.push_str("| configuration |");
    for it in &its {
        let _ = write!(md, " − {} at {it} |", cell(&base.label));
    }
    md.push_str(" test |\n| --- |");
    md.push_str(&" ---: |".repeat(its.len()));
    md.push_str(" --- |\n");
    for g in others {
        let _ = write!(md, "| {} |", cell(&g.label));
        let mut test = String::from("–");
        for it in &its {
            let d = values_at(&g.runs, metric, *it)
                .zip(values_at(&base.runs, metric, *it))
                .and_then(|(a, b)| figures::difference_of_values(&a, &b));
            if let Some(d) = &d {
                test = d.test();
            }
            let _ = write!(
                md,
                " {} |",
                d.map_or("–".to_string(), |d| {
                    let i = d.interval();
                    if i.lo.is_finite() {
                        format!(
                            "{} [{}, {}]",
                            signed(i.estimate, 3),
                            signed(i.lo, 3),
                            signed(i.hi, 3)
                        )
                    } else {
                        signed(i.estimate, 3)
                    }
                })
            );
        }
        let _ = writeln!(md, " {test} |");
    }
    md.push('\n');
}

fn judgements(md: &mut String, input: &CompareInput, base: &Group) {
    let rates: Vec<(&String, &Judged, WinRates)> = input
        .judged
        .iter()
        .filter_map(|(name, j)| win_rates(j).map(|w| (name, j, w)))
        .collect();
    let Some((_, first, _)) = rates.first() else {
        return;
    };
    let label = |name: &str| {
        input
            .groups
            .iter()
            .find(|g| g.name == name)
            .map_or(name.to_string(), |g| g.label.clone())
    };
    let _ = writeln!(md, "## Pairwise judgements against {}\n", base.label);
    let judge = if first.judge.is_empty() {
        "the judge"
    } else {
        first.judge.as_str()
    };
    let _ = writeln!(
        md,
        "Each configuration's final policy against {}'s of the same seed, judged by {judge} on the same prompts for every seed. The intervals are over seeds and prompts (each verdict belongs to one seed's pair of policies and to one prompt, both random), not over verdicts as if they were independent. The win share counts ties and unparseable answers as half: 50% is no preference.\n",
        base.label
    );
    if rates.iter().any(|r| r.1.judge_is_score_model) {
        md.push_str("**The judge is the reward model that also gives the RM scores above**: its verdicts restate those scores on the same responses, so they are not independent evidence.\n\n");
    }
    md.push_str("| configuration | seeds × prompts | win | tie | lose | unparseable | win rate [95% CI] | win share, ties as half [95% CI] |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (name, _, w) in &rates {
        let _ = writeln!(
            md,
            "| {} | {} × {}{} | {} | {} | {} | {} | {} | {} |",
            cell(&label(name)),
            w.seeds,
            w.prompts,
            if w.crossed {
                ""
            } else {
                " (prompts differ by seed)"
            },
            w.win,
            w.tie,
            w.lose,
            w.unparseable,
            pct(&w.win_rate),
            pct(&w.half_share)
        );
    }
    md.push('\n');
}

fn curves(md: &mut String, input: &CompareInput) -> Result<Vec<Plot>> {
    let mut plots = Vec::new();
    if !input.curves.is_empty() {
        md.push_str("## Training curves\n\n");
        md.push_str("Mean over seeds per iteration, with a 95% Student-t band over seeds (none for a single seed).\n\n");
        md.push_str("| configuration | metric | seeds | first iteration | last iteration [95% band] |\n| --- | --- | --- | ---: | ---: |\n");
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
            for (s, g) in series.iter().zip(&input.groups) {
                if let (Some(first), Some(last)) = (s.points.first(), s.points.last()) {
                    let _ = writeln!(
                        md,
                        "| {} | `{metric}` | {} | {} | {} [{}, {}] |",
                        cell(&s.label),
                        seed_list(g),
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
    Ok(plots)
}
