//! The trainer loop SFT and the reward model share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use marlhf_data::{atomic, read_metrics, write_metrics, MetricsRow};
use marlhf_model::adamw::{cosine_lr, AdamW, AdamWConfig, GradAccumulator};
use marlhf_model::checkpoint::{latest_partial, save_model, PARTIAL_PREFIX, TRAINER_STATE};
use marlhf_model::Model;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use marlhf_data::seed::mix_seed;

pub const STATE_JSON: &str = TRAINER_STATE;
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
    /// Pause after this many steps, saving a checkpoint of the unfinished
    /// run to continue later with `resume`; the schedule still spans the
    /// whole run.
    pub stop_after: Option<u64>,
    /// Resume even when the settings differ from the saved run's; each
    /// difference is printed and recorded in the trainer state.
    pub override_settings: bool,
}

/// The settings that decide what a run computes — data, limits, schedule,
/// seed — as `name → value` (f64 values in Rust's shortest round-trip
/// form). Not among them: how a run is carried out (`--save-every`,
/// `--eval-every`, `--stop-after`, the device, the output path). A resume
/// must find the same settings it was saved with.
pub type Settings = BTreeMap<String, String>;

/// What `trainer_state.json` records beside a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub stage: String,
    pub step: u64,
    pub total_steps: u64,
    pub seed: u64,
    pub optimizer: AdamWConfig,
    pub finished: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: Settings,
    /// Settings changed on a resume with `override_settings`, as
    /// "at step N: name new (saved old)".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
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
    /// Steps of the whole run (`steps` is less when it paused).
    pub total_steps: u64,
    pub resumed_from: Option<u64>,
    /// Where the checkpoint of a paused (`stop_after`) run went.
    pub paused_in: Option<PathBuf>,
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

/// Saves a finished run into `out` (replacing the directory, and with it
/// the checkpoints saved on the way), or an unfinished one into
/// `out/checkpoint-<step>` (removing older ones). Returns where it went.
fn save_checkpoint(
    cfg: &TrainConfig,
    model: &Model,
    tokenizer_json: &Path,
    opt: &AdamW,
    state: &TrainerState,
    metrics: &[MetricsRow],
) -> Result<PathBuf> {
    let dir = if state.finished {
        cfg.out.clone()
    } else {
        cfg.out.join(format!("{PARTIAL_PREFIX}{}", state.step))
    };
    // A partial checkpoint goes inside `out`, which the write creates; a
    // failed first save (a full disk) must not leave it behind empty.
    let made_out = !state.finished && !cfg.out.exists();
    let written = atomic::write_dir(&dir, |tmp: &Path| -> Result<()> {
        save_model(tmp, model, tokenizer_json)?;
        opt.save(&tmp.join(STATE_TENSORS))?;
        std::fs::write(
            tmp.join(STATE_JSON),
            serde_json::to_string_pretty(state)? + "\n",
        )?;
        write_metrics(&tmp.join(METRICS), metrics)?;
        Ok(())
    });
    if written.is_err() && made_out {
        let _ = std::fs::remove_dir(&cfg.out);
    }
    written?;
    if !state.finished {
        while let Some((step, old)) = latest_partial_before(&cfg.out, state.step)? {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("{}: cannot remove (step {step})", old.display()))?;
        }
    }
    Ok(dir)
}

/// A `checkpoint-<step>` in `out` other than the one of `keep`.
fn latest_partial_before(out: &Path, keep: u64) -> Result<Option<(u64, PathBuf)>> {
    let entries =
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix(PARTIAL_PREFIX)
            .and_then(|s| s.parse::<u64>().ok())
        {
            if step != keep && entry.path().is_dir() {
                return Ok(Some((step, entry.path())));
            }
        }
    }
    Ok(None)
}

/// The checkpoint a resume continues from: the latest `checkpoint-<step>`,
/// else `out` itself when its state is there (a finished run, or an
/// unfinished one saved by an older marlhf).
fn resume_point(out: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    if let Some((_, dir)) = latest_partial(out)? {
        if let Some(st) = read_state(&dir)? {
            return Ok(Some((dir, st)));
        }
    }
    Ok(read_state(out)?.map(|st| (out.to_path_buf(), st)))
}

