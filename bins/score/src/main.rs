//! `marlhf-score`: numbers of any checkpoint on given data, from the shell.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use marlhf_cli::{Bars, Summary};
use marlhf_stages::score::{logprobs, pairwise_accuracy, AccuracyOptions, LogprobOptions};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Score given data with a Hugging Face checkpoint (any supported family:
/// Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Accept checkpoints of unfinished training runs (refused otherwise)
    #[arg(long, global = true)]
    allow_partial: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per-token log-probabilities of (prompt, response) rows → Parquet
    Logprobs(LogprobArgs),
    /// A reward model's pairwise accuracy on preference pairs (ties apart)
    RmAccuracy(AccuracyArgs),
}

#[derive(Args, Debug)]
struct Placement {
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    dtype: String,
}

impl Placement {
    fn resolve(&self) -> anyhow::Result<(candle_core::Device, candle_core::DType)> {
        let device = marlhf_model::device::parse(&self.device)?;
        let dtype = marlhf_model::device::dtype(&self.dtype, &device)?;
        Ok((device, dtype))
    }
}

#[derive(Args, Debug)]
struct LogprobArgs {
    /// Checkpoint directory (config.json, weights, tokenizer.json)
    #[arg(long)]
    checkpoint: PathBuf,
    /// Parquet rows: `prompt` + `response` (or `completion`) text, or
    /// `prompt_tokens` + `response_tokens` id lists (e.g. rollouts.parquet);
    /// an `id` column is kept when present
    #[arg(long)]
    data: PathBuf,
    /// Output Parquet: id, prompt_tokens, response_tokens, logprobs,
    /// sum_logprob, mean_logprob
    #[arg(long)]
    out: PathBuf,
    /// Text column of the responses (default: response, else completion)
    #[arg(long)]
    response_column: Option<String>,
    /// Do not prepend the tokenizer's BOS to text prompts (transformers'
    /// tokenizers add one only when their template says so)
    #[arg(long)]
    no_bos: bool,
    /// Rows per forward pass
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[command(flatten)]
    placement: Placement,
}

#[derive(Args, Debug)]
struct AccuracyArgs {
    /// Reward-model checkpoint (with v_head.weight)
    #[arg(long)]
    checkpoint: PathBuf,
    /// pairs.parquet (id, prompt, chosen, rejected), or a raw HH-RLHF
    /// {train,test}.jsonl(.gz) file of whole dialogues
    #[arg(long)]
    pairs: PathBuf,
    /// Per-pair scores as Parquet: id, chosen_score, rejected_score,
    /// preferred (chosen, rejected or tie)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pairs per forward pass
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Longest prompt in tokens, longer ones keep their end [default: what
    /// the reward model was trained with (its trainer_state.json), else 256]
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Longest completion in tokens, longer ones are cut [default: what the
    /// reward model was trained with, else 128]
    #[arg(long)]
    max_completion_tokens: Option<usize>,
    /// Use only the first N pairs
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    placement: Placement,
}

fn main() {
    let cli = Cli::parse();
    marlhf_model::checkpoint::set_allow_partial(cli.allow_partial);
    marlhf_cli::stage_main("score", || match cli.command {
        Command::Logprobs(a) => {
            let (device, dtype) = a.placement.resolve()?;
            let mut s = Summary::new("score logprobs");
            let r = logprobs(
                &LogprobOptions {
                    checkpoint: a.checkpoint.clone(),
                    data: a.data.clone(),
                    out: a.out.clone(),
                    response_column: a.response_column,
                    bos: !a.no_bos,
                    batch_size: a.batch_size,
                    device: device.clone(),
                    dtype,
                },
                &Bars,
            )?;
            s.add("checkpoint", a.checkpoint.display())
                .add(
                    "rows",
                    format!(
                        "{} ({})",
                        r.rows,
                        if r.token_input { "token ids" } else { "text" }
                    ),
                )
                .add("scored tokens", r.tokens)
                .add("mean log-prob per token", format!("{:.4}", r.mean_logprob))
                .add("written", a.out.display());
            s.gpu_memory(&device).print();
            Ok(())
        }
        Command::RmAccuracy(a) => {
            let (device, dtype) = a.placement.resolve()?;
            let mut s = Summary::new("score rm-accuracy");
            let r = pairwise_accuracy(
                &AccuracyOptions {
                    checkpoint: a.checkpoint.clone(),
                    pairs: a.pairs.clone(),
                    out: a.out.clone(),
                    batch_size: a.batch_size,
                    max_prompt_tokens: a.max_prompt_tokens,
                    max_completion_tokens: a.max_completion_tokens,
                    limit: a.limit,
                    device: device.clone(),
                    dtype,
                },
                &Bars,
            )?;
            s.add("checkpoint", a.checkpoint.display())
                .add(
                    "length limits",
                    format!(
                        "prompt {} + completion {} tokens ({})",
                        r.limits.0, r.limits.1, r.limits.2
                    ),
                )
                .add("data", &r.lengths);
            for (reason, n) in &r.unsplit {
                s.add("raw rows not split", format!("{n} ({reason})"));
            }
            s.add("pairs scored", r.pairs)
                .add(
                    "chosen / rejected / tie",
                    format!("{} / {} / {}", r.correct, r.wrong, r.ties),
                )
                .add("accuracy", format!("{:.4}", r.accuracy()))
                .add(
                    "accuracy without ties",
                    format!("{:.4}", r.accuracy_without_ties()),
                )
                .add("mean margin", format!("{:.4}", r.mean_margin));
            if let Some(out) = &a.out {
                s.add("written", out.display());
            }
            s.gpu_memory(&device).print();
            Ok(())
        }
    });
}
