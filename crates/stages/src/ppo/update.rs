//! The update stage: MA-PPO's credit assignment (KL-shaped token rewards,
//! macro-action aggregation, GAE over macro actions — all in `marlhf-rl`)
//! followed by AdamW steps on the actor (clipped surrogate, each token
//! weighted by its macro action's advantage) and on the critic (clipped
//! value loss against its macro action's return).
//!
//! How the rollouts become optimiser steps is a [`PpoConfig`]: rollouts per
//! step (`mini_batch`; 0 = all of them, one step per epoch), rollouts per
//! forward/backward pass (`micro_batch`, gradients accumulated over the
//! step), how per-token losses are weighted ([`LossAgg`]), weight decay, a
//! learning-rate schedule over the whole run and a minimum response length.
//! [`Recipe::Reference`] is the paper's released training setup,
//! [`Recipe::Default`] this project's (DESIGN.md says why).
//!
//! The schedule's position is derived, not stored: step k of iteration i is
//! global step i·S + k of N·S, where S (steps per iteration) follows from
//! the rollouts file's row count and N is `total_iterations`. A rerun or a
//! resumed run therefore lands on the same learning rates whichever process
//! runs which iteration.
//!
//! Advantages and returns are fixed before the first step, so the actor's
//! steps never read the critic and the critic's never read the actor: the
//! two are trained one after the other over the same mini-batches, which
//! gives the same result as interleaving them while holding only one model
//! in memory at a time.
//!
//! Everything is written at the end, all or nothing: both checkpoints with
//! their optimiser state, `advantages.parquet` (last, so its presence means
//! the iteration is complete) and the iteration's row of the metrics table,
//! which replaces a row an earlier run of the same iteration left. A NaN
//! anywhere stops the stage before anything is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use marlhf_data::atomic::FileSet;
use marlhf_data::{
    read_metrics, read_rollouts, read_segments, stage_rows, AdvantageRow, MetricsRow, RolloutRow,
};
use marlhf_model::adamw::{AdamW, AdamWConfig, GradAccumulator, LrSchedule};
use marlhf_model::lm::Scored;
use marlhf_model::Model;
use marlhf_rl::{
    actor_loss_weighted, credit_diagnostics, critic_loss_weighted, explained_variance_flat,
    process_sequence, response_mask, whiten, KlEstimator, LossAgg, RlConfig, SequenceInput,
    SequenceOutput, TokenFigures,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::forward::{padded, policy_pass};
use super::state::{load_for_training, load_optimizer, save_with_state, ACTOR_STAGE, CRITIC_STAGE};
use crate::progress::Progress;
use marlhf_data::seed::mix_seed;

#[derive(Clone, Debug)]
pub struct UpdateConfig {
    pub rollouts: PathBuf,
    pub segments: PathBuf,
    pub actor: PathBuf,
    pub critic: PathBuf,
    pub out_actor: PathBuf,
    pub out_critic: PathBuf,
    pub advantages: PathBuf,
    /// The run's metrics table; this iteration's row is added or replaced.
    pub metrics: PathBuf,
    /// Credit assignment over the macro actions the segments file fixes.
    pub rl: RlConfig,
    /// How the rollouts become optimiser steps.
    pub ppo: PpoConfig,
    /// Seeds the mini-batch order.
    pub seed: u64,
    pub device: Device,
    /// The dtype the models compute in (their weights stay f32).
    pub dtype: candle_core::DType,
    /// Train LoRA adapters on the frozen actor and critic (the critic's
    /// value head trained too) instead of every weight.
    pub lora: Option<marlhf_model::lora::LoraSettings>,
}

/// A named set of [`PpoConfig`] values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recipe {
    /// This project's: several optimiser steps per rollout batch, whitened
    /// advantages.
    #[default]
    Default,
    /// The paper's released scripts (run_gemma.sh with its DeepSpeed-Chat
    /// fork): one optimiser step per rollout batch, every sequence weighted
    /// equally, AdamW weight decay 0.1, linear schedule with 5% warm-up,
    /// responses of one token or less dropped.
    Reference,
}

impl Recipe {
    /// How far MA-PPO's GAE looks back. The released code discounts once
    /// per macro action, so with n-token macro actions λ reaches n times as
    /// many tokens as token-level PPO's; with the reward clipped below the
    /// critic's starting values that carries the last token's error over
    /// most of the response, and half the stories seeds never learned
    /// (DESIGN.md, "MA-PPO's slow start"). `default` therefore discounts per
    /// token; `reference` keeps the released behaviour.
    pub fn macro_lambda(self) -> marlhf_rl::MacroLambda {
        match self {
            Recipe::Default => marlhf_rl::MacroLambda::PerToken,
            Recipe::Reference => marlhf_rl::MacroLambda::PerMacro,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Recipe::Default => "default",
            Recipe::Reference => "reference",
        }
    }
}

impl std::str::FromStr for Recipe {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "default" => Ok(Recipe::Default),
            "reference" => Ok(Recipe::Reference),
            _ => Err(format!(
                "unknown recipe {s:?} (expected default or reference)"
            )),
        }
    }
}

