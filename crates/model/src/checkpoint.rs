//! Checkpoints in the Hugging Face layout: `config.json`,
//! `model.safetensors` (plus `v_head.weight` for reward models and critics)
//! and `tokenizer.json`, so real pretrained models load from a local folder
//! and what marlhf trains loads elsewhere. Sharded checkpoints
//! (`model.safetensors.index.json` naming the shard of every tensor) load
//! too; saving always writes one `model.safetensors`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::config::ModelConfig;
use crate::lm::Model;
use crate::params::Params;
use crate::tokenizer::Tokenizer;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";
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
    /// Loads for training in f32 on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Checkpoint::load_with(dir, device, DType::F32, Use::Training)
    }

    /// Loads computing in `dtype` on `device`, the weights kept in the
    /// dtype `usage` asks for.
    pub fn load_with(dir: &Path, device: &Device, dtype: DType, usage: Use) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: checkpoint directory not found", dir.display());
        }
        let config = ModelConfig::load(&dir.join(CONFIG))?;
        let params = load_weights(dir, &config, device, usage.storage(dtype))?;
        let model = Model::with_dtype(config, params, dtype)
            .with_context(|| format!("{}", dir.display()))?;
        let tokenizer = load_tokenizer(dir, &model.config)?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            bail!(
                "{}: tokenizer has {} tokens but the model's vocab_size is {}",
                dir.display(),
                tokenizer.vocab_size(),
                model.config.vocab_size
            );
        }
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

pub fn load_tokenizer(dir: &Path, cfg: &ModelConfig) -> Result<Tokenizer> {
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
        if name.ends_with("rotary_emb.inv_freq") || (name == "lm_head.weight" && cfg.tied()) {
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
