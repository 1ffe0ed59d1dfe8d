//! The optimiser state a PPO model carries from one iteration to the next,
//! beside its checkpoint (`trainer_state.json` / `trainer_state.safetensors`,
//! the same files the SFT and RM stages write).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use marlhf_model::adamw::{AdamW, AdamWConfig};
use marlhf_model::checkpoint::{save_model, tokenizer_dir, Use, TOKENIZER};
use marlhf_model::lora::LoraSettings;
use marlhf_model::Checkpoint;
use marlhf_model::Model;

use crate::trainer::{read_state, TrainerState, STATE_JSON, STATE_TENSORS};

/// The `stage` names PPO writes into `trainer_state.json`.
pub const ACTOR_STAGE: &str = "ppo-actor";
pub const CRITIC_STAGE: &str = "ppo-critic";

/// The AdamW to continue in `dir`: the saved one when `dir` was written by
/// this same PPO role, else a fresh one. The SFT and RM checkpoints the
/// first iteration starts from carry their own stage's moments, which
/// belong to another objective and are not continued. Returns whether the
/// state was continued.
pub fn load_optimizer(
    dir: &Path,
    stage: &str,
    cfg: AdamWConfig,
    device: &Device,
) -> Result<(AdamW, bool)> {
    match read_state(dir)? {
        Some(st) if st.stage == stage => {
            let opt = AdamW::load(cfg, st.step, &dir.join(STATE_TENSORS), device)?;
            Ok((opt, true))
        }
        _ => Ok((AdamW::new(cfg), false)),
    }
}

/// Writes a checkpoint with its optimiser state into the (empty,
/// temporary) directory `out`; the tokenizer is copied from `from`.
pub fn save_with_state(
    out: &Path,
    from: &Path,
    model: &Model,
    opt: &AdamW,
    stage: &str,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    save_model(out, model, &tokenizer_dir(from)?.join(TOKENIZER))?;
    opt.save(&out.join(STATE_TENSORS))?;
    let state = TrainerState {
        stage: stage.to_string(),
        step: opt.step,
        total_steps: opt.step,
        seed,
        optimizer: opt.cfg.clone(),
        finished: true,
        settings: Default::default(),
        overrides: Vec::new(),
    };
    std::fs::write(
        out.join(STATE_JSON),
        serde_json::to_string_pretty(&state)? + "\n",
    )
    .with_context(|| format!("{}: cannot write {STATE_JSON}", out.display()))?;
    Ok(())
}

/// Loads a PPO model to train: every weight, or with `lora` a LoRA
/// adapter on its frozen base — a fresh one (seeded by `seed`) on a full
/// checkpoint such as the SFT model or the reward model, or the adapter of
/// the previous iteration, trained on. A critic gets a trainable value
/// head in its adapter, a copy of its base's.
pub fn load_for_training(
    dir: &Path,
    device: &Device,
    dtype: DType,
    lora: Option<&LoraSettings>,
    seed: u64,
) -> Result<Checkpoint> {
    match lora {
        Some(l) => Checkpoint::load_lora(dir, device, dtype, l, seed),
        None => Checkpoint::load_with(dir, device, dtype, Use::Training),
    }
}