/// The optimisation side of one PPO update.
#[derive(Clone, Debug, PartialEq)]
pub struct PpoConfig {
    /// PPO ratio clip ε.
    pub clip: f64,
    /// Value clip around the rollout's values.
    pub value_clip: f64,
    /// Passes over the rollouts.
    pub ppo_epochs: usize,
    /// Rollouts per optimiser step; 0: all of them (one step per epoch).
    pub mini_batch: usize,
    /// Rollouts per forward/backward pass, gradients accumulated over the
    /// step; 0: the whole mini-batch at once. Changes memory, not results
    /// (up to float rounding).
    pub micro_batch: usize,
    /// How per-token losses are weighted within a step.
    pub loss_agg: LossAgg,
    pub actor_lr: f64,
    pub critic_lr: f64,
    /// AdamW weight decay (matrices only: norms and biases are not decayed).
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    pub lr_schedule: LrSchedule,
    /// Share of the run's optimiser steps spent warming up.
    pub warmup_ratio: f64,
    /// The run's length in iterations, which a schedule other than
    /// `constant` needs.
    pub total_iterations: Option<u32>,
    /// Responses shorter than this many tokens are not trained on.
    pub min_response_tokens: usize,
    /// Whiten the advantages over all tokens trained on in the iteration
    /// before the policy loss (TRL, verl, CleanRL); the released code does
    /// not.
    pub whiten_advantages: bool,
    /// Iterations, from the first, in which only the critic trains and the
    /// actor is written back unchanged (verl's `critic_warmup`).
    pub critic_warmup: u32,
}

impl PpoConfig {
    pub fn recipe(recipe: Recipe) -> Self {
        let default = PpoConfig {
            clip: 0.2,
            value_clip: 0.2,
            ppo_epochs: 1,
            mini_batch: 8,
            micro_batch: 0,
            loss_agg: LossAgg::TokenMean,
            actor_lr: 1.5e-5,
            critic_lr: 1.5e-5,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            lr_schedule: LrSchedule::Constant,
            warmup_ratio: 0.0,
            total_iterations: None,
            min_response_tokens: 1,
            // Chosen by the stories search on vanilla PPO (README, "The
            // stories experiment"); TRL, verl and CleanRL whiten too.
            whiten_advantages: true,
            critic_warmup: 0,
        };
        match recipe {
            Recipe::Default => default,
            Recipe::Reference => PpoConfig {
                mini_batch: 0,
                micro_batch: 8,
                loss_agg: LossAgg::SeqMeanTokenMean,
                weight_decay: 0.1,
                lr_schedule: LrSchedule::Linear,
                warmup_ratio: 0.05,
                min_response_tokens: 2,
                whiten_advantages: false,
                ..default
            },
        }
    }

    fn check(&self) -> Result<()> {
        if self.ppo_epochs == 0 {
            bail!("--ppo-epochs must be positive");
        }
        for (flag, v) in [
            ("--clip", self.clip),
            ("--value-clip", self.value_clip),
            ("--actor-lr", self.actor_lr),
            ("--critic-lr", self.critic_lr),
            ("--weight-decay", self.weight_decay),
            ("--max-grad-norm", self.max_grad_norm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{flag} must be a finite number ≥ 0, got {v}");
            }
        }
        if !(self.warmup_ratio.is_finite() && (0.0..1.0).contains(&self.warmup_ratio)) {
            bail!(
                "--warmup-ratio must be in [0, 1), got {}",
                self.warmup_ratio
            );
        }
        if self.lr_schedule != LrSchedule::Constant && self.total_iterations.is_none() {
            bail!(
                "--lr-schedule {} needs --total-iterations (the run's length, e.g. ITERS)",
                self.lr_schedule
            );
        }
        if self.total_iterations == Some(0) {
            bail!("--total-iterations must be positive");
        }
        if let Some(n) = self.total_iterations.filter(|&n| self.critic_warmup >= n) {
            bail!(
                "--critic-warmup {} leaves no iteration of the {n} (--total-iterations) to train the actor",
                self.critic_warmup
            );
        }
        Ok(())
    }

    /// Rollouts per optimiser step for a file of `rows` rollouts.
    fn step_size(&self, rows: usize) -> usize {
        if self.mini_batch == 0 {
            rows.max(1)
        } else {
            self.mini_batch
        }
    }

    /// Optimiser steps per iteration for a file of `rows` rollouts: the
    /// schedule's unit. Dropped rollouts can only make an iteration shorter.
    fn steps_per_iteration(&self, rows: usize) -> u64 {
        (self.ppo_epochs * rows.max(1).div_ceil(self.step_size(rows))) as u64
    }

    /// The run's learning-rate schedule for iterations of `rows` rollouts.
    pub fn schedule(&self, rows: usize, iteration: u32) -> Schedule {
        let per_iteration = self.steps_per_iteration(rows);
        let total_steps = per_iteration * self.total_iterations.unwrap_or(iteration + 1) as u64;
        Schedule {
            kind: self.lr_schedule,
            first_step: per_iteration * iteration as u64,
            warmup_steps: warmup_steps(self.warmup_ratio, total_steps),
            total_steps,
        }
    }
}

/// Warm-up steps for a share `ratio` of a run of `total` optimiser steps:
/// ⌈ratio·total⌉, so any warm-up asked for is at least one step.
pub fn warmup_steps(ratio: f64, total: u64) -> u64 {
    (ratio * total as f64).ceil() as u64
}

/// Where an iteration's optimiser steps sit in the run's learning-rate
/// schedule, counted in optimiser steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: LrSchedule,
    /// Global step of this iteration's first optimiser step.
    pub first_step: u64,
    /// W: the run's warm-up steps.
    pub warmup_steps: u64,
    /// T: the run's optimiser steps.
    pub total_steps: u64,
}

