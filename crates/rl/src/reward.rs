//! Per-token rewards: the KL penalty on every token, the reward model's
//! score on the last.

use std::fmt;
use std::str::FromStr;

use crate::error::{check_finite, check_param, RlError};

/// How one sampled token estimates KL(π‖π_ref) (Schulman, "Approximating
/// KL divergence", 2020). With x drawn from π, both are unbiased:
///
/// - `k1 = logπ(x) − logπ_ref(x)`: the paper's and DeepSpeed-Chat's
///   penalty; negative on many tokens;
/// - `k3 = (ρ − 1) − log ρ` with `ρ = π_ref(x)/π(x)`: never negative, lower
///   variance when the two distributions are close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KlEstimator {
    #[default]
    K1,
    K3,
}

impl KlEstimator {
    pub fn as_str(self) -> &'static str {
        match self {
            KlEstimator::K1 => "k1",
            KlEstimator::K3 => "k3",
        }
    }

    /// The estimate from one token's log-probabilities under π and π_ref.
    pub fn estimate(self, logprob: f32, ref_logprob: f32) -> f32 {
        let log_ratio = logprob - ref_logprob;
        match self {
            KlEstimator::K1 => log_ratio,
            // ρ = exp(−log_ratio); (ρ − 1) − log ρ = expm1(−d) + d.
            KlEstimator::K3 => (-log_ratio).exp_m1() + log_ratio,
        }
    }
}

impl fmt::Display for KlEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KlEstimator {
    type Err = RlError;

    fn from_str(s: &str) -> Result<Self, RlError> {
        match s {
            "k1" => Ok(KlEstimator::K1),
            "k3" => Ok(KlEstimator::K3),
            _ => Err(RlError::ParseKlEstimator(s.to_string())),
        }
    }
}

/// DeepSpeed-Chat's `compute_rewards` for one response:
/// `r_t = −β·k(logπ_t, logπ_ref,t)` with `k` the KL estimator (`k1` is
/// DeepSpeed-Chat's `logπ_t − logπ_ref,t`), and the last token also gets the
/// reward model's score clipped to `±clip_reward`.
///
/// An empty response has no tokens to carry the score: the result is empty.
pub fn token_rewards(
    logprobs: &[f32],
    ref_logprobs: &[f32],
    score: f32,
    kl: KlEstimator,
    kl_coef: f32,
    clip_reward: f32,
) -> Result<Vec<f32>, RlError> {
    if ref_logprobs.len() != logprobs.len() {
        return Err(RlError::length(
            "ref_logprobs",
            logprobs.len(),
            ref_logprobs.len(),
        ));
    }
    check_finite("logprobs", logprobs)?;
    check_finite("ref_logprobs", ref_logprobs)?;
    check_finite("score", &[score])?;
    check_param("kl_coef", kl_coef, kl_coef >= 0.0)?;
    check_param("clip_reward", clip_reward, clip_reward >= 0.0)?;

    let mut rewards: Vec<f32> = logprobs
        .iter()
        .zip(ref_logprobs)
        .map(|(&lp, &rlp)| -kl_coef * kl.estimate(lp, rlp))
        .collect();
    if let Some(last) = rewards.last_mut() {
        *last += score.clamp(-clip_reward, clip_reward);
    }
    check_finite("rewards", &rewards)?;
    Ok(rewards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        // kl 0.5: −0.5·(−1 − −2) = −0.5; −0.5·(−2 − −1) = 0.5;
        // last: −0.5·(−0.5 − −0.5) = 0, plus score 3 clipped to 2.5.
        let r = token_rewards(
            &[-1.0, -2.0, -0.5],
            &[-2.0, -1.0, -0.5],
            3.0,
            KlEstimator::K1,
            0.5,
            2.5,
        )
        .unwrap();
        assert_eq!(r, vec![-0.5, 0.5, 2.5]);
        // A negative score is clipped from below; within the clip it is kept.
        let r = token_rewards(&[-1.0], &[-1.0], -7.0, KlEstimator::K1, 0.05, 2.5).unwrap();
        assert_eq!(r, vec![-2.5]);
        let r = token_rewards(
            &[-1.0, -1.0],
            &[-1.0, -1.0],
            1.25,
            KlEstimator::K1,
            0.05,
            2.5,
        )
        .unwrap();
        assert_eq!(r, vec![0.0, 1.25]);
    }

    #[test]
    fn k3_golden() {
        // d = logπ − logπ_ref. d = ln 2: ρ = 1/2, (ρ − 1) − ln ρ = −0.5 + ln 2
        // = 0.1931472; d = −ln 2: ρ = 2, 1 − ln 2 = 0.3068528; d = 0: 0.
        let ln2 = std::f32::consts::LN_2;
        let k3 = |d: f32| KlEstimator::K3.estimate(d - 1.0, -1.0);
        assert!((k3(ln2) - 0.193_147_2).abs() < 1e-6);
        assert!((k3(-ln2) - 0.306_852_8).abs() < 1e-6);
        assert_eq!(k3(0.0), 0.0);
        assert_eq!(KlEstimator::K1.estimate(-0.5, -1.25), 0.75);
        // β 0.5: −0.5·0.1931472 = −0.0965736, −0.5·0.3068528 + score 1.
        let r = token_rewards(&[ln2, -ln2], &[0.0, 0.0], 1.0, KlEstimator::K3, 0.5, 2.5).unwrap();
        assert!((r[0] + 0.096_573_6).abs() < 1e-6, "{r:?}");
        assert!((r[1] - (1.0 - 0.153_426_4)).abs() < 1e-6, "{r:?}");
        for s in ["k1", "k3"] {
            assert_eq!(s.parse::<KlEstimator>().unwrap().to_string(), s);
        }
        assert!("k2".parse::<KlEstimator>().is_err());
    }

    #[test]
    fn empty_response_has_no_rewards() {
        assert_eq!(
            token_rewards(&[], &[], 1.0, KlEstimator::K1, 0.05, 2.5).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn bad_inputs() {
        let err = |r: Result<Vec<f32>, RlError>| r.unwrap_err().to_string();
        assert_eq!(
            err(token_rewards(
                &[0.0, 0.0],
                &[0.0],
                1.0,
                KlEstimator::K1,
                0.1,
                1.0
            )),
            "ref_logprobs has length 1, expected 2"
        );
        assert_eq!(
            err(token_rewards(
                &[0.0, f32::NAN],
                &[0.0, 0.0],
                1.0,
                KlEstimator::K1,
                0.1,
                1.0
            )),
            "logprobs[1] is not finite"
        );
        assert_eq!(
            err(token_rewards(
                &[0.0],
                &[f32::NEG_INFINITY],
                1.0,
                KlEstimator::K1,
                0.1,
                1.0
            )),
            "ref_logprobs[0] is not finite"
        );
        assert_eq!(
            err(token_rewards(
                &[0.0],
                &[0.0],
                f32::NAN,
                KlEstimator::K1,
                0.1,
                1.0
            )),
            "score[0] is not finite"
        );
        assert_eq!(
            err(token_rewards(
                &[0.0],
                &[0.0],
                1.0,
                KlEstimator::K1,
                -0.1,
                1.0
            )),
            "invalid kl_coef: -0.1 is out of range"
        );
    }
}
