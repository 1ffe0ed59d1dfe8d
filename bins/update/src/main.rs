//! `marlhf-update`: one MA-PPO update from an iteration's rollouts and
//! segments → the next actor and critic, `advantages.parquet`, a metrics row.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::{Bars, LoraArgs, Summary};
use marlhf_model::adamw::LrSchedule;
use marlhf_rl::{KlEstimator, LossAgg, MacroKl, MacroLambda, RlConfig, ValueFunction};
use marlhf_stages::ppo::{update, PpoConfig, Recipe, UpdateConfig};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Run MA-PPO's credit assignment (KL-shaped token rewards, one value and
/// reward per macro action, GAE over macro actions) and its clipped PPO
/// steps on the actor and the critic. Writes both checkpoints with their
/// optimiser state, the advantages and the iteration's metrics row, all or
/// nothing; a NaN stops it with the inputs intact.
#[derive(Parser, Debug)]
#[command(about, version)]
struct Args {
    /// Accept checkpoints of unfinished training runs (refused otherwise)
    #[arg(long)]
    allow_partial: bool,
    /// The iteration's rollouts
    #[arg(long)]
    rollouts: PathBuf,
    /// Their macro actions (from marlhf-segment)
    #[arg(long)]
    segments: PathBuf,
    /// The actor that sampled the rollouts (with its optimiser state, if any)
    #[arg(long)]
    actor: PathBuf,
    /// The critic that valued them (with its optimiser state, if any)
    #[arg(long)]
    critic: PathBuf,
    /// Where the updated actor goes
    #[arg(long)]
    out_actor: PathBuf,
    /// Where the updated critic goes
    #[arg(long)]
    out_critic: PathBuf,
    /// Per-token and per-macro-action advantages, returns and rewards
    #[arg(long)]
    advantages: PathBuf,
    /// The run's metrics table; this iteration's row is added or replaced
    #[arg(long)]
    metrics: PathBuf,
    /// How a macro action's tokens make one value and reward: equal, unit or position
    #[arg(long, default_value = "equal", value_parser = parse_value_function)]
    value_function: ValueFunction,
    /// The per-token KL estimate of the penalty: k1 = logπ − logπ_ref (the
    /// paper's) or k3 = (ρ − 1) − log ρ with ρ = π_ref/π (never negative)
    #[arg(long, default_value = "k1", value_parser = parse_kl_estimator)]
    kl_estimator: KlEstimator,
    /// β of the per-token KL penalty −β·k
    #[arg(long, default_value_t = RlConfig::default().kl_coef)]
    kl_coef: f32,
    /// The reward model's score is clipped to ±this
    #[arg(long, default_value_t = RlConfig::default().clip_reward)]
    clip_reward: f32,
    /// Discount γ over macro actions
    #[arg(long, default_value_t = RlConfig::default().gamma)]
    gamma: f32,
    /// GAE λ (per macro action or per token: --macro-lambda)
    #[arg(long, default_value_t = RlConfig::default().lambda)]
    lambda: f32,
    /// How far GAE over macro actions looks back: per-macro (γ and λ once
    /// per macro action, the paper's released code) or per-token (a macro
    /// action of n tokens discounts by γ^n and λ^n, as far back as
    /// token-level PPO) [default: per-token with the default recipe,
    /// per-macro with reference]
    #[arg(long, value_parser = parse_macro_lambda)]
    macro_lambda: Option<MacroLambda>,
    /// A macro action's reward from its tokens' rewards: mean (aggregated
    /// with the value function like the values, the released code: β/n per
    /// token with equal) or sum (every token pays β, as in token-level PPO)
    #[arg(long, default_value = "mean", value_parser = parse_macro_kl)]
    macro_kl: MacroKl,
    /// The training recipe the flags below start from: default (several
    /// optimiser steps per rollout batch, token-mean loss, constant lr,
    /// whitened advantages) or
    /// reference (the paper's released scripts: one step per rollout batch,
    /// every sequence weighted equally, weight decay 0.1, linear schedule
    /// with 5% warm-up, responses of ≤ 1 token dropped)
    #[arg(long, default_value = "default")]
    recipe: Recipe,
    #[arg(long, help = by_recipe("PPO ratio clip ε", |c| c.clip))]
    clip: Option<f64>,
    #[arg(long, help = by_recipe("Value clip around the rollout's values", |c| c.value_clip))]
    value_clip: Option<f64>,
    #[arg(long, help = by_recipe("Passes over the rollouts", |c| c.ppo_epochs))]
    ppo_epochs: Option<usize>,
    #[arg(long, help = by_recipe(
        "Rollouts per optimiser step, 0 = all of them (one step per epoch)",
        |c| c.mini_batch
    ))]
    mini_batch: Option<usize>,
    #[arg(long, help = by_recipe(
        "Rollouts per forward/backward pass, gradients accumulated over the step; 0 = the whole step at once",
        |c| c.micro_batch
    ))]
    micro_batch: Option<usize>,
    #[arg(long, value_parser = parse_loss_agg, help = by_recipe(
        "How per-token losses make a step's loss: token-mean, seq-mean-token-mean or seq-mean-token-sum",
        |c| c.loss_agg
    ))]
    loss_agg: Option<LossAgg>,
    #[arg(long, help = by_recipe("Actor learning rate", |c| c.actor_lr))]
    actor_lr: Option<f64>,
    #[arg(long, help = by_recipe("Critic learning rate", |c| c.critic_lr))]
    critic_lr: Option<f64>,
    #[arg(long, help = by_recipe("AdamW weight decay (matrices only)", |c| c.weight_decay))]
    weight_decay: Option<f64>,
    #[arg(long, help = by_recipe("Global gradient-norm clip per model, 0 = off", |c| c.max_grad_norm))]
    max_grad_norm: Option<f64>,
    #[arg(long, help = by_recipe(
        "Learning-rate schedule over the whole run: constant, linear or cosine",
        |c| c.lr_schedule
    ))]
    lr_schedule: Option<LrSchedule>,
    #[arg(long, help = by_recipe(
        "Share of the run's optimiser steps spent warming up, rounded up to whole steps; \
         warm-up step k of W runs at (k + 1)/(W + 1) of the rate",
        |c| c.warmup_ratio
    ))]
    warmup_ratio: Option<f64>,
    /// The run's length in iterations (a schedule other than constant needs it)
    #[arg(long)]
    total_iterations: Option<u32>,
    #[arg(long, help = by_recipe(
        "Responses shorter than this many tokens are not trained on",
        |c| c.min_response_tokens
    ))]
    min_response_tokens: Option<usize>,
    #[arg(long, help = by_recipe(
        "Whiten the advantages over the iteration's tokens before the policy loss (true or false)",
        |c| c.whiten_advantages
    ))]
    whiten_advantages: Option<bool>,
    /// Iterations, from the first, in which only the critic trains; the
    /// actor is written back unchanged (verl's critic_warmup)
    #[arg(long, default_value_t = 0)]
    critic_warmup: u32,
    /// Seed of the mini-batch order (mixed with the iteration)
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    dtype: String,
    /// LoRA for both the actor and the critic (the critic's value head is
    /// trained with its adapter); the next iteration's actor and critic are
    /// then adapters on the same bases
    #[command(flatten)]
    lora: LoraArgs,
}

