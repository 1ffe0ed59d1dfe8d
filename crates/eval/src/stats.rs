//! The statistics of a comparison between training runs: Student-t
//! intervals over seeds, Wilson intervals for win rates, and a seeded
//! two-level bootstrap over seeds and prompts.
//!
//! Every interval here is a 95% interval. The bootstrap is deterministic:
//! the same data and seed give the same interval on every machine.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// z such that P(|Z| < z) = 0.95 for a standard normal Z.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A point estimate with a 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// Whether the interval lies entirely on one side of `x`.
    pub fn excludes(&self, x: f64) -> bool {
        self.lo > x || self.hi < x
    }

    fn degenerate(x: f64) -> Self {
        Interval {
            estimate: x,
            lo: x,
            hi: x,
        }
    }
}

/// Arithmetic mean; NaN for no values.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator); NaN below two
/// values.
pub fn sample_sd(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided
/// 95%): exact table values up to 30, then the Cornish–Fisher expansion
/// around the normal quantile, good to 1e-5 there.
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706_204_736,
        4.302_652_730,
        3.182_446_305,
        2.776_445_105,
        2.570_581_836,
        2.446_911_851,
        2.364_624_252,
        2.306_004_135,
        2.262_157_163,
        2.228_138_852,
        2.200_985_160,
        2.178_812_830,
        2.160_368_656,
        2.144_786_688,
        2.131_449_546,
        2.119_905_299,
        2.109_815_578,
        2.100_922_040,
        2.093_024_054,
        2.085_963_447,
        2.079_613_845,
        2.073_873_068,
        2.068_657_610,
        2.063_898_562,
        2.059_538_553,
        2.055_529_439,
        2.051_830_516,
        2.048_407_142,
        2.045_229_642,
        2.042_272_456,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => {
            let (z, n) = (Z_95, df as f64);
            let z3 = z.powi(3);
            let z5 = z.powi(5);
            let z7 = z.powi(7);
            z + (z3 + z) / (4.0 * n)
                + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
                + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n * n * n)
        }
    }
}

/// Mean with the Student-t 95% interval `mean ± t·sd/√n`: the band over
/// seeds. One value gives a zero-width interval (no spread is known) and is
/// marked by `n` in the reports; none gives NaN.
pub fn t_interval(xs: &[f64]) -> Interval {
    match xs.len() {
        0 => Interval::degenerate(f64::NAN),
        1 => Interval::degenerate(xs[0]),
        n => {
            let m = mean(xs);
            let half = t_975(n - 1) * sample_sd(xs) / (n as f64).sqrt();
            Interval {
                estimate: m,
                lo: m - half,
                hi: m + half,
            }
        }
    }
}

