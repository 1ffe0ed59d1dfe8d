//! The LoRA flags every training stage shares (`marlhf-sft`, `marlhf-rm`,
//! `marlhf-update`), spelled as PEFT's `LoraConfig` names its fields.

use clap::Args;
use marlhf_model::lora::{LoraSettings, Target};

/// The seven projections, PEFT's "all-linear" for these families.
pub const ALL_TARGETS: &str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";

#[derive(Args, Debug, Clone)]
pub struct LoraArgs {
    /// Train a LoRA adapter of this rank on the frozen model instead of
    /// every weight; the output is a PEFT adapter directory
    /// (adapter_config.json, adapter_model.safetensors) on that base
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA alpha: the update is scaled by alpha/rank (alpha/sqrt(rank)
    /// with --use-rslora)
    #[arg(long, default_value_t = 16.0, requires = "lora_rank")]
    pub lora_alpha: f64,
    /// The projections to adapt, PEFT's module names separated by commas
    /// (or all-linear)
    #[arg(long, default_value = ALL_TARGETS, requires = "lora_rank")]
    pub lora_targets: String,
    /// Dropout on the adapter's input in training forward passes
    #[arg(long, default_value_t = 0.0, requires = "lora_rank")]
    pub lora_dropout: f64,
    /// rsLoRA: scale by alpha/sqrt(rank)
    #[arg(long, requires = "lora_rank")]
    pub use_rslora: bool,
}

impl LoraArgs {
    /// The settings, checked; `None` without `--lora-rank` (full
    /// fine-tuning).
    pub fn settings(&self) -> anyhow::Result<Option<LoraSettings>> {
        let Some(rank) = self.lora_rank else {
            return Ok(None);
        };
        let s = LoraSettings {
            rank,
            alpha: self.lora_alpha,
            targets: Target::parse_list(&self.lora_targets)?,
            dropout: self.lora_dropout,
            rslora: self.use_rslora,
        };
        s.check()?;
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lora: LoraArgs,
    }

    fn settings(flags: &[&str]) -> anyhow::Result<Option<LoraSettings>> {
        let mut argv = vec!["x"];
        argv.extend(flags);
        Cli::try_parse_from(argv)?.lora.settings()
    }

    #[test]
    fn lora_flags_parse_and_are_checked() {
        assert_eq!(settings(&[]).unwrap(), None);
        let s = settings(&["--lora-rank", "8", "--lora-targets", "v_proj,q_proj"])
            .unwrap()
            .unwrap();
        assert_eq!((s.rank, s.alpha, s.rslora), (8, 16.0, false));
        assert_eq!(s.targets, vec![Target::Q, Target::V]);
        assert_eq!(s.scaling(), 2.0);
        let all = settings(&["--lora-rank", "16", "--use-rslora"])
            .unwrap()
            .unwrap();
        assert_eq!(all.targets, Target::ALL.to_vec());
        assert_eq!(all.scaling(), 4.0);
        for (flags, needle) in [
            (&["--lora-alpha", "8"][..], "--lora-rank"),
            (&["--lora-rank", "0"], "--lora-rank must be positive"),
            (
                &["--lora-rank", "4", "--lora-dropout", "1"],
                "--lora-dropout",
            ),
            (&["--lora-rank", "4", "--lora-alpha", "nan"], "--lora-alpha"),
            (
                &["--lora-rank", "4", "--lora-targets", "lm_head"],
                "\"lm_head\"",
            ),
        ] {
            let e = settings(flags)
                .err()
                .unwrap_or_else(|| panic!("{flags:?} accepted"));
            assert!(e.to_string().contains(needle), "{flags:?}: {e}");
        }
    }
}
