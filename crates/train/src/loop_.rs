//! The training loop SFT and the reward model share.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use marlhf_data::{atomic, read_metrics, write_metrics, MetricsRow};
use marlhf_model::adamw::{cosine_lr, AdamW, AdamWConfig, GradAccumulator};
use marlhf_model::checkpoint::save_into;
use marlhf_model::Model;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub const STATE_JSON: &str = "trainer_state.json";
pub const STATE_TENSORS: &str = "trainer_state.safetensors";
pub const METRICS: &str = "metrics.parquet";

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub stage: String,
    pub out: PathBuf,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub epochs: f64,
    pub max_steps: Option<u64>,
    pub seed: u64,
    /// Save a checkpoint every N optimiser steps (0: only at the end).
    pub save_every: u64,
    /// Evaluate on the held-out split every N steps (0: only at the end).
    pub eval_every: u64,
    /// Continue from the checkpoint in `out` if it holds an unfinished run.
    pub resume: bool,
    /// Pause after this many steps (with `save_every`, to continue later
    /// with `resume`); the schedule still spans the whole run.
    pub stop_after: Option<u64>,
}

/// What `trainer_state.json` records beside a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub stage: String,
    pub step: u64,
    pub total_steps: u64,
    pub seed: u64,
    pub optimizer: AdamWConfig,
    pub finished: bool,
}

/// A stage's loss over items of its data.
pub trait Objective {
    type Item;
    /// Units the loss averages over (tokens for SFT, pairs for the RM).
    fn units(&self, item: &Self::Item) -> usize;
    /// Length used to bucket items of similar size into a micro-batch.
    fn length(&self, item: &Self::Item) -> usize;
    /// The loss SUMMED over the units of `batch`, and figures summed over
    /// units (reported as per-unit means).
    fn loss_sum(
        &self,
        model: &Model,
        batch: &[&Self::Item],
    ) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// Held-out figures (e.g. `val_loss`, `val_accuracy`).
    fn evaluate(&self, model: &Model, items: &[Self::Item]) -> Result<Vec<(String, f64)>>;
}

pub struct TrainOutcome {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub last: Vec<(String, f64)>,
    pub eval: Vec<(String, f64)>,
    pub units_per_second: f64,
}

/// Micro-batches of one epoch: shuffled, then sorted by length inside
/// windows of 32 micro-batches so padding stays small, then the batches
/// themselves shuffled.
fn epoch_batches<O: Objective>(
    obj: &O,
    items: &[O::Item],
    bs: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ (epoch.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.shuffle(&mut rng);
    let mut batches = Vec::new();
    for window in idx.chunks(bs * 32) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| obj.length(&items[i]));
        for b in w.chunks(bs) {
            if b.len() == bs {
                batches.push(b.to_vec());
            }
        }
    }
    batches.shuffle(&mut rng);
    batches
}

pub fn read_state(dir: &Path) -> Result<Option<TrainerState>> {
    let p = dir.join(STATE_JSON);
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p)?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("{}: invalid trainer state", p.display())
    })?))
}

fn save_checkpoint(
    cfg: &TrainConfig,
    model: &Model,
    tokenizer_json: &Path,
    opt: &AdamW,
    state: &TrainerState,
    metrics: &[MetricsRow],
) -> Result<()> {
    atomic::write_dir(&cfg.out, |tmp: &Path| -> Result<()> {
        save_into(tmp, &model.config, &model.params, tokenizer_json)?;
        opt.save(&tmp.join(STATE_TENSORS))?;
        std::fs::write(
            tmp.join(STATE_JSON),
            serde_json::to_string_pretty(state)? + "\n",
        )?;
        write_metrics(&tmp.join(METRICS), metrics)?;
        Ok(())
    })
}

