//! The one error type of the crate.

use std::fmt;

/// Everything that can go wrong in the RL maths. Messages are one line and
/// name the offending input, so a stage can print them as they are (after
/// naming the file and the rollout).
#[derive(Debug, thiserror::Error)]
pub enum RlError {
    /// A NaN or infinity in an input; it would otherwise spread silently
    /// through GAE and the losses.
    #[error("{what}[{index}] is not finite")]
    NonFinite { what: String, index: usize },

    /// Two inputs that must be aligned are not.
    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch {
        what: String,
        expected: usize,
        got: usize,
    },

    /// Macro-action starts that do not describe a segmentation of the
    /// response (see [`crate::segment::validate_starts`]).
    #[error("invalid macro-action starts for a response of {len} tokens: {reason}")]
    InvalidStarts { len: usize, reason: String },

    /// A string that is not a termination condition.
    #[error("invalid termination {input:?}: {reason} (expected fixed:N, randomized:N, ppl or parsing:N)")]
    ParseTermination { input: String, reason: String },

    /// A string that is not a value function.
    #[error("invalid value function {0:?} (expected equal, unit or position)")]
    ParseValueFunction(String),

    /// A string that is not a loss aggregation.
    #[error("invalid loss aggregation {0:?} (expected token-mean, seq-mean-token-mean or seq-mean-token-sum)")]
    ParseLossAgg(String),

    /// A string that is not a macro-action KL aggregation.
    #[error("invalid macro KL {0:?} (expected mean or sum)")]
    ParseMacroKl(String),

    /// A string that is not a macro-action λ setting.
    #[error("invalid macro lambda {0:?} (expected per-macro or per-token)")]
    ParseMacroLambda(String),

    /// A string that is not a KL estimator.
    #[error("invalid KL estimator {0:?} (expected k1 or k3)")]
    ParseKlEstimator(String),

    /// A termination condition needs an input the caller did not give.
    #[error("termination {termination} needs {what}")]
    MissingInput {
        termination: String,
        what: &'static str,
    },

    /// A parameter outside its domain (a zero n-gram, a negative clip...).
    #[error("invalid {what}: {reason}")]
    InvalidParameter { what: &'static str, reason: String },

    /// A response mask entry that is neither 0 nor 1.
    #[error("mask[{index}] is {value}, expected 0 or 1")]
    BadMask { index: usize, value: f64 },

    /// Tensors of the wrong rank, shape or dtype for a loss.
    #[error("{0}")]
    Shape(String),

    /// An error inside one sequence of a batch, tagged with its rollout id.
    #[error("rollout {id}: {source}")]
    InSequence {
        id: u64,
        #[source]
        source: Box<RlError>,
    },

    /// An error from candle while computing a loss.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl RlError {
    pub(crate) fn non_finite(what: impl fmt::Display, index: usize) -> Self {
        RlError::NonFinite {
            what: what.to_string(),
            index,
        }
    }

    pub(crate) fn length(what: impl fmt::Display, expected: usize, got: usize) -> Self {
        RlError::LengthMismatch {
            what: what.to_string(),
            expected,
            got,
        }
    }

    pub(crate) fn starts(len: usize, reason: impl Into<String>) -> Self {
        RlError::InvalidStarts {
            len,
            reason: reason.into(),
        }
    }

    pub(crate) fn param(what: &'static str, reason: impl Into<String>) -> Self {
        RlError::InvalidParameter {
            what,
            reason: reason.into(),
        }
    }
}

/// `Ok(())` when every value is finite, else the first offender.
pub(crate) fn check_finite(what: &str, values: &[f32]) -> Result<(), RlError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(RlError::non_finite(what, index)),
        None => Ok(()),
    }
}

/// A scalar hyper-parameter must be finite (and usually more).
pub(crate) fn check_param(what: &'static str, value: f32, ok: bool) -> Result<(), RlError> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(RlError::param(what, format!("{value} is out of range")))
    }
}
