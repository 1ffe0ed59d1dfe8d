//! The statistics of a comparison between training runs, every interval a
//! 95% interval whose coverage is tested (`coverage_tests`):
//!
//! - [`seeds`]: a configuration's mean over seeds, and the difference of
//!   two configurations paired by seed (same seeds, same prompts) or by
//!   Welch (different seeds), as Student-t intervals on the seed means
//!   with the prompts as a crossed random factor;
//! - [`student`]: Student's t for fractional degrees of freedom, and the
//!   power of a t-test (the smallest difference a set of seeds detects);
//! - [`wilson`]: the Wilson interval of a proportion of independent
//!   trials (held-out preference pairs).

pub mod seeds;
pub mod student;

#[cfg(test)]
mod coverage_tests;

pub use seeds::{crossed, crossed_welch, paired, seed_t, welch, TEstimate};
pub use student::{t_975, t_quantile, Z_95};

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

/// Mean with the Student-t 95% interval `mean ± t·sd/√n` over independent
/// values (one per seed): the band of a training curve. One value gives a
/// zero-width interval (no spread is known), drawn as a line and marked by
/// the seed count in the reports; none gives NaN.
pub fn t_interval(xs: &[f64]) -> Interval {
    match xs.len() {
        0 => Interval::degenerate(f64::NAN),
        1 => Interval::degenerate(xs[0]),
        _ => seed_t(xs).interval(),
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
        // [0.5, 1.5]: mean 1, sd 0.7071068, se 0.5, t(0.975, 1) = 12.7062047.
        let i = t_interval(&[0.5, 1.5]);
        assert!(close(i.hi, 1.0 + 6.353_102_4, 1e-6), "{i:?}");
        // One seed: a line, no spread is known.
        assert_eq!(t_interval(&[4.0]), Interval::degenerate(4.0));
        assert!(t_interval(&[]).estimate.is_nan());
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
    fn first_reaching_golden() {
        assert_eq!(first_reaching(&[0.1, 0.3, 0.2, 0.5], 0.25), Some(1));
        assert_eq!(first_reaching(&[0.1, 0.2], 0.25), None);
        assert_eq!(first_reaching(&[0.25], 0.25), Some(0));
    }
}