impl Schedule {
    /// The learning rate of global step `step`. The W warm-up steps rise
    /// linearly as (step + 1)/(W + 1) of `base`, so none is at 0 (Hugging
    /// Face's first warm-up step is) and none at the full rate (the rate is
    /// reached at step W, the first after warm-up): a 5 % warm-up of 12
    /// steps is one step at half the rate. After it, the schedule's own
    /// shape (constant, or linear or cosine decay over steps W…T).
    pub fn lr(&self, base: f64, step: u64) -> f64 {
        let w = self.warmup_steps;
        if step < w {
            return base * (step + 1) as f64 / (w + 1) as f64;
        }
        self.kind.lr(base, step, w, self.total_steps)
    }

    /// One line for the stage's summary.
    pub fn describe(&self) -> String {
        format!(
            "{}, warm-up {} of {} optimiser steps",
            self.kind, self.warmup_steps, self.total_steps
        )
    }
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig::recipe(Recipe::Default)
    }
}

/// What the update did: the figures of its metrics row, in order.
#[derive(Clone, Debug)]
pub struct UpdateReport {
    pub iteration: u32,
    pub metrics: MetricsRow,
    /// The learning-rate schedule the steps followed.
    pub schedule: Schedule,
    /// Whether each model continued the optimiser state saved beside it.
    pub actor_optimizer_continued: bool,
    pub critic_optimizer_continued: bool,
}

impl UpdateReport {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.get(key)
    }
}

/// The iteration every row of the rollouts file belongs to.
fn iteration_of(path: &Path, rows: &[RolloutRow]) -> Result<u32> {
    let first = rows
        .first()
        .ok_or_else(|| anyhow!("{}: no rollouts", path.display()))?
        .iteration;
    if let Some(i) = rows.iter().position(|r| r.iteration != first) {
        bail!(
            "{}: row {}, column \"iteration\": {} but row 1 has {first}; one file holds one iteration",
            path.display(),
            i + 1,
            rows[i].iteration
        );
    }
    Ok(first)
}

/// Each rollout's macro-action starts from the segments file, matched by id.
fn starts_by_rollout(
    rollouts_path: &Path,
    rollouts: &[RolloutRow],
    segments_path: &Path,
) -> Result<Vec<Vec<u32>>> {
    let segments = read_segments(segments_path)?;
    let mut by_id: HashMap<u64, Vec<u32>> = HashMap::with_capacity(segments.len());
    for s in segments {
        by_id.insert(s.id, s.starts);
    }
    let mut out = Vec::with_capacity(rollouts.len());
    for (i, r) in rollouts.iter().enumerate() {
        let starts = by_id.remove(&r.id).ok_or_else(|| {
            anyhow!(
                "{}: no segments for rollout {} (row {} of {}); were they made from another rollouts file?",
                segments_path.display(),
                r.id,
                i + 1,
                rollouts_path.display()
            )
        })?;
        out.push(starts);
    }
    if let Some(id) = by_id.keys().min() {
        bail!(
            "{}: segments for rollout {id}, which {} does not hold",
            segments_path.display(),
            rollouts_path.display()
        );
    }
    Ok(out)
}

/// Credit assignment for every rollout, each on its own. Errors name the
/// file and row at fault.
pub fn credit_assignment(
    cfg: &RlConfig,
    rollouts_path: &Path,
    rollouts: &[RolloutRow],
    segments_path: &Path,
    starts: &[Vec<u32>],
) -> Result<Vec<SequenceOutput>> {
    rollouts
        .iter()
        .zip(starts)
        .enumerate()
        .map(|(i, (r, s))| {
            if let Err(e) = marlhf_rl::validate_starts(s, r.response_tokens.len()) {
                bail!(
                    "{}: rollout {} (row {i1} of {}): {e}",
                    segments_path.display(),
                    r.id,
                    rollouts_path.display(),
                    i1 = i + 1
                );
            }
            process_sequence(
                cfg,
                &SequenceInput {
                    id: r.id,
                    logprobs: &r.logprobs,
                    ref_logprobs: &r.ref_logprobs,
                    values: &r.values,
                    score: r.score,
                    starts: s,
                },
            )
            .map_err(|e| anyhow!("{}: row {}: {e}", rollouts_path.display(), i + 1))
        })
        .collect()
}

/// The rollouts of each optimiser step: every epoch shuffles the rollouts
/// to train on and cuts them into mini-batches (the last may be smaller).
pub fn mini_batches(
    trainable: &[usize],
    size: usize,
    epochs: usize,
    seed: u64,
    iteration: u32,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, &[iteration as u64, 0x0ba7c4]));
    let mut out = Vec::new();
    for _ in 0..epochs {
        let mut order = trainable.to_vec();
        order.shuffle(&mut rng);
        out.extend(order.chunks(size).map(<[usize]>::to_vec));
    }
    out
}

/// Running sums of one model's figures over an iteration.
#[derive(Default)]
struct Tally {
    steps: usize,
    /// Sum of the steps' losses.
    loss: f64,
    grad_norm: f64,
    lr: f64,
    /// Token-weighted sums of per-token figures, and the token count.
    clip_fraction: f64,
    approx_kl: f64,
    tokens: f64,
    entropy_sum: f64,
    entropy_tokens: usize,
}

