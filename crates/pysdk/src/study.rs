//! The one `Study` and `Run` of the extension, over a backend that is either the engine in
//! this process (`embedded.rs`) or a remote engine (`remote.rs`).
//!
//! Everything both need lives here, once: the `#[pymethods]`, the argument checks, the
//! conversions from and to Python values, the warnings and the record classes. A backend only
//! implements the calls that reach its engine, in engine types ([`StudyBackend`],
//! [`RunBackend`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspex_engine::grpc::pb;
use dspex_engine::model::{from_unix_seconds, unix_seconds};
use dspex_engine::optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
    StudyDirection, TrialState,
};
use dspex_engine::study::Told;
use dspex_engine::{AttrMap, AttrValue, Outcome, TrialRecord};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::embedded::Embedded;
use crate::remote::RemoteClient;
use crate::{
    attr_from_py, attrs_from_py, attrs_to_py, dist_from_py, dist_to_py, engine, guard,
    param_from_py, param_to_py, parse_directions, parse_state, parse_states, warn, PyPruner,
    PySampler, PyStorage, SLICE,
};

/// Where an attribute is set.
#[derive(Clone, Copy)]
pub(crate) enum AttrTarget {
    Study,
    Trial(u64),
}

/// How a run is started: the run-wide specification (validated by the engine, as when it
/// comes over the wire) and what this process brings as an evaluator.
pub(crate) struct RunRequest {
    pub spec: pb::RunSpec,
    /// How many trials this process evaluates at once (0: it only owns the run).
    pub concurrency: u32,
    /// Embedded only: evaluators start their own trials (see `RunOptions::evaluators_ask`).
    pub evaluators_ask: bool,
    /// Remote only: the stream's heartbeat period and the evaluator's name.
    pub heartbeat_ms: u32,
    pub worker: Option<String>,
}

