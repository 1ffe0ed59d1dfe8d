//! MA-PPO as three stages (DESIGN.md, "The method in one page"), each a
//! function the thin binaries call:
//!
//! - [`rollout`](rollout::rollout): sample responses with the actor, score
//!   every response token with the actor, the reference model and the
//!   critic, and every response with the reward model → `rollouts.parquet`;
//! - [`run_segment`](segmenting::run_segment): macro-action boundaries for
//!   every rollout with a termination condition → `segments.parquet`;
//! - [`update`](update::update): credit assignment over macro actions and
//!   the clipped PPO steps on actor and critic → the next checkpoints,
//!   `advantages.parquet` and a row of the metrics table.
//!
//! The maths lives in `marlhf-rl`; this module moves data between files,
//! models and those functions.

pub mod forward;
pub mod models;
pub mod rollout;
pub mod segmenting;
pub mod state;
pub mod update;

pub use rollout::{rollout, PromptOrder, RolloutConfig, RolloutReport};
pub use segmenting::{run_segment, SegmentConfig, SegmentReport};
pub use update::{update, PpoConfig, Recipe, Schedule, UpdateConfig, UpdateReport};
