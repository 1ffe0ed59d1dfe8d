//! `marlhf-stories`: the `stories` task's own steps — story openings from
//! templates, and preference pairs labelled by the gold reward.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use marlhf_cli::Summary;
use marlhf_data::atomic::FileSet;
use marlhf_data::read_responses;
use marlhf_data::stage_rows;
use marlhf_data::stories::{
    write_story_prompts, StoryCounts, EVAL_PROMPTS, PAIR_PROMPTS, PPO_PROMPTS, VALIDATION_PROMPTS,
};
use marlhf_stages::gold_scoring::preference_pairs;

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// The stories task: a known gold reward on the pretrained stories260K
/// model (DESIGN.md, "The stories task").
#[derive(Parser, Debug)]
#[command(about, version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Prompts(PromptsArgs),
    Pairs(PairsArgs),
}

/// Story openings from templates, shuffled with the seed and cut into
/// disjoint sets: prompts.parquet (PPO), eval_prompts.parquet,
/// pair_prompts.parquet (the reward model's preference pairs) and
/// validation_prompts.parquet (early stopping and tuning).
#[derive(Args, Debug)]
struct PromptsArgs {
    /// The run's data directory
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// PPO prompts
    #[arg(long, default_value_t = 4000)]
    ppo: usize,
    /// Evaluation prompts
    #[arg(long, default_value_t = 500)]
    eval: usize,
    /// Prompts whose two samples make a preference pair
    #[arg(long, default_value_t = 2000)]
    pairs: usize,
    /// Validation prompts: early stopping and tuning choose on them
    #[arg(long, default_value_t = 500)]
    validation: usize,
}

/// Preference pairs from several samples per prompt (`marlhf-eval generate
/// --samples-per-prompt K --gold-model …`): every two samples of a prompt
/// whose gold rewards differ, the higher one chosen:
/// pairs.parquet for the reward model (labels flipped with probability
/// --label-noise) and pairs_heldout.parquet with clean labels.
#[derive(Args, Debug)]
struct PairsArgs {
    /// responses.parquet with gold columns, two to eight samples per prompt
    #[arg(long)]
    responses: PathBuf,
    /// Training pairs (written atomically, with --heldout)
    #[arg(long)]
    out: PathBuf,
    /// Held-out pairs with clean gold labels
    #[arg(long)]
    heldout: PathBuf,
    /// Share of prompts held out
    #[arg(long, default_value_t = 0.1)]
    heldout_fraction: f64,
    /// Probability of flipping a training label (0 = labels are the gold order)
    #[arg(long, default_value_t = 0.0)]
    label_noise: f64,
    #[arg(long, default_value_t = 1234)]
    seed: u64,
}

fn main() {
    match Cli::parse().command {
        Command::Prompts(a) => marlhf_cli::stage_main("stories prompts", || {
            let counts = StoryCounts {
                ppo: a.ppo,
                eval: a.eval,
                pairs: a.pairs,
                validation: a.validation,
            };
            write_story_prompts(&a.out, a.seed, counts)?;
            let mut s = Summary::new("stories prompts");
            s.add(PPO_PROMPTS, a.ppo)
                .add(EVAL_PROMPTS, a.eval)
                .add(PAIR_PROMPTS, a.pairs)
                .add(VALIDATION_PROMPTS, a.validation)
                .add("seed", a.seed)
                .add("written to", a.out.display());
            s.print();
            Ok(())
        }),
        Command::Pairs(a) => marlhf_cli::stage_main("stories pairs", || {
            let rows = read_responses(&a.responses)?;
            let (train, heldout, r) = preference_pairs(
                &a.responses,
                &rows,
                a.label_noise,
                a.heldout_fraction,
                a.seed,
            )?;
            let mut files = FileSet::new();
            stage_rows(&mut files, &a.out, &train)?;
            stage_rows(&mut files, &a.heldout, &heldout)?;
            files.commit()?;
            let mut s = Summary::new("stories pairs");
            s.add("prompts", r.prompts)
                .add("tied sample pairs (no preference)", r.ties)
                .add("training pairs", r.train_pairs)
                .add(
                    "flipped labels",
                    format!("{} (noise {})", r.flipped, a.label_noise),
                )
                .add("held-out pairs (clean)", r.heldout_pairs)
                .add("mean gold margin", format!("{:.3}", r.mean_margin))
                .add(
                    "written to",
                    format!("{}, {}", a.out.display(), a.heldout.display()),
                );
            s.print();
            Ok(())
        }),
    }
}
