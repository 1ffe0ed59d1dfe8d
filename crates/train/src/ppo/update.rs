//! The update stage: MA-PPO's credit assignment (KL-shaped token rewards,
//! macro-action aggregation, GAE over macro actions — all in `marlhf-rl`)
//! followed by AdamW steps on the actor (clipped surrogate, each token
//! weighted by its macro action's advantage) and on the critic (clipped
//! value loss against its macro action's return).
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
use marlhf_model::adamw::{AdamW, AdamWConfig};
use marlhf_model::lm::Scored;
use marlhf_model::{Checkpoint, Model};
use marlhf_rl::{
    actor_loss, critic_loss, explained_variance_flat, process_sequence, response_mask, RlConfig,
    SequenceInput, SequenceOutput,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::forward::{padded, policy_pass};
use super::mix_seed;
use super::state::{load_optimizer, save_with_state, ACTOR_STAGE, CRITIC_STAGE};

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
    /// Credit assignment; its `termination` is unused (the segments file
    /// fixes the macro actions).
    pub rl: RlConfig,
    /// PPO ratio clip ε.
    pub clip: f64,
    /// Value clip around the rollout's values.
    pub value_clip: f64,
    pub ppo_epochs: usize,
    /// Rollouts per optimiser step.
    pub mini_batch: usize,
    pub actor_lr: f64,
    pub critic_lr: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// Seeds the mini-batch order.
    pub seed: u64,
    pub device: Device,
}

/// What the update did: the figures of its metrics row, in order.
#[derive(Clone, Debug)]
pub struct UpdateReport {
    pub iteration: u32,
    pub metrics: MetricsRow,
    /// Whether each model continued the optimiser state saved beside it.
    pub actor_optimizer_continued: bool,
    pub critic_optimizer_continued: bool,
}

impl UpdateReport {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.get(key)
    }
}

impl UpdateConfig {
    fn check(&self) -> Result<()> {
        if self.ppo_epochs == 0 || self.mini_batch == 0 {
            bail!("--ppo-epochs and --mini-batch must be positive");
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
        Ok(())
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
                    pieces: None,
                    starts: Some(s),
                },
            )
            .map_err(|e| anyhow!("{}: row {}: {e}", rollouts_path.display(), i + 1))
        })
        .collect()
}

/// The rollouts of each optimiser step: every epoch shuffles the rollouts
/// that have response tokens and cuts them into mini-batches (the last may
/// be smaller).
pub fn mini_batches(
    trainable: &[usize],
    size: usize,
    epochs: usize,
    seed: u64,
    iteration: u32,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, iteration as u64, 0x0ba7c4));
    let mut out = Vec::new();
    for _ in 0..epochs {
        let mut order = trainable.to_vec();
        order.shuffle(&mut rng);
        out.extend(order.chunks(size).map(<[usize]>::to_vec));
    }
    out
}

/// Running means of one model's per-step figures.
#[derive(Default)]
struct Tally {
    steps: usize,
    loss: f64,
    clip_fraction: f64,
    grad_norm: f64,
    approx_kl: f64,
    entropy_sum: f64,
    entropy_tokens: usize,
}

