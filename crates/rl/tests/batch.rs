//! The per-sequence pipeline on a batch of responses of different lengths.

use marlhf_rl::{
    process_batch, process_sequence, KlEstimator, RlConfig, SequenceInput, ValueFunction,
};

#[test]
fn batch_golden_with_given_starts() {
    // Response of 4 tokens, starts [0, 2, 3] (macro actions [0 1] [2] [3]),
    // KL 0.5, clip 2.5, γ = 1, λ = 0.5, equal value function.
    // rewards: −0.5·(lp − ref) = −0.5·[0, −1, 1, 0] = [0, 0.5, −0.5, 0], plus
    //   the score 4 clipped to 2.5 on the last → [0, 0.5, −0.5, 2.5]
    // macro rewards: [0.25, −0.5, 2.5]; values [1, 2, 0.5, 1] → [1.5, 0.5, 1]
    // GAE: k=2: δ = 2.5 − 1 = 1.5, A = 1.5
    //      k=1: δ = −0.5 + 1 − 0.5 = 0, A = 0 + 0.5·1.5 = 0.75
    //      k=0: δ = 0.25 + 0.5 − 1.5 = −0.75, A = −0.75 + 0.5·0.75 = −0.375
    // returns: [1.125, 1.25, 2.5]
    let cfg = RlConfig {
        value_function: ValueFunction::Equal,
        kl_estimator: KlEstimator::K1,
        kl_coef: 0.5,
        clip_reward: 2.5,
        gamma: 1.0,
        lambda: 0.5,
        ..RlConfig::default()
    };
    let starts = [0u32, 2, 3];
    let long = SequenceInput {
        id: 41,
        logprobs: &[-1.0, -2.0, -1.0, -1.0],
        ref_logprobs: &[-1.0, -1.0, -2.0, -1.0],
        values: &[1.0, 2.0, 0.5, 1.0],
        score: 4.0,
        starts: &starts,
    };
    // A one-token response: its only macro action is its last token.
    // reward −0.5·(−1 − −1) + clip(−1) = −1; A = −1 − 0.5 = −1.5; return −1.
    let short = SequenceInput {
        id: 42,
        logprobs: &[-1.0],
        ref_logprobs: &[-1.0],
        values: &[0.5],
        score: -1.0,
        starts: &[0],
    };
    let empty = SequenceInput {
        id: 43,
        ..Default::default()
    };
    let out = process_batch(&cfg, &[long, short, empty]).unwrap();
    assert_eq!(out[0].id, 41);
    assert_eq!(out[0].rewards, vec![0.0, 0.5, -0.5, 2.5]);
    assert_eq!(out[0].macro_advantages, vec![-0.375, 0.75, 1.5]);
    assert_eq!(out[0].macro_returns, vec![1.125, 1.25, 2.5]);
    assert_eq!(out[0].advantages, vec![-0.375, -0.375, 0.75, 1.5]);
    assert_eq!(out[0].returns, vec![1.125, 1.125, 1.25, 2.5]);
    assert_eq!(out[1].starts, vec![0]);
    assert_eq!(out[1].advantages, vec![-1.5]);
    assert_eq!(out[1].returns, vec![-1.0]);
    assert_eq!(out[2].starts, Vec::<u32>::new());
    assert!(out[2].rewards.is_empty() && out[2].advantages.is_empty());
}

#[test]
fn errors_name_the_rollout() {
    let cfg = RlConfig::default();
    let bad_values = SequenceInput {
        id: 7,
        logprobs: &[-1.0, -1.0, -1.0],
        ref_logprobs: &[-1.0, -1.0, -1.0],
        values: &[0.0, 0.0],
        ..Default::default()
    };
    let err = process_sequence(&cfg, &bad_values).unwrap_err().to_string();
    assert_eq!(err, "rollout 7: values has length 2, expected 3");

    let nan = SequenceInput {
        id: 8,
        logprobs: &[-1.0, f32::NAN],
        ref_logprobs: &[-1.0, -1.0],
        values: &[0.0, 0.0],
        starts: &[0, 1],
        ..Default::default()
    };
    let err = process_batch(&cfg, &[nan]).unwrap_err().to_string();
    assert_eq!(err, "rollout 8: logprobs[1] is not finite");

    let starts = [0u32, 1];
    let bad_starts = SequenceInput {
        id: 9,
        logprobs: &[-1.0; 3],
        ref_logprobs: &[-1.0; 3],
        values: &[0.0; 3],
        starts: &starts,
        ..Default::default()
    };
    let err = process_sequence(&cfg, &bad_starts).unwrap_err().to_string();
    assert_eq!(
        err,
        "rollout 9: invalid macro-action starts for a response of 3 tokens: \
         the last token (2) is not a macro action of its own"
    );
}
