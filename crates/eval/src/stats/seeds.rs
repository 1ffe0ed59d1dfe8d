//! Means and differences over training seeds, with the standard error and
//! degrees of freedom of a t-interval whose coverage holds at 3 seeds.
//!
//! The unit of replication is the seed: a seed is one training run, and
//! runs differ far more than the prompts they are scored on. Each seed's
//! evaluation is its mean over the evaluation prompts, so the prompts
//! enter through those means; every seed and configuration answers the
//! same prompts, which makes the prompts a second, crossed random factor.
//! For a table of scores x[seed][prompt] (S seeds, P prompts) the
//! two-way random-effects model x = μ + a_seed + b_prompt + e has
//!
//!   Var(grand mean) = σ²_seed/S + σ²_prompt/P + σ²_e/(S·P)
//!                   = (MS_seeds + MS_prompts − MS_resid)/(S·P),
//!
//! from the two-way ANOVA's mean squares, with Satterthwaite's degrees of
//! freedom for that sum. When the prompts show no shared effect (MS_prompts
//! ≤ MS_resid) it is exactly the t-interval on the S seed means (df S − 1);
//! the seed term is never dropped. A difference between two configurations
//! run with the same seeds on the same prompts is the same computation on
//! the table of differences (paired by seed and prompt); with different
//! seeds it is Welch's interval, plus the prompt-by-configuration term.

use super::student::{detectable_effect, t_975};
use super::{mean, sample_sd, Interval};

/// A mean or a difference with its standard error and degrees of freedom:
/// what a t-interval, a t-test and its power need.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TEstimate {
    pub estimate: f64,
    pub se: f64,
    pub df: f64,
}

impl TEstimate {
    /// `estimate ± t(0.975, df)·se`; NaN bounds when the spread is unknown
    /// (one seed).
    pub fn interval(&self) -> Interval {
        let half = if self.se == 0.0 {
            0.0
        } else {
            t_975(self.df) * self.se
        };
        Interval {
            estimate: self.estimate,
            lo: self.estimate - half,
            hi: self.estimate + half,
        }
    }

    /// The smallest true difference a two-sided t-test at α = 0.05 with
    /// this standard error and these degrees of freedom detects with
    /// probability `power`.
    pub fn detectable(&self, power: f64) -> f64 {
        detectable_effect(self.df, power, 0.05) * self.se
    }
}

/// The Student-t estimate of a mean over independent values (one per
/// seed): se = sd/√n, df = n − 1.
pub fn seed_t(xs: &[f64]) -> TEstimate {
    let n = xs.len();
    TEstimate {
        estimate: mean(xs),
        se: if n < 2 {
            f64::NAN
        } else {
            sample_sd(xs) / (n as f64).sqrt()
        },
        df: if n < 2 { f64::NAN } else { (n - 1) as f64 },
    }
}

/// Welch's estimate of mean(a) − mean(b) over independent values:
/// se² = s²_a/n_a + s²_b/n_b with the Welch–Satterthwaite df.
pub fn welch(a: &[f64], b: &[f64]) -> TEstimate {
    let estimate = mean(a) - mean(b);
    if a.len() < 2 || b.len() < 2 {
        return TEstimate {
            estimate,
            se: f64::NAN,
            df: f64::NAN,
        };
    }
    let va = sample_sd(a).powi(2) / a.len() as f64;
    let vb = sample_sd(b).powi(2) / b.len() as f64;
    TEstimate {
        estimate,
        se: (va + vb).sqrt(),
        df: satterthwaite(&[(va, (a.len() - 1) as f64), (vb, (b.len() - 1) as f64)]),
    }
}

/// Satterthwaite's degrees of freedom of Σ v_i, each v_i a variance
/// estimate with df_i degrees of freedom: (Σ v_i)² / Σ v_i²/df_i.
pub fn satterthwaite(parts: &[(f64, f64)]) -> f64 {
    let total: f64 = parts.iter().map(|p| p.0).sum();
    let denom: f64 = parts.iter().map(|&(v, df)| v * v / df).sum();
    if denom > 0.0 {
        total * total / denom
    } else {
        // No spread at all: the interval is a point whatever the df.
        f64::INFINITY
    }
}