/// The Wilson score 95% interval of a proportion `k` of `n`: unlike the
/// normal approximation it stays inside [0, 1] and is sensible at 0 and n.
pub fn wilson(k: usize, n: usize) -> Interval {
    if n == 0 {
        return Interval::degenerate(f64::NAN);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z_95 * Z_95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Interval {
        estimate: p,
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
    }
}

/// The `q`-quantile of sorted values, linearly interpolated between order
/// statistics at position q·(n − 1) (numpy's default, R's type 7).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One training configuration's evaluation: per seed, a score per prompt,
/// the prompts in the same order for every seed and every configuration.
pub type SeedScores = Vec<Vec<f64>>;

/// Checks that every seed of every configuration scored the same number of
/// prompts (the prompt axis is shared).
fn prompt_count(groups: &[&SeedScores]) -> Option<usize> {
    let n = groups.first()?.first()?.len();
    groups
        .iter()
        .all(|g| !g.is_empty() && g.iter().all(|s| s.len() == n))
        .then_some(n)
}

/// The statistic of one configuration: the mean over seeds of each seed's
/// mean score, with seeds and prompts taken through index lists.
fn grand_mean(g: &SeedScores, seeds: &[usize], prompts: &[usize]) -> f64 {
    let per_seed = |s: usize| prompts.iter().map(|&p| g[s][p]).sum::<f64>() / prompts.len() as f64;
    seeds.iter().map(|&s| per_seed(s)).sum::<f64>() / seeds.len() as f64
}

fn draw(rng: &mut ChaCha8Rng, n: usize) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// Two-level percentile bootstrap of the mean score of configuration `a`,
/// or of the difference `a − b` when `b` is given: each of `replicates`
/// rounds resamples the seeds of each configuration independently (they
/// are independent runs) and the prompts once for both (both answered the
/// same prompts, so the difference is paired by prompt), and recomputes the
/// mean over seeds of the mean over prompts. The interval is the 2.5% and
/// 97.5% quantiles of the replicates; the estimate is the statistic on the
/// data itself. Both sources of noise are in the interval: which seeds
/// were run and which prompts were asked. `None` when the inputs are empty
/// or the seeds disagree on the prompt count.
pub fn bootstrap_mean(
    a: &SeedScores,
    b: Option<&SeedScores>,
    replicates: usize,
    seed: u64,
) -> Option<Interval> {
    let groups: Vec<&SeedScores> = std::iter::once(a).chain(b).collect();
    let n_prompts = prompt_count(&groups)?;
    if n_prompts == 0 || replicates == 0 {
        return None;
    }
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let stat = |sa: &[usize], sb: &[usize], p: &[usize]| {
        grand_mean(a, sa, p) - b.map_or(0.0, |b| grand_mean(b, sb, p))
    };
    let estimate = stat(&all(a.len()), &all(b.map_or(0, Vec::len)), &all(n_prompts));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut reps: Vec<f64> = (0..replicates)
        .map(|_| {
            let sa = draw(&mut rng, a.len());
            let sb = draw(&mut rng, b.map_or(0, Vec::len));
            let p = draw(&mut rng, n_prompts);
            stat(&sa, &sb, &p)
        })
        .collect();
    reps.sort_by(f64::total_cmp);
    Some(Interval {
        estimate,
        lo: quantile(&reps, 0.025),
        hi: quantile(&reps, 0.975),
    })
}

/// The first index at which `curve` reaches `target` (≥), if any.
pub fn first_reaching(curve: &[f64], target: f64) -> Option<usize> {
    curve.iter().position(|&y| y >= target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_interval_golden() {
        // [1, 2, 3]: mean 2, sd 1, se 1/√3 = 0.5773503; t(2) = 4.3026527;
        // half-width 2.4841377.
        let i = t_interval(&[1.0, 2.0, 3.0]);
        assert_eq!(i.estimate, 2.0);
        assert!(close(i.hi - 2.0, 2.484_137_7, 1e-6), "{i:?}");
        assert!(close(2.0 - i.lo, 2.484_137_7, 1e-6), "{i:?}");
        // [0.5, 1.5]: mean 1, sd 0.7071068, se 0.5, t(1) = 12.7062047.
        let i = t_interval(&[0.5, 1.5]);
        assert!(close(i.hi, 1.0 + 6.353_102_4, 1e-6), "{i:?}");
        // One seed: no spread is known.
        assert_eq!(t_interval(&[4.0]), Interval::degenerate(4.0));
        assert!(t_interval(&[]).estimate.is_nan());
    }

    #[test]
    fn t_quantiles_join_the_normal() {
        assert!(close(t_975(1), 12.706_204_736, 1e-9));
        assert!(close(t_975(30), 2.042_272_456, 1e-9));
        // Published values: t(40) = 2.021075, t(60) = 2.000298,
        // t(120) = 1.979930; the limit is z = 1.959964.
        assert!(close(t_975(40), 2.021_075, 2e-5), "{}", t_975(40));
        assert!(close(t_975(60), 2.000_298, 2e-5), "{}", t_975(60));
        assert!(close(t_975(120), 1.979_930, 2e-5), "{}", t_975(120));
        assert!(close(t_975(1_000_000), Z_95, 1e-5));
        assert!(t_975(0).is_nan());
    }

    #[test]
    fn wilson_golden() {
        // 5 of 10: p = 0.5, z² = 3.8414588; centre 0.5;
        // half = 1.959964·√(0.025 + 0.0096036)/1.3841459 = 0.2634069.
        let i = wilson(5, 10);
        assert!(
            close(i.lo, 0.236_593_1, 1e-6) && close(i.hi, 0.763_406_9, 1e-6),
            "{i:?}"
        );
        // 0 of 10: [0, z²/(n + z²)] = [0, 0.2775328].
        let i = wilson(0, 10);
        assert_eq!((i.estimate, i.lo), (0.0, 0.0));
        assert!(close(i.hi, 0.277_532_8, 1e-6), "{i:?}");
        // 40 of 50: p = 0.8; centre (0.8 + 0.0384146)/1.0768292 = 0.7785957,
        // half 1.959964·√(0.0032 + 0.0003842)/1.0768292 = 0.1089668.
        let i = wilson(40, 50);
        assert!(
            close(i.lo, 0.669_629, 1e-5) && close(i.hi, 0.887_562, 1e-5),
            "{i:?}"
        );
        assert!(wilson(0, 0).estimate.is_nan());
    }

    #[test]
    fn quantile_golden() {
        let v = [1.0, 2.0, 4.0, 8.0];
        // positions q·3: 0 → 1; 0.5 → between 2 and 4 at 1.5 → 3;
        // 0.975 → 2.925 → 4 + 0.925·4 = 7.7.
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert!(close(quantile(&v, 0.975), 7.7, 1e-12));
        assert_eq!(quantile(&v, 1.0), 8.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn bootstrap_of_constant_data_is_a_point() {
        let g: SeedScores = vec![vec![0.3; 5], vec![0.3; 5]];
        let i = bootstrap_mean(&g, None, 200, 1).unwrap();
        assert!(close(i.lo, 0.3, 1e-12) && close(i.hi, 0.3, 1e-12), "{i:?}");
        // A difference that is the same on every prompt and seed: exactly it.
        let h: SeedScores = vec![vec![0.1; 5]; 3];
        let d = bootstrap_mean(&g, Some(&h), 200, 1).unwrap();
        assert!(
            close(d.estimate, 0.2, 1e-12) && close(d.lo, 0.2, 1e-12) && close(d.hi, 0.2, 1e-12)
        );
    }

    #[test]
    fn bootstrap_of_two_points_has_the_exact_distribution() {
        // One seed, prompts scored 0 and 1: a resample's mean is 0, 0.5 or 1
        // with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5% quantiles
        // of many replicates are 0 and 1, and the estimate is 0.5.
        let g: SeedScores = vec![vec![0.0, 1.0]];
        let i = bootstrap_mean(&g, None, 4000, 7).unwrap();
        assert_eq!((i.estimate, i.lo, i.hi), (0.5, 0.0, 1.0));
    }

    #[test]
    fn bootstrap_matches_the_normal_interval_on_a_large_sample() {
        // One seed, 400 prompts: the percentile interval of the mean is
        // close to mean ± 1.96·sd/√n.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f64> = (0..400).map(|_| rng.random_range(-1.0..1.0)).collect();
        let half = Z_95 * sample_sd(&x) / 20.0;
        let i = bootstrap_mean(&vec![x.clone()], None, 20_000, 11).unwrap();
        assert!(close(i.estimate, mean(&x), 1e-12));
        assert!(
            close(i.hi - i.estimate, half, 0.1 * half),
            "{i:?} vs ±{half}"
        );
        assert!(
            close(i.estimate - i.lo, half, 0.1 * half),
            "{i:?} vs ±{half}"
        );
        // Deterministic per seed.
        assert_eq!(i, bootstrap_mean(&vec![x], None, 20_000, 11).unwrap());
    }

    #[test]
    fn bootstrap_counts_the_spread_between_seeds() {
        // Two seeds that disagree by 1 on every prompt: resampling the seeds
        // gives grand means 0, 0.5 or 1, so the interval spans [0, 1] even
        // though each seed alone has no spread over prompts.
        let g: SeedScores = vec![vec![0.0; 20], vec![1.0; 20]];
        let i = bootstrap_mean(&g, None, 4000, 5).unwrap();
        assert_eq!((i.lo, i.hi), (0.0, 1.0));
        // Mismatched prompt counts are refused.
        let bad: SeedScores = vec![vec![0.0; 3], vec![0.0; 4]];
        assert!(bootstrap_mean(&bad, None, 10, 1).is_none());
    }

    #[test]
    fn first_reaching_golden() {
        assert_eq!(first_reaching(&[0.1, 0.3, 0.2, 0.5], 0.25), Some(1));
        assert_eq!(first_reaching(&[0.1, 0.2], 0.25), None);
        assert_eq!(first_reaching(&[0.25], 0.25), Some(0));
    }
}
