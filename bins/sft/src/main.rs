//! `marlhf-sft`: supervised fine-tuning on `sft.parquet`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::{Bars, LoraArgs, TrainArgs};
use marlhf_stages::sft::{self, Init, SftOptions};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Fine-tune a causal LM on prompt/completion pairs (loss on completion
/// tokens only), from a checkpoint or a fresh tiny Llama.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// sft.parquet from `marlhf-prepare`
    #[arg(long)]
    data: PathBuf,
    /// Start from this Hugging Face checkpoint directory
    #[arg(long, conflicts_with = "tokenizer")]
    init: Option<PathBuf>,
    /// Train a fresh model with this tokenizer.json (from `marlhf-tokenizer`)
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Fresh model: hidden size
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Fresh model: layers
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Fresh model: attention heads
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Fresh model: MLP width
    #[arg(long, default_value_t = 688)]
    mlp: usize,
    /// Fresh model: longest sequence
    #[arg(long, default_value_t = 1024)]
    max_positions: usize,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    lora: LoraArgs,
}

/// "all", or the adapter's count and what it is.
fn trained(opts: &SftOptions, trainable: usize, all: usize) -> String {
    match &opts.lora {
        Some(l) => format!(
            "{trainable} ({:.3}% of {all}: LoRA {})",
            100.0 * trainable as f64 / all.max(1) as f64,
            l.describe()
        ),
        None => "all".to_string(),
    }
}

fn main() {
    marlhf_cli::stage_main("sft", || {
        let cli = Cli::parse();
        marlhf_model::checkpoint::set_allow_partial(cli.train.allow_partial);
        let device = marlhf_model::device::parse(&cli.train.device)?;
        let mut s = marlhf_cli::Summary::new("sft");
        let init = match (&cli.init, &cli.tokenizer) {
            (Some(dir), None) => Init::Checkpoint(dir.clone()),
            (None, Some(tok)) => Init::Scratch {
                tokenizer: tok.clone(),
                hidden: cli.hidden,
                layers: cli.layers,
                heads: cli.heads,
                mlp: cli.mlp,
                max_positions: cli.max_positions,
            },
            _ => anyhow::bail!("give either --init CHECKPOINT or --tokenizer tokenizer.json"),
        };
        let opts = SftOptions {
            data: cli.data.clone(),
            init,
            max_prompt_tokens: cli.train.max_prompt_tokens,
            max_completion_tokens: cli.train.max_completion_tokens,
            val_fraction: cli.train.val_fraction,
            limit: cli.train.limit,
            device: device.clone(),
            dtype: marlhf_model::device::dtype(&cli.train.dtype, &device)?,
            lora: cli.lora.settings()?,
            train: cli.train.config("sft")?,
        };
        let r = sft::run(&opts, &Bars)?;
        s.add("checkpoint", cli.train.out.display())
            .add("parameters", r.params)
            .add("trained parameters", trained(&opts, r.trainable, r.params))
            .add("data", &r.lengths)
            .add(
                "train / val examples",
                format!("{} / {}", r.train_examples, r.val_examples),
            )
            .add(
                "steps",
                format!("{} of {}", r.outcome.steps, r.outcome.total_steps),
            );
        if let Some(dir) = &r.outcome.paused_in {
            s.add(
                "paused",
                format!(
                    "unfinished run saved in {}; continue with --resume",
                    dir.display()
                ),
            );
        }
        if let Some(from) = r.outcome.resumed_from {
            s.add("resumed from step", from);
        }
        for (k, v) in r.outcome.last.iter().filter(|(k, _)| k == "loss") {
            s.add(&format!("final train {k}"), format!("{v:.4}"));
        }
        for (k, v) in &r.outcome.eval {
            s.add(k, format!("{v:.4}"));
        }
        s.add("tokens/s", format!("{:.0}", r.outcome.units_per_second));
        s.gpu_memory(&device).print();
        Ok(())
    })
}
