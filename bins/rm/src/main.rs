//! `marlhf-rm`: pairwise reward model on `pairs.parquet`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::{Bars, LoraArgs, TrainArgs};
use marlhf_stages::rm::{self, RmOptions};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Train a reward model (−log σ(r_chosen − r_rejected), score at the last
/// real token) from the SFT checkpoint; report held-out pairwise accuracy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// pairs.parquet from `marlhf-prepare`
    #[arg(long)]
    data: PathBuf,
    /// The SFT checkpoint to start from
    #[arg(long)]
    init: PathBuf,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    lora: LoraArgs,
}

fn main() {
    marlhf_cli::stage_main("rm", || {
        let cli = Cli::parse();
        marlhf_model::checkpoint::set_allow_partial(cli.train.allow_partial);
        let device = marlhf_model::device::parse(&cli.train.device)?;
        let mut s = marlhf_cli::Summary::new("rm");
        let opts = RmOptions {
            data: cli.data.clone(),
            init: cli.init.clone(),
            max_prompt_tokens: cli.train.max_prompt_tokens,
            max_completion_tokens: cli.train.max_completion_tokens,
            val_fraction: cli.train.val_fraction,
            limit: cli.train.limit,
            device: device.clone(),
            dtype: marlhf_model::device::dtype(&cli.train.dtype, &device)?,
            lora: cli.lora.settings()?,
            train: cli.train.config("rm")?,
        };
        let r = rm::run(&opts, &Bars)?;
        s.add("checkpoint", cli.train.out.display())
            .add(
                "trained parameters",
                match &opts.lora {
                    Some(l) => {
                        format!("{} (LoRA {} and the value head)", r.trainable, l.describe())
                    }
                    None => "all".to_string(),
                },
            )
            .add("data", &r.lengths)
            .add("chosen == rejected (skipped)", r.identical_pairs)
            .add(
                "train / val pairs",
                format!("{} / {}", r.train_pairs, r.val_pairs),
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
        for (k, v) in r
            .outcome
            .last
            .iter()
            .filter(|(k, _)| k == "loss" || k == "accuracy")
        {
            s.add(&format!("final train {k}"), format!("{v:.4}"));
        }
        for (k, v) in &r.outcome.eval {
            s.add(k, format!("{v:.4}"));
        }
        s.add("pairs/s", format!("{:.1}", r.outcome.units_per_second));
        s.gpu_memory(&device).print();
        Ok(())
    })
}
