//! The numbers of the comparison report, each with the interval of
//! [`crate::stats`] that covers at the seed counts a comparison runs.

use std::collections::{BTreeMap, BTreeSet};

use crate::judge::Verdict;
use crate::stats::{crossed, crossed_welch, paired, seed_t, t_interval, Interval, TEstimate};

use super::{Group, Judged, SeedRun};

/// Below this many seeds per configuration the report draws no verdict:
/// with 3 or 4 seeds a t-interval is valid but so wide, and the seeds'
/// spread so poorly known, that a rerun on another machine flips answers
/// (issue 18).
pub const MIN_SEEDS: usize = 5;

/// The power the report's "smallest detectable difference" is computed at
/// (two-sided α = 0.05).
pub const POWER: f64 = 0.8;

/// The training metric that defines a seed that fails to learn: the proxy
/// reward of the rollouts.
pub const PROXY_METRIC: &str = "score_mean";

/// How two configurations' seeds are set against each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// The same seeds (and prompts): each seed's difference.
    Paired,
    /// Different seeds: Welch's unequal-variance interval.
    Welch,
}

/// A configuration's difference from the baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Difference {
    pub est: TEstimate,
    pub pairing: Pairing,
    /// Seeds of the configuration and of the baseline.
    pub seeds: (usize, usize),
    /// Prompts each seed was scored on (1 for a training curve's value).
    pub prompts: usize,
}

impl Difference {
    pub fn interval(&self) -> Interval {
        self.est.interval()
    }

    /// The test, named with its seed count and degrees of freedom.
    pub fn test(&self) -> String {
        let df = if self.est.df.is_finite() {
            format!("df {:.1}", self.est.df)
        } else {
            "df –".to_string()
        };
        match self.pairing {
            Pairing::Paired => format!(
                "paired t-test over {} seed{}, {df}",
                self.seeds.0,
                if self.seeds.0 == 1 { "" } else { "s" }
            ),
            Pairing::Welch => format!(
                "Welch t-test over {} and {} seeds, {df}",
                self.seeds.0, self.seeds.1
            ),
        }
    }

    /// Whether both sides have enough seeds for a verdict.
    pub fn enough_seeds(&self) -> bool {
        self.seeds.0.min(self.seeds.1) >= MIN_SEEDS
    }

    /// The smallest true difference these seeds detect with [`POWER`].
    pub fn detectable(&self) -> f64 {
        self.est.detectable(POWER)
    }
}

/// Per seed, a row of values (per prompt, or one value).
pub type Rows<'a> = Vec<(u64, &'a [f64])>;

/// mean(a) − mean(b): paired by seed when both have exactly the same
/// seeds, Welch otherwise. `None` when a side is empty or the rows
/// disagree on the prompt count.
pub fn difference(a: &Rows, b: &Rows) -> Option<Difference> {
    let prompts = a.first()?.1.len();
    b.first()?;
    let seeds_a: BTreeSet<u64> = a.iter().map(|r| r.0).collect();
    let seeds_b: BTreeSet<u64> = b.iter().map(|r| r.0).collect();
    let table = |rows: &Rows| -> Vec<Vec<f64>> { rows.iter().map(|r| r.1.to_vec()).collect() };
    let (est, pairing) =
        if seeds_a == seeds_b && seeds_a.len() == a.len() && seeds_b.len() == b.len() {
            let mut sa = a.clone();
            let mut sb = b.clone();
            sa.sort_by_key(|r| r.0);
            sb.sort_by_key(|r| r.0);
            (paired(&table(&sa), &table(&sb))?, Pairing::Paired)
        } else {
            (crossed_welch(&table(a), &table(b))?, Pairing::Welch)
        };
    Some(Difference {
        est,
        pairing,
        seeds: (a.len(), b.len()),
        prompts,
    })
}