/// The two-way ANOVA of a seeds × prompts table.
#[derive(Clone, Debug, PartialEq)]
pub struct TwoWay {
    pub seeds: usize,
    pub prompts: usize,
    pub grand_mean: f64,
    pub seed_means: Vec<f64>,
    pub prompt_means: Vec<f64>,
    /// P·Σ(seed mean − grand)²/(S − 1).
    pub ms_seeds: f64,
    /// S·Σ(prompt mean − grand)²/(P − 1).
    pub ms_prompts: f64,
    /// Σ(x − seed mean − prompt mean + grand)²/((S − 1)(P − 1)).
    pub ms_resid: f64,
}

/// `None` for an empty or ragged table.
pub fn two_way(x: &[Vec<f64>]) -> Option<TwoWay> {
    let s = x.len();
    let p = x.first()?.len();
    if p == 0 || x.iter().any(|r| r.len() != p) {
        return None;
    }
    let seed_means: Vec<f64> = x.iter().map(|r| mean(r)).collect();
    let prompt_means: Vec<f64> = (0..p)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / s as f64)
        .collect();
    let grand_mean = mean(&seed_means);
    let ms = |ss: f64, df: usize| if df == 0 { f64::NAN } else { ss / df as f64 };
    let ss_seeds = p as f64
        * seed_means
            .iter()
            .map(|m| (m - grand_mean).powi(2))
            .sum::<f64>();
    let ss_prompts = s as f64
        * prompt_means
            .iter()
            .map(|m| (m - grand_mean).powi(2))
            .sum::<f64>();
    let mut ss_resid = 0.0;
    for (i, r) in x.iter().enumerate() {
        for (j, v) in r.iter().enumerate() {
            ss_resid += (v - seed_means[i] - prompt_means[j] + grand_mean).powi(2);
        }
    }
    Some(TwoWay {
        seeds: s,
        prompts: p,
        grand_mean,
        ms_seeds: ms(ss_seeds, s - 1),
        ms_prompts: ms(ss_prompts, p - 1),
        ms_resid: ms(ss_resid, (s - 1) * (p - 1)),
        seed_means,
        prompt_means,
    })
}

/// The mean of a seeds × prompts table with the crossed seeds-and-prompts
/// standard error (module docs). `None` for an empty or ragged table.
pub fn crossed(x: &[Vec<f64>]) -> Option<TEstimate> {
    let t = two_way(x)?;
    if t.seeds < 2 || t.prompts < 2 {
        return Some(seed_t(&t.seed_means));
    }
    let sp = (t.seeds * t.prompts) as f64;
    let df_s = (t.seeds - 1) as f64;
    let df_p = (t.prompts - 1) as f64;
    let mut parts = vec![(t.ms_seeds / sp, df_s)];
    if t.ms_prompts > t.ms_resid {
        parts.push((t.ms_prompts / sp, df_p));
        parts.push((-t.ms_resid / sp, df_s * df_p));
    }
    Some(from_parts(t.grand_mean, &parts))
}

/// mean(a) − mean(b) for two configurations run with the same seeds (row
/// i of each is the same seed) on the same prompts: the crossed estimate
/// of the table of differences. `None` when the shapes differ.
pub fn paired(a: &[Vec<f64>], b: &[Vec<f64>]) -> Option<TEstimate> {
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
        return None;
    }
    let d: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(u, v)| u - v).collect())
        .collect();
    crossed(&d)
}

