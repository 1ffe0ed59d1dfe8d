//! Loading the checkpoints a PPO stage reads one after another, so that only
//! one model sits in memory at a time and a directory named twice (the SFT
//! model as actor and reference at iteration 0) is loaded once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use candle_core::Device;
use marlhf_data::RolloutRow;
use marlhf_model::checkpoint::{Use, CONFIG};
use marlhf_model::{Checkpoint, ModelConfig};

pub struct Models {
    device: Device,
    dtype: DType,
    current: Option<(PathBuf, Checkpoint)>,
    /// How many times a model's weights were read from disk (a LoRA
    /// adapter swapped onto the base already held does not count).
    pub loads: usize,
}

impl Models {
    /// Models loaded frozen, computing in (and kept in) `dtype`.
    pub fn new(device: Device, dtype: DType) -> Self {
        Models {
            device,
            dtype,
            current: None,
            loads: 0,
        }
    }

    /// The checkpoint in `dir`, replacing the one held before unless it is
    /// the same directory. A LoRA adapter whose base is the model held
    /// (or that model's own base) is swapped onto it instead of loading the
    /// base again: with a LoRA actor, the reference is the actor's base
    /// with the adapter taken off, and costs nothing to load.
    pub fn get(&mut self, dir: &Path) -> Result<&Checkpoint> {
        let key = dir
            .canonicalize()
            .with_context(|| format!("{}: checkpoint directory not found", dir.display()))?;
        let same = self.current.as_ref().map(|(k, _)| k) == Some(&key);
        if !same {
            let swapped = match &mut self.current {
                Some((k, ck)) => {
                    let ok = ck.switch_to(dir)?;
                    if ok {
                        *k = key.clone();
                    }
                    ok
                }
                None => false,
            };
            if !swapped {
                // Free the old model before loading the next one.
                self.current = None;
                let ck = Checkpoint::load_with(dir, &self.device, self.dtype, Use::Inference)?;
                self.loads += 1;
                self.current = Some((key, ck));
            }
        }
        Ok(&self.current.as_ref().expect("just loaded").1)
    }
}

/// What every model of a PPO run must agree on to read the same token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocabulary {
    pub size: usize,
    pub eos: u32,
}

impl Vocabulary {
    pub fn of(ck: &Checkpoint) -> Self {
        Vocabulary {
            size: ck.tokenizer.vocab_size(),
            eos: ck.tokenizer.eos,
        }
    }

    /// Refuses a checkpoint whose tokenizer is not the actor's.
    pub fn check(&self, role: &str, ck: &Checkpoint) -> Result<()> {
        let other = Vocabulary::of(ck);
        if other != *self {
            bail!(
                "{}: the {role}'s tokenizer ({} tokens, EOS {}) is not the actor's ({} tokens, EOS {}); \
                 actor, reference, critic and reward model must share one tokenizer",
                ck.dir.display(),
                other.size,
                other.eos,
                self.size,
                self.eos
            );
        }
        Ok(())
    }
}

/// Refuses rollouts that a model of `models` (role, checkpoint directory)
/// cannot read: a token id beyond its vocabulary, or a prompt and response
/// longer than its positions. Reads only the configs, so it runs before any
/// model is loaded; the error names the file, the row and the column.
pub fn check_tokens(path: &Path, rows: &[RolloutRow], models: &[(&str, &Path)]) -> Result<()> {
    for (role, dir) in models {
        let config = marlhf_model::checkpoint::split(dir)?.0.join(CONFIG);
        let cfg = ModelConfig::load(&config)?;
        for (i, r) in rows.iter().enumerate() {
            for (column, tokens) in [
                ("prompt_tokens", &r.prompt_tokens),
                ("response_tokens", &r.response_tokens),
            ] {
                if let Some(t) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                    bail!(
                        "{}: row {}, column \"{column}\": token id {t} is not below the {role}'s vocab_size {} ({})",
                        path.display(),
                        i + 1,
                        cfg.vocab_size,
                        config.display()
                    );
                }
            }
            let len = r.prompt_tokens.len() + r.response_tokens.len();
            if len > cfg.max_position_embeddings {
                bail!(
                    "{}: row {}: prompt_tokens and response_tokens are {len} tokens, more than the {role}'s {} positions ({})",
                    path.display(),
                    i + 1,
                    cfg.max_position_embeddings,
                    config.display()
                );
            }
        }
    }
    Ok(())
}
