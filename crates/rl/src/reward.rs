//! Per-token rewards: the KL penalty on every token, the reward model's
//! score on the last.

use crate::error::{check_finite, check_param, RlError};

/// DeepSpeed-Chat's `compute_rewards` for one response:
/// `r_t = −β·(logπ_t − logπ_ref,t)`, and the last token also gets the reward
/// model's score clipped to `±clip_reward`.
///
/// An empty response has no tokens to carry the score: the result is empty.
pub fn token_rewards(
    logprobs: &[f32],
    ref_logprobs: &[f32],
    score: f32,
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
        .map(|(&lp, &rlp)| -kl_coef * (lp - rlp))
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
        let r = token_rewards(&[-1.0, -2.0, -0.5], &[-2.0, -1.0, -0.5], 3.0, 0.5, 2.5).unwrap();
        assert_eq!(r, vec![-0.5, 0.5, 2.5]);
        // A negative score is clipped from below; within the clip it is kept.
        let r = token_rewards(&[-1.0], &[-1.0], -7.0, 0.05, 2.5).unwrap();
        assert_eq!(r, vec![-2.5]);
        let r = token_rewards(&[-1.0, -1.0], &[-1.0, -1.0], 1.25, 0.05, 2.5).unwrap();
        assert_eq!(r, vec![0.0, 1.25]);
    }

    #[test]
    fn empty_response_has_no_rewards() {
        assert_eq!(
            token_rewards(&[], &[], 1.0, 0.05, 2.5).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn bad_inputs() {
        let err = |r: Result<Vec<f32>, RlError>| r.unwrap_err().to_string();
        assert_eq!(
            err(token_rewards(&[0.0, 0.0], &[0.0], 1.0, 0.1, 1.0)),
            "ref_logprobs has length 1, expected 2"
        );
        assert_eq!(
            err(token_rewards(&[0.0, f32::NAN], &[0.0, 0.0], 1.0, 0.1, 1.0)),
            "logprobs[1] is not finite"
        );
        assert_eq!(
            err(token_rewards(&[0.0], &[f32::NEG_INFINITY], 1.0, 0.1, 1.0)),
            "ref_logprobs[0] is not finite"
        );
        assert_eq!(
            err(token_rewards(&[0.0], &[0.0], f32::NAN, 0.1, 1.0)),
            "score[0] is not finite"
        );
        assert_eq!(
            err(token_rewards(&[0.0], &[0.0], 1.0, -0.1, 1.0)),
            "invalid kl_coef: -0.1 is out of range"
        );
    }
}