/// The settings of the loop itself, added to the stage's own.
fn loop_settings(cfg: &TrainConfig) -> Settings {
    let f = |v: f64| format!("{v:?}");
    [
        ("stage", cfg.stage.clone()),
        ("lr", f(cfg.lr)),
        ("warmup_ratio", f(cfg.warmup_ratio)),
        ("min_lr_ratio", f(cfg.min_lr_ratio)),
        ("weight_decay", f(cfg.weight_decay)),
        ("max_grad_norm", f(cfg.max_grad_norm)),
        ("batch_size", cfg.batch_size.to_string()),
        ("grad_accum", cfg.grad_accum.to_string()),
        ("epochs", f(cfg.epochs)),
        (
            "max_steps",
            cfg.max_steps.map_or("none".to_string(), |m| m.to_string()),
        ),
        ("seed", cfg.seed.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `name new (saved old)` for every setting that differs.
fn changed_settings(saved: &Settings, now: &Settings) -> Vec<String> {
    let missing = "(not recorded)".to_string();
    let mut names: Vec<&String> = saved.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|k| saved.get(*k) != now.get(*k))
        .map(|k| {
            format!(
                "{k} {} (saved {})",
                now.get(k).unwrap_or(&missing),
                saved.get(k).unwrap_or(&missing)
            )
        })
        .collect()
}

/// The settings an SFT or RM run records beside every checkpoint, so a
/// resume on other data, another model or other limits is refused: a hash
/// of the encoded examples (`data`, train then validation), the split, the
/// model's shape and the limits the examples were cut to.
pub fn run_settings<'a>(
    data: impl IntoIterator<Item = &'a [u32]>,
    val_examples: usize,
    model: &Model,
    max_prompt_tokens: usize,
    max_completion_tokens: usize,
    val_fraction: f64,
    limit: Option<usize>,
) -> Settings {
    Settings::from([
        ("data".to_string(), fingerprint(data)),
        ("val_examples".to_string(), val_examples.to_string()),
        ("model".to_string(), describe_model(model)),
        (
            "max_prompt_tokens".to_string(),
            max_prompt_tokens.to_string(),
        ),
        (
            "max_completion_tokens".to_string(),
            max_completion_tokens.to_string(),
        ),
        ("val_fraction".to_string(), format!("{val_fraction:?}")),
        ("limit".to_string(), format!("{limit:?}")),
    ])
}

/// The model's shape, for the settings (its weights are in the checkpoint).
fn describe_model(model: &Model) -> String {
    let c = &model.config;
    format!(
        "{} vocab {} hidden {} layers {} heads {} mlp {} positions {}",
        c.model_type,
        c.vocab_size,
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.max_position_embeddings
    )
}

/// A hash of a stage's encoded data (FNV-1a over its parts), recorded as a
/// setting so a resume on other data is refused.
fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u32]>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for part in parts {
        eat(part.len() as u64);
        for &t in part {
            eat(u64::from(t));
        }
    }
    format!("{h:016x}")
}

/// A run picked up from its latest checkpoint: the model already holds its
/// weights.
struct Resumed {
    dir: PathBuf,
    step: u64,
    opt: AdamW,
    metrics: Vec<MetricsRow>,
    overrides: Vec<String>,
}

