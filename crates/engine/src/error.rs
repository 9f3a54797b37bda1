//! Engine errors.

use dspex_optimizer::{DistributionError, OptimizerError, TrialState};
use thiserror::Error;

/// Everything that can go wrong in the engine. Each variant has an [`ErrorCode`], which is
/// what the gRPC service and the Python extension map (once each).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EngineError {
    /// A bad argument from the user (Python: ValueError).
    #[error("{0}")]
    InvalidArgument(String),
    /// No study with this name in the storage (Python: KeyError).
    #[error("study {0:?} not found")]
    StudyNotFound(String),
    /// No session, variable or tool with this name (Python: KeyError).
    #[error("{what} {name:?} not found")]
    NotFoundIn {
        /// What was looked up: "session", "variable", "tool".
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The state does not allow the call: a stale version (Python: ValueError).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit was reached: sessions per engine (Python: RuntimeError).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A study with this name already exists (Python: DuplicatedStudyError).
    #[error("study {0:?} already exists")]
    DuplicatedStudy(String),
    /// No trial with this number in the study (Python: KeyError).
    #[error("trial {0} does not exist")]
    TrialNotFound(u64),
    /// An operation that needs a RUNNING trial got one in another state.
    #[error("cannot {op} trial {number}: it is {}", .state.as_str())]
    TrialNotRunning {
        /// The operation attempted, as in "cannot {op} trial N" (`"tell"`, `"finish"`, ...).
        op: &'static str,
        /// The trial's number.
        number: u64,
        /// The state the trial is in.
        state: TrialState,
    },
    /// A parameter asked with a distribution incompatible with an earlier one.
    #[error("parameter {name:?}: {reason}")]
    IncompatibleDistribution {
        /// The parameter's name.
        name: String,
        /// Why the parameter cannot be set.
        reason: String,
    },
    /// Asking for something that does not exist yet (no completed trial, ...).
    #[error("{0}")]
    NoData(String),
    /// An operation that is not valid in this study (best_trial of a multi-objective study, ...).
    #[error("{0}")]
    InvalidOperation(String),
    /// Not supported by this engine or storage (Python: NotImplementedError).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A storage backend failed: unreachable database, unknown schema, corrupted rows, read-only
    /// file... (Python: dspex.exceptions.StorageInternalError).
    #[error("storage error: {0}")]
    Storage(String),
    /// A tool call failed: the tool raised, did not answer in time, or its process is gone.
    #[error("{message}")]
    Tool {
        /// How it failed.
        failure: ToolFailure,
        /// The whole message (names the tool).
        message: String,
        /// The type name of the exception the tool raised ("ToolTimeout"/"ToolUnavailable"
        /// for the other failures).
        kind: String,
        /// The tool's traceback, as its process formatted it (empty when there is none).
        traceback: String,
    },
    /// An error a remote engine reported, with its code and message as they were.
    #[error("{message}")]
    Remote {
        /// Its kind.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// A bug or a broken invariant (a panic in a sampler, a lost runtime...).
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a tool call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFailure {
    /// The tool raised an exception.
    Raised,
    /// No answer within the call's timeout.
    Timeout,
    /// The process that registered the tool is gone.
    Unavailable,
}

impl EngineError {
    /// The tool `tool` raised `kind`(`message`), with its traceback.
    pub fn tool_raised(tool: &str, kind: &str, message: &str, traceback: &str) -> EngineError {
        EngineError::Tool {
            failure: ToolFailure::Raised,
            message: format!("tool {tool:?} raised {kind}: {message}"),
            kind: kind.to_string(),
            traceback: traceback.to_string(),
        }
    }

    /// The tool `tool` did not answer within `seconds`.
    pub fn tool_timeout(tool: &str, seconds: f64) -> EngineError {
        EngineError::Tool {
            failure: ToolFailure::Timeout,
            message: format!("tool {tool:?} did not answer within {seconds} s"),
            kind: "ToolTimeout".into(),
            traceback: String::new(),
        }
    }

    /// The tool `tool` cannot be called: `why`.
    pub fn tool_unavailable(tool: &str, why: &str) -> EngineError {
        EngineError::Tool {
            failure: ToolFailure::Unavailable,
            message: format!("tool {tool:?} is unavailable: {why}"),
            kind: "ToolUnavailable".into(),
            traceback: String::new(),
        }
    }
}

/// The kind of an [`EngineError`], as every boundary reports it: the gRPC status (with the
/// code in the `dspex-error` metadata), the wire `Error` of define-by-run replies, and the
/// Python exception type. One code per way a caller should react.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A bad argument (Python: ValueError).
    InvalidArgument,
    /// No such study or trial (Python: KeyError).
    NotFound,
    /// The study already exists (Python: DuplicatedStudyError).
    AlreadyExists,
    /// The state of a trial or study does not allow the call yet or any more: the trial is not
    /// running, no trial is complete (Python: ValueError).
    FailedPrecondition,
    /// A call this study can never answer: best_trial of a multi-objective study (Python:
    /// RuntimeError).
    InvalidOperation,
    /// Not supported by this engine or storage (Python: NotImplementedError).
    Unimplemented,
    /// The storage backend failed (Python: StorageError).
    Storage,
    /// A limit of the engine was reached (Python: RuntimeError).
    ResourceExhausted,
    /// A tool raised (Python: dspex.exceptions.ToolError).
    ToolError,
    /// A tool did not answer in time (Python: dspex.exceptions.ToolTimeout).
    ToolTimeout,
    /// A tool's process is gone (Python: dspex.exceptions.ToolUnavailable).
    ToolUnavailable,
    /// A bug or a broken invariant (Python: RuntimeError).
    Internal,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::Internal,
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unimplemented,
        ErrorCode::Storage,
        ErrorCode::InvalidOperation,
        ErrorCode::ResourceExhausted,
        ErrorCode::ToolError,
        ErrorCode::ToolTimeout,
        ErrorCode::ToolUnavailable,
    ];

    /// The code's name on the wire (`dspex-error` metadata).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::InvalidOperation => "invalid_operation",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Storage => "storage",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::ToolError => "tool_error",
            ErrorCode::ToolTimeout => "tool_timeout",
            ErrorCode::ToolUnavailable => "tool_unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code named `s` (see [`ErrorCode::as_str`]).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl EngineError {
    /// The kind of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::InvalidArgument(_) | EngineError::IncompatibleDistribution { .. } => {
                ErrorCode::InvalidArgument
            }
            EngineError::StudyNotFound(_)
            | EngineError::TrialNotFound(_)
            | EngineError::NotFoundIn { .. } => ErrorCode::NotFound,
            EngineError::DuplicatedStudy(_) => ErrorCode::AlreadyExists,
            EngineError::TrialNotRunning { .. }
            | EngineError::NoData(_)
            | EngineError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            EngineError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            EngineError::InvalidOperation(_) => ErrorCode::InvalidOperation,
            EngineError::Unsupported(_) => ErrorCode::Unimplemented,
            EngineError::Storage(_) => ErrorCode::Storage,
            EngineError::Tool { failure, .. } => match failure {
                ToolFailure::Raised => ErrorCode::ToolError,
                ToolFailure::Timeout => ErrorCode::ToolTimeout,
                ToolFailure::Unavailable => ErrorCode::ToolUnavailable,
            },
            EngineError::Remote { code, .. } => *code,
            EngineError::Internal(_) => ErrorCode::Internal,
        }
    }
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

/// The engine's result type: errors are [`EngineError`]s by default.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_name() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
