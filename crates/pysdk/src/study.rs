//! The Study / Run API shared by the embedded bindings (`Study`, `Run` in `lib.rs`) and the
//! remote ones (`RemoteStudy`, `RemoteRun` in `remote.rs`).
//!
//! The argument checks, the conversions from and to Python values and the warnings live here,
//! once; a binding implements [`StudyBackend`] (the calls that reach its engine, in engine
//! types) and its `#[pymethods]` delegate to the free functions below.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dspex_engine::optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
    TrialState,
};
use dspex_engine::{AttrMap, AttrValue, Outcome, TrialRecord};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{
    attr_from_py, attrs_from_py, attrs_to_py, dist_from_py, float_from_param, param_from_py,
    param_to_py, parse_state, parse_states, record_to_py, warn, ToldTuple, SLICE,
};

/// Where an attribute is set.
#[derive(Clone, Copy)]
pub(crate) enum AttrTarget {
    Study,
    Trial(u64),
}

/// The calls of a study that reach its engine (embedded or remote), in engine types.
pub(crate) trait StudyBackend {
    /// The suggested value and the engine's warning, if any.
    fn suggest_value(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: Distribution,
    ) -> PyResult<(ParamValue, Option<String>)>;
    fn report_value(&self, py: Python<'_>, number: u64, step: i64, value: f64) -> PyResult<bool>;
    fn prune_check(&self, py: Python<'_>, number: u64) -> PyResult<bool>;
    fn tell_outcome(
        &self,
        py: Python<'_>,
        number: u64,
        outcome: Outcome,
        strict: bool,
    ) -> PyResult<ToldTuple>;
    fn enqueue_params(
        &self,
        py: Python<'_>,
        params: BTreeMap<String, ParamValue>,
        user_attrs: AttrMap,
        skip_if_exists: bool,
    ) -> PyResult<Option<u64>>;
    fn trial_record(&self, py: Python<'_>, number: u64) -> PyResult<TrialRecord>;
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
}

// ------------------------------------------------------------------ suggest

fn suggest_dist<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    number: u64,
    name: String,
    dist: Distribution,
) -> PyResult<ParamValue> {
    let (value, warning) = s.suggest_value(py, number, name, dist)?;
    if let Some(w) = &warning {
        warn(py, true, w)?;
    }
    Ok(value)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn suggest_float<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    number: u64,
    name: String,
    low: f64,
    high: f64,
    log: bool,
    step: Option<f64>,
) -> PyResult<f64> {
    let (d, note) = FloatDistribution::checked(low, high, log, step)
        .map_err(|e| PyValueError::new_err(format!("suggest_float({name:?}): {e}")))?;
    if let Some(n) = note {
        warn(py, false, &n)?;
    }
    let v = suggest_dist(s, py, number, name, Distribution::Float(d))?;
    Ok(float_from_param(&v))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn suggest_int<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    number: u64,
    name: String,
    low: i64,
    high: i64,
    step: i64,
    log: bool,
) -> PyResult<i64> {
    let (d, note) = IntDistribution::checked(low, high, log, step)
        .map_err(|e| PyValueError::new_err(format!("suggest_int({name:?}): {e}")))?;
    if let Some(n) = note {
        warn(py, false, &n)?;
    }
    match suggest_dist(s, py, number, name, Distribution::Int(d))? {
        ParamValue::Int(i) => Ok(i),
        other => Ok(float_from_param(&other).round() as i64),
    }
}

/// Returns the index of the chosen value in `choices`.
pub(crate) fn suggest_categorical<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    number: u64,
    name: String,
    choices: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let values = choices
        .try_iter()?
        .map(|c| param_from_py(&c?))
        .collect::<PyResult<Vec<_>>>()?;
    let d = CategoricalDistribution::new(values)
        .map_err(|e| PyValueError::new_err(format!("suggest_categorical({name:?}): {e}")))?;
    let dist = Distribution::Categorical(d.clone());
    let v = suggest_dist(s, py, number, name.clone(), dist)?;
    d.index_of(&v).ok_or_else(|| {
        PyValueError::new_err(format!(
            "suggest_categorical({name:?}): value {v} is not one of the choices"
        ))
    })
}

/// Suggests with a distribution tuple; returns the external value.
pub(crate) fn suggest<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    number: u64,
    name: String,
    dist: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let d = dist_from_py(dist)?;
    let v = suggest_dist(s, py, number, name, d)?;
    param_to_py(py, &v)
}

