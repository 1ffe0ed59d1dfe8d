//! The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large
//! Language Models Trained on Code"), and its average over problems.
//!
//! With `n` samples of which `c` are correct, pass@k = 1 − C(n−c, k) / C(n, k).
//! The binomials overflow long before realistic `n` (200 samples), so the
//! ratio is computed as the product ∏_{i=n−c+1}^{n} (1 − k/i), which only
//! multiplies numbers in [0, 1].

use std::collections::BTreeMap;

/// Why a pass@k value cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassAtKError {
    #[error("pass@k needs k >= 1")]
    ZeroK,
    #[error("problem {problem_id}: {c} correct samples out of {n} is impossible")]
    MoreCorrectThanSamples { problem_id: u64, n: usize, c: usize },
    #[error("problem {problem_id}: pass@{k} needs at least {k} samples, got {n}")]
    TooFewSamples { problem_id: u64, n: usize, k: usize },
    #[error("pass@k over no problems is undefined")]
    NoProblems,
}

/// Samples and correct samples for one problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemCounts {
    pub problem_id: u64,
    /// Samples generated for the problem.
    pub n: usize,
    /// Samples that passed every test.
    pub c: usize,
}

/// pass@k for one problem with `n` samples, `c` of them correct.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64, PassAtKError> {
    check(0, n, c, k)?;
    Ok(estimate(n, c, k))
}

fn check(problem_id: u64, n: usize, c: usize, k: usize) -> Result<(), PassAtKError> {
    if k == 0 {
        return Err(PassAtKError::ZeroK);
    }
    if c > n {
        return Err(PassAtKError::MoreCorrectThanSamples { problem_id, n, c });
    }
    if n < k {
        return Err(PassAtKError::TooFewSamples { problem_id, n, k });
    }
    Ok(())
}

fn estimate(n: usize, c: usize, k: usize) -> f64 {
    // Fewer wrong samples than k: every k-subset contains a correct one.
    if n - c < k {
        return 1.0;
    }
    let mut all_wrong = 1.0f64;
    for i in (n - c + 1)..=n {
        all_wrong *= 1.0 - k as f64 / i as f64;
    }
    1.0 - all_wrong
}

/// Folds per-sample outcomes `(problem_id, passed)` into per-problem counts,
/// ordered by problem id so the result does not depend on sample order.
pub fn count_per_problem<I>(samples: I) -> Vec<ProblemCounts>
where
    I: IntoIterator<Item = (u64, bool)>,
{
    let mut counts: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for (problem_id, passed) in samples {
        let entry = counts.entry(problem_id).or_default();
        entry.0 += 1;
        entry.1 += usize::from(passed);
    }
    counts
        .into_iter()
        .map(|(problem_id, (n, c))| ProblemCounts { problem_id, n, c })
        .collect()
}

/// pass@k averaged over problems, each problem weighted equally as in
/// Chen et al. Every problem needs at least `k` samples.
pub fn mean_pass_at_k(problems: &[ProblemCounts], k: usize) -> Result<f64, PassAtKError> {
    if problems.is_empty() {
        return Err(PassAtKError::NoProblems);
    }
    let mut total = 0.0;
    for p in problems {
        check(p.problem_id, p.n, p.c, k)?;
        total += estimate(p.n, p.c, k);
    }
    Ok(total / problems.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn golden_values_by_hand() {
        // k = 1 is the fraction of correct samples.
        close(pass_at_k(5, 2, 1).unwrap(), 0.4);
        // 1 - C(3,2)/C(5,2) = 1 - 3/10.
        close(pass_at_k(5, 2, 2).unwrap(), 0.7);
        // 1 - C(7,5)/C(10,5) = 1 - 21/252.
        close(pass_at_k(10, 3, 5).unwrap(), 1.0 - 21.0 / 252.0);
        // 1 - C(199,100)/C(200,100) = 1 - 100/200: binomials of ~1e59, product stays exact enough.
        close(pass_at_k(200, 1, 100).unwrap(), 0.5);
        close(pass_at_k(10, 0, 3).unwrap(), 0.0);
        close(pass_at_k(10, 10, 3).unwrap(), 1.0);
        // Only 2 wrong samples: any 3 of them contain a correct one.
        close(pass_at_k(10, 8, 3).unwrap(), 1.0);
    }

    #[test]
    fn matches_direct_binomials_on_small_n() {
        fn binom(n: u64, k: u64) -> f64 {
            if k > n {
                return 0.0;
            }
            (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
        }
        for n in 1..=12u64 {
            for c in 0..=n {
                for k in 1..=n {
                    let direct = 1.0 - binom(n - c, k) / binom(n, k);
                    let stable = pass_at_k(n as usize, c as usize, k as usize).unwrap();
                    assert!((direct - stable).abs() < 1e-12, "n={n} c={c} k={k}");
                }
            }
        }
    }

    #[test]
    fn rejects_impossible_inputs() {
        assert_eq!(pass_at_k(5, 1, 0), Err(PassAtKError::ZeroK));
        assert_eq!(
            pass_at_k(5, 6, 1),
            Err(PassAtKError::MoreCorrectThanSamples {
                problem_id: 0,
                n: 5,
                c: 6
            })
        );
        let err = mean_pass_at_k(
            &[
                ProblemCounts {
                    problem_id: 1,
                    n: 10,
                    c: 1,
                },
                ProblemCounts {
                    problem_id: 7,
                    n: 3,
                    c: 1,
                },
            ],
            5,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "problem 7: pass@5 needs at least 5 samples, got 3"
        );
        assert_eq!(mean_pass_at_k(&[], 1), Err(PassAtKError::NoProblems));
    }

    #[test]
    fn aggregates_per_problem_then_averages() {
        let samples = [
            (9, true),
            (2, false),
            (9, false),
            (2, false),
            (9, true),
            (2, true),
        ];
        let counts = count_per_problem(samples);
        assert_eq!(
            counts,
            vec![
                ProblemCounts {
                    problem_id: 2,
                    n: 3,
                    c: 1
                },
                ProblemCounts {
                    problem_id: 9,
                    n: 3,
                    c: 2
                },
            ]
        );
        // pass@1: (1/3 + 2/3) / 2; pass@2: (1 - C(2,2)/C(3,2) + 1) / 2 = (2/3 + 1) / 2.
        close(mean_pass_at_k(&counts, 1).unwrap(), 0.5);
        close(mean_pass_at_k(&counts, 2).unwrap(), (2.0 / 3.0 + 1.0) / 2.0);
    }
}
