//! MA-PPO as three stages (DESIGN.md, "The method in one page"), each a
//! function the thin binaries call:
//!
//! - [`rollout`](rollout::rollout): sample responses with the actor, score
//!   every response token with the actor, the reference model and the
//!   critic, and every response with the reward model → `rollouts.parquet`;
//! - [`run_segment`](segment::run_segment): macro-action boundaries for
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
pub mod segment;
pub mod state;
pub mod update;

#[doc(hidden)]
pub mod fixture;

pub use rollout::{rollout, RolloutConfig, RolloutReport};
pub use segment::{run_segment, SegmentConfig, SegmentReport};
pub use update::{update, PpoConfig, Recipe, UpdateConfig, UpdateReport};

/// One 64-bit seed from a run's seed and two indices (iteration, batch…),
/// through SplitMix64's finaliser so nearby inputs give unrelated seeds.
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    splitmix(splitmix(splitmix(seed) ^ a) ^ b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_seeds_differ_by_every_input() {
        let s = mix_seed(1, 2, 3);
        assert_eq!(s, mix_seed(1, 2, 3));
        assert_ne!(s, mix_seed(0, 2, 3));
        assert_ne!(s, mix_seed(1, 3, 3));
        assert_ne!(s, mix_seed(1, 2, 4));
        assert_ne!(mix_seed(1, 2, 3), mix_seed(1, 3, 2), "the order matters");
    }
}
