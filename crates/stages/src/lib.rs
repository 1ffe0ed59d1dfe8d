//! The pipeline's stages as library code the thin binaries call: SFT and
//! the reward model ([`sft`], [`rm`]) on the [`trainer`] loop they share
//! (micro-batches, gradient accumulation, the cosine schedule, metrics,
//! atomic checkpoints with optimiser state, exact resumption and the NaN
//! guard), the PPO stages ([`ppo`]: rollout, segment, update), the eval
//! stage ([`evaluate`]), scoring from the shell ([`score`]) and the stories
//! task's gold reward ([`gold`]).
//!
//! Nothing here writes to the terminal: long work reports through a
//! [`progress::Progress`] the caller passes (the binaries draw indicatif
//! bars; [`progress::Silent`] draws nothing).

#![forbid(unsafe_code)]

pub mod checks;
pub mod encode;
pub mod evaluate;
pub mod gold_scoring;
pub mod memory;
pub mod ppo;
pub mod progress;
pub mod rm;
pub mod sampling;
pub mod score;
pub mod sft;
pub mod trainer;

pub use trainer::{TrainConfig, TrainOutcome};
