//! Command-line flags the training stages share (clap), so `sft` and `rm`
//! spell every option the same way.

use std::path::PathBuf;

use clap::Args;

use crate::TrainConfig;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Output checkpoint directory (written atomically)
    #[arg(long)]
    pub out: PathBuf,
    /// Peak learning rate
    #[arg(long)]
    pub lr: f64,
    /// Fraction of steps spent warming up linearly
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Final learning rate as a fraction of the peak (cosine decay)
    #[arg(long, default_value_t = 0.0)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off)
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Examples per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Passes over the training split (fractions allowed)
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    /// Stop after this many optimiser steps (overrides --epochs)
    #[arg(long)]
    pub max_steps: Option<u64>,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Save a checkpoint every N steps (0 = only at the end)
    #[arg(long, default_value_t = 0)]
    pub save_every: u64,
    /// Evaluate on the held-out split every N steps (0 = only at the end)
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// Continue an interrupted run from the checkpoint in --out
    #[arg(long)]
    pub resume: bool,
    /// Pause after this many steps (use with --save-every, then --resume)
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Fraction of rows held out for evaluation
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// Longest prompt in tokens (longer ones keep their end)
    #[arg(long, default_value_t = 256)]
    pub max_prompt_tokens: usize,
    /// Longest completion in tokens (longer ones are cut, without EOS)
    #[arg(long, default_value_t = 128)]
    pub max_completion_tokens: usize,
    /// Use only the first N rows (quick runs)
    #[arg(long)]
    pub limit: Option<usize>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16;
    /// the trained weights stay f32
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    pub dtype: String,
}

impl TrainArgs {
    pub fn config(&self, stage: &str) -> anyhow::Result<TrainConfig> {
        if self.batch_size == 0 || self.grad_accum == 0 {
            anyhow::bail!("--batch-size and --grad-accum must be positive");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            anyhow::bail!("--val-fraction must be in [0, 1)");
        }
        Ok(TrainConfig {
            stage: stage.to_string(),
            out: self.out.clone(),
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            min_lr_ratio: self.min_lr_ratio,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            epochs: self.epochs,
            max_steps: self.max_steps,
            seed: self.seed,
            save_every: self.save_every,
            eval_every: self.eval_every,
            resume: self.resume,
            stop_after: self.stop_after,
        })
    }
}

/// The sampling flags every generating stage takes (rollout, eval), checked
/// before any model is loaded.
pub fn check_sampling(
    max_prompt_tokens: usize,
    max_new_tokens: usize,
    temperature: f64,
    top_p: f64,
) -> anyhow::Result<()> {
    if max_new_tokens == 0 || max_prompt_tokens == 0 {
        anyhow::bail!("--max-new-tokens and --max-prompt-tokens must be positive");
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        anyhow::bail!("--temperature must be a finite number ≥ 0");
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        anyhow::bail!("--top-p must be in (0, 1]");
    }
    Ok(())
}