impl Tally {
    fn per_step(&self, x: f64) -> f64 {
        x / self.steps.max(1) as f64
    }

    fn per_token(&self, x: f64) -> f64 {
        x / self.tokens.max(1.0)
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The tensors a micro-batch's losses compare against, [rows, longest].
struct Targets {
    scored: Scored,
    old: Tensor,
    target: Tensor,
    mask: Tensor,
    weights: Tensor,
}

/// Which model, for messages and progress bars.
#[derive(Clone, Copy)]
enum Role {
    Actor,
    Critic,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Actor => "actor",
            Role::Critic => "critic",
        }
    }
}

/// What one model's training reads: the rollouts, their credit assignment
/// and how to cut them into steps.
struct Batches<'a> {
    rollouts: &'a [RolloutRow],
    outputs: &'a [SequenceOutput],
    /// Per rollout, the advantages the policy loss uses (whitened or not).
    advantages: &'a [Vec<f32>],
    /// The rollouts of each optimiser step.
    steps: &'a [Vec<usize>],
    /// The temperature the rollouts' log-probabilities were taken at.
    temperature: f64,
    /// Where the steps sit in the run's learning-rate schedule.
    schedule: Schedule,
}

impl Batches<'_> {
    fn targets(
        &self,
        role: Role,
        rows: &[usize],
        step: &[usize],
        agg: LossAgg,
        dev: &Device,
    ) -> Result<Targets> {
        let ro = |r: usize| &self.rollouts[r];
        let scored = Scored {
            seqs: rows
                .iter()
                .map(|&r| {
                    ro(r)
                        .prompt_tokens
                        .iter()
                        .chain(&ro(r).response_tokens)
                        .copied()
                        .collect()
                })
                .collect(),
            starts: rows.iter().map(|&r| ro(r).prompt_tokens.len()).collect(),
        };
        let (olds, tgts): (Vec<&[f32]>, Vec<&[f32]>) = match role {
            Role::Actor => rows
                .iter()
                .map(|&r| (ro(r).logprobs.as_slice(), self.advantages[r].as_slice()))
                .unzip(),
            Role::Critic => rows
                .iter()
                .map(|&r| (ro(r).values.as_slice(), self.outputs[r].returns.as_slice()))
                .unzip(),
        };
        let lens: Vec<usize> = olds.iter().map(|o| o.len()).collect();
        let width = lens.iter().copied().max().unwrap_or(0);
        let step_tokens: usize = step.iter().map(|&r| ro(r).response_tokens.len()).sum();
        Ok(Targets {
            scored,
            old: marlhf_rl::pad(&olds, dev)?,
            target: marlhf_rl::pad(&tgts, dev)?,
            mask: response_mask(&lens, dev)?,
            weights: agg.weights(&lens, width, step.len(), step_tokens, dev)?,
        })
    }
}

/// The micro-batches of one optimiser step.
fn micro_batches(step: &[usize], micro: usize) -> std::slice::Chunks<'_, usize> {
    step.chunks(if micro == 0 { step.len().max(1) } else { micro })
}

/// One model's optimiser steps over all mini-batches, each accumulating
/// the gradients of its micro-batches.
fn optimise_role(
    role: Role,
    model: &Model,
    opt: &mut AdamW,
    lr: f64,
    ppo: &PpoConfig,
    batches: &Batches,
    progress: &dyn Progress,
) -> Result<Tally> {
    let vars = model.trainable();
    let dev = model.device();
    let mut tally = Tally::default();
    let pb = progress.bar(batches.steps.len() as u64, role.name());
    let per_epoch = (batches.steps.len() / ppo.ppo_epochs).max(1);
    for (k, step) in batches.steps.iter().enumerate() {
        let at = || {
            format!(
                "{} update, epoch {}, mini-batch {}",
                role.name(),
                k / per_epoch + 1,
                k % per_epoch + 1
            )
        };
        let mut grads = GradAccumulator::new();
        let mut step_loss = 0.0;
        for rows in micro_batches(step, ppo.micro_batch) {
            let t = batches.targets(role, rows, step, ppo.loss_agg, dev)?;
            let (old, target, mask, weights) = (&t.old, &t.target, &t.mask, &t.weights);
            let tokens: f64 = t
                .scored
                .seqs
                .iter()
                .zip(&t.scored.starts)
                .map(|(s, &b)| (s.len() - b) as f64)
                .sum();
            let loss = match role {
                Role::Actor => {
                    let pass =
                        policy_pass(model, &t.scored, batches.temperature).with_context(at)?;
                    tally.entropy_sum += pass.entropy.iter().map(|&e| e as f64).sum::<f64>();
                    tally.entropy_tokens += pass.entropy.len();
                    let lp = padded(&pass.logprobs, &pass.counts)?;
                    let (loss, stats) =
                        actor_loss_weighted(&lp, old, target, mask, weights, ppo.clip)
                            .with_context(at)?;
                    tally.clip_fraction += stats.clip_fraction as f64 * tokens;
                    tally.approx_kl += stats.approx_kl as f64 * tokens;
                    loss
                }
                Role::Critic => {
                    let (v, counts) = model.token_values(&t.scored).with_context(at)?;
                    let v = padded(&v, &counts)?;
                    let (loss, stats) =
                        critic_loss_weighted(&v, old, target, mask, weights, ppo.value_clip)
                            .with_context(at)?;
                    tally.clip_fraction += stats.clip_fraction as f64 * tokens;
                    loss
                }
            };
            tally.tokens += tokens;
            let l = scalar(&loss)?;
            if !l.is_finite() {
                bail!("{}: the loss is {l}", at());
            }
            step_loss += l;
            grads.add(&vars, loss.backward()?)?;
        }
        let step_lr = batches
            .schedule
            .lr(lr, batches.schedule.first_step + k as u64);
        let st = opt
            .step(&vars, &grads.into_store(&vars)?, step_lr, ppo.max_grad_norm)
            .with_context(at)?;
        tally.steps += 1;
        tally.loss += step_loss;
        tally.grad_norm += st.grad_norm;
        tally.lr += step_lr;
        pb.set_message(format!("loss {step_loss:.4}"));
        pb.inc(1);
    }
    pb.finish();
    Ok(tally)
}