/// With `--resume`, loads the run saved in `cfg.out` into `model` after
/// checking that it can go on with these settings; without, notes an
/// unfinished run that is about to be started over.
fn resume(
    cfg: &TrainConfig,
    model: &Model,
    optimizer: &AdamWConfig,
    settings: &Settings,
    total: u64,
    progress: &dyn Progress,
) -> Result<Option<Resumed>> {
    match (cfg.resume, resume_point(&cfg.out)?) {
        (true, Some((dir, st))) => {
            if st.finished {
                bail!(
                    "{}: this run already finished; remove it to train again",
                    dir.display()
                );
            }
            if st.step > total {
                bail!(
                    "{}: cannot resume: step {} is already done, beyond {}",
                    dir.display(),
                    st.step,
                    match cfg.max_steps {
                        Some(m) => format!("--max-steps {m}"),
                        None => format!("the {total} steps of these settings"),
                    }
                );
            }
            let changed = changed_settings(&st.settings, settings);
            if !changed.is_empty() {
                if !cfg.override_settings {
                    bail!(
                        "{}: cannot resume with other settings than the run was saved with: {}; rerun with the saved settings, or pass --override-settings to continue with these (recorded in {STATE_JSON})",
                        dir.display(),
                        changed.join(", ")
                    );
                }
                for c in &changed {
                    progress.note(&format!(
                        "{}: resuming at step {} with a changed setting: {c}",
                        cfg.stage, st.step
                    ));
                }
            }
            let mut overrides = st.overrides.clone();
            overrides.extend(changed.iter().map(|c| format!("at step {}: {c}", st.step)));
            let dev = model.device();
            let saved = match &model.adapter {
                Some(_) => {
                    marlhf_model::lora::Adapter::load(
                        &dir,
                        &model.config,
                        dev,
                        candle_core::DType::F32,
                    )?
                    .params
                }
                None => {
                    marlhf_model::Params::load(&dir.join(marlhf_model::checkpoint::WEIGHTS), dev)?
                }
            };
            for (name, var) in &model.trainable() {
                var.set(&saved.get(name)?)?;
            }
            let opt = AdamW::load(optimizer.clone(), st.step, &dir.join(STATE_TENSORS), dev)?;
            let metrics = read_metrics(&dir.join(METRICS))?;
            progress.note(&format!(
                "{}: resuming at step {} of {total} from {}",
                cfg.stage,
                st.step,
                dir.display()
            ));
            Ok(Some(Resumed {
                dir,
                step: st.step,
                opt,
                metrics,
                overrides,
            }))
        }
        (false, Some((dir, st))) if !st.finished => {
            progress.note(&format!(
                "{}: {} holds an unfinished run (step {}); starting over (--resume continues it)",
                cfg.stage,
                dir.display(),
                st.step
            ));
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// The micro-batches of optimiser step `step`, located in the
/// deterministic stream of epochs so a resumed run sees exactly the same
/// data. `cache` keeps the current epoch's batches.
fn step_micro_batches<O: Objective>(
    obj: &O,
    items: &[O::Item],
    cfg: &TrainConfig,
    per_epoch: u64,
    step: u64,
    cache: &mut Option<(u64, Vec<Vec<usize>>)>,
) -> Vec<Vec<usize>> {
    let mut micro = Vec::with_capacity(cfg.grad_accum);
    for k in 0..cfg.grad_accum as u64 {
        let global = step * cfg.grad_accum as u64 + k;
        let n_micro = per_epoch * cfg.grad_accum as u64;
        let (epoch, at) = (global / n_micro, (global % n_micro) as usize);
        if cache.as_ref().map(|(e, _)| *e) != Some(epoch) {
            *cache = Some((
                epoch,
                epoch_batches(obj, items, cfg.batch_size, cfg.seed, epoch),
            ));
        }
        micro.push(cache.as_ref().unwrap().1[at].clone());
    }
    micro
}

/// Trains `model`; `settings` are the stage's own settings (see
/// [`Settings`]), recorded with the loop's in every checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn fit<O: Objective>(
    model: &Model,
    tokenizer_json: &Path,
    items: &[O::Item],
    val: &[O::Item],
    obj: &O,
    cfg: &TrainConfig,
    settings: Settings,
    progress: &dyn Progress,
) -> Result<TrainOutcome> {
    if items.len() < cfg.batch_size {
        bail!(
            "{}: {} training examples, fewer than one batch of {}",
            cfg.stage,
            items.len(),
            cfg.batch_size
        );
    }
    // Find out now, not after training, that the result cannot be written.
    atomic::check_writable(&cfg.out)?;
    let mut settings = settings;
    settings.extend(loop_settings(cfg));
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
    let vars = model.trainable();
    let resumed = resume(cfg, model, &optimizer, &settings, total, progress)?;
    let resumed_from = resumed.as_ref().map(|r| r.step);
    let (mut opt, mut metrics, start, overrides, mut last_saved) = match resumed {
        Some(r) => (r.opt, r.metrics, r.step, r.overrides, Some(r.dir)),
        None => (
            AdamW::new(optimizer.clone()),
            Vec::new(),
            0,
            Vec::new(),
            None,
        ),
    };
    // Why training stopped, as the context of its cause (so the cause's
    // chain is printed once, without the echoes `{:#}` would repeat).
    let stopped = |what: String, cause: Option<anyhow::Error>, last_saved: &Option<PathBuf>| {
        let line = format!(
            "{}: {what} — stopped; {}",
            cfg.stage,
            match last_saved {
                Some(dir) => format!("the last saved checkpoint, {}, is intact", dir.display()),
                None => format!("nothing was saved in {}", cfg.out.display()),
            }
        );
        match cause {
            Some(e) => e.context(line),
            None => anyhow::anyhow!(line),
        }
    };
    let state_at = |step: u64| TrainerState {
        stage: cfg.stage.clone(),
        step,
        total_steps: total,
        seed: cfg.seed,
        optimizer: optimizer.clone(),
        finished: step == total,
        settings: settings.clone(),
        overrides: overrides.clone(),
    };
    let mut paused_in = None;
    let bar = progress.bar(total, &cfg.stage);
    bar.set_position(start);
    let mut epoch_cache: Option<(u64, Vec<Vec<usize>>)> = None;
    let mut last = Vec::new();
    let started = Instant::now();
    let mut units_done = 0usize;
    for step in start..total {
        if cfg.stop_after == Some(step) {
            // A pause always leaves a checkpoint to resume from.
            let dir = match &last_saved {
                Some(dir) if saved_at(dir) == Some(step) => dir.clone(),
                _ => save_checkpoint(cfg, model, tokenizer_json, &opt, &state_at(step), &metrics)
                    .map_err(|e| stopped(format!("step {step}"), Some(e), &last_saved))?,
            };
            paused_in = Some(dir);
            break;
        }
        let t0 = Instant::now();
        let micro = step_micro_batches(obj, items, cfg, per_epoch, step, &mut epoch_cache);
        let units: usize = micro.iter().flatten().map(|&i| obj.units(&items[i])).sum();
        if units == 0 {
            bail!("{}: step {step} has no training units", cfg.stage);
        }
        let mut grads = GradAccumulator::new();
        let mut loss_total = 0f64;
        let mut stats: Vec<(String, f64)> = Vec::new();
        // LoRA dropout (if any) draws from the step, so a resumed run
        // draws the same masks.
        model.set_dropout(Some(mix_seed(cfg.seed, &[0x10a_d409, step])));
        for mb in &micro {
            let batch: Vec<&O::Item> = mb.iter().map(|&i| &items[i]).collect();
            let (loss_sum, s) = obj.loss_sum(model, &batch)?;
            let scaled = (loss_sum / units as f64)?;
            let l = scaled
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            if !l.is_finite() {
                return Err(stopped(
                    format!("loss is {l} at step {}", step + 1),
                    None,
                    &last_saved,
                ));
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
        model.set_dropout(None);
        let store = grads.into_store(&vars)?;
        let lr = cosine_lr(cfg.lr, step, warmup, total, cfg.min_lr_ratio);
        let st = opt
            .step(&vars, &store, lr, cfg.max_grad_norm)
            .map_err(|e| stopped(format!("step {}", step + 1), Some(e), &last_saved))?;
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
            let dir = save_checkpoint(
                cfg,
                model,
                tokenizer_json,
                &opt,
                &state_at(step + 1),
                &metrics,
            )
            .map_err(|e| stopped(format!("step {}", step + 1), Some(e), &last_saved))?;
            last_saved = Some(dir);
        }
    }
    bar.finish();
    let eval: Vec<(String, f64)> = last
        .iter()
        .filter(|(k, _)| k.starts_with("val_"))
        .cloned()
        .collect();
    Ok(TrainOutcome {
        steps: metrics.last().map(|m| m.step).unwrap_or(0),
        total_steps: total,
        resumed_from,
        paused_in,
        last,
        eval,
        units_per_second: units_done as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}

/// The step of the checkpoint saved in `dir`, from its trainer state.
fn saved_at(dir: &Path) -> Option<u64> {
    read_state(dir).ok().flatten().map(|st| st.step)
}
