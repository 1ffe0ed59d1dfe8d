//! The training stages (SFT, reward model) as library code the thin
//! binaries call, and the loop they share: micro-batches, gradient
//! accumulation, the cosine schedule, metrics, atomic checkpoints with
//! optimiser state, exact resumption and the NaN guard.

pub mod args;
pub mod encode;
pub mod evaluate;
pub mod gold;
pub mod loop_;
pub mod ppo;
pub mod rm;
pub mod score;
pub mod sft;

pub use loop_::{TrainConfig, TrainOutcome};