/// One configuration's mean over its seeds of each seed's mean over the
/// prompts, with the crossed interval.
pub fn own(rows: &Rows) -> Option<TEstimate> {
    let t: Vec<Vec<f64>> = rows.iter().map(|r| r.1.to_vec()).collect();
    crossed(&t)
}

/// The final policies' scores of one kind, per seed.
pub fn final_rows<'a>(g: &'a Group, kind: &str) -> Option<Rows<'a>> {
    g.runs
        .iter()
        .map(|r| r.scores.get(kind).map(|s| (r.seed, s.as_slice())))
        .collect()
}

/// The early-stopped policies' scores of one kind, per seed; `None`
/// unless every run has them.
pub fn early_rows<'a>(g: &'a Group, kind: &str) -> Option<Rows<'a>> {
    g.runs
        .iter()
        .map(|r| {
            r.early
                .as_ref()
                .and_then(|e| e.scores.get(kind))
                .map(|s| (r.seed, s.as_slice()))
        })
        .collect()
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

/// Each seed's value of `metric` at iteration `it`; `None` unless every
/// seed has a finite one.
pub fn values_at(runs: &[SeedRun], metric: &str, it: u32) -> Option<Vec<(u64, f64)>> {
    runs.iter()
        .map(|r| {
            r.curves
                .get(metric)?
                .iter()
                .find(|p| p.0 == it)
                .filter(|p| p.1.is_finite())
                .map(|p| (r.seed, p.1))
        })
        .collect()
}

/// The difference of two sets of one-value-per-seed figures.
pub fn difference_of_values(a: &[(u64, f64)], b: &[(u64, f64)]) -> Option<Difference> {
    let ra: Vec<[f64; 1]> = a.iter().map(|v| [v.1]).collect();
    let rb: Vec<[f64; 1]> = b.iter().map(|v| [v.1]).collect();
    let rows_a: Rows = a
        .iter()
        .zip(&ra)
        .map(|(v, r)| (v.0, r.as_slice()))
        .collect();
    let rows_b: Rows = b
        .iter()
        .zip(&rb)
        .map(|(v, r)| (v.0, r.as_slice()))
        .collect();
    difference(&rows_a, &rows_b)
}

/// The iterations a budget table reads a curve at: the ends of the run's
/// first three quarters and its last iteration.
pub fn budget_iterations(last: u32) -> Vec<u32> {
    let runs = u64::from(last) + 1;
    let mut its: Vec<u32> = (1..4u64).map(|k| (k * runs / 4) as u32).collect();
    its.push(last);
    its.retain(|&it| it <= last);
    its.dedup();
    its
}

/// When a configuration's curve reaches the baseline's final value: the
/// difference (configuration at iteration k) − (baseline at its last
/// iteration), by seed, at every k.
#[derive(Clone, Debug, PartialEq)]
pub struct Parity {
    /// The first k whose estimated difference is ≥ 0 (the seed-means
    /// cross).
    pub reached: Option<u32>,
    /// The first k whose 95% interval reaches 0 (parity cannot be ruled
    /// out from here).
    pub plausible: Option<u32>,
    /// The first k whose interval lies above 0 (beyond noise).
    pub beyond_noise: Option<u32>,
    /// The baseline's last iteration.
    pub baseline_last: u32,
}

pub fn parity(g: &Group, base: &Group, metric: &str) -> Option<Parity> {
    let baseline_last = band(&base.runs, metric).last()?.0;
    let target = values_at(&base.runs, metric, baseline_last)?;
    let mut p = Parity {
        reached: None,
        plausible: None,
        beyond_noise: None,
        baseline_last,
    };
    for (it, _) in band(&g.runs, metric) {
        let Some(mine) = values_at(&g.runs, metric, it) else {
            continue;
        };
        let Some(d) = difference_of_values(&mine, &target) else {
            continue;
        };
        let i = d.interval();
        if p.reached.is_none() && i.estimate >= 0.0 {
            p.reached = Some(it);
        }
        if p.plausible.is_none() && (i.hi >= 0.0 || i.estimate >= 0.0) {
            p.plausible = Some(it);
        }
        if p.beyond_noise.is_none() && i.lo > 0.0 {
            p.beyond_noise = Some(it);
        }
    }
    Some(p)
}

