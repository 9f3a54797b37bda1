//! Storage: where studies and trials live.
//!
//! The [`Storage`] trait stays at the level of Optuna's storage operations (create a study, create
//! a trial, set a param, set state and values, ...), so relational backends can implement it
//! with Optuna's schema. Samplers and pruners read a study through [`Storage::read_history`],
//! which hands them the optimizer's [`History`] without copying it.

use std::collections::BTreeMap;

use dspex_optimizer::{Distribution, History, ParamValue, SearchSpace, StudyDirection, TrialState};

use crate::error::Result;
use crate::model::{AttrMap, AttrValue, StudySummary, TrialRecord};

mod journal;
mod memory;
mod sql;
mod sql_schema;
mod state;

pub use journal::{JournalLock, JournalOptions, JournalStorage};
pub use memory::InMemoryStorage;
pub use sql::{flush_open_storages, RetryPolicy, SqlOptions, SqlStorage, FLUSH_INTERVAL};

/// Opens a storage from a URL: `memory` (or empty) for a fresh in-memory storage,
/// `sqlite:///path.db` / `postgresql://...` for a database in Optuna's schema,
/// `journal:///path.log` for an Optuna journal file. Blocking.
pub fn open_url(url: &str) -> Result<std::sync::Arc<dyn Storage>> {
    open_url_with(url, SqlOptions::default())
}

/// [`open_url`] with the options of a SQL storage (heartbeats, retries; a journal file and the
/// in-memory storage have no heartbeats and refuse them).
pub fn open_url_with(url: &str, options: SqlOptions) -> Result<std::sync::Arc<dyn Storage>> {
    let u = url.trim();
    let plain = options.heartbeat_interval.is_none() && options.retry.is_none();
    match u {
        "" | "memory" | ":memory:" if plain => Ok(std::sync::Arc::new(InMemoryStorage::new())),
        u if u.starts_with("journal:") && plain => {
            Ok(std::sync::Arc::new(JournalStorage::open_url(u)?))
        }
        u if u.starts_with("journal:") || matches!(u, "" | "memory" | ":memory:") => {
            Err(crate::error::EngineError::InvalidArgument(format!(
                "storage {u:?} keeps no heartbeats: heartbeat_interval and failed_trial_callback need a SQL storage"
            )))
        }
        u => Ok(std::sync::Arc::new(SqlStorage::open(u, options)?)),
    }
}

/// Identifier of a study inside one storage.
pub type StudyId = u64;

/// What `suggest` needs to know about one parameter of a running trial.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamContext {
    /// Already suggested in this trial: (internal value, distribution).
    pub existing: Option<(f64, Distribution)>,
    /// Fixed for this trial (enqueued / grid point), external value.
    pub fixed: Option<ParamValue>,
    /// Pre-sampled jointly when the trial started: (internal value, distribution it was sampled from).
    pub relative: Option<(f64, Distribution)>,
    /// The distribution this name had in earlier trials of the study, if any.
    pub study_distribution: Option<Distribution>,
}

/// A study and trial store. Every method is blocking and may be called from any thread (never
/// from an async worker thread of the runtime: backends may do I/O).
pub trait Storage: Send + Sync + std::fmt::Debug {
    // ---- studies
    /// Creates a study; `name` None generates a unique one. Fails when the name is taken.
    fn create_new_study(
        &self,
        directions: &[StudyDirection],
        name: Option<&str>,
    ) -> Result<StudyId>;
    /// Deletes a study with its trials; its name becomes free.
    fn delete_study(&self, study: StudyId) -> Result<()>;
    /// The id of the study named `name` (StudyNotFound when none).
    fn get_study_id_from_name(&self, name: &str) -> Result<StudyId>;
    /// The name of a study.
    fn get_study_name(&self, study: StudyId) -> Result<String>;
    /// The directions of a study, one per objective.
    fn get_study_directions(&self, study: StudyId) -> Result<Vec<StudyDirection>>;
    /// Every study in the storage, with its trial count and attributes.
    fn get_all_studies(&self) -> Result<Vec<StudySummary>>;
    /// Sets (or replaces) a study's user attribute.
    fn set_study_user_attr(&self, study: StudyId, key: &str, value: AttrValue) -> Result<()>;
    /// Sets (or replaces) a study's system attribute.
    fn set_study_system_attr(&self, study: StudyId, key: &str, value: AttrValue) -> Result<()>;
    /// A study's user attributes.
    fn get_study_user_attrs(&self, study: StudyId) -> Result<AttrMap>;
    /// A study's system attributes.
    fn get_study_system_attrs(&self, study: StudyId) -> Result<AttrMap>;

