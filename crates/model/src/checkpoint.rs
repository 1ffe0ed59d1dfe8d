//! Checkpoints in the Hugging Face layout: `config.json`,
//! `model.safetensors` (plus `v_head.weight` for reward models and critics)
//! and `tokenizer.json`, so real pretrained models load from a local folder
//! and what marlhf trains loads elsewhere. Sharded checkpoints
//! (`model.safetensors.index.json` naming the shard of every tensor) load
//! too; saving always writes one `model.safetensors`.
//!
//! A training run writes its finished checkpoint into its output directory
//! only when it ends; checkpoints it saves on the way (`--save-every`,
//! `--stop-after`) go to `checkpoint-<step>/` inside it, as the Hugging Face
//! Trainer does, so the output's `model.safetensors` (what `make` and every
//! stage look for) never belongs to an unfinished run. Loading refuses an
//! unfinished run's checkpoint unless told otherwise ([`Partial`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::config::ModelConfig;
use crate::lm::Model;
use crate::lora::{self, Adapter, LoraSettings};
use crate::params::Params;
use crate::tokenizer::Tokenizer;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
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
struct RunProgress {
    pub step: u64,
    pub total_steps: u64,
    pub finished: bool,
}

/// The progress recorded beside `dir`; `None` for a checkpoint without
/// marlhf's trainer state (a downloaded model, a Hugging Face Trainer one).
fn run_progress(dir: &Path) -> Result<Option<RunProgress>> {
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
        (Some(serde_json::Value::Bool(finished)), Some(step)) => Some(RunProgress {
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
    if !dir.join(WEIGHTS).is_file()
        && !dir.join(WEIGHTS_INDEX).is_file()
        && !dir.join(lora::ADAPTER_WEIGHTS).is_file()
    {
        if let Some((step, latest)) = latest_partial(dir)? {
            let of = run_progress(&latest)?
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
        if let Some(p) = run_progress(dir)? {
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

/// Files of a Hugging Face checkpoint that travel with the tokenizer:
/// copied when present, so transformers finds the same tokenizer and
/// generation settings in what marlhf saves.
pub const SIDECARS: [&str; 3] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// What a model is loaded for, which decides the dtype its weights are
/// kept in: a model being trained keeps f32 master weights whatever dtype
/// it computes in (bf16 updates of size lr·1e-5 would round away); a frozen
/// one is stored in its compute dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    Training,
    Inference,
}

impl Use {
    pub fn storage(self, compute: DType) -> DType {
        match (self, compute) {
            (Use::Training, DType::F64) => DType::F64,
            (Use::Training, _) => DType::F32,
            (Use::Inference, d) => d,
        }
    }
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
}

impl Checkpoint {
    /// Loads for training in f32 on `device`: a finished run's checkpoint
    /// (or, with `--allow-partial` set by [`set_allow_partial`], any).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Checkpoint::load_with(dir, device, DType::F32, Use::Training)
    }

    /// Loads computing in `dtype` on `device`, the weights kept in the
    /// dtype `usage` asks for; unfinished runs as the process decides
    /// ([`set_allow_partial`]).
    pub fn load_with(dir: &Path, device: &Device, dtype: DType, usage: Use) -> Result<Self> {
        Checkpoint::load_with_partial(dir, device, dtype, usage, partial_policy())
    }

    /// [`Checkpoint::load_with`] with an explicit answer for checkpoints of
    /// unfinished runs.
    pub fn load_with_partial(
        dir: &Path,
        device: &Device,
        dtype: DType,
        usage: Use,
        partial: Partial,
    ) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: checkpoint directory not found", dir.display());
        }
        check_finished(dir, partial)?;
        if lora::is_adapter(dir) {
            return Checkpoint::load_adapter(dir, device, dtype, usage, partial);
        }
        let config = ModelConfig::load(&dir.join(CONFIG))?;
        check_special_ids(&dir.join(CONFIG), &config)?;
        let params = load_weights(dir, &config, device, usage.storage(dtype))?;
        let model = Model::with_dtype(config, params, dtype)
            .with_context(|| format!("{}", dir.display()))?;
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

    /// A base + adapter directory: for inference, the base in the compute
    /// dtype with the adapter applied unmerged (PEFT's forward); for
    /// (full) training, the adapter merged into f32 weights.
    fn load_adapter(
        dir: &Path,
        device: &Device,
        dtype: DType,
        usage: Use,
        partial: Partial,
    ) -> Result<Self> {
        let (base, config) = adapter_base(dir, partial)?;
        let storage = usage.storage(dtype);
        let params = load_weights(&base, &config, device, storage)?;
        let adapter = Adapter::load(dir, &config, device, storage)?;
        let model = match usage {
            Use::Inference => Model::with_adapter(config, params, dtype, Some(adapter)),
            Use::Training => {
                let merged = adapter.merged(&config, &params)?;
                Model::with_dtype(config, merged, dtype)
            }
        }
        .with_context(|| format!("{}", dir.display()))?;
        Checkpoint::finish(dir, model)
    }

    /// The tokenizer beside `model` (checked against it) makes the
    /// checkpoint.
    fn finish(dir: &Path, model: Model) -> Result<Self> {
        let tok_dir = tokenizer_dir(dir)?;
        let tokenizer = load_tokenizer(&tok_dir, &model.config)?;
        check_vocabularies(
            &tok_dir.join(TOKENIZER),
            tokenizer.vocab_size(),
            model.config.vocab_size,
        )?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
        })
    }

    /// Loads `dir` to train a LoRA adapter as `settings` say, computing in
    /// `dtype`: the base frozen in `dtype`, the adapter in f32. A full
    /// checkpoint gets a fresh adapter (seeded by `seed`); an adapter with
    /// the same rank, alpha, rsLoRA and targets is trained on (its dropout
    /// becomes `settings`'); another adapter is refused, since a new
    /// adapter needs a full base to sit on.
    pub fn load_lora(
        dir: &Path,
        device: &Device,
        dtype: DType,
        settings: &LoraSettings,
        seed: u64,
    ) -> Result<Self> {
        settings.check()?;
        if !dir.is_dir() {
            bail!("{}: checkpoint directory not found", dir.display());
        }
        let partial = partial_policy();
        check_finished(dir, partial)?;
        let storage = Use::Inference.storage(dtype);
        let (base, config, adapter) = if lora::is_adapter(dir) {
            let (base, config) = adapter_base(dir, partial)?;
            let mut adapter = Adapter::load(dir, &config, device, DType::F32)?;
            if !settings.same_adapter(&adapter.config) {
                bail!(
                    "{}: an adapter of r {} alpha {} on {} (rsLoRA {}); it cannot continue as {}: write the merged model with `marlhf-import merge` and start the new adapter from it",
                    dir.display(),
                    adapter.config.r,
                    adapter.config.alpha,
                    adapter
                        .config
                        .targets
                        .iter()
                        .map(|t| t.peft_name())
                        .collect::<Vec<_>>()
                        .join(","),
                    adapter.config.rslora,
                    settings.describe()
                );
            }
            adapter.config.dropout = settings.dropout;
            (base, config, adapter)
        } else {
            let config = ModelConfig::load(&dir.join(CONFIG))?;
            check_special_ids(&dir.join(CONFIG), &config)?;
            let adapter = Adapter::new(settings, &config, dir.to_path_buf(), seed, device)?;
            (dir.to_path_buf(), config, adapter)
        };
        let params = load_weights(&base, &config, device, storage)?;
        let model = Model::with_adapter(config, params, dtype, Some(adapter))
            .with_context(|| format!("{}", dir.display()))?;
        Checkpoint::finish(dir, model)
    }

    /// Saves into `dir` (an existing, empty directory — callers write to a
    /// temporary directory and rename it into place).
    pub fn save_into(&self, dir: &Path) -> Result<()> {
        save_model(dir, &self.model, &tokenizer_dir(&self.dir)?.join(TOKENIZER))
    }

    /// Swaps in the adapter of the checkpoint `dir` (or, for a full
    /// checkpoint, none) when `dir`'s base is the base this one holds:
    /// what makes PPO's reference free when it is the actor's base.
    /// Returns false, changing nothing, when the bases differ.
    pub fn switch_to(&mut self, dir: &Path) -> Result<bool> {
        let (base, adapter_dir) = split(dir)?;
        if canonical(&base)? != canonical(&self.base_dir()?)? {
            return Ok(false);
        }
        check_finished(dir, partial_policy())?;
        let adapter = match adapter_dir {
            Some(a) => Some(Adapter::load(
                &a,
                &self.model.config,
                self.model.device(),
                self.model.params.dtype()?,
            )?),
            None => None,
        };
        self.model.set_adapter(adapter)?;
        let tok_dir = tokenizer_dir(dir)?;
        self.tokenizer = load_tokenizer(&tok_dir, &self.model.config)?;
        self.dir = dir.to_path_buf();
        Ok(true)
    }

    /// The directory of the full weights this checkpoint holds.
    pub fn base_dir(&self) -> Result<PathBuf> {
        Ok(match &self.model.adapter {
            Some(a) => a.base.clone(),
            None => split(&self.dir)?.0,
        })
    }
}

fn canonical(dir: &Path) -> Result<PathBuf> {
    dir.canonicalize()
        .with_context(|| format!("{}: checkpoint directory not found", dir.display()))
}

/// (the full checkpoint, the adapter's directory if `dir` is an adapter).
pub fn split(dir: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if lora::is_adapter(dir) {
        let cfg = lora::AdapterConfig::load(&dir.join(lora::ADAPTER_CONFIG))?;
        Ok((lora::resolve_base(dir, &cfg)?, Some(dir.to_path_buf())))
    } else {
        Ok((dir.to_path_buf(), None))
    }
}

/// An adapter's base directory and model config, the base checked to be a
/// finished run's.
fn adapter_base(dir: &Path, partial: Partial) -> Result<(PathBuf, ModelConfig)> {
    let (base, _) = split(dir)?;
    check_finished(&base, partial)?;
    let config = ModelConfig::load(&base.join(CONFIG))?;
    check_special_ids(&base.join(CONFIG), &config)?;
    Ok((base, config))
}

/// The model config of a checkpoint, full or adapter (its base's),
/// without loading weights.
pub fn load_config(dir: &Path) -> Result<ModelConfig> {
    let (base, _) = split(dir)?;
    ModelConfig::load(&base.join(CONFIG))
}

/// Where a checkpoint's `tokenizer.json` is: beside its weights, or for an
/// adapter saved without one, beside its base's.
pub fn tokenizer_dir(dir: &Path) -> Result<PathBuf> {
    if dir.join(TOKENIZER).is_file() || !lora::is_adapter(dir) {
        return Ok(dir.to_path_buf());
    }
    Ok(split(dir)?.0)
}

/// Writes `model` into `dir`: the full checkpoint, or for a model with an
/// adapter the adapter alone (PEFT's files, the base named relative to
/// `dir`), with the tokenizer and its sidecars either way.
pub fn save_model(dir: &Path, model: &Model, tokenizer_json: &Path) -> Result<()> {
    match &model.adapter {
        None => save_into(dir, &model.config, &model.params, tokenizer_json),
        Some(adapter) => {
            adapter.save(dir)?;
            copy_tokenizer(dir, tokenizer_json)
        }
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

/// The weights of the checkpoint in `dir`: `model.safetensors`, or the
/// shards `model.safetensors.index.json` lists (each tensor checked to be
/// in the shard the index names), converted to `dtype`. Buffers that
/// transformers recomputes (`rotary_emb.inv_freq`) and an LM head that a
/// tied config replaces by the embeddings are dropped, as transformers
/// does.
pub fn load_weights(dir: &Path, cfg: &ModelConfig, dev: &Device, dtype: DType) -> Result<Params> {
    let params = Params::empty();
    let single = dir.join(WEIGHTS);
    let index = dir.join(WEIGHTS_INDEX);
    if single.is_file() {
        params.load_file(&single, dev, dtype)?;
    } else if index.is_file() {
        for (shard, names) in read_index(&index)? {
            let path = dir.join(&shard);
            if !path.is_file() {
                bail!(
                    "{}: shard {shard:?} listed in the index is missing",
                    index.display()
                );
            }
            let got: BTreeSet<String> = params.load_file(&path, dev, dtype)?.into_iter().collect();
            if let Some(n) = names.difference(&got).next() {
                bail!(
                    "{}: the index puts {n:?} in {shard:?}, which does not hold it",
                    index.display()
                );
            }
            if let Some(n) = got.difference(&names).next() {
                bail!(
                    "{}: {shard:?} holds {n:?}, which the index does not list there",
                    index.display()
                );
            }
        }
    } else if dir.join("pytorch_model.bin").is_file()
        || dir.join("pytorch_model.bin.index.json").is_file()
    {
        bail!(
            "{}: only PyTorch .bin weights; convert them to safetensors (transformers: save_pretrained(..., safe_serialization=True))",
            dir.display()
        );
    } else {
        bail!("{}: no {WEIGHTS} or {WEIGHTS_INDEX}", dir.display());
    }
    for (name, _) in params.vars() {
        if name.ends_with("rotary_emb.inv_freq") || (name == crate::names::LM_HEAD && cfg.tied()) {
            params.remove(&name)?;
        }
    }
    Ok(params)
}

/// Shard file → tensor names, from a `model.safetensors.index.json`.
fn read_index(path: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) else {
        bail!("{}: no \"weight_map\" object", path.display());
    };
    if map.is_empty() {
        bail!("{}: empty weight_map", path.display());
    }
    let mut shards: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, file) in map {
        let Some(file) = file.as_str() else {
            bail!(
                "{}: weight_map[{name:?}] is not a file name",
                path.display()
            );
        };
        // Shards sit beside the index; a path elsewhere is not a shard.
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            bail!(
                "{}: shard name {file:?} is not a file beside the index",
                path.display()
            );
        }
        shards
            .entry(file.to_string())
            .or_default()
            .insert(name.clone());
    }
    Ok(shards)
}

