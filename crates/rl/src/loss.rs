//! The PPO losses on candle tensors, and explained variance.
//!
//! Every tensor is `[batch, time]`, right-padded, with a 0/1 `mask` that is
//! 1 on response tokens. Padding must hold finite numbers (zeros will do):
//! as in the reference, the mask multiplies, and `NaN·0` is still NaN, so
//! non-finite inputs anywhere are refused up front. The per-token targets
//! (`advantages`, `returns`) are already expanded from macro actions to
//! tokens (see [`crate::gae::macro_advantages`]), which is what the
//! reference's `actor_loss_fn` / `critic_loss_fn` do with their split loops.
//!
//! How per-token losses make one loss is a [`LossAgg`] (verl's
//! `loss_agg_mode`), applied through per-token weights over the whole
//! optimiser step, so gradient accumulation over micro-batches gives the
//! same gradient as one pass over the step's rollouts:
//!
//! - `token-mean`: every response token of the step weighs the same, so a
//!   long response weighs more than a short one (`sum(loss·mask)/sum(mask)`
//!   over the step);
//! - `seq-mean-token-mean`: each response's loss is the mean over its own
//!   tokens and every response weighs the same. This is what the paper's
//!   released code does: it trains on one sequence per GPU, whose loss is
//!   that sequence's `sum(loss·mask)/sum(mask)`, and DeepSpeed averages the
//!   gradients over GPUs and accumulation steps;
//! - `seq-mean-token-sum`: each response's loss is the sum over its tokens,
//!   averaged over responses.
//!
//! [`actor_loss`] and [`critic_loss`] are the `token-mean` of one batch; a
//! batch without response tokens gives a loss of 0 (the denominator is
//! `max(Σmask, 1)`) rather than 0/0.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use crate::error::{check_param, RlError};

/// How per-token losses are aggregated into one loss per optimiser step
/// (the names are verl's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LossAgg {
    #[default]
    TokenMean,
    SeqMeanTokenMean,
    SeqMeanTokenSum,
}

impl LossAgg {
    pub const ALL: [LossAgg; 3] = [
        LossAgg::TokenMean,
        LossAgg::SeqMeanTokenMean,
        LossAgg::SeqMeanTokenSum,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LossAgg::TokenMean => "token-mean",
            LossAgg::SeqMeanTokenMean => "seq-mean-token-mean",
            LossAgg::SeqMeanTokenSum => "seq-mean-token-sum",
        }
    }

    /// Each token's weight in the loss of an optimiser step over
    /// `step_seqs` responses holding `step_tokens` tokens, for the rows of
    /// one (micro-)batch of that step with response lengths `lens`, laid out
    /// `[rows, width]` like [`crate::pad`] (zero on padding). Summing
    /// `weight·per_token_loss` over every micro-batch of the step gives the
    /// step's loss.
    pub fn weights(
        self,
        lens: &[usize],
        width: usize,
        step_seqs: usize,
        step_tokens: usize,
        device: &Device,
    ) -> Result<Tensor, RlError> {
        if let Some(&l) = lens.iter().find(|&&l| l > width) {
            return Err(RlError::Shape(format!(
                "a response of {l} tokens does not fit width {width}"
            )));
        }
        let seqs = step_seqs.max(1) as f64;
        let tokens = step_tokens.max(1) as f64;
        let mut flat = Vec::with_capacity(lens.len() * width);
        for &len in lens {
            let w = match self {
                LossAgg::TokenMean => 1.0 / tokens,
                LossAgg::SeqMeanTokenMean => 1.0 / (seqs * len.max(1) as f64),
                LossAgg::SeqMeanTokenSum => 1.0 / seqs,
            } as f32;
            flat.extend((0..width).map(|t| if t < len { w } else { 0.0 }));
        }
        Ok(Tensor::from_vec(flat, (lens.len(), width), device)?)
    }
}

impl fmt::Display for LossAgg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LossAgg {
    type Err = RlError;

    fn from_str(s: &str) -> Result<Self, RlError> {
        LossAgg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| RlError::ParseLossAgg(s.to_string()))
    }
}