fn parse_value_function(s: &str) -> Result<ValueFunction, String> {
    s.parse().map_err(|e: marlhf_rl::RlError| e.to_string())
}

/// A flag's help with its value under each recipe, read off
/// `PpoConfig::recipe` so the defaults live in one place.
fn by_recipe<T: std::fmt::Display>(what: &str, field: impl Fn(&PpoConfig) -> T) -> String {
    let (d, r) = (
        field(&PpoConfig::recipe(Recipe::Default)),
        field(&PpoConfig::recipe(Recipe::Reference)),
    );
    format!("{what} [recipe default: {d}, reference: {r}]")
}

fn parse_kl_estimator(s: &str) -> Result<KlEstimator, String> {
    s.parse().map_err(|e: marlhf_rl::RlError| e.to_string())
}

fn parse_macro_kl(s: &str) -> Result<MacroKl, String> {
    s.parse().map_err(|e: marlhf_rl::RlError| e.to_string())
}

fn parse_macro_lambda(s: &str) -> Result<MacroLambda, String> {
    s.parse().map_err(|e: marlhf_rl::RlError| e.to_string())
}

fn parse_loss_agg(s: &str) -> Result<LossAgg, String> {
    s.parse().map_err(|e: marlhf_rl::RlError| e.to_string())
}