/// The highest seed-mean of a curve and its iteration. It is the maximum
/// of noisy means, so it is biased upwards; the early-stopped evaluation is
/// its held-out counterpart.
pub fn naive_peak(b: &[(u32, Interval)]) -> Option<(u32, f64)> {
    b.iter()
        .filter(|p| p.1.estimate.is_finite())
        .fold(None, |best: Option<(u32, f64)>, p| match best {
            Some(q) if q.1 >= p.1.estimate => Some(q),
            _ => Some((p.0, p.1.estimate)),
        })
}

/// The seeds whose proxy reward at the last iteration is below their
/// first (a seed that fails to learn); `None` without the proxy curve.
pub fn failed_seeds(g: &Group) -> Option<Vec<u64>> {
    let mut failed = Vec::new();
    for r in &g.runs {
        let c = r.curves.get(PROXY_METRIC)?;
        let first = c.iter().min_by_key(|p| p.0)?.1;
        let last = c.iter().max_by_key(|p| p.0)?.1;
        if last < first {
            failed.push(r.seed);
        }
    }
    Some(failed)
}

/// Judge win rates with intervals over seeds and prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct WinRates {
    pub win: usize,
    pub tie: usize,
    pub lose: usize,
    pub unparseable: usize,
    pub seeds: usize,
    /// Prompts judged per seed (the same for every seed when `crossed`).
    pub prompts: usize,
    /// Share of verdicts that are wins.
    pub win_rate: TEstimate,
    /// Wins plus half the ties and unparseable answers: 50% is no
    /// preference.
    pub half_share: TEstimate,
    /// Whether every seed was judged on the same prompts (seeds and prompts
    /// crossed); otherwise the interval is over the seeds' own rates.
    pub crossed: bool,
}

pub fn win_rates(j: &Judged) -> Option<WinRates> {
    let mut counts = [0usize; 4];
    let mut wins: Vec<Vec<f64>> = Vec::new();
    let mut half: Vec<Vec<f64>> = Vec::new();
    let prompt_sets: BTreeSet<Vec<u64>> = j
        .verdicts
        .values()
        .map(|by_prompt| by_prompt.keys().copied().collect())
        .collect();
    for by_prompt in j.verdicts.values() {
        if by_prompt.is_empty() {
            return None;
        }
        let (mut w, mut h) = (Vec::new(), Vec::new());
        for v in by_prompt.values() {
            let (k, win, share) = match v {
                Verdict::Win => (0, 1.0, 1.0),
                Verdict::Tie => (1, 0.0, 0.5),
                Verdict::Lose => (2, 0.0, 0.0),
                Verdict::Unparseable => (3, 0.0, 0.5),
                // A failed request is no judgement.
                Verdict::Error => continue,
            };
            counts[k] += 1;
            w.push(win);
            h.push(share);
        }
        wins.push(w);
        half.push(h);
    }
    if wins.is_empty() {
        return None;
    }
    let crossed_ok = prompt_sets.len() == 1;
    let estimate = |t: &[Vec<f64>]| {
        if crossed_ok {
            crossed(t)
        } else {
            let means: Vec<f64> = t.iter().map(|r| crate::stats::mean(r)).collect();
            Some(seed_t(&means))
        }
    };
    Some(WinRates {
        win: counts[0],
        tie: counts[1],
        lose: counts[2],
        unparseable: counts[3],
        seeds: wins.len(),
        prompts: wins.iter().map(Vec::len).max().unwrap_or(0),
        win_rate: estimate(&wins)?,
        half_share: estimate(&half)?,
        crossed: crossed_ok,
    })
}
