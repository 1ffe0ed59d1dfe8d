//! `marlhf-update`: one MA-PPO update from an iteration's rollouts and
//! segments → the next actor and critic, `advantages.parquet`, a metrics row.

use std::path::PathBuf;

use clap::Parser;
use marlhf_cli::Summary;
use marlhf_rl::{RlConfig, ValueFunction};
use marlhf_train::ppo::{update, UpdateConfig};

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
    #[arg(
        long,
        default_value = "runs/hh-rlhf/default/ppo-n5/iter-000/rollouts.parquet"
    )]
    rollouts: PathBuf,
    /// Their macro actions (from marlhf-segment)
    #[arg(
        long,
        default_value = "runs/hh-rlhf/default/ppo-n5/iter-000/segments.parquet"
    )]
    segments: PathBuf,
    /// The actor that sampled the rollouts (with its optimiser state, if any)
    #[arg(long, default_value = "runs/hh-rlhf/default/sft")]
    actor: PathBuf,
    /// The critic that valued them (with its optimiser state, if any)
    #[arg(long, default_value = "runs/hh-rlhf/default/rm")]
    critic: PathBuf,
    /// Where the updated actor goes
    #[arg(long, default_value = "runs/hh-rlhf/default/ppo-n5/iter-001/actor")]
    out_actor: PathBuf,
    /// Where the updated critic goes
    #[arg(long, default_value = "runs/hh-rlhf/default/ppo-n5/iter-001/critic")]
    out_critic: PathBuf,
    /// Per-token and per-macro-action advantages, returns and rewards
    #[arg(
        long,
        default_value = "runs/hh-rlhf/default/ppo-n5/iter-000/advantages.parquet"
    )]
    advantages: PathBuf,
    /// The run's metrics table; this iteration's row is added or replaced
    #[arg(long, default_value = "runs/hh-rlhf/default/ppo-n5/metrics.parquet")]
    metrics: PathBuf,
    /// How a macro action's tokens make one value and reward: equal, unit or position
    #[arg(long, default_value = "equal", value_parser = parse_value_function)]
    value_function: ValueFunction,
    /// β of the per-token KL penalty −β·(logπ − logπ_ref)
    #[arg(long, default_value_t = 0.05)]
    kl_coef: f32,
    /// The reward model's score is clipped to ±this
    #[arg(long, default_value_t = 2.5)]
    clip_reward: f32,
    /// Discount γ over macro actions
    #[arg(long, default_value_t = 1.0)]
    gamma: f32,
    /// GAE λ over macro actions
    #[arg(long, default_value_t = 0.95)]
    lambda: f32,
    /// PPO ratio clip ε
    #[arg(long, default_value_t = 0.2)]
    clip: f64,
    /// Value clip around the rollout's values
    #[arg(long, default_value_t = 0.2)]
    value_clip: f64,
    /// Passes over the rollouts
    #[arg(long, default_value_t = 1)]
    ppo_epochs: usize,
    /// Rollouts per optimiser step
    #[arg(long, default_value_t = 8)]
    mini_batch: usize,
    #[arg(long, default_value_t = 1.5e-5)]
    actor_lr: f64,
    #[arg(long, default_value_t = 1.5e-5)]
    critic_lr: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Global gradient-norm clip per model (0: off)
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Seed of the mini-batch order (mixed with the iteration)
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn parse_value_function(s: &str) -> Result<ValueFunction, String> {
    s.parse().map_err(|e: marlhf_rl::RlError| e.to_string())
}

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
    marlhf_cli::run("update", || {
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
                kl_coef: args.kl_coef,
                clip_reward: args.clip_reward,
                gamma: args.gamma,
                lambda: args.lambda,
                seed: args.seed,
                ..RlConfig::default()
            },
            clip: args.clip,
            value_clip: args.value_clip,
            ppo_epochs: args.ppo_epochs,
            mini_batch: args.mini_batch,
            actor_lr: args.actor_lr,
            critic_lr: args.critic_lr,
            weight_decay: args.weight_decay,
            max_grad_norm: args.max_grad_norm,
            seed: args.seed,
            device: marlhf_model::device::parse(&args.device)?,
        };
        let mut summary = Summary::new("update");
        let r = update(&cfg)?;
        summary.add("iteration", r.iteration);
        let continued = |yes: bool| {
            if yes {
                "continued"
            } else {
                "fresh"
            }
        };
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
        summary.print();
        Ok(())
    })
}