/// The calls of a study that reach its engine (embedded or remote), in engine types.
pub(crate) trait StudyBackend: Send + Sync {
    fn name(&self) -> &str;
    fn directions(&self) -> &[StudyDirection];
    fn ask(&self, py: Python<'_>) -> PyResult<u64>;
    /// The suggested value and the engine's warning, if any; `given`: the value a Python
    /// sampler chose, recorded in place of the engine's sample.
    fn suggest_value(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: Distribution,
        given: Option<ParamValue>,
    ) -> PyResult<(ParamValue, Option<String>)>;
    fn report_value(&self, py: Python<'_>, number: u64, step: i64, value: f64) -> PyResult<bool>;
    fn prune_check(&self, py: Python<'_>, number: u64) -> PyResult<bool>;
    /// Tells the outcome; with `with_record`, also returns the finished trial (in the same
    /// crossing).
    fn tell_outcome(
        &self,
        py: Python<'_>,
        number: u64,
        outcome: Outcome,
        strict: bool,
        with_record: bool,
    ) -> PyResult<(Told, Option<TrialRecord>)>;
    fn enqueue_params(
        &self,
        py: Python<'_>,
        params: BTreeMap<String, ParamValue>,
        user_attrs: AttrMap,
        skip_if_exists: bool,
    ) -> PyResult<Option<u64>>;
    /// Adds a finished trial (its number is assigned by the study).
    fn add_record(&self, py: Python<'_>, record: TrialRecord) -> PyResult<u64>;
    fn trial_record(&self, py: Python<'_>, number: u64) -> PyResult<TrialRecord>;
    fn trial_state(&self, py: Python<'_>, number: u64) -> PyResult<TrialState>;
    fn trial_records(
        &self,
        py: Python<'_>,
        states: Option<Vec<TrialState>>,
    ) -> PyResult<Vec<TrialRecord>>;
    fn count_trials(&self, py: Python<'_>, states: Option<Vec<TrialState>>) -> PyResult<usize>;
    fn best_record(&self, py: Python<'_>) -> PyResult<TrialRecord>;
    fn best_records(&self, py: Python<'_>) -> PyResult<Vec<TrialRecord>>;
    /// Sets a user (`system` false) or system attribute of the study or of a trial.
    fn store_attr(
        &self,
        py: Python<'_>,
        target: AttrTarget,
        system: bool,
        key: String,
        value: AttrValue,
    ) -> PyResult<()>;
    /// The study's user (`system` false) or system attributes.
    fn load_attrs(&self, py: Python<'_>, system: bool) -> PyResult<AttrMap>;
    /// Stops the active runs of the study; returns how many there were.
    fn stop_runs(&self, py: Python<'_>) -> PyResult<usize>;
    fn start_run(&self, py: Python<'_>, req: RunRequest) -> PyResult<Box<dyn RunBackend>>;
    /// Joins the study's active run as an evaluator of `capacity` trials at once.
    fn attach(
        &self,
        py: Python<'_>,
        capacity: u32,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<Box<dyn RunBackend>>;
    /// The connection of a remote study.
    fn client(&self) -> Option<RemoteClient> {
        None
    }
    /// The engine study of an embedded one.
    fn engine_study(&self) -> Option<Arc<dspex_engine::Study>> {
        None
    }
}

/// One run as its evaluators see it (embedded or over an Attach stream).
pub(crate) trait RunBackend: Send + Sync {
    /// Up to `max` trial numbers waiting within `slice`: `Some(Some(numbers))`, `Some(None)`
    /// when the run is over, `None` when nothing came.
    fn pull(
        &self,
        py: Python<'_>,
        max: usize,
        slice: Duration,
    ) -> PyResult<Option<Option<Vec<u64>>>>;
    /// Tells the outcome of `number` and answers the run; None when the engine had finished
    /// the trial already. Without `wait`, may return what telling will record and record it
    /// in the background.
    fn finish(
        &self,
        py: Python<'_>,
        number: u64,
        outcome: Outcome,
        abort: Option<String>,
        wait: bool,
    ) -> PyResult<Option<Told>>;
    fn done(&self, py: Python<'_>, number: u64, abort: Option<String>) -> PyResult<()>;
    fn stop(&self, py: Python<'_>) -> PyResult<()>;
    fn interrupt(&self, py: Python<'_>, reason: String) -> PyResult<()>;
    fn finished(&self) -> bool;
    /// A descriptor that becomes readable when trials are queued or the run ends (see
    /// `signal`); each pull re-arms it.
    fn wakeup_fd(&self) -> PyResult<i32>;
    /// The summary once the run is over, waiting at most `slice`.
    fn wait(&self, py: Python<'_>, slice: Duration) -> PyResult<Option<pb::RunSummary>>;
}

// ------------------------------------------------------------------ records

/// A trial as Python reads it (`dspex.FrozenTrial` is built from it).
#[pyclass(frozen, get_all, name = "TrialRecord", module = "dspex._native")]
pub(crate) struct PyTrialRecord {
    number: u64,
    state: &'static str,
    params: Py<PyDict>,
    /// Distribution tuples (see `dist_to_py`).
    distributions: Py<PyDict>,
    values: Option<Vec<f64>>,
    intermediate_values: Py<PyDict>,
    user_attrs: Py<PyDict>,
    system_attrs: Py<PyDict>,
    /// Unix seconds.
    datetime_start: Option<f64>,
    datetime_complete: Option<f64>,
}

#[pymethods]
impl PyTrialRecord {
    fn __repr__(&self) -> String {
        format!("TrialRecord(number={}, state={})", self.number, self.state)
    }
}

pub(crate) fn record_to_py(py: Python<'_>, t: &TrialRecord) -> PyResult<PyTrialRecord> {
    let params = PyDict::new(py);
    for (k, v) in &t.params {
        params.set_item(k, param_to_py(py, v)?)?;
    }
    let dists = PyDict::new(py);
    for (k, d) in &t.distributions {
        dists.set_item(k, dist_to_py(py, d)?)?;
    }
    let inter = PyDict::new(py);
    for (s, v) in &t.intermediate_values {
        inter.set_item(s, v)?;
    }
    let mut system = t.system_attrs.clone();
    if let Some(fixed) = &t.fixed_params {
        let m: serde_json::Map<String, AttrValue> = fixed
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        system
            .entry("fixed_params".to_string())
            .or_insert(AttrValue::Object(m));
    }
    Ok(PyTrialRecord {
        number: t.number,
        state: t.state.as_str(),
        params: params.unbind(),
        distributions: dists.unbind(),
        values: t.values.clone(),
        intermediate_values: inter.unbind(),
        user_attrs: attrs_to_py(py, &t.user_attrs)?.unbind(),
        system_attrs: attrs_to_py(py, &system)?.unbind(),
        datetime_start: t.datetime_start.map(unix_seconds),
        datetime_complete: t.datetime_complete.map(unix_seconds),
    })
}

/// What `tell` / `finish` recorded.
#[pyclass(frozen, get_all, name = "Told", module = "dspex._native")]
pub(crate) struct PyTold {
    state: &'static str,
    values: Option<Vec<f64>>,
    fail_reason: Option<String>,
    /// The finished trial, when `tell` was asked for it (`record=True`).
    trial: Option<Py<PyTrialRecord>>,
}

#[pymethods]
impl PyTold {
    fn __repr__(&self) -> String {
        format!(
            "Told(state={}, values={:?}, fail_reason={:?})",
            self.state, self.values, self.fail_reason
        )
    }
}

impl From<Told> for PyTold {
    fn from(t: Told) -> Self {
        PyTold {
            state: t.state.as_str(),
            values: t.values,
            fail_reason: t.fail_reason,
            trial: None,
        }
    }
}

/// How a run ended.
#[pyclass(frozen, get_all, name = "RunSummary", module = "dspex._native")]
pub(crate) struct PyRunSummary {
    started: u64,
    finished: u64,
    /// n_trials, timeout, stopped, exhausted, aborted, interrupted or error.
    reason: String,
    detail: Option<String>,
    /// Trials failed by the per-trial timeout.
    timed_out: Vec<u64>,
}

#[pymethods]
impl PyRunSummary {
    fn __repr__(&self) -> String {
        format!(
            "RunSummary(started={}, finished={}, reason={:?}, detail={:?})",
            self.started, self.finished, self.reason, self.detail
        )
    }
}

impl From<pb::RunSummary> for PyRunSummary {
    fn from(s: pb::RunSummary) -> Self {
        PyRunSummary {
            started: s.started,
            finished: s.finished,
            reason: s.reason,
            detail: s.detail,
            timed_out: s.timed_out,
        }
    }
}

// ------------------------------------------------------------------ study

/// A study, in this process's engine or in a remote one.
#[pyclass(frozen, name = "Study", module = "dspex._native")]
pub(crate) struct PyStudy {
    pub(crate) backend: Arc<dyn StudyBackend>,
}

impl PyStudy {
    fn b(&self) -> &dyn StudyBackend {
        &*self.backend
    }

    fn suggest_dist(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: Distribution,
        given: Option<ParamValue>,
    ) -> PyResult<ParamValue> {
        let (value, warning) = self.b().suggest_value(py, number, name, dist, given)?;
        if let Some(w) = &warning {
            warn(py, true, w)?;
        }
        Ok(value)
    }
}

fn float_from_param(v: &ParamValue) -> f64 {
    match v {
        ParamValue::Float(f) => *f,
        ParamValue::Int(i) => *i as f64,
        _ => f64::NAN,
    }
}

/// The outcome `tell` was given: `values` (COMPLETE), or `state` "PRUNED"/"FAIL" with an
/// optional `fail_reason`.
pub(crate) fn outcome(
    values: Option<Vec<f64>>,
    state: Option<String>,
    fail_reason: Option<String>,
) -> PyResult<Outcome> {
    let state = state.map(|s| parse_state(&s)).transpose()?;
    Ok(match (state, values) {
        (Some(TrialState::Pruned), _) => Outcome::Pruned,
        (Some(TrialState::Fail), _) => {
            Outcome::Fail(fail_reason.unwrap_or_else(|| "told FAIL".into()))
        }
        (Some(TrialState::Complete) | None, Some(v)) => Outcome::Values(v),
        (None, None) => {
            Outcome::Fail(fail_reason.unwrap_or_else(|| "the objective returned None".into()))
        }
        (Some(TrialState::Complete), None) => {
            return Err(PyValueError::new_err(
                "values are required when state is COMPLETE",
            ))
        }
        (Some(s), _) => {
            return Err(PyValueError::new_err(format!(
                "a trial can only be told COMPLETE, PRUNED or FAIL, got {}",
                s.as_str()
            )))
        }
    })
}

/// A dict of parameter names to external values.
fn params_from_py(d: &Bound<'_, PyDict>) -> PyResult<BTreeMap<String, ParamValue>> {
    let mut p = BTreeMap::new();
    for (k, v) in d.iter() {
        p.insert(k.extract::<String>()?, param_from_py(&v)?);
    }
    Ok(p)
}

fn records_to_py(py: Python<'_>, ts: &[TrialRecord]) -> PyResult<Vec<PyTrialRecord>> {
    ts.iter().map(|t| record_to_py(py, t)).collect()
}

#[pymethods]
impl PyStudy {
    /// Creates (or with `load_if_exists` loads) a study in this process's engine.
    #[staticmethod]
    #[pyo3(signature = (storage, name, directions, sampler=None, pruner=None, load_if_exists=false))]
    fn create(
        py: Python<'_>,
        storage: &PyStorage,
        name: Option<String>,
        directions: Vec<String>,
        sampler: Option<&PySampler>,
        pruner: Option<&PyPruner>,
        load_if_exists: bool,
    ) -> PyResult<PyStudy> {
        let dirs = parse_directions(directions)?;
        let st = storage.inner.clone();
        let sampler = sampler.map(|s| s.inner.clone());
        let pruner = pruner.map(|p| p.inner.clone());
        let inner = engine(py, move || {
            dspex_engine::Study::create(st, name.as_deref(), dirs, sampler, pruner, load_if_exists)
        })?;
        Ok(PyStudy {
            backend: Arc::new(Embedded(inner)),
        })
    }

    /// Loads a study of `storage` into this process's engine.
    #[staticmethod]
    #[pyo3(signature = (storage, name, sampler=None, pruner=None))]
    fn load(
        py: Python<'_>,
        storage: &PyStorage,
        name: String,
        sampler: Option<&PySampler>,
        pruner: Option<&PyPruner>,
    ) -> PyResult<PyStudy> {
        let st = storage.inner.clone();
        let sampler = sampler.map(|s| s.inner.clone());
        let pruner = pruner.map(|p| p.inner.clone());
        let inner = engine(py, move || {
            dspex_engine::Study::load(st, &name, sampler, pruner)
        })?;
        Ok(PyStudy {
            backend: Arc::new(Embedded(inner)),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        self.b().name()
    }

    #[getter]
    fn directions(&self) -> Vec<&'static str> {
        self.b().directions().iter().map(|d| d.as_str()).collect()
    }

    /// The connection of a remote study; None for an embedded one.
    #[getter]
    fn client(&self) -> Option<RemoteClient> {
        self.b().client()
    }

    #[getter]
    fn is_remote(&self) -> bool {
        self.b().client().is_some()
    }

    fn ask(&self, py: Python<'_>) -> PyResult<u64> {
        self.b().ask(py)
    }

    #[pyo3(signature = (number, name, low, high, log=false, step=None))]
    #[allow(clippy::too_many_arguments)]
    fn suggest_float(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    ) -> PyResult<f64> {
        let (d, note) = guard(|| FloatDistribution::checked(low, high, log, step))?
            .map_err(|e| PyValueError::new_err(format!("suggest_float({name:?}): {e}")))?;
        if let Some(n) = note {
            warn(py, false, &n)?;
        }
        let v = self.suggest_dist(py, number, name, Distribution::Float(d), None)?;
        Ok(float_from_param(&v))
    }

    #[pyo3(signature = (number, name, low, high, step=1, log=false))]
    #[allow(clippy::too_many_arguments)]
    fn suggest_int(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        low: i64,
        high: i64,
        step: i64,
        log: bool,
    ) -> PyResult<i64> {
        let (d, note) = guard(|| IntDistribution::checked(low, high, log, step))?
            .map_err(|e| PyValueError::new_err(format!("suggest_int({name:?}): {e}")))?;
        if let Some(n) = note {
            warn(py, false, &n)?;
        }
        match self.suggest_dist(py, number, name, Distribution::Int(d), None)? {
            ParamValue::Int(i) => Ok(i),
            other => Ok(float_from_param(&other).round() as i64),
        }
    }

    /// Returns the index of the chosen value in `choices`.
    fn suggest_categorical(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        choices: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let values = choices
            .try_iter()?
            .map(|c| param_from_py(&c?))
            .collect::<PyResult<Vec<_>>>()?;
        let d = guard(|| CategoricalDistribution::new(values))?
            .map_err(|e| PyValueError::new_err(format!("suggest_categorical({name:?}): {e}")))?;
        let dist = Distribution::Categorical(d.clone());
        let v = self.suggest_dist(py, number, name.clone(), dist, None)?;
        guard(|| d.index_of(&v))?.ok_or_else(|| {
            PyValueError::new_err(format!(
                "suggest_categorical({name:?}): value {v} is not one of the choices"
            ))
        })
    }

    /// Suggests with a distribution tuple; returns the external value. `given`: the value a
    /// Python sampler chose (recorded instead of sampling; an enqueued value comes first).
    #[pyo3(signature = (number, name, dist, given=None))]
    fn suggest(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: &Bound<'_, PyAny>,
        given: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let d = dist_from_py(dist)?;
        let given = given.map(param_from_py).transpose()?;
        let v = self.suggest_dist(py, number, name, d, given)?;
        param_to_py(py, &v)
    }

    fn report(&self, py: Python<'_>, number: u64, step: i64, value: f64) -> PyResult<bool> {
        self.b().report_value(py, number, step, value)
    }

    fn should_prune(&self, py: Python<'_>, number: u64) -> PyResult<bool> {
        self.b().prune_check(py, number)
    }

    /// Finishes a trial: `values` (COMPLETE if valid), or `state` "PRUNED"/"FAIL" with an
    /// optional `fail_reason`. `strict`: invalid values raise instead of failing the trial.
    /// `record`: the answer carries the finished trial (one crossing, one round trip remote).
    #[pyo3(signature = (number, values=None, state=None, fail_reason=None, strict=false, record=false))]
    #[allow(clippy::too_many_arguments)]
    fn tell(
        &self,
        py: Python<'_>,
        number: u64,
        values: Option<Vec<f64>>,
        state: Option<String>,
        fail_reason: Option<String>,
        strict: bool,
        record: bool,
    ) -> PyResult<PyTold> {
        let outcome = outcome(values, state, fail_reason)?;
        let (told, rec) = self.b().tell_outcome(py, number, outcome, strict, record)?;
        let mut told = PyTold::from(told);
        if let Some(r) = rec {
            told.trial = Some(Py::new(py, record_to_py(py, &r)?)?);
        }
        Ok(told)
    }

    #[pyo3(signature = (params, user_attrs=None, skip_if_exists=false))]
    fn enqueue(
        &self,
        py: Python<'_>,
        params: &Bound<'_, PyDict>,
        user_attrs: Option<&Bound<'_, PyDict>>,
        skip_if_exists: bool,
    ) -> PyResult<Option<u64>> {
        let p = params_from_py(params)?;
        let attrs = attrs_from_py(user_attrs)?;
        self.b().enqueue_params(py, p, attrs, skip_if_exists)
    }

    /// Adds a trial: state, params (external values), distributions (tuples), values,
    /// intermediate values, attrs, timestamps (Unix seconds).
    #[pyo3(signature = (state, params, distributions, values, intermediate_values, user_attrs, system_attrs, datetime_start=None, datetime_complete=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_trial(
        &self,
        py: Python<'_>,
        state: String,
        params: &Bound<'_, PyDict>,
        distributions: &Bound<'_, PyDict>,
        values: Option<Vec<f64>>,
        intermediate_values: BTreeMap<i64, f64>,
        user_attrs: Option<&Bound<'_, PyDict>>,
        system_attrs: Option<&Bound<'_, PyDict>>,
        datetime_start: Option<f64>,
        datetime_complete: Option<f64>,
    ) -> PyResult<u64> {
        let state = parse_state(&state)?;
        let mut t = TrialRecord::new(0, state);
        for (k, d) in distributions.iter() {
            let name: String = k.extract()?;
            t.distributions.insert(name, dist_from_py(&d)?);
        }
        for (name, value) in params_from_py(params)? {
            let dist = t.distributions.get(&name).ok_or_else(|| {
                PyValueError::new_err(format!("parameter {name:?} has no distribution"))
            })?;
            let internal = guard(|| dist.to_internal(&value))?
                .map_err(|e| PyValueError::new_err(format!("parameter {name:?}: {e}")))?;
            t.internal_params.insert(name.clone(), internal);
            t.params.insert(name, value);
        }
        if let Some(extra) = t
            .distributions
            .keys()
            .find(|k| !t.internal_params.contains_key(*k))
        {
            return Err(PyValueError::new_err(format!(
                "distribution {extra:?} has no parameter value"
            )));
        }
        t.values = values;
        t.intermediate_values = intermediate_values;
        t.user_attrs = attrs_from_py(user_attrs)?;
        t.system_attrs = attrs_from_py(system_attrs)?;
        if let Some(r) = t.system_attrs.get("fail_reason").and_then(|v| v.as_str()) {
            t.fail_reason = Some(r.to_string());
        }
        t.datetime_start = datetime_start.and_then(from_unix_seconds);
        t.datetime_complete = datetime_complete.and_then(from_unix_seconds);
        self.b().add_record(py, t)
    }

    fn trial(&self, py: Python<'_>, number: u64) -> PyResult<PyTrialRecord> {
        record_to_py(py, &self.b().trial_record(py, number)?)
    }

    /// The trial's parameters (external values).
    fn trial_params<'py>(&self, py: Python<'py>, number: u64) -> PyResult<Bound<'py, PyDict>> {
        let t = self.b().trial_record(py, number)?;
        let d = PyDict::new(py);
        for (k, v) in &t.params {
            d.set_item(k, param_to_py(py, v)?)?;
        }
        Ok(d)
    }

    fn trial_state(&self, py: Python<'_>, number: u64) -> PyResult<&'static str> {
        Ok(self.b().trial_state(py, number)?.as_str())
    }

    #[pyo3(signature = (states=None))]
    fn trials(&self, py: Python<'_>, states: Option<Vec<String>>) -> PyResult<Vec<PyTrialRecord>> {
        let states = parse_states(states)?;
        records_to_py(py, &self.b().trial_records(py, states)?)
    }

    #[pyo3(signature = (states=None))]
    fn n_trials(&self, py: Python<'_>, states: Option<Vec<String>>) -> PyResult<usize> {
        let states = parse_states(states)?;
        self.b().count_trials(py, states)
    }

    fn best_trial(&self, py: Python<'_>) -> PyResult<PyTrialRecord> {
        record_to_py(py, &self.b().best_record(py)?)
    }

    fn best_trials(&self, py: Python<'_>) -> PyResult<Vec<PyTrialRecord>> {
        records_to_py(py, &self.b().best_records(py)?)
    }

    fn set_user_attr(&self, py: Python<'_>, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = attr_from_py(value)?;
        self.b().store_attr(py, AttrTarget::Study, false, key, v)
    }

    fn set_system_attr(
        &self,
        py: Python<'_>,
        key: String,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let v = attr_from_py(value)?;
        self.b().store_attr(py, AttrTarget::Study, true, key, v)
    }

    fn user_attrs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        attrs_to_py(py, &self.b().load_attrs(py, false)?)
    }

    fn system_attrs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        attrs_to_py(py, &self.b().load_attrs(py, true)?)
    }

    fn set_trial_user_attr(
        &self,
        py: Python<'_>,
        number: u64,
        key: String,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let v = attr_from_py(value)?;
        self.b()
            .store_attr(py, AttrTarget::Trial(number), false, key, v)
    }

    fn set_trial_system_attr(
        &self,
        py: Python<'_>,
        number: u64,
        key: String,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let v = attr_from_py(value)?;
        self.b()
            .store_attr(py, AttrTarget::Trial(number), true, key, v)
    }

    /// Stops the active runs of this study; returns how many there were.
    fn stop(&self, py: Python<'_>) -> PyResult<usize> {
        self.b().stop_runs(py)
    }

    /// Starts a run that this process evaluates, `concurrency` trials at once (0: it only owns
    /// the run, as when workers evaluate). The run keeps as many trials in flight as its
    /// evaluators take, at most `max_concurrency`; a trial lost with its evaluator or failed by
    /// `trial_timeout` is re-run up to `max_retries` times. `evaluators_ask` (embedded): the
    /// evaluators start their trials themselves. `heartbeat_ms`, `worker` (remote): the
    /// stream's heartbeat period and this evaluator's name.
    #[pyo3(signature = (n_trials=None, timeout=None, concurrency=1, trial_timeout=None, max_retries=0, max_concurrency=None, evaluators_ask=false, heartbeat_ms=1000, worker=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_run(
        &self,
        py: Python<'_>,
        n_trials: Option<u64>,
        timeout: Option<f64>,
        concurrency: u32,
        trial_timeout: Option<f64>,
        max_retries: u32,
        max_concurrency: Option<u32>,
        evaluators_ask: bool,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<PyRun> {
        let req = RunRequest {
            spec: pb::RunSpec {
                n_trials,
                timeout,
                max_concurrency,
                trial_timeout,
                max_retries,
            },
            concurrency,
            evaluators_ask,
            heartbeat_ms,
            worker,
        };
        Ok(PyRun {
            backend: self.b().start_run(py, req)?,
        })
    }

    /// Joins the study's active run (remote: waiting for one) as an evaluator of `capacity`
    /// trials at once.
    #[pyo3(signature = (capacity=1, heartbeat_ms=1000, worker=None))]
    fn attach(
        &self,
        py: Python<'_>,
        capacity: u32,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<PyRun> {
        Ok(PyRun {
            backend: self.b().attach(py, capacity, heartbeat_ms, worker)?,
        })
    }
}

// ------------------------------------------------------------------ run

/// One `optimize` run: evaluators pull trial numbers and answer with `finish` (or `tell`
/// then `done`).
#[pyclass(frozen, name = "Run", module = "dspex._native")]
pub(crate) struct PyRun {
    pub(crate) backend: Box<dyn RunBackend>,
}

#[pymethods]
impl PyRun {
    /// Up to `max` trial numbers to evaluate; [] when none came within `timeout` seconds
    /// (None: wait until one comes), None when the run is over. Checks signals while waiting.
    #[pyo3(signature = (max=1, timeout=None))]
    fn pull(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<Option<Vec<u64>>> {
        let got = poll(py, timeout, |slice| self.backend.pull(py, max, slice))?;
        Ok(got.unwrap_or_else(|| Some(Vec::new())))
    }

    /// Tells the outcome of trial `number` and answers the run (`tell` then `done`) in one
    /// crossing. Returns what was recorded, or None when the engine had finished the trial
    /// already (per-trial timeout, interrupt). Another error is raised after the run was
    /// answered with it as the abort reason. With ``wait=False`` (an event loop's evaluator,
    /// whose other trials go on meanwhile) the outcome may be recorded in the background: what
    /// it will record is returned, and an error of the storage ends the run with it.
    #[pyo3(signature = (number, values=None, state=None, fail_reason=None, abort=None, wait=true))]
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        py: Python<'_>,
        number: u64,
        values: Option<Vec<f64>>,
        state: Option<String>,
        fail_reason: Option<String>,
        abort: Option<String>,
        wait: bool,
    ) -> PyResult<Option<PyTold>> {
        let outcome = outcome(values, state, fail_reason)?;
        Ok(self
            .backend
            .finish(py, number, outcome, abort, wait)?
            .map(PyTold::from))
    }

    /// Answers for a trial the evaluator finished (after `tell`); `abort` stops the run.
    #[pyo3(signature = (number, abort=None))]
    fn done(&self, py: Python<'_>, number: u64, abort: Option<String>) -> PyResult<()> {
        self.backend.done(py, number, abort)
    }

    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.backend.stop(py)
    }

    fn interrupt(&self, py: Python<'_>, reason: String) -> PyResult<()> {
        self.backend.interrupt(py, reason)
    }

    #[getter]
    fn finished(&self) -> bool {
        self.backend.finished()
    }

    /// A file descriptor that becomes readable when trials are queued or the run ends, for an
    /// event loop to watch (``loop.add_reader``) instead of blocking in ``pull``: read it empty,
    /// then ``pull(max, 0)``. Owned by the run; stop watching it before the run is dropped.
    fn wakeup_fd(&self) -> PyResult<i32> {
        self.backend.wakeup_fd()
    }

    /// Waits for the end of the run, or None after `timeout` seconds. Checks signals while
    /// waiting.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyRunSummary>> {
        Ok(poll(py, timeout, |slice| self.backend.wait(py, slice))?.map(PyRunSummary::from))
    }
}

/// Calls `step` with how long it may wait (at most [`SLICE`]) until it returns a value,
/// checking signals in between; `Ok(None)` once `timeout` seconds (None: no limit) have passed.
pub(crate) fn poll<T>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut step: impl FnMut(Duration) -> PyResult<Option<T>>,
) -> PyResult<Option<T>> {
    let start = Instant::now();
    let limit =
        timeout.map(|t| Duration::from_secs_f64(if t.is_nan() { 0.0 } else { t.clamp(0.0, 1e9) }));
    loop {
        let slice = limit.map_or(SLICE, |l| l.saturating_sub(start.elapsed()).min(SLICE));
        if let Some(v) = step(slice)? {
            return Ok(Some(v));
        }
        py.check_signals()?;
        if limit.is_some_and(|l| start.elapsed() >= l) {
            return Ok(None);
        }
    }
}
