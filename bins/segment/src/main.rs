//! `marlhf-segment`: `rollouts.parquet` → `segments.parquet`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::Summary;
use marlhf_rl::Termination;
use marlhf_stages::ppo::{run_segment, SegmentConfig};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Split every rollout's response into macro actions with a termination
/// condition: fixed:N (every N tokens; fixed:1 is vanilla token-level PPO),
/// randomized:R (lengths from {1,2,3,5,10}, each R times, shuffled per
/// rollout), ppl (where the reference model's per-token perplexity rises)
/// or parsing:C (constituents of a rule-based chunk parse under C tokens).
/// The last token is always a macro action of its own.
#[derive(Parser, Debug)]
#[command(about, version)]
struct Args {
    /// Rollouts to segment
    #[arg(long)]
    rollouts: PathBuf,
    /// Output file (written atomically)
    #[arg(long)]
    out: PathBuf,
    /// fixed:N, randomized:R, ppl or parsing:C
    #[arg(long, default_value = "fixed:5", value_parser = parse_termination)]
    termination: Termination,
    /// Seed of the randomized condition (mixed with each rollout's id)
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Checkpoint directory or tokenizer.json whose vocabulary pieces the
    /// parsing condition reads (the actor's)
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

fn parse_termination(s: &str) -> Result<Termination, String> {
    s.parse().map_err(|e: marlhf_rl::RlError| e.to_string())
}

fn main() {
    let args = Args::parse();
    marlhf_cli::stage_main("segment", || {
        let cfg = SegmentConfig {
            rollouts: args.rollouts,
            out: args.out,
            termination: args.termination,
            seed: args.seed,
            tokenizer: args.tokenizer,
        };
        let mut summary = Summary::new(&format!("segment, {}", cfg.termination));
        let r = run_segment(&cfg)?;
        summary
            .add("rollouts", r.rollouts)
            .add("empty responses", r.empty_responses)
            .add("response tokens", r.tokens)
            .add("macro actions", r.macro_actions)
            .add(
                "mean macro action",
                format!("{:.2} tokens", r.mean_macro_length()),
            )
            .add("written to", cfg.out.display());
        summary.print();
        Ok(())
    })
}