/// mean(a) − mean(b) for two configurations run with different seeds on
/// the same prompts (column j of each is the same prompt): Welch over the
/// seed means, plus the prompt-by-configuration term σ²_d/P estimated from
/// the per-prompt differences of the two configurations' prompt means
/// (their variance less the residual noise it carries), with
/// Satterthwaite's df. `None` for empty tables or different prompt counts.
pub fn crossed_welch(a: &[Vec<f64>], b: &[Vec<f64>]) -> Option<TEstimate> {
    let (ta, tb) = (two_way(a)?, two_way(b)?);
    if ta.prompts != tb.prompts {
        return None;
    }
    let estimate = ta.grand_mean - tb.grand_mean;
    if ta.seeds < 2 || tb.seeds < 2 {
        return Some(TEstimate {
            estimate,
            se: f64::NAN,
            df: f64::NAN,
        });
    }
    if ta.prompts < 2 {
        return Some(welch(&ta.seed_means, &tb.seed_means));
    }
    let p = ta.prompts as f64;
    let (sa, sb) = (ta.seeds as f64, tb.seeds as f64);
    let d: Vec<f64> = ta
        .prompt_means
        .iter()
        .zip(&tb.prompt_means)
        .map(|(x, y)| x - y)
        .collect();
    let var_d = sample_sd(&d).powi(2);
    let mut parts = vec![
        (ta.ms_seeds / (sa * p), sa - 1.0),
        (tb.ms_seeds / (sb * p), sb - 1.0),
    ];
    if var_d > ta.ms_resid / sa + tb.ms_resid / sb {
        parts.push((var_d / p, p - 1.0));
        parts.push((-ta.ms_resid / (sa * p), (sa - 1.0) * (p - 1.0)));
        parts.push((-tb.ms_resid / (sb * p), (sb - 1.0) * (p - 1.0)));
    }
    Some(from_parts(estimate, &parts))
}

