//! The per-sequence MA-PPO pipeline for a batch of responses of different
//! lengths, and padding them into `[batch, time]` tensors for the losses.

use candle_core::{Device, Tensor};

use crate::aggregate::{MacroKl, ValueFunction};
use crate::error::RlError;
use crate::gae::{macro_advantages, MacroCredit, MacroLambda};
use crate::reward::{token_rewards, KlEstimator};
use crate::segment::validate_starts;

/// The hyper-parameters of the credit assignment. `Default` holds the
/// paper's values (equal value function, the k1 KL estimate with β = 0.05,
/// reward clip ±2.5, γ = 1, λ = 0.95) and its released code's choices
/// (rewards aggregated like values, γ and λ per macro action).
///
/// The termination condition is not among them: segmentation is a step of
/// its own ([`segment`](crate::segment::segment), the segment stage), and
/// each [`SequenceInput`] carries its macro-action starts, so no setting
/// here can disagree with the segments the update reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RlConfig {
    pub value_function: ValueFunction,
    /// The per-token KL estimate the penalty uses.
    pub kl_estimator: KlEstimator,
    pub kl_coef: f32,
    pub clip_reward: f32,
    pub gamma: f32,
    pub lambda: f32,
    /// How a macro action's tokens' rewards make its reward.
    pub macro_kl: MacroKl,
    /// Whether γ and λ apply per macro action or per token.
    pub macro_lambda: MacroLambda,
}

impl RlConfig {
    /// The settings GAE over macro actions reads.
    pub fn credit(&self) -> MacroCredit {
        MacroCredit {
            value_function: self.value_function,
            macro_kl: self.macro_kl,
            macro_lambda: self.macro_lambda,
            gamma: self.gamma,
            lambda: self.lambda,
        }
    }
}

impl Default for RlConfig {
    fn default() -> Self {
        RlConfig {
            value_function: ValueFunction::Equal,
            kl_estimator: KlEstimator::K1,
            kl_coef: 0.05,
            clip_reward: 2.5,
            gamma: 1.0,
            lambda: 0.95,
            macro_kl: MacroKl::Mean,
            macro_lambda: MacroLambda::PerMacro,
        }
    }
}

/// One response, as a row of `rollouts.parquet` holds it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SequenceInput<'a> {
    /// The rollout id.
    pub id: u64,
    /// Old policy log-probabilities of the response tokens.
    pub logprobs: &'a [f32],
    /// Reference model log-probabilities, aligned with `logprobs`.
    pub ref_logprobs: &'a [f32],
    /// Old critic values, aligned with `logprobs`.
    pub values: &'a [f32],
    /// The reward model's score of the whole response.
    pub score: f32,
    /// Where each macro action starts (`segments.parquet`, or
    /// [`segment`](crate::segment::segment)); checked against the response.
    pub starts: &'a [u32],
}

/// Everything the update stage needs about one response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SequenceOutput {
    pub id: u64,
    /// Macro-action starts.
    pub starts: Vec<u32>,
    /// Per-token rewards (KL penalty plus the clipped score on the last).
    pub rewards: Vec<f32>,
    pub macro_advantages: Vec<f32>,
    pub macro_returns: Vec<f32>,
    /// Per token: its macro action's advantage.
    pub advantages: Vec<f32>,
    /// Per token: its macro action's return.
    pub returns: Vec<f32>,
}

/// Rewards → aggregate over the given macro actions → GAE → expand, for
/// one response. Errors
/// name the rollout id.
pub fn process_sequence(cfg: &RlConfig, seq: &SequenceInput) -> Result<SequenceOutput, RlError> {
    run(cfg, seq).map_err(|source| RlError::InSequence {
        id: seq.id,
        source: Box::new(source),
    })
}

fn run(cfg: &RlConfig, seq: &SequenceInput) -> Result<SequenceOutput, RlError> {
    let len = seq.logprobs.len();
    if seq.values.len() != len {
        return Err(RlError::length("values", len, seq.values.len()));
    }
    validate_starts(seq.starts, len)?;
    let starts = seq.starts.to_vec();
    let rewards = token_rewards(
        seq.logprobs,
        seq.ref_logprobs,
        seq.score,
        cfg.kl_estimator,
        cfg.kl_coef,
        cfg.clip_reward,
    )?;
    let m = macro_advantages(&rewards, seq.values, &starts, &cfg.credit())?;
    Ok(SequenceOutput {
        id: seq.id,
        starts,
        rewards,
        macro_advantages: m.macro_advantages,
        macro_returns: m.macro_returns,
        advantages: m.advantages,
        returns: m.returns,
    })
}

/// [`process_sequence`] for every response, each on its own; stops at the
/// first bad one.
pub fn process_batch(
    cfg: &RlConfig,
    seqs: &[SequenceInput],
) -> Result<Vec<SequenceOutput>, RlError> {
    seqs.iter().map(|s| process_sequence(cfg, s)).collect()
}

/// Right-pads rows of different lengths with zeros into a `[rows, longest]`
/// f32 tensor.
pub fn pad(rows: &[&[f32]], device: &Device) -> Result<Tensor, RlError> {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(rows.len() * width);
    for row in rows {
        flat.extend_from_slice(row);
        flat.extend(std::iter::repeat_n(0.0, width - row.len()));
    }
    Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
}

/// The 0/1 response mask matching [`pad`] for rows of these lengths.
pub fn response_mask(lens: &[usize], device: &Device) -> Result<Tensor, RlError> {
    let width = lens.iter().copied().max().unwrap_or(0);
    let flat: Vec<f32> = lens
        .iter()
        .flat_map(|&l| (0..width).map(move |t| if t < l { 1.0 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(flat, (lens.len(), width), device)?)
}
