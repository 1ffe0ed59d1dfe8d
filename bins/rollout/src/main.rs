//! `marlhf-rollout`: one PPO iteration's prompts → `rollouts.parquet`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::{Bars, Summary};
use marlhf_stages::ppo::{rollout, PromptOrder, RolloutConfig};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Sample responses to one PPO iteration's prompts with the actor, then
/// compute per response token the actor's and the reference model's
/// log-probabilities and the critic's values, and the reward model's score
/// of each response. Iteration K takes prompts [K·M, (K+1)·M) of the run's
/// stream of prompts (M = --rollout-batch): the file once per epoch of
/// prompts, each epoch shuffled with the seed (--prompt-order).
#[derive(Parser, Debug)]
#[command(about, version)]
struct Args {
    /// Accept checkpoints of unfinished training runs (refused otherwise)
    #[arg(long)]
    allow_partial: bool,
    /// Prompts to sample from (prepare's prompts.parquet)
    #[arg(long)]
    prompts: PathBuf,
    /// The policy being trained (the SFT model at iteration 0)
    #[arg(long)]
    actor: PathBuf,
    /// The frozen reference policy of the KL penalty (the SFT model)
    #[arg(long)]
    reference: PathBuf,
    /// The value model (the reward model at iteration 0)
    #[arg(long)]
    critic: PathBuf,
    /// The reward model
    #[arg(long)]
    reward_model: PathBuf,
    /// Output file (written atomically)
    #[arg(long)]
    out: PathBuf,
    /// The PPO iteration: picks the prompts and is stored with every rollout
    #[arg(long, default_value_t = 0)]
    iteration: u32,
    /// Prompts (and so rollouts) per iteration
    #[arg(long, default_value_t = 64)]
    rollout_batch: usize,
    /// Sequences per generation and forward batch [default: 8 on the CPU,
    /// 64 on a GPU]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Longest prompt in tokens (longer ones keep their end)
    #[arg(long, default_value_t = 512)]
    max_prompt_tokens: usize,
    /// Longest response in tokens (a response cut here has no EOS)
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Sampling temperature (0: greedy); the paper's 0.8
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the K most likely tokens (0: all). Off by default: the
    /// log-probabilities are those of the whole tempered distribution, so
    /// with top-k the tokens are drawn from a distribution that is not the
    /// one scored (the released code has Hugging Face's default of 50)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass (1: off; like top-k, not reflected in the
    /// log-probabilities)
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Temperature of the stored log-probabilities (default: the sampling
    /// temperature, so sampling and scoring agree; 1 reproduces the paper's
    /// released code, which scores at 1 whatever it samples at)
    #[arg(long)]
    logprob_temperature: Option<f64>,
    /// The gold model of a task with a known reward (stories: the imported
    /// stories260K): adds each rollout's gold reward (columns gold,
    /// gold_ending, gold_callback) for the curves; training never reads it
    #[arg(long)]
    gold_model: Option<PathBuf>,
    /// The order the iterations take the prompts in: shuffled (each pass
    /// over the file in an order drawn from --seed) or file (the file's
    /// order whatever the seed, as before issue 18)
    #[arg(long, default_value = "shuffled")]
    prompt_order: PromptOrder,
    /// Seed of the sampling (mixed with the iteration) and of the prompt order
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    dtype: String,
}

fn main() {
    let args = Args::parse();
    marlhf_model::checkpoint::set_allow_partial(args.allow_partial);
    marlhf_cli::stage_main("rollout", || {
        let device = marlhf_model::device::parse(&args.device)?;
        let cfg = RolloutConfig {
            prompts: args.prompts,
            actor: args.actor,
            reference: args.reference,
            critic: args.critic,
            reward_model: args.reward_model,
            out: args.out,
            iteration: args.iteration,
            rollout_batch: args.rollout_batch,
            prompt_order: args.prompt_order,
            batch_size: args
                .batch_size
                .unwrap_or_else(|| marlhf_model::device::default_sampling_batch(&device)),
            max_prompt_tokens: args.max_prompt_tokens,
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            logprob_temperature: args.logprob_temperature,
            gold_model: args.gold_model,
            seed: args.seed,
            device: device.clone(),
            dtype: marlhf_model::device::dtype(&args.dtype, &device)?,
        };
        let mut summary = Summary::new(&format!("rollout, iteration {}", cfg.iteration));
        let r = rollout(&cfg, &Bars)?;
        summary
            .add("rollouts", r.rollouts)
            .add(
                "prompts",
                format!(
                    "{} distinct of {} in the file, {} order",
                    r.distinct_prompts, r.prompts_in_file, cfg.prompt_order
                ),
            )
            .add("truncated prompts", r.truncated_prompts)
            .add(
                "sampling",
                format!(
                    "temperature {}, top-k {}, top-p {}; log-probs at temperature {}",
                    cfg.temperature,
                    cfg.top_k,
                    cfg.top_p,
                    cfg.scoring_temperature()
                ),
            )
            .add("mean score", format!("{:.4}", r.mean_score))
            .add(
                "mean gold reward",
                r.mean_gold
                    .map_or("— (no --gold-model)".to_string(), |g| format!("{g:.4}")),
            )
            .add("mean length", format!("{:.1} tokens", r.mean_length))
            .add(
                "finished (EOS)",
                format!(
                    "{} of {} ({:.1}%); the rest hit --max-new-tokens",
                    r.finished,
                    r.rollouts,
                    100.0 * r.finished as f64 / r.rollouts.max(1) as f64
                ),
            )
            .add(
                "generation",
                format!(
                    "{} tokens in {:.1}s ({:.1} tokens/s)",
                    r.generated_tokens,
                    r.generate_seconds,
                    r.tokens_per_second()
                ),
            )
            .add("scoring", format!("{:.1}s", r.score_seconds))
            .add("written to", cfg.out.display());
        summary.gpu_memory(&device).print();
        Ok(())
    })
}
