//! Error types of the optimizer crate.

use thiserror::Error;

/// A distribution that cannot be built, or a value that does not belong to one.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum DistributionError {
    #[error("invalid distribution: {0}")]
    Invalid(String),
    #[error("invalid distribution JSON: {0}")]
    Json(String),
}

/// Bad sampler or pruner arguments, or a history operation that makes no sense.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum OptimizerError {
    #[error("invalid argument {name}={value}: {reason}")]
    InvalidArgument {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("trial {0} does not exist")]
    UnknownTrial(u64),
    #[error("trial {number} is already finished ({state:?})")]
    TrialFinished {
        number: u64,
        state: crate::trial::TrialState,
    },
    #[error("parameter {name:?}: {reason}")]
    Param { name: String, reason: String },
    #[error(transparent)]
    Distribution(#[from] DistributionError),
}

impl OptimizerError {
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
