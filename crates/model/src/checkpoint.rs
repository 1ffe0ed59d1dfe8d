//! Checkpoints in the Hugging Face layout: `config.json`,
//! `model.safetensors` (plus `v_head.weight` for reward models and critics)
//! and `tokenizer.json`, so real pretrained models load from a local folder
//! and what marlhf trains loads elsewhere.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;

use crate::config::ModelConfig;
use crate::lm::Model;
use crate::params::Params;
use crate::tokenizer::Tokenizer;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER: &str = "tokenizer.json";

pub struct Checkpoint {
    pub dir: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
}

impl Checkpoint {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: checkpoint directory not found", dir.display());
        }
        let config = ModelConfig::load(&dir.join(CONFIG))?;
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