fn from_parts(estimate: f64, parts: &[(f64, f64)]) -> TEstimate {
    let var: f64 = parts.iter().map(|p| p.0).sum();
    TEstimate {
        estimate,
        se: var.max(0.0).sqrt(),
        df: satterthwaite(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn seed_t_golden() {
        // [1, 2, 3]: mean 2, sd 1, se 1/√3 = 0.5773503; t(0.975, 2) =
        // 4.3026527; half-width 2.4841377.
        let e = seed_t(&[1.0, 2.0, 3.0]);
        assert_eq!((e.estimate, e.df), (2.0, 2.0));
        let i = e.interval();
        assert!(close(i.hi - 2.0, 2.484_137_7, 1e-6), "{i:?}");
        assert!(close(2.0 - i.lo, 2.484_137_7, 1e-6), "{i:?}");
        // One value: no spread is known.
        let e = seed_t(&[4.0]);
        assert!(e.se.is_nan() && e.interval().lo.is_nan());
    }

    #[test]
    fn welch_golden() {
        // a = [1, 2, 3]: mean 2, s² 1; b = [2, 4, 6, 8]: mean 5, s² 20/3.
        // se² = 1/3 + (20/3)/4 = 2; df = 4/((1/3)²/2 + (5/3)²/3) = 216/53
        // = 4.0754717; t(0.975, 216/53) = 2.756284874 (mpmath), so the
        // interval is −3 ± 2.756284874·√2 = −3 ± 3.897975.
        let e = welch(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0, 8.0]);
        assert_eq!(e.estimate, -3.0);
        assert!(close(e.se, 2f64.sqrt(), 1e-12));
        assert!(close(e.df, 216.0 / 53.0, 1e-12), "{}", e.df);
        let i = e.interval();
        assert!(close(i.hi, -3.0 + 3.897_975, 1e-5), "{i:?}");
        assert!(close(i.lo, -3.0 - 3.897_975, 1e-5), "{i:?}");
    }

    #[test]
    fn paired_golden() {
        // Seed differences 0.5, 1.0, 0.5 on one prompt: mean 2/3, sd
        // 0.2886751, se 1/6, df 2, half-width 4.3026527/6 = 0.7171088.
        let a = vec![vec![1.0], vec![2.0], vec![3.0]];
        let b = vec![vec![0.5], vec![1.0], vec![2.5]];
        let e = paired(&a, &b).unwrap();
        assert!(close(e.estimate, 2.0 / 3.0, 1e-12));
        assert!(close(e.se, 1.0 / 6.0, 1e-12) && e.df == 2.0, "{e:?}");
        assert!(close(e.interval().hi - e.estimate, 0.717_108_8, 1e-6));
        assert!(paired(&a, &b[..2]).is_none());
    }

    #[test]
    fn crossed_golden() {
        // x = [[1, 2], [3, 6]]: grand 3; seed means 1.5, 4.5; prompt
        // means 2, 4. MS_seeds = 2·(2.25 + 2.25)/1 = 9; MS_prompts =
        // 2·(1 + 1)/1 = 4; residuals ±0.5 → MS_resid = 1. Var = (9 + 4 −
        // 1)/4 = 3, se = √3; df = 12²/(9² + 4² + 1²) = 144/98 = 1.4693878;
        // t(0.975, 72/49) = 6.195387261 (mpmath): half-width 10.730726.
        let x = vec![vec![1.0, 2.0], vec![3.0, 6.0]];
        let t = two_way(&x).unwrap();
        assert_eq!((t.ms_seeds, t.ms_prompts, t.ms_resid), (9.0, 4.0, 1.0));
        let e = crossed(&x).unwrap();
        assert_eq!(e.estimate, 3.0);
        assert!(close(e.se, 3f64.sqrt(), 1e-12));
        assert!(close(e.df, 144.0 / 98.0, 1e-12), "{}", e.df);
        assert!(close(e.interval().hi - 3.0, 10.730_726, 1e-5));
        // No shared prompt effect (MS_prompts ≤ MS_resid): exactly the
        // t-interval on the seed means. x = [[0, 2], [2, 0], [4, 4]]:
        // prompt means 2, 2 → MS_prompts 0.
        let x = vec![vec![0.0, 2.0], vec![2.0, 0.0], vec![4.0, 4.0]];
        let e = crossed(&x).unwrap();
        assert_eq!(e, seed_t(&[1.0, 1.0, 4.0]));
        // Ragged or empty tables are refused.
        assert!(crossed(&[vec![1.0], vec![1.0, 2.0]]).is_none());
        assert!(crossed(&[]).is_none());
    }

    #[test]
    fn crossed_welch_golden() {
        // Without a prompt-by-configuration effect it is Welch on the seed
        // means: a's seed means 1, 2, 3, b's 2, 4, 6, 8, every prompt
        // shifted alike.
        let a: Vec<Vec<f64>> = [1.0, 2.0, 3.0]
            .iter()
            .map(|m| vec![m - 0.5, m + 0.5])
            .collect();
        let b: Vec<Vec<f64>> = [2.0, 4.0, 6.0, 8.0]
            .iter()
            .map(|m| vec![m - 0.5, m + 0.5])
            .collect();
        let (e, w) = (
            crossed_welch(&a, &b).unwrap(),
            welch(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0, 8.0]),
        );
        assert_eq!(e.estimate, w.estimate);
        assert!(
            close(e.se, w.se, 1e-12) && close(e.df, w.df, 1e-9),
            "{e:?} {w:?}"
        );
        // Two prompts whose difference between configurations is ±1 with
        // no residual noise: var_d = 2, so the term 2/P = 1 joins Welch's
        // se² = 2 (seed means as before): se² = 3, and df =
        // 9/(((1/3)²/2 + (5/3)²/3) + 1²/1) = 9/1.9814815 = 4.5420561.
        let a: Vec<Vec<f64>> = [1.0, 2.0, 3.0]
            .iter()
            .map(|m| vec![m + 1.0, m - 1.0])
            .collect();
        let b: Vec<Vec<f64>> = [2.0, 4.0, 6.0, 8.0].iter().map(|m| vec![*m, *m]).collect();
        let e = crossed_welch(&a, &b).unwrap();
        assert!(close(e.se, 3f64.sqrt(), 1e-12), "{e:?}");
        assert!(
            close(e.df, 9.0 / (1.0 / 18.0 + 25.0 / 27.0 + 1.0), 1e-12),
            "{e:?}"
        );
        assert!(crossed_welch(&a, &[vec![1.0]]).is_none());
    }

    #[test]
    fn detectable_difference_scales_with_the_standard_error() {
        // 10 seeds: df 9, 3.149633 standard errors (see student.rs).
        let e = TEstimate {
            estimate: 0.0,
            se: 0.05,
            df: 9.0,
        };
        assert!(close(e.detectable(0.8), 0.05 * 3.149_633, 1e-6));
    }
}