/// Figures of one actor-loss evaluation, over the response tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ActorStats {
    /// Share of tokens whose ratio left `[1 − clip, 1 + clip]`.
    pub clip_fraction: f32,
    /// `mean((r − 1) − log r)`, the low-variance KL(old‖new) estimate
    /// CleanRL logs as `approx_kl`.
    pub approx_kl: f32,
}

/// Figures of one critic-loss evaluation, over the response tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CriticStats {
    /// Share of tokens whose value moved more than `clip` from the old value.
    pub clip_fraction: f32,
}

/// The clipped PPO surrogate (`actor_loss_fn`):
/// `mean_mask(max(−A·r, −A·clip(r, 1 − ε, 1 + ε)))` with the token-level
/// ratio `r = exp((logπ − logπ_old)·mask)`, averaged over the batch's
/// response tokens. Gradients flow into `logprobs` only; the other inputs
/// are detached.
pub fn actor_loss(
    logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<(Tensor, ActorStats), RlError> {
    let weights = token_mean_weights(mask)?;
    actor_loss_weighted(logprobs, old_logprobs, advantages, mask, &weights, clip)
}

/// [`actor_loss`] with the per-token surrogate summed under `weights`
/// (from [`LossAgg::weights`]) instead of averaged. The figures stay
/// per-token means over the mask.
pub fn actor_loss_weighted(
    logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    weights: &Tensor,
    clip: f64,
) -> Result<(Tensor, ActorStats), RlError> {
    check_clip(clip)?;
    check_inputs(&[
        ("logprobs", logprobs),
        ("old_logprobs", old_logprobs),
        ("advantages", advantages),
        ("mask", mask),
        ("weights", weights),
    ])?;
    let mask_values = check_mask(mask)?;
    let denom = mask_values.iter().sum::<f64>().max(1.0);
    let (old, adv, mask) = (old_logprobs.detach(), advantages.detach(), mask.detach());
    let weights = weights.detach().to_dtype(logprobs.dtype())?;

    let log_ratio = (logprobs - &old)?.mul(&mask)?;
    let ratio = log_ratio.exp()?;
    let neg_adv = adv.neg()?;
    let unclipped = (&neg_adv * &ratio)?;
    let clipped = (&neg_adv * ratio.clamp(1.0 - clip, 1.0 + clip)?)?;
    let per_token = unclipped.maximum(&clipped)?.mul(&mask)?;
    let loss = per_token.mul(&weights)?.sum_all()?;

    let log_ratio = to_f64(&log_ratio)?;
    let (mut clipped_tokens, mut kl) = (0.0, 0.0);
    for (&lr, &m) in log_ratio.iter().zip(&mask_values) {
        let r = lr.exp();
        if (r - 1.0).abs() > clip {
            clipped_tokens += m;
        }
        kl += m * ((r - 1.0) - lr);
    }
    let stats = ActorStats {
        clip_fraction: (clipped_tokens / denom) as f32,
        approx_kl: (kl / denom) as f32,
    };
    Ok((loss, stats))
}

/// The clipped value loss (`critic_loss_fn`):
/// `0.5·mean_mask(max((V − R)², (clip(V, V_old − ε, V_old + ε) − R)²))`,
/// averaged over the batch's response tokens. Gradients flow into `values`
/// only.
pub fn critic_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<(Tensor, CriticStats), RlError> {
    let weights = token_mean_weights(mask)?;
    critic_loss_weighted(values, old_values, returns, mask, &weights, clip)
}

/// [`critic_loss`] summed under per-token `weights` (from
/// [`LossAgg::weights`]).
pub fn critic_loss_weighted(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    weights: &Tensor,
    clip: f64,
) -> Result<(Tensor, CriticStats), RlError> {
    check_clip(clip)?;
    check_inputs(&[
        ("values", values),
        ("old_values", old_values),
        ("returns", returns),
        ("mask", mask),
        ("weights", weights),
    ])?;
    let mask_values = check_mask(mask)?;
    let denom = mask_values.iter().sum::<f64>().max(1.0);
    let (old, ret, mask) = (old_values.detach(), returns.detach(), mask.detach());
    let weights = weights.detach().to_dtype(values.dtype())?;

    let clipped_values = values.clamp(&(&old - clip)?, &(&old + clip)?)?;
    let unclipped = (values - &ret)?.sqr()?;
    let clipped = (clipped_values - &ret)?.sqr()?;
    let per_token = unclipped.maximum(&clipped)?.mul(&mask)?;
    let loss = (per_token.mul(&weights)?.sum_all()? * 0.5)?;

    let moved = to_f64(&(values.detach() - &old)?)?;
    let clipped_tokens: f64 = moved
        .iter()
        .zip(&mask_values)
        .filter(|(d, _)| d.abs() > clip)
        .map(|(_, m)| m)
        .sum();
    let stats = CriticStats {
        clip_fraction: (clipped_tokens / denom) as f32,
    };
    Ok((loss, stats))
}

/// `1 − Var(returns − values) / Var(returns)` over the response tokens: 1
/// for a perfect critic, 0 for one that predicts the mean, negative for
/// worse. `None` when it is undefined (no tokens, or constant returns).
pub fn explained_variance(
    values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
) -> Result<Option<f32>, RlError> {
    check_inputs(&[("values", values), ("returns", returns), ("mask", mask)])?;
    let mask = check_mask(mask)?;
    let (values, returns) = (to_f64(values)?, to_f64(returns)?);
    let keep = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .zip(&mask)
            .filter(|(_, &m)| m == 1.0)
            .map(|(&x, _)| x)
            .collect()
    };
    Ok(explained_variance_f64(&keep(&values), &keep(&returns)))
}