pub fn train<O: Objective>(
    model: &Model,
    tokenizer_json: &Path,
    items: &[O::Item],
    val: &[O::Item],
    obj: &O,
    cfg: &TrainConfig,
) -> Result<TrainOutcome> {
    if items.len() < cfg.batch_size {
        bail!(
            "{}: {} training examples, fewer than one batch of {}",
            cfg.stage,
            items.len(),
            cfg.batch_size
        );
    }
    let per_epoch = (items.len() / cfg.batch_size / cfg.grad_accum).max(1) as u64;
    let total = cfg
        .max_steps
        .unwrap_or(((cfg.epochs * per_epoch as f64).ceil() as u64).max(1));
    let warmup = (cfg.warmup_ratio * total as f64).round() as u64;
    let optimizer = AdamWConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let vars = model.params.vars();
    let mut opt = AdamW::new(optimizer.clone());
    let mut metrics: Vec<MetricsRow> = Vec::new();
    let mut start = 0u64;
    let mut resumed_from = None;
    if cfg.resume {
        if let Some(st) = read_state(&cfg.out)? {
            if st.finished {
                bail!(
                    "{}: this run already finished; remove it to train again",
                    cfg.out.display()
                );
            }
            let dev = model.device();
            let saved =
                marlhf_model::Params::load(&cfg.out.join(marlhf_model::checkpoint::WEIGHTS), dev)?;
            for (name, var) in &vars {
                var.set(&saved.get(name)?)?;
            }
            opt = AdamW::load(
                optimizer.clone(),
                st.step,
                &cfg.out.join(STATE_TENSORS),
                dev,
            )?;
            metrics = read_metrics(&cfg.out.join(METRICS))?;
            start = st.step;
            resumed_from = Some(st.step);
            eprintln!("{}: resuming at step {start} of {total}", cfg.stage);
        }
    }
    let bar = marlhf_cli::bar(total, &cfg.stage);
    bar.set_position(start);
    let mut epoch_cache: Option<(u64, Vec<Vec<usize>>)> = None;
    let mut last = Vec::new();
    let started = Instant::now();
    let mut units_done = 0usize;
    for step in start..total {
        if cfg.stop_after == Some(step) {
            break;
        }
        let t0 = Instant::now();
        // The micro-batches of this step, located in the deterministic
        // stream of epochs so a resumed run sees exactly the same data.
        let mut micro = Vec::with_capacity(cfg.grad_accum);
        for k in 0..cfg.grad_accum as u64 {
            let global = step * cfg.grad_accum as u64 + k;
            let n_micro = per_epoch * cfg.grad_accum as u64;
            let (epoch, at) = (global / n_micro, (global % n_micro) as usize);
            if epoch_cache.as_ref().map(|(e, _)| *e) != Some(epoch) {
                epoch_cache = Some((
                    epoch,
                    epoch_batches(obj, items, cfg.batch_size, cfg.seed, epoch),
                ));
            }
            micro.push(epoch_cache.as_ref().unwrap().1[at].clone());
        }
        let units: usize = micro.iter().flatten().map(|&i| obj.units(&items[i])).sum();
        if units == 0 {
            bail!("{}: step {step} has no training units", cfg.stage);
        }
        let mut grads = GradAccumulator::new();
        let mut loss_total = 0f64;
        let mut stats: Vec<(String, f64)> = Vec::new();
        for mb in &micro {
            let batch: Vec<&O::Item> = mb.iter().map(|&i| &items[i]).collect();
            let (loss_sum, s) = obj.loss_sum(model, &batch)?;
            let scaled = (loss_sum / units as f64)?;
            let l = scaled
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            if !l.is_finite() {
                bail!(
                    "{}: loss is {l} at step {} — stopped; the last saved checkpoint in {} is intact",
                    cfg.stage,
                    step + 1,
                    cfg.out.display()
                );
            }
            loss_total += l;
            for (k, v) in s {
                match stats.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, acc)) => *acc += v,
                    None => stats.push((k, v)),
                }
            }
            grads.add(&vars, scaled.backward()?)?;
        }
        let store = grads.into_store(&vars)?;
        let lr = cosine_lr(cfg.lr, step, warmup, total, cfg.min_lr_ratio);
        let st = opt
            .step(&vars, &store, lr, cfg.max_grad_norm)
            .with_context(|| {
                format!(
                    "{}: step {} — stopped; the last saved checkpoint is intact",
                    cfg.stage,
                    step + 1
                )
            })?;
        units_done += units;
        let secs = t0.elapsed().as_secs_f64();
        let mut values = vec![
            ("loss".to_string(), loss_total),
            ("lr".to_string(), lr),
            ("grad_norm".to_string(), st.grad_norm),
            ("units".to_string(), units as f64),
            ("seconds".to_string(), secs),
            ("units_per_second".to_string(), units as f64 / secs),
        ];
        values.extend(stats.into_iter().map(|(k, v)| (k, v / units as f64)));
        let done = step + 1 == total;
        if (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0 || done) && !val.is_empty() {
            values.extend(obj.evaluate(model, val)?);
        }
        bar.set_message(format!("loss {loss_total:.4}"));
        bar.inc(1);
        last = values.clone();
        metrics.push(MetricsRow {
            step: step + 1,
            iteration: 0,
            values,
        });
        if done || (cfg.save_every > 0 && (step + 1) % cfg.save_every == 0) {
            let state = TrainerState {
                stage: cfg.stage.clone(),
                step: step + 1,
                total_steps: total,
                seed: cfg.seed,
                optimizer: optimizer.clone(),
                finished: done,
            };
            save_checkpoint(cfg, model, tokenizer_json, &opt, &state, &metrics)?;
        }
    }
    bar.finish_and_clear();
    let eval: Vec<(String, f64)> = last
        .iter()
        .filter(|(k, _)| k.starts_with("val_"))
        .cloned()
        .collect();
    Ok(TrainOutcome {
        steps: metrics.last().map(|m| m.step).unwrap_or(0),
        resumed_from,
        last,
        eval,
        units_per_second: units_done as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}
