//! Command-line flags the training stages share (clap), so `sft` and `rm`
//! spell every option the same way.

use std::path::PathBuf;

use clap::Args;
use marlhf_stages::checks::{check_range, Range};
use marlhf_stages::TrainConfig;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Output checkpoint directory (written atomically)
    #[arg(long)]
    pub out: PathBuf,
    /// Peak learning rate
    #[arg(long, allow_negative_numbers = true)]
    pub lr: f64,
    /// Fraction of steps spent warming up linearly
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub warmup_ratio: f64,
    /// Final learning rate as a fraction of the peak (cosine decay)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub max_grad_norm: f64,
    /// Examples per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Passes over the training split (fractions allowed)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
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
    /// Pause after this many steps, saving a checkpoint to --resume from
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// With --resume: continue although settings differ from the saved
    /// run's (each change is printed and recorded in trainer_state.json)
    #[arg(long, requires = "resume")]
    pub override_settings: bool,
    /// Accept an --init checkpoint of an unfinished run
    #[arg(long)]
    pub allow_partial: bool,
    /// Fraction of rows held out for evaluation
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
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
    /// The loop's configuration, after checking every number: NaN,
    /// infinities and values outside a flag's range are refused here, before
    /// anything is read or trained.
    pub fn config(&self, stage: &str) -> anyhow::Result<TrainConfig> {
        if self.batch_size == 0 || self.grad_accum == 0 {
            anyhow::bail!("--batch-size and --grad-accum must be positive");
        }
        check_range("--lr", self.lr, Range::Positive)?;
        check_range("--warmup-ratio", self.warmup_ratio, Range::Fraction)?;
        check_range("--min-lr-ratio", self.min_lr_ratio, Range::Fraction)?;
        check_range("--weight-decay", self.weight_decay, Range::NonNegative)?;
        check_range("--max-grad-norm", self.max_grad_norm, Range::NonNegative)?;
        check_range("--epochs", self.epochs, Range::Positive)?;
        if !(0.0..1.0).contains(&self.val_fraction) {
            anyhow::bail!(
                "--val-fraction must be in [0, 1), got {}",
                self.val_fraction
            );
        }
        for (flag, v) in [
            ("--max-steps", self.max_steps),
            ("--stop-after", self.stop_after),
        ] {
            if v == Some(0) {
                anyhow::bail!("{flag} must be positive");
            }
        }
        if self.max_prompt_tokens == 0 || self.max_completion_tokens == 0 {
            anyhow::bail!("--max-prompt-tokens and --max-completion-tokens must be positive");
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
            override_settings: self.override_settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn config(flags: &[&str]) -> anyhow::Result<TrainConfig> {
        let mut argv = vec!["sft", "--out", "o"];
        argv.extend(flags);
        Cli::try_parse_from(argv)?.train.config("sft")
    }

    /// Issue 13, item 5: numeric flags are checked, NaN included.
    #[test]
    fn numeric_flags_are_refused_outside_their_range() {
        assert!(config(&["--lr", "1e-3"]).is_ok());
        for (flags, message) in [
            (&["--lr=-1"][..], "--lr must be a finite number > 0, got -1"),
            (
                &["--lr", "nan"],
                "--lr must be a finite number > 0, got NaN",
            ),
            (
                &["--lr", "inf"],
                "--lr must be a finite number > 0, got inf",
            ),
            (
                &["--lr", "1e-3", "--epochs", "nan"],
                "--epochs must be a finite number > 0, got NaN",
            ),
            (
                &["--lr", "1e-3", "--epochs", "0"],
                "--epochs must be a finite number > 0, got 0",
            ),
            (
                &["--lr", "1e-3", "--warmup-ratio", "1.5"],
                "--warmup-ratio must be a number in [0, 1], got 1.5",
            ),
            (
                &["--lr", "1e-3", "--weight-decay=-0.1"],
                "--weight-decay must be a finite number ≥ 0, got -0.1",
            ),
            (
                &["--lr", "1e-3", "--max-grad-norm", "nan"],
                "--max-grad-norm must be a finite number ≥ 0, got NaN",
            ),
            (
                &["--lr", "1e-3", "--val-fraction", "nan"],
                "--val-fraction must be in [0, 1), got NaN",
            ),
            (
                &["--lr", "1e-3", "--max-steps", "0"],
                "--max-steps must be positive",
            ),
        ] {
            let err = config(flags)
                .err()
                .unwrap_or_else(|| panic!("{flags:?} accepted"));
            assert_eq!(err.to_string(), message, "{flags:?}");
        }
    }
}