/// The name transformers gives a dtype in `config.json`.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "unknown",
    }
}

/// Writes config, weights (one file, in the dtype the parameters are kept
/// in, which the config's dtype key is updated to name) and a copy of the
/// tokenizer file and its sidecars into `dir`.
pub fn save_into(
    dir: &Path,
    cfg: &ModelConfig,
    params: &Params,
    tokenizer_json: &Path,
) -> Result<()> {
    let mut cfg = cfg.clone();
    cfg.set_saved_dtype(dtype_name(params.dtype()?));
    std::fs::write(dir.join(CONFIG), cfg.to_json()?)
        .with_context(|| format!("{}: cannot write", dir.display()))?;
    params.save(&dir.join(WEIGHTS))?;
    copy_tokenizer(dir, tokenizer_json)
}

/// Copies `tokenizer_json` and the sidecars beside it into `dir`.
fn copy_tokenizer(dir: &Path, tokenizer_json: &Path) -> Result<()> {
    std::fs::copy(tokenizer_json, dir.join(TOKENIZER))
        .with_context(|| format!("{}: cannot copy", tokenizer_json.display()))?;
    if let Some(from) = tokenizer_json.parent() {
        for name in SIDECARS {
            let src = from.join(name);
            if src.is_file() {
                std::fs::copy(&src, dir.join(name))
                    .with_context(|| format!("{}: cannot copy", src.display()))?;
            }
        }
    }
    Ok(())
}