    // ---- trials
    /// Creates a trial and returns its number. Without a template the trial is RUNNING and
    /// starts now; a template gives state, params, values, attributes and times (enqueued
    /// WAITING trials, `add_trial`).
    fn create_new_trial(&self, study: StudyId, template: Option<&TrialRecord>) -> Result<u64>;
    /// Atomically moves the oldest WAITING trial to RUNNING (start time now) and returns it.
    fn pop_waiting_trial(&self, study: StudyId) -> Result<Option<u64>>;

    /// Fails the RUNNING trials of `study` whose heartbeat stopped (their process died) and
    /// re-queues them under the storage's retry policy; the failed trial numbers. Storages
    /// without heartbeats fail nothing.
    fn fail_stale_trials(&self, study: StudyId) -> Result<Vec<u64>> {
        let _ = study;
        Ok(Vec::new())
    }
    /// Records a suggested parameter of a running trial (`internal` in `dist`'s internal
    /// representation); the distribution must be compatible with the name's earlier ones.
    fn set_trial_param(
        &self,
        study: StudyId,
        number: u64,
        name: &str,
        internal: f64,
        dist: &Distribution,
    ) -> Result<()>;
    /// Records parameters sampled jointly at the start of a running trial (not suggested yet).
    fn set_trial_relative_params(
        &self,
        study: StudyId,
        number: u64,
        params: &BTreeMap<String, f64>,
        space: &SearchSpace,
    ) -> Result<()>;
    /// Sets the parameters fixed for a trial (external values; enqueued trials, grid points).
    fn set_trial_fixed_params(
        &self,
        study: StudyId,
        number: u64,
        params: BTreeMap<String, ParamValue>,
    ) -> Result<()>;
    /// Finishes a running trial (or moves it to another unfinished state). `fail_reason` is
    /// recorded for FAIL.
    fn set_trial_state_values(
        &self,
        study: StudyId,
        number: u64,
        state: TrialState,
        values: Option<Vec<f64>>,
        fail_reason: Option<String>,
    ) -> Result<()>;
    /// Records an intermediate value; returns false (and changes nothing) when `step` was
    /// already reported.
    fn set_trial_intermediate_value(
        &self,
        study: StudyId,
        number: u64,
        step: i64,
        value: f64,
    ) -> Result<bool>;
    /// Sets (or replaces) a trial's user attribute.
    fn set_trial_user_attr(
        &self,
        study: StudyId,
        number: u64,
        key: &str,
        value: AttrValue,
    ) -> Result<()>;
    /// Sets (or replaces) a trial's system attribute.
    fn set_trial_system_attr(
        &self,
        study: StudyId,
        number: u64,
        key: &str,
        value: AttrValue,
    ) -> Result<()>;
    /// Everything known about trial `number` (TrialNotFound when none).
    fn get_trial(&self, study: StudyId, number: u64) -> Result<TrialRecord>;
    /// The state of trial `number`, without reading the rest of it.
    fn get_trial_state(&self, study: StudyId, number: u64) -> Result<TrialState>;
    /// All trials (optionally only those in `states`), by number.
    fn get_all_trials(
        &self,
        study: StudyId,
        states: Option<&[TrialState]>,
    ) -> Result<Vec<TrialRecord>>;
    /// The number of trials (optionally only those in `states`).
    fn get_n_trials(&self, study: StudyId, states: Option<&[TrialState]>) -> Result<usize>;
    /// What `suggest` needs about `name` in trial `number`.
    fn param_context(&self, study: StudyId, number: u64, name: &str) -> Result<ParamContext>;

    /// Runs `f` on the study's history (read-only, shared with concurrent readers).
    fn read_history(&self, study: StudyId, f: &mut dyn FnMut(&History)) -> Result<()>;
}

/// Typed convenience around [`Storage::read_history`].
pub fn with_history<R>(
    storage: &dyn Storage,
    study: StudyId,
    f: impl FnOnce(&History) -> R,
) -> Result<R> {
    let mut f = Some(f);
    let mut out = None;
    storage.read_history(study, &mut |h| {
        if let Some(f) = f.take() {
            out = Some(f(h));
        }
    })?;
    out.ok_or_else(|| crate::error::EngineError::Internal("read_history did not call back".into()))
}