/// Adds this iteration's row to the metrics table, replacing any row an
/// earlier run of the same iteration wrote.
fn stage_metrics(set: &mut FileSet, path: &Path, row: MetricsRow) -> Result<()> {
    let mut rows = if path.exists() {
        read_metrics(path)?
    } else {
        Vec::new()
    };
    rows.retain(|r| r.iteration != row.iteration);
    rows.push(row);
    rows.sort_by_key(|r| r.iteration);
    stage_rows(set, path, &rows)?;
    Ok(())
}

/// The directories that staging outputs will create (the next iteration's
/// directory, say): unless kept, they are removed again if still empty, so
/// that a failed update leaves no trace.
struct NewDirs(Vec<PathBuf>);

impl NewDirs {
    fn before_writing(outputs: &[&Path]) -> Self {
        let mut dirs = Vec::new();
        for out in outputs {
            let mut at = out.parent();
            while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                if !dirs.contains(&dir.to_path_buf()) {
                    dirs.push(dir.to_path_buf());
                }
                at = dir.parent();
            }
        }
        // Deepest first, so parents are empty by the time they are tried.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        NewDirs(dirs)
    }

    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for NewDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    s / n.max(1) as f64
}

/// The one temperature every row's log-probabilities were taken at.
fn logprob_temperature_of(path: &Path, rows: &[RolloutRow]) -> Result<f64> {
    let first = rows
        .first()
        .ok_or_else(|| anyhow!("{}: no rollouts", path.display()))?
        .logprob_temperature;
    if let Some(i) = rows.iter().position(|r| r.logprob_temperature != first) {
        bail!(
            "{}: row {}, column \"logprob_temperature\": {} but row 1 has {first}; one file is scored at one temperature",
            path.display(),
            i + 1,
            rows[i].logprob_temperature
        );
    }
    Ok(first)
}

/// Per-token and per-sequence means of a KL estimate over the rollouts'
/// response tokens: (token mean, mean over sequences of the sequence sum).
fn kl_figures(rollouts: &[RolloutRow], kl: KlEstimator) -> (f64, f64) {
    let (mut total, mut tokens) = (0.0, 0usize);
    let mut seq_sums = Vec::with_capacity(rollouts.len());
    for r in rollouts {
        let sum: f64 = r
            .logprobs
            .iter()
            .zip(&r.ref_logprobs)
            .map(|(&a, &b)| kl.estimate(a, b) as f64)
            .sum();
        total += sum;
        tokens += r.logprobs.len();
        seq_sums.push(sum);
    }
    (total / tokens.max(1) as f64, mean(seq_sums.into_iter()))
}

/// Advantages the update trains on: whitened over the tokens of the
/// responses trained on (dropped responses do not move the
/// mean) when `whitened`, else as credit assignment gave them.
fn trained_advantages(
    outputs: &[SequenceOutput],
    trainable: &[usize],
    whitened: bool,
) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = outputs.iter().map(|o| o.advantages.clone()).collect();
    if whitened {
        let rows: Vec<&[f32]> = trainable
            .iter()
            .map(|&i| outputs[i].advantages.as_slice())
            .collect();
        for (&i, w) in trainable.iter().zip(whiten(&rows)) {
            out[i] = w;
        }
    }
    out
}

/// The metrics only an actor pass produces.
const ACTOR_FIGURES: [&str; 6] = [
    "actor_loss",
    "actor_clip_fraction",
    "approx_kl",
    "entropy",
    "actor_grad_norm",
    "actor_lr",
];