// ------------------------------------------------------------------ tell, enqueue

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

#[allow(clippy::too_many_arguments)]
pub(crate) fn tell<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    number: u64,
    values: Option<Vec<f64>>,
    state: Option<String>,
    fail_reason: Option<String>,
    strict: bool,
) -> PyResult<ToldTuple> {
    let outcome = outcome(values, state, fail_reason)?;
    s.tell_outcome(py, number, outcome, strict)
}

/// A dict of parameter names to external values.
pub(crate) fn params_from_py(d: &Bound<'_, PyDict>) -> PyResult<BTreeMap<String, ParamValue>> {
    let mut p = BTreeMap::new();
    for (k, v) in d.iter() {
        p.insert(k.extract::<String>()?, param_from_py(&v)?);
    }
    Ok(p)
}

pub(crate) fn enqueue<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    params: &Bound<'_, PyDict>,
    user_attrs: Option<&Bound<'_, PyDict>>,
    skip_if_exists: bool,
) -> PyResult<Option<u64>> {
    let p = params_from_py(params)?;
    let attrs = attrs_from_py(user_attrs)?;
    s.enqueue_params(py, p, attrs, skip_if_exists)
}

// ------------------------------------------------------------------ trials

pub(crate) fn trial<S: StudyBackend>(s: &S, py: Python<'_>, number: u64) -> PyResult<Py<PyAny>> {
    record_to_py(py, &s.trial_record(py, number)?)
}

pub(crate) fn trial_params<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    number: u64,
) -> PyResult<Py<PyAny>> {
    let t = s.trial_record(py, number)?;
    let d = PyDict::new(py);
    for (k, v) in &t.params {
        d.set_item(k, param_to_py(py, v)?)?;
    }
    Ok(d.into_any().unbind())
}

fn records_to_py(py: Python<'_>, ts: &[TrialRecord]) -> PyResult<Vec<Py<PyAny>>> {
    ts.iter().map(|t| record_to_py(py, t)).collect()
}

pub(crate) fn trials<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    states: Option<Vec<String>>,
) -> PyResult<Vec<Py<PyAny>>> {
    let states = parse_states(states)?;
    records_to_py(py, &s.trial_records(py, states)?)
}

pub(crate) fn n_trials<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    states: Option<Vec<String>>,
) -> PyResult<usize> {
    let states = parse_states(states)?;
    s.count_trials(py, states)
}

pub(crate) fn best_trial<S: StudyBackend>(s: &S, py: Python<'_>) -> PyResult<Py<PyAny>> {
    record_to_py(py, &s.best_record(py)?)
}

pub(crate) fn best_trials<S: StudyBackend>(s: &S, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
    records_to_py(py, &s.best_records(py)?)
}

// ------------------------------------------------------------------ attributes

pub(crate) fn set_attr<S: StudyBackend>(
    s: &S,
    py: Python<'_>,
    target: AttrTarget,
    system: bool,
    key: String,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let v = attr_from_py(value)?;
    s.store_attr(py, target, system, key, v)
}

pub(crate) fn attrs<'py, S: StudyBackend>(
    s: &S,
    py: Python<'py>,
    system: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let a = s.load_attrs(py, system)?;
    attrs_to_py(py, &a)
}

// ------------------------------------------------------------------ run

/// Calls `step` with how long it may wait (at most [`SLICE`]) until it returns a value,
/// checking signals in between; `Ok(None)` once `timeout` seconds (None: no limit) have passed.
pub(crate) fn poll<T>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut step: impl FnMut(Duration) -> PyResult<Option<T>>,
) -> PyResult<Option<T>> {
    let start = Instant::now();
    let limit = timeout.map(|t| Duration::from_secs_f64(t.clamp(0.0, 1e9)));
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
