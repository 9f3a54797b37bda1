//! Engine errors.

use dspex_optimizer::{DistributionError, OptimizerError, TrialState};
use thiserror::Error;

/// Everything that can go wrong in the engine. The variants map onto Python exception types in
/// the extension module (see `crates/pysdk`).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EngineError {
    /// A bad argument from the user (Python: ValueError).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("study {0:?} not found")]
    StudyNotFound(String),
    #[error("study {0:?} already exists")]
    DuplicatedStudy(String),
    #[error("trial {0} does not exist")]
    TrialNotFound(u64),
    /// An operation that needs a RUNNING trial got one in another state.
    #[error("cannot {op} trial {number}: it is {}", .state.as_str())]
    TrialNotRunning {
        op: &'static str,
        number: u64,
        state: TrialState,
    },
    /// A parameter asked with a distribution incompatible with an earlier one.
    #[error("parameter {name:?}: {reason}")]
    IncompatibleDistribution { name: String, reason: String },
    /// Asking for something that does not exist yet (no completed trial, ...).
    #[error("{0}")]
    NoData(String),
    /// An operation that is not valid in this study (best_trial of a multi-objective study, ...).
    #[error("{0}")]
    InvalidOperation(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A storage backend failed: unreachable database, unknown schema, corrupted rows, read-only
    /// file... (Python: dspex.exceptions.StorageInternalError).
    #[error("storage error: {0}")]
    Storage(String),
    /// A bug or a broken invariant (a panic in a sampler, a lost runtime...).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DistributionError> for EngineError {
    fn from(e: DistributionError) -> Self {
        EngineError::InvalidArgument(e.to_string())
    }
}

impl From<OptimizerError> for EngineError {
    fn from(e: OptimizerError) -> Self {
        match e {
            OptimizerError::UnknownTrial(n) => EngineError::TrialNotFound(n),
            OptimizerError::TrialFinished { number, state } => EngineError::TrialNotRunning {
                op: "update",
                number,
                state,
            },
            OptimizerError::Param { name, reason } => {
                EngineError::IncompatibleDistribution { name, reason }
            }
            other => EngineError::InvalidArgument(other.to_string()),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
