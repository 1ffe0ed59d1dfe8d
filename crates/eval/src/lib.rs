//! Model-free parts of marlhf's evaluation stage.
//!
//! - [`gold`]: the known gold reward of the `stories` task;
//! - [`passk`]: the unbiased pass@k estimator and its average over problems;
//! - [`sandbox`]: running generated Python against APPS tests in a limited,
//!   network-less child process;
//! - [`judge`]: pairwise LLM judging with randomised order, and an
//!   OpenAI-compatible HTTP judge;
//! - [`server`]: the chat-completions protocol served on loopback for any
//!   backend, and [`prompt`] for turning chat messages into task prompts;
//! - [`report`]: mean ± standard error, markdown tables, PNG plots and
//!   `report.md`; the comparison and tuning reports;
//! - [`stats`]: the intervals of a comparison between runs (Student-t over
//!   seeds with the prompts as a crossed factor, paired or Welch
//!   differences, the power of a t-test), with their coverage tested by
//!   simulation.

pub mod client;
pub mod gold;
pub mod judge;
pub mod passk;
pub mod prompt;
pub mod protocol;
pub mod report;
pub mod sandbox;
pub mod server;
pub mod stats;
