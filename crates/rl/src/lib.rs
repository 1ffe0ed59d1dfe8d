//! MA-PPO's maths as plain functions over slices and tensors, testable
//! without a model (DESIGN.md, "The method in one page"):
//!
//! 1. [`segment`](mod@segment): split a response into macro actions with a termination
//!    condition (`fixed:N`, `randomized:N`, `ppl`, `parsing:N`);
//! 2. [`reward`]: per-token rewards, KL penalty plus the clipped score;
//! 3. [`aggregate`](mod@aggregate): one value and one reward per macro action with a value
//!    function (`equal`, `unit`, `position`);
//! 4. [`gae`](mod@gae): GAE over macro actions, expanded back to tokens;
//! 5. [`loss`]: the clipped PPO actor and critic losses on candle tensors.
//!
//! [`diagnostics`] measures the critic's fit and the advantages' slant
//! along the response, before an update.
//!
//! [`batch`] runs steps 1–4 for many responses of different lengths and pads
//! them for step 5.
//!
//! The reference is `ppo_trainer.py` of the MA-RLHF DeepSpeed-Chat fork;
//! each function says which of its functions it follows and where it
//! departs from it. The main departure: the reference segments one sequence
//! per batch, on the padded mask; here every response is handled on its own,
//! over its real tokens.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod batch;
pub mod diagnostics;
pub mod error;
pub mod gae;
pub mod loss;
pub mod reward;
pub mod segment;

pub use aggregate::{aggregate, expand, macro_rewards, MacroKl, ValueFunction};
pub use batch::{
    pad, process_batch, process_sequence, response_mask, RlConfig, SequenceInput, SequenceOutput,
};
pub use diagnostics::{credit_diagnostics, CreditDiagnostics, TokenFigures};
pub use error::RlError;
pub use gae::{
    gae, gae_over_durations, macro_advantages, whiten, MacroAdvantages, MacroCredit, MacroLambda,
};
pub use loss::{
    actor_loss, actor_loss_weighted, critic_loss, critic_loss_weighted, explained_variance,
    explained_variance_flat, ActorStats, CriticStats, LossAgg,
};
pub use reward::{token_rewards, KlEstimator};
pub use segment::{segment, validate_starts, SegmentInput, Termination};