impl Args {
    /// The recipe's values with the flags given on top.
    fn ppo(&self) -> PpoConfig {
        let base = PpoConfig::recipe(self.recipe);
        PpoConfig {
            clip: self.clip.unwrap_or(base.clip),
            value_clip: self.value_clip.unwrap_or(base.value_clip),
            ppo_epochs: self.ppo_epochs.unwrap_or(base.ppo_epochs),
            mini_batch: self.mini_batch.unwrap_or(base.mini_batch),
            micro_batch: self.micro_batch.unwrap_or(base.micro_batch),
            loss_agg: self.loss_agg.unwrap_or(base.loss_agg),
            actor_lr: self.actor_lr.unwrap_or(base.actor_lr),
            critic_lr: self.critic_lr.unwrap_or(base.critic_lr),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            max_grad_norm: self.max_grad_norm.unwrap_or(base.max_grad_norm),
            lr_schedule: self.lr_schedule.unwrap_or(base.lr_schedule),
            warmup_ratio: self.warmup_ratio.unwrap_or(base.warmup_ratio),
            total_iterations: self.total_iterations.or(base.total_iterations),
            min_response_tokens: self.min_response_tokens.unwrap_or(base.min_response_tokens),
            whiten_advantages: self.whiten_advantages.unwrap_or(base.whiten_advantages),
            critic_warmup: self.critic_warmup,
        }
    }
}

/// The share of clipped scores above which the stage warns: the clip is
/// meant for outliers, not for a reward model whose scale exceeds it.
const CLIPPED_WARNING: f64 = 0.25;

/// Counts as integers, small figures (learning rates) in scientific
/// notation, everything else with four decimals.
fn figure(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn main() {
    let args = Args::parse();
    marlhf_model::checkpoint::set_allow_partial(args.allow_partial);
    marlhf_cli::stage_main("update", || {
        marlhf_cli::distinct_outputs(&[
            ("--out-actor", &args.out_actor),
            ("--out-critic", &args.out_critic),
            ("--advantages", &args.advantages),
            ("--metrics", &args.metrics),
        ])?;
        let ppo = args.ppo();
        let device = marlhf_model::device::parse(&args.device)?;
        let cfg = UpdateConfig {
            rollouts: args.rollouts,
            segments: args.segments,
            actor: args.actor,
            critic: args.critic,
            out_actor: args.out_actor,
            out_critic: args.out_critic,
            advantages: args.advantages,
            metrics: args.metrics,
            rl: RlConfig {
                value_function: args.value_function,
                kl_estimator: args.kl_estimator,
                kl_coef: args.kl_coef,
                clip_reward: args.clip_reward,
                gamma: args.gamma,
                lambda: args.lambda,
                macro_kl: args.macro_kl,
                macro_lambda: args.macro_lambda.unwrap_or(args.recipe.macro_lambda()),
            },
            ppo,
            seed: args.seed,
            device: device.clone(),
            dtype: marlhf_model::device::dtype(&args.dtype, &device)?,
            lora: args.lora.settings()?,
        };
        let mut summary = Summary::new("update");
        let r = update(&cfg, &Bars)?;
        if let Some(f) = r
            .get("score_clipped_fraction")
            .filter(|&f| f > CLIPPED_WARNING)
        {
            eprintln!(
                "warning: {:.0}% of the scores lie beyond --clip-reward {}: they all pay the same, and a critic \
                 started from the reward model predicts the unclipped score (DESIGN.md, \"MA-PPO's slow start\")",
                100.0 * f,
                cfg.rl.clip_reward
            );
        }
        summary.add("iteration", r.iteration);
        summary.add(
            "recipe",
            format!(
                "{}: {} loss, {} rollouts per step in micro-batches of {}, {} schedule",
                args.recipe.as_str(),
                cfg.ppo.loss_agg,
                match cfg.ppo.mini_batch {
                    0 => "all".to_string(),
                    m => m.to_string(),
                },
                match cfg.ppo.micro_batch {
                    0 => "the step".to_string(),
                    m => m.to_string(),
                },
                r.schedule.describe()
            ),
        );
        summary.add(
            "credit assignment",
            format!(
                "value function {}, macro KL {}, γ {} and λ {} {}",
                cfg.rl.value_function,
                cfg.rl.macro_kl,
                cfg.rl.gamma,
                cfg.rl.lambda,
                match cfg.rl.macro_lambda {
                    MacroLambda::PerMacro => "per macro action",
                    MacroLambda::PerToken => "per token",
                }
            ),
        );
        let continued = |yes: bool| {
            if yes {
                "continued"
            } else {
                "fresh"
            }
        };
        if let Some(l) = &cfg.lora {
            summary.add("LoRA", l.describe());
        }
        summary.add(
            "optimiser state",
            format!(
                "actor {}, critic {}",
                continued(r.actor_optimizer_continued),
                continued(r.critic_optimizer_continued)
            ),
        );
        for (key, value) in &r.metrics.values {
            summary.add(key, figure(*value));
        }
        summary
            .add("actor written to", cfg.out_actor.display())
            .add("critic written to", cfg.out_critic.display())
            .add("advantages", cfg.advantages.display())
            .add("metrics", cfg.metrics.display());
        summary.gpu_memory(&device).print();
        Ok(())
    })
}
