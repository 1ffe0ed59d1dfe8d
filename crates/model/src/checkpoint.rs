//! Checkpoints in the Hugging Face layout: `config.json`,
//! `model.safetensors` (plus `v_head.weight` for reward models and critics)
//! and `tokenizer.json`, so real pretrained models load from a local folder
//! and what marlhf trains loads elsewhere.

//!
//! A training run writes its finished checkpoint into its output directory
//! only when it ends; checkpoints it saves on the way (`--save-every`,
//! `--stop-after`) go to `checkpoint-<step>/` inside it, as the Hugging Face
//! Trainer does, so the output's `model.safetensors` (what `make` and every
//! stage look for) never belongs to an unfinished run. Loading refuses an
//! unfinished run's checkpoint unless told otherwise ([`Partial`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use candle_core::Device;

use crate::config::ModelConfig;
use crate::lm::Model;
use crate::params::Params;
use crate::tokenizer::Tokenizer;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER: &str = "tokenizer.json";
/// The training state beside a checkpoint; its `step`, `total_steps` and
/// `finished` say whether the run that wrote it had ended.
pub const TRAINER_STATE: &str = "trainer_state.json";
/// Checkpoints of an unfinished run: `<out>/checkpoint-<step>/`.
pub const PARTIAL_PREFIX: &str = "checkpoint-";

/// Whether a checkpoint of an unfinished run may be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partial {
    Refuse,
    Allow,
}

static ALLOW_PARTIAL: AtomicBool = AtomicBool::new(false);

/// What [`Checkpoint::load`] does with an unfinished run's checkpoint in
/// this process: binaries set it once from `--allow-partial`.
pub fn set_allow_partial(allow: bool) {
    ALLOW_PARTIAL.store(allow, Ordering::SeqCst);
}

fn partial_policy() -> Partial {
    if ALLOW_PARTIAL.load(Ordering::SeqCst) {
        Partial::Allow
    } else {
        Partial::Refuse
    }
}

/// How far the run that wrote a checkpoint got, from its trainer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub step: u64,
    pub total_steps: u64,
    pub finished: bool,
}

/// The progress recorded beside `dir`; `None` for a checkpoint without
/// marlhf's trainer state (a downloaded model, a Hugging Face Trainer one).
pub fn progress(dir: &Path) -> Result<Option<Progress>> {
    let path = dir.join(TRAINER_STATE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let state: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let field = |k: &str| state.get(k);
    Ok(match (field("finished"), field("step")) {
        (Some(serde_json::Value::Bool(finished)), Some(step)) => Some(Progress {
            step: step.as_u64().unwrap_or(0),
            total_steps: field("total_steps").and_then(|t| t.as_u64()).unwrap_or(0),
            finished: *finished,
        }),
        _ => None,
    })
}

/// The latest `checkpoint-<step>/` of an unfinished run in `out`.
pub fn latest_partial(out: &Path) -> Result<Option<(u64, PathBuf)>> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(None);
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name
            .strip_prefix(PARTIAL_PREFIX)
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().is_dir() && best.as_ref().is_none_or(|(b, _)| step > *b) {
            best = Some((step, entry.path()));
        }
    }
    Ok(best)
}

/// Refuses `dir` when it is (or holds only) an unfinished run's checkpoint
/// and `partial` says so; the message says how to go on.
pub fn check_finished(dir: &Path, partial: Partial) -> Result<()> {
    if !dir.join(WEIGHTS).is_file() {
        if let Some((step, latest)) = latest_partial(dir)? {
            let of = progress(&latest)?
                .map(|p| format!(" of {}", p.total_steps))
                .unwrap_or_default();
            bail!(
                "{}: an unfinished run (stopped at step {step}{of}, no final {WEIGHTS}); finish it with --resume, or use its last checkpoint {} with --allow-partial",
                dir.display(),
                latest.display()
            );
        }
        return Ok(());
    }
    if partial == Partial::Refuse {
        if let Some(p) = progress(dir)? {
            if !p.finished {
                bail!(
                    "{}: checkpoint of an unfinished run (step {} of {}); finish the run with --resume, or pass --allow-partial to use it anyway",
                    dir.display(),
                    p.step,
                    p.total_steps
                );
            }
        }
    }
    Ok(())
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
}