/// The iteration's row of the metrics table, in its column order:
/// rollouts, rewards, KL, lengths, credit assignment, the two models'
/// losses and steps, and the wall-clock seconds of credit assignment,
/// actor and critic.
fn iteration_metrics(
    rollouts: &[RolloutRow],
    outputs: &[SequenceOutput],
    trainable: usize,
    [actor_tally, critic_tally]: [&Tally; 2],
    temperature: f64,
    clip_reward: f32,
    [secs_advantages, secs_actor, secs_critic]: [f64; 3],
) -> Result<Vec<(String, f64)>> {
    let n = rollouts.len() as f64;
    let tokens: usize = rollouts.iter().map(|r| r.response_tokens.len()).sum();
    let all_values: Vec<f32> = rollouts.iter().flat_map(|r| r.values.clone()).collect();
    let all_returns: Vec<f32> = outputs.iter().flat_map(|o| o.returns.clone()).collect();
    let unfinished = rollouts.iter().filter(|r| !r.finished).count();
    let (k1_token, k1_seq) = kl_figures(rollouts, KlEstimator::K1);
    let (k3_token, k3_seq) = kl_figures(rollouts, KlEstimator::K3);
    let mut values: Vec<(String, f64)> = vec![
        ("rollouts".into(), n),
        (
            "score_mean".into(),
            mean(rollouts.iter().map(|r| r.score as f64)),
        ),
        // Scores beyond ±clip_reward all pay the same: a reward model whose
        // scale exceeds the clip loses its signal there, and a critic
        // started from it predicts the unclipped score (DESIGN.md, "MA-PPO's
        // slow start").
        (
            "score_clipped_fraction".into(),
            mean(
                rollouts
                    .iter()
                    .map(|r| f64::from(u8::from(r.score.abs() > clip_reward))),
            ),
        ),
        (
            "reward_mean".into(),
            mean(
                outputs
                    .iter()
                    .map(|o| o.rewards.iter().map(|&x| x as f64).sum()),
            ),
        ),
        ("kl_k1_token_mean".into(), k1_token),
        ("kl_k1_seq_sum".into(), k1_seq),
        ("kl_k3_token_mean".into(), k3_token),
        ("kl_k3_seq_sum".into(), k3_seq),
        (
            "response_length".into(),
            mean(rollouts.iter().map(|r| r.response_tokens.len() as f64)),
        ),
        (
            "finished_fraction".into(),
            (rollouts.len() - unfinished) as f64 / n,
        ),
        ("unfinished".into(), unfinished as f64),
        (
            "empty_responses".into(),
            rollouts
                .iter()
                .filter(|r| r.response_tokens.is_empty())
                .count() as f64,
        ),
        ("dropped_short".into(), (rollouts.len() - trainable) as f64),
        (
            "macro_actions_mean".into(),
            mean(outputs.iter().map(|o| o.starts.len() as f64)),
        ),
        (
            "macro_action_length".into(),
            tokens as f64 / outputs.iter().map(|o| o.starts.len()).sum::<usize>().max(1) as f64,
        ),
        (
            "advantage_mean".into(),
            mean(
                outputs
                    .iter()
                    .flat_map(|o| o.advantages.iter().map(|&x| x as f64)),
            ),
        ),
        (
            "return_mean".into(),
            mean(all_returns.iter().map(|&x| x as f64)),
        ),
        (
            "value_mean".into(),
            mean(all_values.iter().map(|&x| x as f64)),
        ),
        ("actor_loss".into(), actor_tally.per_step(actor_tally.loss)),
        (
            "critic_loss".into(),
            critic_tally.per_step(critic_tally.loss),
        ),
        (
            "actor_clip_fraction".into(),
            actor_tally.per_token(actor_tally.clip_fraction),
        ),
        (
            "critic_clip_fraction".into(),
            critic_tally.per_token(critic_tally.clip_fraction),
        ),
        (
            "approx_kl".into(),
            actor_tally.per_token(actor_tally.approx_kl),
        ),
        (
            "entropy".into(),
            actor_tally.entropy_sum / actor_tally.entropy_tokens.max(1) as f64,
        ),
    ];
    if let Some(golds) = rollouts.iter().map(|r| r.gold).collect::<Option<Vec<_>>>() {
        // The task's known reward (the update never trains on it).
        values.extend([
            (
                "gold_mean".to_string(),
                mean(golds.iter().map(|g| g.reward as f64)),
            ),
            (
                "gold_ending_rate".to_string(),
                mean(golds.iter().map(|g| f64::from(u8::from(g.ending)))),
            ),
            (
                "gold_callback_rate".to_string(),
                mean(golds.iter().map(|g| f64::from(u8::from(g.callback)))),
            ),
        ]);
    }
    if let Some(ev) = explained_variance_flat(&all_values, &all_returns)? {
        values.push(("explained_variance".into(), ev as f64));
    }
    // Before the update, over every response token: how well the critic
    // fits its targets and how the advantages lean along the response.
    let figures: Vec<TokenFigures> = rollouts
        .iter()
        .zip(outputs)
        .map(|(r, o)| TokenFigures {
            values: &r.values,
            returns: &o.returns,
            advantages: &o.advantages,
        })
        .collect();
    values.extend(
        credit_diagnostics(&figures)?
            .columns()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    values.extend([
        (
            "actor_grad_norm".to_string(),
            actor_tally.per_step(actor_tally.grad_norm),
        ),
        (
            "critic_grad_norm".to_string(),
            critic_tally.per_step(critic_tally.grad_norm),
        ),
        ("actor_lr".to_string(), actor_tally.per_step(actor_tally.lr)),
        (
            "critic_lr".to_string(),
            critic_tally.per_step(critic_tally.lr),
        ),
        ("optimizer_steps".to_string(), actor_tally.steps as f64),
        ("logprob_temperature".to_string(), temperature),
        ("advantages_seconds".to_string(), secs_advantages),
        ("actor_seconds".to_string(), secs_actor),
        ("critic_seconds".to_string(), secs_critic),
    ]);
    Ok(values)
}

pub fn update(cfg: &UpdateConfig, progress: &dyn Progress) -> Result<UpdateReport> {
    let ppo = &cfg.ppo;
    ppo.check()?;
    let t0 = Instant::now();
    let rollouts = read_rollouts(&cfg.rollouts)?;
    let models = [
        ("actor", cfg.actor.as_path()),
        ("critic", cfg.critic.as_path()),
    ];
    super::models::check_tokens(&cfg.rollouts, &rollouts, &models)?;
    let iteration = iteration_of(&cfg.rollouts, &rollouts)?;
    let temperature = logprob_temperature_of(&cfg.rollouts, &rollouts)?;
    if let Some(n) = ppo.total_iterations.filter(|&n| iteration >= n) {
        bail!(
            "{}: iteration {iteration} is past the run's --total-iterations {n}",
            cfg.rollouts.display()
        );
    }
    let starts = starts_by_rollout(&cfg.rollouts, &rollouts, &cfg.segments)?;
    let outputs = credit_assignment(&cfg.rl, &cfg.rollouts, &rollouts, &cfg.segments, &starts)?;
    let min_len = ppo.min_response_tokens.max(1);
    let trainable: Vec<usize> = (0..rollouts.len())
        .filter(|&i| rollouts[i].response_tokens.len() >= min_len)
        .collect();
    if trainable.is_empty() {
        let what = if min_len == 1 {
            "empty".to_string()
        } else {
            format!("shorter than --min-response-tokens {min_len}")
        };
        bail!(
            "{}: all {} responses are {what}; there is nothing to train on",
            cfg.rollouts.display(),
            rollouts.len()
        );
    }
    let steps = mini_batches(
        &trainable,
        ppo.step_size(rollouts.len()),
        ppo.ppo_epochs,
        cfg.seed,
        iteration,
    );
    let schedule = ppo.schedule(rollouts.len(), iteration);
    let advantages = trained_advantages(&outputs, &trainable, ppo.whiten_advantages);
    let batches = Batches {
        rollouts: &rollouts,
        outputs: &outputs,
        advantages: &advantages,
        steps: &steps,
        temperature,
        schedule,
    };
    let secs_advantages = t0.elapsed().as_secs_f64();
    // A failed step leaves every input as it was and writes nothing.
    let stopped = |dir: &Path, e: anyhow::Error| {
        e.context(format!(
            "{}: iteration {iteration} stopped; nothing was written, {} and {} are intact",
            dir.display(),
            cfg.actor.display(),
            cfg.critic.display()
        ))
    };
    let adamw = |lr: f64| AdamWConfig {
        lr,
        weight_decay: ppo.weight_decay,
        ..Default::default()
    };

    // Declared before the file set so that it is dropped after it, once
    // the staged temporaries are gone.
    let new_dirs = NewDirs::before_writing(&[
        &cfg.out_actor,
        &cfg.out_critic,
        &cfg.advantages,
        &cfg.metrics,
    ]);
    // Find out now, not after training, that an output cannot be written.
    for out in [
        &cfg.out_actor,
        &cfg.out_critic,
        &cfg.advantages,
        &cfg.metrics,
    ] {
        marlhf_data::atomic::check_writable(out)?;
    }
    let mut files = FileSet::new();
    let t1 = Instant::now();
    let actor = load_for_training(
        &cfg.actor,
        &cfg.device,
        cfg.dtype,
        cfg.lora.as_ref(),
        cfg.seed,
    )?;
    actor
        .model
        .set_dropout(Some(mix_seed(cfg.seed, &[iteration as u64, 0x10a])));
    let (mut opt, actor_continued) =
        load_optimizer(&cfg.actor, ACTOR_STAGE, adamw(ppo.actor_lr), &cfg.device)?;
    // During the critic's warm-up the actor is written back unchanged.
    let actor_updated = iteration >= ppo.critic_warmup;
    let actor_tally = if actor_updated {
        optimise_role(
            Role::Actor,
            &actor.model,
            &mut opt,
            ppo.actor_lr,
            ppo,
            &batches,
            progress,
        )
        .map_err(|e| stopped(&cfg.actor, e))?
    } else {
        Tally::default()
    };
    let actor_steps = opt.step;
    files.stage(&cfg.out_actor, |tmp| {
        save_with_state(tmp, &cfg.actor, &actor.model, &opt, ACTOR_STAGE, cfg.seed)
    })?;
    drop(actor);
    let secs_actor = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let mut critic = load_for_training(
        &cfg.critic,
        &cfg.device,
        cfg.dtype,
        cfg.lora.as_ref(),
        cfg.seed,
    )?;
    if critic.model.v_head.is_none() {
        bail!(
            "{}: the critic has no value head (v_head.weight); start it from the reward model",
            cfg.critic.display()
        );
    }
    // A LoRA critic trains its value head with its adapter.
    critic.model.ensure_value_head(cfg.seed)?;
    critic
        .model
        .set_dropout(Some(mix_seed(cfg.seed, &[iteration as u64, 0x10b])));
    let (mut opt, critic_continued) =
        load_optimizer(&cfg.critic, CRITIC_STAGE, adamw(ppo.critic_lr), &cfg.device)?;
    let critic_tally = optimise_role(
        Role::Critic,
        &critic.model,
        &mut opt,
        ppo.critic_lr,
        ppo,
        &batches,
        progress,
    )
    .map_err(|e| stopped(&cfg.critic, e))?;
    files.stage(&cfg.out_critic, |tmp| {
        save_with_state(
            tmp,
            &cfg.critic,
            &critic.model,
            &opt,
            CRITIC_STAGE,
            cfg.seed,
        )
    })?;
    drop(critic);
    let secs_critic = t2.elapsed().as_secs_f64();

    let mut values = iteration_metrics(
        &rollouts,
        &outputs,
        trainable.len(),
        [&actor_tally, &critic_tally],
        temperature,
        cfg.rl.clip_reward,
        [secs_advantages, secs_actor, secs_critic],
    )?;
    if !actor_updated {
        // No actor pass ran: its figures are missing (null), not zero.
        values.retain(|(k, _)| !ACTOR_FIGURES.contains(&k.as_str()));
    }
    values.push(("actor_updated".into(), f64::from(u8::from(actor_updated))));
    // What training the two models held at most (LoRA's saving shows here).
    if let Some(mb) = crate::memory::peak_rss_mb() {
        values.push(("update_peak_rss_mb".into(), mb));
    }

    let advantages: Vec<AdvantageRow> = outputs
        .into_iter()
        .map(|o| AdvantageRow {
            id: o.id,
            macro_advantages: o.macro_advantages,
            macro_returns: o.macro_returns,
            advantages: o.advantages,
            returns: o.returns,
            rewards: o.rewards,
        })
        .collect();
    let row = MetricsRow {
        step: actor_steps,
        iteration,
        values,
    };
    stage_metrics(&mut files, &cfg.metrics, row.clone())?;
    stage_rows(&mut files, &cfg.advantages, &advantages)?;
    files.commit()?;
    new_dirs.keep();
    Ok(UpdateReport {
        iteration,
        metrics: row,
        schedule,
        actor_optimizer_continued: actor_continued,
        critic_optimizer_continued: critic_continued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_is_counted_in_optimiser_steps() {
        // The reference recipe: one step per iteration, 12 iterations,
        // linear with 5% warm-up: W = ⌈0.05·12⌉ = ⌈0.6⌉ = 1 step, T = 12.
        // Step 0 at (0 + 1)/(1 + 1) = 1/2 of the rate; step 1 at the full
        // rate; then linear decay over the 11 steps after warm-up:
        // step k at 1 − (k − 1)/11, so step 2 at 10/11, step 11 at 1/11.
        let ppo = PpoConfig {
            total_iterations: Some(12),
            ..PpoConfig::recipe(Recipe::Reference)
        };
        let at = |iteration: u32| ppo.schedule(64, iteration);
        assert_eq!(
            at(0),
            Schedule {
                kind: LrSchedule::Linear,
                first_step: 0,
                warmup_steps: 1,
                total_steps: 12
            }
        );
        assert_eq!(at(5).first_step, 5);
        let lr = |step| at(0).lr(2.0, step);
        assert_eq!(lr(0), 1.0);
        assert_eq!(lr(1), 2.0);
        assert!((lr(2) - 2.0 * 10.0 / 11.0).abs() < 1e-12);
        assert!((lr(11) - 2.0 / 11.0).abs() < 1e-12);
        assert_eq!(at(0).describe(), "linear, warm-up 1 of 12 optimiser steps");
        // The default recipe's steps of 8 rollouts: 64 rollouts are 8 steps
        // per iteration, 96 in 12 iterations; 5% is ⌈4.8⌉ = 5 warm-up steps
        // at 1/6 … 5/6 of the rate, the full rate at step 5.
        let ppo = PpoConfig {
            total_iterations: Some(12),
            warmup_ratio: 0.05,
            ..PpoConfig::default()
        };
        let s = ppo.schedule(64, 3);
        assert_eq!((s.first_step, s.warmup_steps, s.total_steps), (24, 5, 96));
        let rates: Vec<f64> = (0..7).map(|k| s.lr(6.0, k)).collect();
        assert_eq!(rates, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.0]);
        // No warm-up: the schedule as it is.
        assert_eq!(warmup_steps(0.0, 96), 0);
        assert_eq!(PpoConfig::default().schedule(64, 0).lr(6.0, 0), 6.0);
    }

    #[test]
    fn critic_warmup_must_leave_actor_iterations() {
        let ppo = PpoConfig {
            total_iterations: Some(4),
            critic_warmup: 4,
            ..PpoConfig::default()
        };
        let err = ppo.check().unwrap_err().to_string();
        assert_eq!(
            err,
            "--critic-warmup 4 leaves no iteration of the 4 (--total-iterations) to train the actor"
        );
        let ppo = PpoConfig {
            critic_warmup: 3,
            ..ppo
        };
        assert!(ppo.check().is_ok());
    }

    #[test]
    fn mini_batches_cover_every_rollout_once_per_epoch() {
        let trainable = [0usize, 2, 3, 5, 6, 7, 9];
        let b = mini_batches(&trainable, 3, 2, 42, 1);
        // 7 rollouts in batches of 3: 3 + 3 + 1, twice.
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 1, 3, 3, 1]
        );
        for epoch in b.chunks(3) {
            let mut seen: Vec<usize> = epoch.concat();
            seen.sort_unstable();
            assert_eq!(seen, trainable);
        }
        assert_eq!(b, mini_batches(&trainable, 3, 2, 42, 1));
        assert_ne!(
            b,
            mini_batches(&trainable, 3, 2, 42, 2),
            "iterations differ"
        );
        assert_ne!(b, mini_batches(&trainable, 3, 2, 43, 1), "seeds differ");
    }
}
