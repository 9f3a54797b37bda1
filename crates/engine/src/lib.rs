//! dspex engine: the study model, storage backends and the trial scheduler.
//!
//! The engine is transport-agnostic: a [`scheduler::Run`] decides which trials start and pushes
//! evaluation requests into a queue; whoever evaluates them (embedded Python threads, a gRPC
//! Attach stream) pulls requests, drives the trial through [`study::Study`] (suggest, report, tell)
//! and answers the run by trial number.

pub mod cli;
pub mod config;
pub mod error;
pub mod grpc;
pub mod model;
pub mod program;
pub mod program_study;
pub mod runtime;
pub mod scheduler;
pub mod session;
pub mod session_ops;
pub mod storage;
pub mod study;
pub mod tools;
pub mod workers;

pub use dspex_native as native;
pub use dspex_optimizer as optimizer;
pub use error::{EngineError, ErrorCode};
pub use model::{AttrMap, AttrValue, StudySummary, TrialRecord};
pub use scheduler::{
    Done, EvalRequest, Joined, Pulled, Run, RunOptions, RunSummary, StopReason, Taken,
};
pub use storage::{
    InMemoryStorage, JournalLock, JournalOptions, JournalStorage, RetryPolicy, SqlOptions,
    SqlStorage, Storage, StudyId,
};
pub use study::{Outcome, Study, Suggested, Told};