/// [`explained_variance`] over flat slices (every entry counts).
pub fn explained_variance_flat(values: &[f32], returns: &[f32]) -> Result<Option<f32>, RlError> {
    if values.len() != returns.len() {
        return Err(RlError::length("values", returns.len(), values.len()));
    }
    crate::error::check_finite("values", values)?;
    crate::error::check_finite("returns", returns)?;
    let widen = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    Ok(explained_variance_f64(&widen(values), &widen(returns)))
}

fn explained_variance_f64(values: &[f64], returns: &[f64]) -> Option<f32> {
    let var = |x: &mut dyn Iterator<Item = f64>| -> Option<f64> {
        let x: Vec<f64> = x.collect();
        if x.is_empty() {
            return None;
        }
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        Some(x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / x.len() as f64)
    };
    let var_returns = var(&mut returns.iter().copied())?;
    if var_returns == 0.0 {
        return None;
    }
    let var_error = var(&mut returns.iter().zip(values).map(|(r, v)| r - v))?;
    Some((1.0 - var_error / var_returns) as f32)
}

/// `mask / max(Σmask, 1)`: the token mean of one batch.
fn token_mean_weights(mask: &Tensor) -> Result<Tensor, RlError> {
    let total = mask
        .detach()
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok((mask.detach() / total.max(1.0))?)
}

fn check_clip(clip: f64) -> Result<(), RlError> {
    check_param("clip", clip as f32, clip.is_finite() && clip >= 0.0)
}

/// Same `[batch, time]` shape, a float dtype, and only finite numbers.
fn check_inputs(named: &[(&str, &Tensor)]) -> Result<(), RlError> {
    let (first_name, first) = named[0];
    if first.rank() != 2 {
        return Err(RlError::Shape(format!(
            "{first_name} must be [batch, time], got shape {:?}",
            first.dims()
        )));
    }
    for &(name, t) in named {
        if t.dims() != first.dims() {
            return Err(RlError::Shape(format!(
                "{name} has shape {:?}, {first_name} has {:?}",
                t.dims(),
                first.dims()
            )));
        }
        if !t.dtype().is_float() {
            return Err(RlError::Shape(format!(
                "{name} has dtype {:?}, expected a float dtype",
                t.dtype()
            )));
        }
        if let Some(index) = to_f64(t)?.iter().position(|v| !v.is_finite()) {
            return Err(RlError::non_finite(name, index));
        }
    }
    Ok(())
}

/// The mask's entries, each checked to be 0 or 1.
fn check_mask(mask: &Tensor) -> Result<Vec<f64>, RlError> {
    let values = to_f64(mask)?;
    if let Some(index) = values.iter().position(|&m| m != 0.0 && m != 1.0) {
        return Err(RlError::BadMask {
            index,
            value: values[index],
        });
    }
    Ok(values)
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>, RlError> {
    Ok(t.detach()
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}
