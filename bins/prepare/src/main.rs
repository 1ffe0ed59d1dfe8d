//! `marlhf-prepare`: raw dataset → `sft.parquet`, `pairs.parquet`,
//! `prompts.parquet`, `validation_prompts.parquet`, `eval_prompts.parquet`
//! and `prepare_report.json`, written all or nothing.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::{spinner, Summary};
use marlhf_data::adapters::{PrepareOptions, Task};
use marlhf_data::{prepare, write_prepared};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Prepare a task's raw data (read in its published layout from <RAW>/<task>/)
/// as the Parquet files the later stages read: a 20% SFT / 40% RM / 40% PPO
/// split of the training rows plus held-out eval prompts, grouped by prompt;
/// a sample of the PPO prompts is held out as validation prompts.
#[derive(Parser, Debug)]
#[command(about, version)]
struct Args {
    /// The task, which is also its directory under --raw
    #[arg(long, default_value = "hh-rlhf", value_parser = ["hh-rlhf", "tldr", "webgpt", "apps"])]
    task: String,
    /// The directory holding the raw datasets
    #[arg(long, env = "RAW", default_value = "../shared/data")]
    raw: PathBuf,
    /// Output directory for the prepared files
    #[arg(long)]
    out: PathBuf,
    /// Seed of the split
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Share of rows held out for evaluation when the data has no train/test split of its own
    #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
    eval_fraction: f64,
    /// Read only the first N raw rows (quick runs)
    #[arg(long)]
    limit: Option<usize>,
    /// PPO prompts held out as validation prompts for early stopping and
    /// tuning (at most a quarter of the PPO prompts)
    #[arg(long, default_value_t = marlhf_data::adapters::DEFAULT_VALIDATION_PROMPTS)]
    validation_prompts: usize,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{f} is not in [0, 1)"))
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0.0%".to_string()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn main() {
    let args = Args::parse();
    marlhf_cli::stage_main("prepare", || {
        let task: Task = args.task.parse()?;
        let opts = PrepareOptions {
            seed: args.seed,
            eval_fraction: args.eval_fraction,
            limit: args.limit,
            validation_prompts: args.validation_prompts,
        };
        let mut summary = Summary::new(&format!("prepare {task}"));

        let pb = spinner("prepare");
        pb.set_message(format!("reading {}", args.raw.join(task.name()).display()));
        let prepared = prepare(task, &args.raw, &opts)?;
        pb.set_message(format!("writing {}", args.out.display()));
        write_prepared(&args.out, &prepared)?;
        pb.finish_and_clear();

        let r = &prepared.report;
        summary
            .add("layout", &r.layout)
            .add("raw rows", r.raw_rows)
            .add("kept rows", r.kept_rows)
            .add("dropped rows", r.dropped_total());
        for (reason, n) in &r.dropped {
            summary.add(&format!("  dropped: {reason}"), n);
        }
        summary.add(
            "chosen == rejected",
            format!(
                "{} ({} in pairs, kept)",
                r.chosen_equals_rejected, r.chosen_equals_rejected_in_pairs
            ),
        );
        let rows = |s: &str| r.split_rows.get(s).copied().unwrap_or(0);
        let train = r.kept_rows - rows("eval");
        for split in ["sft", "rm", "ppo"] {
            let n = rows(split);
            summary.add(
                &format!("split {split}"),
                format!("{n} rows ({} of training rows)", percent(n, train)),
            );
        }
        let n = rows("eval");
        summary.add(
            "split eval",
            format!("{n} rows ({} of kept rows)", percent(n, r.kept_rows)),
        );
        summary.add("duplicate prompts merged", r.duplicate_prompts_merged);
        summary.add("validation prompts (held out of ppo)", r.validation_prompts);
        for (file, n) in &r.outputs {
            summary.add(file, format!("{n} rows"));
        }
        for note in &r.notes {
            summary.add("note", note);
        }
        summary.add("written to", args.out.display());
        summary.print();
        Ok(())
    })
}
