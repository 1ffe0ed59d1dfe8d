//! Loading the checkpoints a PPO stage reads one after another, so that only
//! one model sits in memory at a time and a directory named twice (the SFT
//! model as actor and reference at iteration 0) is loaded once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use candle_core::Device;
use marlhf_model::checkpoint::Use;
use marlhf_model::Checkpoint;

pub struct Models {
    device: Device,
    dtype: DType,
    current: Option<(PathBuf, Checkpoint)>,
}

impl Models {
    /// Models loaded frozen, computing in (and kept in) `dtype`.
    pub fn new(device: Device, dtype: DType) -> Self {
        Models {
            device,
            dtype,
            current: None,
        }
    }

    /// The checkpoint in `dir`, replacing the one held before unless it is
    /// the same directory.
    pub fn get(&mut self, dir: &Path) -> Result<&Checkpoint> {
        let key = dir
            .canonicalize()
            .with_context(|| format!("{}: checkpoint directory not found", dir.display()))?;
        if self.current.as_ref().map(|(k, _)| k) != Some(&key) {
            // Free the old model before loading the next one.
            self.current = None;
            let ck = Checkpoint::load_with(dir, &self.device, self.dtype, Use::Inference)?;
            self.current = Some((key, ck));
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