impl Tally {
    fn mean(&self, x: f64) -> f64 {
        x / self.steps.max(1) as f64
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The tensors a mini-batch's losses compare against, [rows, longest].
struct Targets {
    scored: Scored,
    old: Tensor,
    target: Tensor,
    mask: Tensor,
}

fn targets(
    rows: &[usize],
    rollouts: &[RolloutRow],
    old: impl Fn(&RolloutRow) -> &[f32],
    target: impl Fn(usize) -> Vec<f32>,
    dev: &Device,
) -> Result<Targets> {
    let scored = Scored {
        seqs: rows
            .iter()
            .map(|&r| {
                let ro = &rollouts[r];
                ro.prompt_tokens
                    .iter()
                    .chain(&ro.response_tokens)
                    .copied()
                    .collect()
            })
            .collect(),
        starts: rows
            .iter()
            .map(|&r| rollouts[r].prompt_tokens.len())
            .collect(),
    };
    let olds: Vec<&[f32]> = rows.iter().map(|&r| old(&rollouts[r])).collect();
    let tgts: Vec<Vec<f32>> = rows.iter().map(|&r| target(r)).collect();
    let tgt_refs: Vec<&[f32]> = tgts.iter().map(Vec::as_slice).collect();
    let lens: Vec<usize> = olds.iter().map(|o| o.len()).collect();
    Ok(Targets {
        scored,
        old: marlhf_rl::pad(&olds, dev)?,
        target: marlhf_rl::pad(&tgt_refs, dev)?,
        mask: response_mask(&lens, dev)?,
    })
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

/// One model's optimiser steps over all mini-batches.
#[allow(clippy::too_many_arguments)]
fn train(
    role: Role,
    model: &Model,
    opt: &mut AdamW,
    lr: f64,
    cfg: &UpdateConfig,
    batches: &[Vec<usize>],
    rollouts: &[RolloutRow],
    outputs: &[SequenceOutput],
) -> Result<Tally> {
    let vars = model.params.vars();
    let dev = model.device();
    let mut tally = Tally::default();
    let pb = marlhf_cli::bar(batches.len() as u64, role.name());
    let per_epoch = batches.len() / cfg.ppo_epochs;
    for (k, rows) in batches.iter().enumerate() {
        let at = || {
            format!(
                "{} update, epoch {}, mini-batch {}",
                role.name(),
                k / per_epoch.max(1) + 1,
                k % per_epoch.max(1) + 1
            )
        };
        let (loss, clip_fraction, approx_kl) = match role {
            Role::Actor => {
                let t = targets(
                    rows,
                    rollouts,
                    |r| &r.logprobs,
                    |r| outputs[r].advantages.clone(),
                    dev,
                )?;
                let pass = policy_pass(model, &t.scored).with_context(at)?;
                tally.entropy_sum += pass.entropy.iter().map(|&e| e as f64).sum::<f64>();
                tally.entropy_tokens += pass.entropy.len();
                let lp = padded(&pass.logprobs, &pass.counts)?;
                let (loss, stats) =
                    actor_loss(&lp, &t.old, &t.target, &t.mask, cfg.clip).with_context(at)?;
                (loss, stats.clip_fraction, stats.approx_kl as f64)
            }
            Role::Critic => {
                let t = targets(
                    rows,
                    rollouts,
                    |r| &r.values,
                    |r| outputs[r].returns.clone(),
                    dev,
                )?;
                let (v, counts) = model.token_values(&t.scored).with_context(at)?;
                let v = padded(&v, &counts)?;
                let (loss, stats) =
                    critic_loss(&v, &t.old, &t.target, &t.mask, cfg.value_clip).with_context(at)?;
                (loss, stats.clip_fraction, 0.0)
            }
        };
        let l = scalar(&loss)?;
        if !l.is_finite() {
            bail!("{}: the loss is {l}", at());
        }
        let grads = loss.backward()?;
        let st = opt
            .step(&vars, &grads, lr, cfg.max_grad_norm)
            .with_context(at)?;
        tally.steps += 1;
        tally.loss += l;
        tally.clip_fraction += clip_fraction as f64;
        tally.approx_kl += approx_kl;
        tally.grad_norm += st.grad_norm;
        pb.set_message(format!("loss {l:.4}"));
        pb.inc(1);
    }
    pb.finish_and_clear();
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

pub fn update(cfg: &UpdateConfig) -> Result<UpdateReport> {
    cfg.check()?;
    let t0 = Instant::now();
    let rollouts = read_rollouts(&cfg.rollouts)?;
    let models = [
        ("actor", cfg.actor.as_path()),
        ("critic", cfg.critic.as_path()),
    ];
    super::models::check_tokens(&cfg.rollouts, &rollouts, &models)?;
    let iteration = iteration_of(&cfg.rollouts, &rollouts)?;
    let starts = starts_by_rollout(&cfg.rollouts, &rollouts, &cfg.segments)?;
    let outputs = credit_assignment(&cfg.rl, &cfg.rollouts, &rollouts, &cfg.segments, &starts)?;
    let trainable: Vec<usize> = (0..rollouts.len())
        .filter(|&i| !rollouts[i].response_tokens.is_empty())
        .collect();
    if trainable.is_empty() {
        bail!(
            "{}: all {} responses are empty; there is nothing to train on",
            cfg.rollouts.display(),
            rollouts.len()
        );
    }
    let batches = mini_batches(
        &trainable,
        cfg.mini_batch,
        cfg.ppo_epochs,
        cfg.seed,
        iteration,
    );
    let secs_advantages = t0.elapsed().as_secs_f64();
    // A failed step leaves every input as it was and writes nothing.
    let stopped = |dir: &Path, e: anyhow::Error| {
        anyhow!(
            "{}: {} — iteration {iteration} stopped; nothing was written, {} and {} are intact",
            dir.display(),
            marlhf_cli::one_line(&e),
            cfg.actor.display(),
            cfg.critic.display()
        )
    };
    let adamw = |lr: f64| AdamWConfig {
        lr,
        weight_decay: cfg.weight_decay,
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
    let actor = Checkpoint::load(&cfg.actor, &cfg.device)?;
    let (mut opt, actor_continued) =
        load_optimizer(&cfg.actor, ACTOR_STAGE, adamw(cfg.actor_lr), &cfg.device)?;
    let actor_tally = train(
        Role::Actor,
        &actor.model,
        &mut opt,
        cfg.actor_lr,
        cfg,
        &batches,
        &rollouts,
        &outputs,
    )
    .map_err(|e| stopped(&cfg.actor, e))?;
    let actor_steps = opt.step;
    files.stage(&cfg.out_actor, |tmp| {
        save_with_state(tmp, &cfg.actor, &actor.model, &opt, ACTOR_STAGE, cfg.seed)
    })?;
    drop(actor);
    let secs_actor = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let critic = Checkpoint::load(&cfg.critic, &cfg.device)?;
    if critic.model.v_head.is_none() {
        bail!(
            "{}: the critic has no value head (v_head.weight); start it from the reward model",
            cfg.critic.display()
        );
    }
    let (mut opt, critic_continued) =
        load_optimizer(&cfg.critic, CRITIC_STAGE, adamw(cfg.critic_lr), &cfg.device)?;
    let critic_tally = train(
        Role::Critic,
        &critic.model,
        &mut opt,
        cfg.critic_lr,
        cfg,
        &batches,
        &rollouts,
        &outputs,
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

    let n = rollouts.len() as f64;
    let tokens: usize = rollouts.iter().map(|r| r.response_tokens.len()).sum();
    let all_values: Vec<f32> = rollouts.iter().flat_map(|r| r.values.clone()).collect();
    let all_returns: Vec<f32> = outputs.iter().flat_map(|o| o.returns.clone()).collect();
    let unfinished = rollouts.iter().filter(|r| !r.finished).count();
    let mut values: Vec<(String, f64)> = vec![
        ("rollouts".into(), n),
        (
            "score_mean".into(),
            mean(rollouts.iter().map(|r| r.score as f64)),
        ),
        (
            "reward_mean".into(),
            mean(
                outputs
                    .iter()
                    .map(|o| o.rewards.iter().map(|&x| x as f64).sum()),
            ),
        ),
        (
            "kl_mean".into(),
            mean(rollouts.iter().map(|r| {
                r.logprobs
                    .iter()
                    .zip(&r.ref_logprobs)
                    .map(|(&a, &b)| (a - b) as f64)
                    .sum()
            })),
        ),
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
            (rollouts.len() - trainable.len()) as f64,
        ),
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
        ("actor_loss".into(), actor_tally.mean(actor_tally.loss)),
        ("critic_loss".into(), critic_tally.mean(critic_tally.loss)),
        (
            "actor_clip_fraction".into(),
            actor_tally.mean(actor_tally.clip_fraction),
        ),
        (
            "critic_clip_fraction".into(),
            critic_tally.mean(critic_tally.clip_fraction),
        ),
        ("approx_kl".into(), actor_tally.mean(actor_tally.approx_kl)),
        (
            "entropy".into(),
            actor_tally.entropy_sum / actor_tally.entropy_tokens.max(1) as f64,
        ),
    ];
    if let Some(ev) = explained_variance_flat(&all_values, &all_returns)? {
        values.push(("explained_variance".into(), ev as f64));
    }
    values.extend([
        (
            "actor_grad_norm".to_string(),
            actor_tally.mean(actor_tally.grad_norm),
        ),
        (
            "critic_grad_norm".to_string(),
            critic_tally.mean(critic_tally.grad_norm),
        ),
        ("actor_lr".to_string(), cfg.actor_lr),
        ("critic_lr".to_string(), cfg.critic_lr),
        ("optimizer_steps".to_string(), actor_tally.steps as f64),
        ("advantages_seconds".to_string(), secs_advantages),
        ("actor_seconds".to_string(), secs_actor),
        ("critic_seconds".to_string(), secs_critic),
    ]);

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
        actor_optimizer_continued: actor_continued,
        critic_optimizer_continued: critic_continued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