impl Checkpoint {
    /// Loads a finished run's checkpoint (or, with `--allow-partial` set by
    /// [`set_allow_partial`], any).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, partial_policy())
    }

    pub fn load_with(dir: &Path, device: &Device, partial: Partial) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: checkpoint directory not found", dir.display());
        }
        check_finished(dir, partial)?;
        let config = ModelConfig::load(&dir.join(CONFIG))?;
        check_special_ids(&dir.join(CONFIG), &config)?;
        let weights = dir.join(WEIGHTS);
        if !weights.is_file() {
            bail!(
                "{}: missing (sharded checkpoints are not supported yet)",
                weights.display()
            );
        }
        let params = Params::load(&weights, device)?;
        let model = Model::new(config, params).with_context(|| format!("{}", dir.display()))?;
        let tokenizer = load_tokenizer(dir, &model.config)?;
        check_vocabularies(
            &dir.join(TOKENIZER),
            tokenizer.vocab_size(),
            model.config.vocab_size,
        )?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
        })
    }

    /// Saves into `dir` (an existing, empty directory — callers write to a
    /// temporary directory and rename it into place).
    pub fn save_into(&self, dir: &Path) -> Result<()> {
        save_into(
            dir,
            &self.model.config,
            &self.model.params,
            &self.dir.join(TOKENIZER),
        )
    }
}

/// Special token ids must name rows of the embedding.
fn check_special_ids(config_path: &Path, cfg: &ModelConfig) -> Result<()> {
    let ids = cfg
        .eos_ids()
        .into_iter()
        .map(|id| ("eos_token_id", id))
        .chain(cfg.bos_token_id.map(|id| ("bos_token_id", id)))
        .chain(cfg.pad_token_id.map(|id| ("pad_token_id", id)));
    for (name, id) in ids {
        if id as usize >= cfg.vocab_size {
            bail!(
                "{}: {name} {id} is not below vocab_size {}",
                config_path.display(),
                cfg.vocab_size
            );
        }
    }
    Ok(())
}

/// How many more embedding rows than tokenizer entries a model may have:
/// checkpoints pad the vocabulary to a round size (GPT-NeoX by 155 rows,
/// Qwen2.5 by 271, DeepSeek by about 2.4%), never by multiples of the
/// tokenizer: 5%, and at least 128 rows for small vocabularies.
fn vocab_slack(tokenizer_tokens: usize) -> usize {
    (tokenizer_tokens / 20).max(128)
}

/// The tokenizer must fit the model, and be this model's: one far smaller
/// than the embedding is another model's tokenizer.
fn check_vocabularies(tokenizer_path: &Path, tokens: usize, vocab_size: usize) -> Result<()> {
    if tokens > vocab_size {
        bail!(
            "{}: {tokens} tokens, more than the model's vocab_size {vocab_size}",
            tokenizer_path.display()
        );
    }
    if vocab_size > tokens + vocab_slack(tokens) {
        bail!(
            "{}: {tokens} tokens for a model with vocab_size {vocab_size}; a model's tokenizer covers its vocabulary up to a little padding, so this tokenizer is not the model's",
            tokenizer_path.display()
        );
    }
    Ok(())
}

/// A checkpoint's tokenizer with the special ids of its config (checked to
/// be in the vocabulary first).
pub fn load_tokenizer(dir: &Path, cfg: &ModelConfig) -> Result<Tokenizer> {
    check_special_ids(&dir.join(CONFIG), cfg)?;
    Tokenizer::load(
        &dir.join(TOKENIZER),
        cfg.bos_token_id,
        cfg.eos_ids().first().copied(),
        cfg.pad_token_id,
    )
}

/// Writes config, weights and a copy of the tokenizer file into `dir`.
pub fn save_into(
    dir: &Path,
    cfg: &ModelConfig,
    params: &Params,
    tokenizer_json: &Path,
) -> Result<()> {
    std::fs::write(dir.join(CONFIG), cfg.to_json()?)
        .with_context(|| format!("{}: cannot write", dir.display()))?;
    params.save(&dir.join(WEIGHTS))?;
    std::fs::copy(tokenizer_json, dir.join(TOKENIZER))
        .with_context(|| format!("{}: cannot copy", tokenizer_json.display()))?;
    Ok(())
}
