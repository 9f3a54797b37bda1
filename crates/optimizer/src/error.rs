//! Error types of the optimizer crate.

use thiserror::Error;

/// A distribution that cannot be built, or a value that does not belong to one.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum DistributionError {
    /// The arguments do not make a valid distribution, or a value is outside it.
    #[error("invalid distribution: {0}")]
    Invalid(String),
    /// Optuna's JSON form of a distribution or a choice could not be read.
    #[error("invalid distribution JSON: {0}")]
    Json(String),
}

/// Bad sampler or pruner arguments, or a history operation that makes no sense.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum OptimizerError {
    /// A constructor argument out of its domain.
    #[error("invalid argument {name}={value}: {reason}")]
    InvalidArgument {
        /// The argument's name (as in the Python constructor).
        name: &'static str,
        /// The value given, as displayed.
        value: String,
        /// What the argument must be.
        reason: String,
    },
    /// No trial with this number.
    #[error("trial {0} does not exist")]
    UnknownTrial(u64),
    /// The trial is COMPLETE, PRUNED or FAIL, and can no longer change.
    #[error("trial {number} is already finished ({state:?})")]
    TrialFinished {
        /// The trial's number.
        number: u64,
        /// The state it finished in.
        state: crate::trial::TrialState,
    },
    /// A parameter cannot be set: `name`, and why (e.g. a conflicting distribution or an
    /// out-of-range value).
    #[error("parameter {name:?}: {reason}")]
    Param {
        /// The parameter's name.
        name: String,
        /// Why it cannot be set.
        reason: String,
    },
    /// A distribution error.
    #[error(transparent)]
    Distribution(#[from] DistributionError),
}

impl OptimizerError {
    /// An [`OptimizerError::InvalidArgument`] for argument `name` with `value`.
    pub fn arg(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        OptimizerError::InvalidArgument {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
