//! `dspex._native`: the PyO3 extension module.
//!
//! Thin by design: it converts Python values to engine types and back, and delegates. Every call
//! into the engine runs with the GIL released (`py.detach`) inside `catch_unwind`, so engine work
//! never blocks other Python threads and no Rust panic reaches Python. Blocking waits wake up
//! every few tens of milliseconds to run `check_signals`, so Ctrl-C works while the main thread
//! waits for the engine.

/// mimalloc keeps the pages the samplers free between samples (glibc returns them to the OS
/// and page-faults them back on every sample).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use dspex_engine::model::{from_unix_seconds, unix_seconds};
use dspex_engine::optimizer::pruners::{
    HyperbandPruner, MedianPruner, MinResource, NopPruner, PatientPruner, PercentilePruner,
    SuccessiveHalvingPruner, ThresholdPruner, WilcoxonPruner,
};
use dspex_engine::optimizer::samplers::{GridSampler, RandomSampler, TpeOptions, TpeSampler};
use dspex_engine::optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
    Pruner as PrunerTrait, Sampler as SamplerTrait, StudyDirection, TrialState,
};
use dspex_engine::{
    AttrMap, AttrValue, Done, EngineError, InMemoryStorage, Outcome, Pulled, Run as EngineRun,
    RunOptions, RunSummary, Storage as StorageTrait, Study as EngineStudy, TrialRecord,
};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyKeyError, PyNotImplementedError, PyRuntimeError, PyRuntimeWarning, PyTypeError,
    PyUserWarning, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

create_exception!(
    _native,
    DSpexError,
    PyException,
    "Base class of dspex's own errors."
);
create_exception!(
    _native,
    DuplicatedStudyError,
    DSpexError,
    "A study with this name already exists."
);
create_exception!(
    _native,
    StorageError,
    DSpexError,
    "A storage backend failed (unreachable database, unknown schema, corrupted rows, read-only file)."
);

mod common;
mod remote;

use common::{AttrTarget, StudyBackend};

/// Polling period of blocking waits (signal checks in between).
const SLICE: Duration = Duration::from_millis(50);

fn to_py_err(e: EngineError) -> PyErr {
    let msg = e.to_string();
    match e {
        EngineError::InvalidArgument(_)
        | EngineError::IncompatibleDistribution { .. }
        | EngineError::TrialNotRunning { .. }
        | EngineError::NoData(_) => PyValueError::new_err(msg),
        EngineError::StudyNotFound(_) | EngineError::TrialNotFound(_) => PyKeyError::new_err(msg),
        EngineError::DuplicatedStudy(_) => DuplicatedStudyError::new_err(msg),
        EngineError::InvalidOperation(_) | EngineError::Internal(_) => PyRuntimeError::new_err(msg),
        EngineError::Unsupported(_) => PyNotImplementedError::new_err(msg),
        EngineError::Storage(_) => StorageError::new_err(msg),
    }
}

/// Runs engine code without the GIL and without letting a panic escape.
fn engine<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, EngineError> + Send,
    T: Send,
{
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py_err(e)),
        Err(_) => Err(PyRuntimeError::new_err(
            "internal error: the dspex engine panicked",
        )),
    }
}

/// Like [`engine`] for infallible calls.
fn engine_ok<T: Send, F: FnOnce() -> T + Send>(py: Python<'_>, f: F) -> PyResult<T> {
    engine(py, || Ok(f()))
}

fn warn(py: Python<'_>, runtime: bool, msg: &str) -> PyResult<()> {
    let category = if runtime {
        py.get_type::<PyRuntimeWarning>()
    } else {
        py.get_type::<PyUserWarning>()
    };
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    PyErr::warn(py, category.as_any(), &msg, 3)
}

// ------------------------------------------------------------------ value conversions

fn param_to_py(py: Python<'_>, v: &ParamValue) -> PyResult<Py<PyAny>> {
    Ok(match v {
        ParamValue::None => py.None(),
        ParamValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        ParamValue::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        ParamValue::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        ParamValue::Str(s) => PyString::new(py, s).into_any().unbind(),
    })
}

fn param_from_py(obj: &Bound<'_, PyAny>) -> PyResult<ParamValue> {
    if obj.is_none() {
        Ok(ParamValue::None)
    } else if obj.is_instance_of::<PyBool>() {
        Ok(ParamValue::Bool(obj.extract()?))
    } else if obj.is_instance_of::<PyInt>() {
        obj.extract::<i64>()
            .map(ParamValue::Int)
            .map_err(|_| PyValueError::new_err(format!("integer {obj} is out of range")))
    } else if obj.is_instance_of::<PyFloat>() {
        Ok(ParamValue::Float(obj.extract()?))
    } else if obj.is_instance_of::<PyString>() {
        Ok(ParamValue::Str(obj.extract()?))
    } else {
        // numpy scalars and friends: try int, then float.
        if let Ok(i) = obj
            .call_method0("__index__")
            .and_then(|v| v.extract::<i64>())
        {
            return Ok(ParamValue::Int(i));
        }
        if let Ok(f) = obj
            .call_method0("__float__")
            .and_then(|v| v.extract::<f64>())
        {
            return Ok(ParamValue::Float(f));
        }
        Err(PyTypeError::new_err(format!(
            "a parameter value must be None, bool, int, float or str, got {} of type {}",
            obj.repr()?,
            obj.get_type().name()?
        )))
    }
}

fn attr_to_py(py: Python<'_>, v: &AttrValue) -> PyResult<Py<PyAny>> {
    Ok(match v {
        AttrValue::Null => py.None(),
        AttrValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        AttrValue::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any().unbind()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any().unbind()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN))
                    .into_any()
                    .unbind()
            }
        }
        AttrValue::String(s) => PyString::new(py, s).into_any().unbind(),
        AttrValue::Array(a) => {
            let items = a
                .iter()
                .map(|x| attr_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        AttrValue::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, attr_to_py(py, x)?)?;
            }
            d.into_any().unbind()
        }
    })
}

fn attr_from_py(obj: &Bound<'_, PyAny>) -> PyResult<AttrValue> {
    if obj.is_none() {
        return Ok(AttrValue::Null);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(AttrValue::Bool(obj.extract()?));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(AttrValue::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(AttrValue::from(u));
        }
    }
    if obj.is_instance_of::<PyFloat>() {
        let f: f64 = obj.extract()?;
        return serde_json::Number::from_f64(f)
            .map(AttrValue::Number)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "attribute value {f} cannot be stored (JSON has no NaN or infinity)"
                ))
            });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(AttrValue::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = serde_json::Map::new();
        for (k, v) in d.iter() {
            let key: String = k.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "attribute dict keys must be str, got {}",
                    k.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            m.insert(key, attr_from_py(&v)?);
        }
        return Ok(AttrValue::Object(m));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items = obj
            .try_iter()?
            .map(|x| attr_from_py(&x?))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(AttrValue::Array(items));
    }
    if let Ok(f) = obj
        .call_method0("__float__")
        .and_then(|v| v.extract::<f64>())
    {
        if let Some(n) = serde_json::Number::from_f64(f) {
            return Ok(AttrValue::Number(n));
        }
    }
    Err(PyTypeError::new_err(format!(
        "attribute values must be JSON-serializable (None, bool, int, float, str, list, dict), got {} of type {}",
        obj.repr()?,
        obj.get_type().name()?
    )))
}

fn attrs_to_py<'py>(py: Python<'py>, attrs: &AttrMap) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in attrs {
        d.set_item(k, attr_to_py(py, v)?)?;
    }
    Ok(d)
}

fn attrs_from_py(d: Option<&Bound<'_, PyDict>>) -> PyResult<AttrMap> {
    let mut out = AttrMap::new();
    if let Some(d) = d {
        for (k, v) in d.iter() {
            out.insert(k.extract()?, attr_from_py(&v)?);
        }
    }
    Ok(out)
}

/// Distribution -> ("float", low, high, log, step) | ("int", low, high, log, step) |
/// ("categorical", (choices...)).
fn dist_to_py(py: Python<'_>, d: &Distribution) -> PyResult<Py<PyAny>> {
    Ok(match d {
        Distribution::Float(f) => ("float", f.low, f.high, f.log, f.step)
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        Distribution::Int(i) => ("int", i.low, i.high, i.log, i.step)
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        Distribution::Categorical(c) => {
            let choices = c
                .choices
                .iter()
                .map(|v| param_to_py(py, v))
                .collect::<PyResult<Vec<_>>>()?;
            ("categorical", PyTuple::new(py, choices)?)
                .into_pyobject(py)?
                .into_any()
                .unbind()
        }
    })
}

fn dist_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Distribution> {
    let t = obj
        .cast::<PyTuple>()
        .map_err(|_| PyTypeError::new_err("a distribution must be given as a tuple"))?;
    let kind: String = t.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "float" => {
            let (_, low, high, log, step): (String, f64, f64, bool, Option<f64>) = t.extract()?;
            Distribution::Float(
                FloatDistribution::new(low, high, log, step)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            )
        }
        "int" => {
            let (_, low, high, log, step): (String, i64, i64, bool, i64) = t.extract()?;
            Distribution::Int(
                IntDistribution::new(low, high, log, step)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            )
        }
        "categorical" => {
            let choices = t
                .get_item(1)?
                .try_iter()?
                .map(|c| param_from_py(&c?))
                .collect::<PyResult<Vec<_>>>()?;
            Distribution::Categorical(
                CategoricalDistribution::new(choices)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            )
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown distribution kind {other:?}"
            )))
        }
    })
}

fn parse_state(s: &str) -> PyResult<TrialState> {
    TrialState::parse(s).ok_or_else(|| PyValueError::new_err(format!("unknown trial state {s:?}")))
}

fn parse_states(states: Option<Vec<String>>) -> PyResult<Option<Vec<TrialState>>> {
    states
        .map(|ss| ss.iter().map(|s| parse_state(s)).collect())
        .transpose()
}

/// TrialRecord -> (number, state, params, distributions, values, intermediate_values,
/// user_attrs, system_attrs, datetime_start, datetime_complete).
fn record_to_py(py: Python<'_>, t: &TrialRecord) -> PyResult<Py<PyAny>> {
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
    let items: Vec<Py<PyAny>> = vec![
        t.number.into_pyobject(py)?.into_any().unbind(),
        PyString::new(py, t.state.as_str()).into_any().unbind(),
        params.into_any().unbind(),
        dists.into_any().unbind(),
        t.values.clone().into_pyobject(py)?.into_any().unbind(),
        inter.into_any().unbind(),
        attrs_to_py(py, &t.user_attrs)?.into_any().unbind(),
        attrs_to_py(py, &system)?.into_any().unbind(),
        t.datetime_start
            .map(unix_seconds)
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        t.datetime_complete
            .map(unix_seconds)
            .into_pyobject(py)?
            .into_any()
            .unbind(),
    ];
    Ok(PyTuple::new(py, items)?.into_any().unbind())
}

// ------------------------------------------------------------------ storage, samplers, pruners

/// An in-memory storage shared by the studies created on it.
#[pyclass(frozen, name = "InMemoryStorage", module = "dspex._native")]
struct PyStorage {
    inner: Arc<dyn StorageTrait>,
}

#[pymethods]
impl PyStorage {
    #[new]
    fn new() -> Self {
        PyStorage {
            inner: Arc::new(InMemoryStorage::new()),
        }
    }

    /// A SQLite / PostgreSQL storage in Optuna's schema (`sqlite:///path.db`,
    /// `postgresql://...`). Durations in seconds; `retry_max` < 0 means no limit.
    #[staticmethod]
    #[pyo3(signature = (url, heartbeat_interval=None, grace_period=None, retry=false, retry_max=None, retry_inherit_intermediate_values=false))]
    fn from_url(
        py: Python<'_>,
        url: String,
        heartbeat_interval: Option<f64>,
        grace_period: Option<f64>,
        retry: bool,
        retry_max: Option<u32>,
        retry_inherit_intermediate_values: bool,
    ) -> PyResult<PyStorage> {
        let secs = |name: &str, v: Option<f64>| -> PyResult<Option<Duration>> {
            match v {
                None => Ok(None),
                Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
                Some(s) => Err(PyValueError::new_err(format!(
                    "{name} must be a positive number of seconds, got {s}"
                ))),
            }
        };
        let options = dspex_engine::SqlOptions {
            heartbeat_interval: secs("heartbeat_interval", heartbeat_interval)?,
            grace_period: secs("grace_period", grace_period)?,
            retry: retry.then_some(dspex_engine::RetryPolicy {
                max_retry: retry_max,
                inherit_intermediate_values: retry_inherit_intermediate_values,
            }),
        };
        let st = engine(py, move || dspex_engine::SqlStorage::open(&url, options))?;
        Ok(PyStorage {
            inner: Arc::new(st),
        })
    }

    /// Study summaries: (study_id, name, directions, n_trials, user_attrs, system_attrs,
    /// datetime_start seconds or None).
    fn summaries(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let s = self.inner.clone();
        let all = engine(py, move || s.get_all_studies())?;
        let json = py.import("json")?;
        all.into_iter()
            .map(|x| {
                let ua = json.call_method1(
                    "loads",
                    (serde_json::Value::Object(x.user_attrs.into_iter().collect()).to_string(),),
                )?;
                let sa = json.call_method1(
                    "loads",
                    (serde_json::Value::Object(x.system_attrs.into_iter().collect()).to_string(),),
                )?;
                let dirs: Vec<&str> = x.directions.iter().map(|d| d.as_str()).collect();
                let items: Vec<Py<PyAny>> = vec![
                    x.study_id.into_pyobject(py)?.into_any().unbind(),
                    x.name.into_pyobject(py)?.into_any().unbind(),
                    dirs.into_pyobject(py)?.into_any().unbind(),
                    x.n_trials.into_pyobject(py)?.into_any().unbind(),
                    ua.unbind(),
                    sa.unbind(),
                    x.datetime_start
                        .map(dspex_engine::model::unix_seconds)
                        .into_pyobject(py)?
                        .into_any()
                        .unbind(),
                ];
                Ok(PyTuple::new(py, items)?.into_any().unbind())
            })
            .collect()
    }

    /// Names of the studies in this storage.
    fn study_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let s = self.inner.clone();
        engine(py, move || {
            Ok(s.get_all_studies()?.into_iter().map(|s| s.name).collect())
        })
    }

    fn delete_study(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let s = self.inner.clone();
        engine(py, move || {
            let id = s.get_study_id_from_name(&name)?;
            s.delete_study(id)
        })
    }
}

/// A sampler built by the engine (see `dspex.samplers`).
#[pyclass(frozen, name = "Sampler", module = "dspex._native")]
struct PySampler {
    inner: Arc<dyn SamplerTrait>,
    kind: &'static str,
}

#[pymethods]
impl PySampler {
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn __repr__(&self) -> String {
        format!("<dspex native sampler {}>", self.kind)
    }
}

#[pyfunction]
#[pyo3(signature = (seed=None))]
fn random_sampler(seed: Option<u64>) -> PySampler {
    PySampler {
        inner: Arc::new(RandomSampler::new(seed)),
        kind: "random",
    }
}

#[pyfunction]
#[pyo3(signature = (*, n_startup_trials, n_ei_candidates, multivariate, group, constant_liar, seed, prior_weight, consider_magic_clip, consider_endpoints, below_clip_factor))]
#[allow(clippy::too_many_arguments)]
fn tpe_sampler(
    py: Python<'_>,
    n_startup_trials: usize,
    n_ei_candidates: usize,
    multivariate: Option<bool>,
    group: bool,
    constant_liar: bool,
    seed: Option<u64>,
    prior_weight: f64,
    consider_magic_clip: bool,
    consider_endpoints: bool,
    below_clip_factor: f64,
) -> PyResult<PySampler> {
    let opts = TpeOptions {
        n_startup_trials,
        n_ei_candidates,
        multivariate,
        group,
        constant_liar,
        seed,
        prior_weight,
        consider_magic_clip,
        consider_endpoints,
        below_clip_factor,
    };
    let s = engine(py, move || Ok(TpeSampler::new(opts)?))?;
    Ok(PySampler {
        inner: Arc::new(s),
        kind: "tpe",
    })
}

#[pyfunction]
#[pyo3(signature = (search_space, seed=None))]
fn grid_sampler(
    py: Python<'_>,
    search_space: &Bound<'_, PyDict>,
    seed: Option<u64>,
) -> PyResult<PySampler> {
    let mut space = BTreeMap::new();
    for (k, v) in search_space.iter() {
        let name: String = k.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "search_space keys must be str, got {}",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let values = v
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "search_space[{name:?}] must be a sequence of values"
                ))
            })?
            .map(|x| param_from_py(&x?))
            .collect::<PyResult<Vec<_>>>()?;
        space.insert(name, values);
    }
    let s = engine(py, move || Ok(GridSampler::new(space, seed)?))?;
    Ok(PySampler {
        inner: Arc::new(s),
        kind: "grid",
    })
}

/// A pruner built by the engine (see `dspex.pruners`).
#[pyclass(frozen, name = "Pruner", module = "dspex._native")]
struct PyPruner {
    inner: Arc<dyn PrunerTrait>,
    kind: &'static str,
}

#[pymethods]
impl PyPruner {
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }
}

#[pyfunction]
fn nop_pruner() -> PyPruner {
    PyPruner {
        inner: Arc::new(NopPruner),
        kind: "nop",
    }
}

/// Builds a pruner from a constructor result, mapping bad arguments to ValueError.
fn make_pruner<P: PrunerTrait + 'static>(
    py: Python<'_>,
    kind: &'static str,
    f: impl FnOnce() -> Result<P, dspex_engine::optimizer::OptimizerError> + Send,
) -> PyResult<PyPruner> {
    let p = engine(py, move || Ok(f()?))?;
    Ok(PyPruner {
        inner: Arc::new(p),
        kind,
    })
}

#[pyfunction]
#[pyo3(signature = (percentile, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials))]
fn percentile_pruner(
    py: Python<'_>,
    percentile: f64,
    n_startup_trials: i64,
    n_warmup_steps: i64,
    interval_steps: i64,
    n_min_trials: i64,
) -> PyResult<PyPruner> {
    make_pruner(py, "percentile", move || {
        PercentilePruner::new(
            percentile,
            n_startup_trials,
            n_warmup_steps,
            interval_steps,
            n_min_trials,
        )
    })
}

#[pyfunction]
#[pyo3(signature = (n_startup_trials, n_warmup_steps, interval_steps, n_min_trials))]
fn median_pruner(
    py: Python<'_>,
    n_startup_trials: i64,
    n_warmup_steps: i64,
    interval_steps: i64,
    n_min_trials: i64,
) -> PyResult<PyPruner> {
    make_pruner(py, "median", move || {
        MedianPruner::new(
            n_startup_trials,
            n_warmup_steps,
            interval_steps,
            n_min_trials,
        )
    })
}

/// `min_resource`: None means "auto".
#[pyfunction]
#[pyo3(signature = (min_resource, reduction_factor, min_early_stopping_rate, bootstrap_count))]
fn successive_halving_pruner(
    py: Python<'_>,
    min_resource: Option<i64>,
    reduction_factor: i64,
    min_early_stopping_rate: i64,
    bootstrap_count: i64,
) -> PyResult<PyPruner> {
    let mr = min_resource.map_or(MinResource::Auto, MinResource::Fixed);
    make_pruner(py, "successive_halving", move || {
        SuccessiveHalvingPruner::new(
            mr,
            reduction_factor,
            min_early_stopping_rate,
            bootstrap_count,
        )
    })
}

/// `max_resource`: None means "auto".
#[pyfunction]
#[pyo3(signature = (min_resource, max_resource, reduction_factor, bootstrap_count))]
fn hyperband_pruner(
    py: Python<'_>,
    min_resource: i64,
    max_resource: Option<i64>,
    reduction_factor: i64,
    bootstrap_count: i64,
) -> PyResult<PyPruner> {
    make_pruner(py, "hyperband", move || {
        HyperbandPruner::new(
            min_resource,
            max_resource,
            reduction_factor,
            bootstrap_count,
        )
    })
}

#[pyfunction]
#[pyo3(signature = (lower, upper, n_warmup_steps, interval_steps))]
fn threshold_pruner(
    py: Python<'_>,
    lower: Option<f64>,
    upper: Option<f64>,
    n_warmup_steps: i64,
    interval_steps: i64,
) -> PyResult<PyPruner> {
    make_pruner(py, "threshold", move || {
        ThresholdPruner::new(lower, upper, n_warmup_steps, interval_steps)
    })
}

/// Lets a shared pruner be wrapped by one that wants to own it.
#[derive(Debug)]
struct SharedPruner(Arc<dyn PrunerTrait>);

impl PrunerTrait for SharedPruner {
    fn prune(&self, history: &dspex_engine::optimizer::History, trial: u64) -> bool {
        self.0.prune(history, trial)
    }
}

#[pyfunction]
#[pyo3(signature = (wrapped, patience, min_delta))]
fn patient_pruner(
    py: Python<'_>,
    wrapped: Option<&PyPruner>,
    patience: i64,
    min_delta: f64,
) -> PyResult<PyPruner> {
    let inner: Option<Box<dyn PrunerTrait>> =
        wrapped.map(|w| Box::new(SharedPruner(w.inner.clone())) as Box<dyn PrunerTrait>);
    make_pruner(py, "patient", move || {
        PatientPruner::new(inner, patience, min_delta)
    })
}

#[pyfunction]
#[pyo3(signature = (p_threshold, n_startup_steps))]
fn wilcoxon_pruner(py: Python<'_>, p_threshold: f64, n_startup_steps: i64) -> PyResult<PyPruner> {
    make_pruner(py, "wilcoxon", move || {
        WilcoxonPruner::new(p_threshold, n_startup_steps)
    })
}

/// Checks a float distribution; returns the (possibly adjusted) high and the adjustment note.
#[pyfunction]
#[pyo3(signature = (low, high, log, step))]
fn check_float_distribution(
    low: f64,
    high: f64,
    log: bool,
    step: Option<f64>,
) -> PyResult<(f64, Option<String>)> {
    FloatDistribution::checked(low, high, log, step)
        .map(|(d, note)| (d.high, note))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pyfunction]
#[pyo3(signature = (low, high, log, step))]
fn check_int_distribution(
    low: i64,
    high: i64,
    log: bool,
    step: i64,
) -> PyResult<(i64, Option<String>)> {
    IntDistribution::checked(low, high, log, step)
        .map(|(d, note)| (d.high, note))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pyfunction]
fn check_categorical_distribution(choices: &Bound<'_, PyAny>) -> PyResult<()> {
    let values = choices
        .try_iter()?
        .map(|c| param_from_py(&c?))
        .collect::<PyResult<Vec<_>>>()?;
    CategoricalDistribution::new(values)
        .map(|_| ())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Optuna's JSON form of a distribution tuple.
#[pyfunction]
fn distribution_to_json(dist: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(dist_from_py(dist)?.to_json())
}

#[pyfunction]
fn distribution_from_json(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    let d = Distribution::from_json(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
    dist_to_py(py, &d)
}

// ------------------------------------------------------------------ study

fn parse_directions(directions: Vec<String>) -> PyResult<Vec<StudyDirection>> {
    directions
        .iter()
        .map(|d| {
            StudyDirection::parse(d).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "direction must be 'minimize' or 'maximize', got {d:?}"
                ))
            })
        })
        .collect()
}

/// (state, values, fail_reason) as returned by `tell`.
type ToldTuple = (&'static str, Option<Vec<f64>>, Option<String>);

/// A study living in the engine.
#[pyclass(frozen, name = "Study", module = "dspex._native")]
struct PyStudy {
    inner: Arc<EngineStudy>,
}

fn float_from_param(v: &ParamValue) -> f64 {
    match v {
        ParamValue::Float(f) => *f,
        ParamValue::Int(i) => *i as f64,
        _ => f64::NAN,
    }
}

impl StudyBackend for PyStudy {
    fn suggest_value(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: Distribution,
    ) -> PyResult<(ParamValue, Option<String>)> {
        let s = self.inner.clone();
        let suggested = engine(py, move || s.suggest(number, &name, &dist))?;
        Ok((suggested.value, suggested.warning))
    }

    fn report_value(&self, py: Python<'_>, number: u64, step: i64, value: f64) -> PyResult<bool> {
        let s = self.inner.clone();
        engine(py, move || s.report(number, step, value))
    }

    fn prune_check(&self, py: Python<'_>, number: u64) -> PyResult<bool> {
        let s = self.inner.clone();
        engine(py, move || s.should_prune(number))
    }

    fn tell_outcome(
        &self,
        py: Python<'_>,
        number: u64,
        outcome: Outcome,
        strict: bool,
    ) -> PyResult<ToldTuple> {
        let s = self.inner.clone();
        let told = engine(py, move || s.tell(number, outcome, strict))?;
        Ok((told.state.as_str(), told.values, told.fail_reason))
    }

    fn enqueue_params(
        &self,
        py: Python<'_>,
        params: BTreeMap<String, ParamValue>,
        user_attrs: AttrMap,
        skip_if_exists: bool,
    ) -> PyResult<Option<u64>> {
        let s = self.inner.clone();
        engine(py, move || s.enqueue(params, user_attrs, skip_if_exists))
    }

    fn trial_record(&self, py: Python<'_>, number: u64) -> PyResult<TrialRecord> {
        let s = self.inner.clone();
        engine(py, move || s.trial(number))
    }

    fn trial_records(
        &self,
        py: Python<'_>,
        states: Option<Vec<TrialState>>,
    ) -> PyResult<Vec<TrialRecord>> {
        let s = self.inner.clone();
        engine(py, move || s.trials(states.as_deref()))
    }

    fn count_trials(&self, py: Python<'_>, states: Option<Vec<TrialState>>) -> PyResult<usize> {
        let s = self.inner.clone();
        engine(py, move || {
            s.storage().get_n_trials(s.id(), states.as_deref())
        })
    }

    fn best_record(&self, py: Python<'_>) -> PyResult<TrialRecord> {
        let s = self.inner.clone();
        engine(py, move || s.best_trial())
    }

    fn best_records(&self, py: Python<'_>) -> PyResult<Vec<TrialRecord>> {
        let s = self.inner.clone();
        engine(py, move || s.best_trials())
    }

    fn store_attr(
        &self,
        py: Python<'_>,
        target: AttrTarget,
        system: bool,
        key: String,
        value: AttrValue,
    ) -> PyResult<()> {
        let s = self.inner.clone();
        engine(py, move || match (target, system) {
            (AttrTarget::Study, false) => s.set_user_attr(&key, value),
            (AttrTarget::Study, true) => s.set_system_attr(&key, value),
            (AttrTarget::Trial(n), false) => {
                s.storage().set_trial_user_attr(s.id(), n, &key, value)
            }
            (AttrTarget::Trial(n), true) => {
                s.storage().set_trial_system_attr(s.id(), n, &key, value)
            }
        })
    }

    fn load_attrs(&self, py: Python<'_>, system: bool) -> PyResult<AttrMap> {
        let s = self.inner.clone();
        engine(py, move || {
            if system {
                s.system_attrs()
            } else {
                s.user_attrs()
            }
        })
    }
}

#[pymethods]
impl PyStudy {
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
            EngineStudy::create(st, name.as_deref(), dirs, sampler, pruner, load_if_exists)
        })?;
        Ok(PyStudy { inner })
    }

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
        let inner = engine(py, move || EngineStudy::load(st, &name, sampler, pruner))?;
        Ok(PyStudy { inner })
    }

    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[getter]
    fn directions(&self) -> Vec<&'static str> {
        self.inner.directions().iter().map(|d| d.as_str()).collect()
    }

    fn ask(&self, py: Python<'_>) -> PyResult<u64> {
        let s = self.inner.clone();
        engine(py, move || s.ask())
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
        common::suggest_float(self, py, number, name, low, high, log, step)
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
        common::suggest_int(self, py, number, name, low, high, step, log)
    }

    /// Returns the index of the chosen value in `choices`.
    fn suggest_categorical(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        choices: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        common::suggest_categorical(self, py, number, name, choices)
    }

    /// Suggests with a distribution tuple; returns the external value.
    fn suggest(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        common::suggest(self, py, number, name, dist)
    }

    fn report(&self, py: Python<'_>, number: u64, step: i64, value: f64) -> PyResult<bool> {
        self.report_value(py, number, step, value)
    }

    fn should_prune(&self, py: Python<'_>, number: u64) -> PyResult<bool> {
        self.prune_check(py, number)
    }

    /// Finishes a trial: `values` (COMPLETE if valid), or `state` "PRUNED"/"FAIL" with an
    /// optional `fail_reason`. Returns (state, values, fail_reason).
    #[pyo3(signature = (number, values=None, state=None, fail_reason=None, strict=false))]
    fn tell(
        &self,
        py: Python<'_>,
        number: u64,
        values: Option<Vec<f64>>,
        state: Option<String>,
        fail_reason: Option<String>,
        strict: bool,
    ) -> PyResult<ToldTuple> {
        common::tell(self, py, number, values, state, fail_reason, strict)
    }

    /// Checks values as tell would; returns the reason they cannot complete a trial.
    fn check_values(&self, values: Vec<f64>) -> Option<String> {
        self.inner.check_values(&values)
    }

    #[pyo3(signature = (params, user_attrs=None, skip_if_exists=false))]
    fn enqueue(
        &self,
        py: Python<'_>,
        params: &Bound<'_, PyDict>,
        user_attrs: Option<&Bound<'_, PyDict>>,
        skip_if_exists: bool,
    ) -> PyResult<Option<u64>> {
        common::enqueue(self, py, params, user_attrs, skip_if_exists)
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
        for (k, v) in params.iter() {
            let name: String = k.extract()?;
            let dist = t.distributions.get(&name).ok_or_else(|| {
                PyValueError::new_err(format!("parameter {name:?} has no distribution"))
            })?;
            let value = param_from_py(&v)?;
            let internal = dist
                .to_internal(&value)
                .map_err(|e| PyValueError::new_err(format!("parameter {name:?}: {e}")))?;
            t.internal_params.insert(name, internal);
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
        let s = self.inner.clone();
        engine(py, move || s.add_trial(&t))
    }

    fn trial(&self, py: Python<'_>, number: u64) -> PyResult<Py<PyAny>> {
        common::trial(self, py, number)
    }

    fn trial_state(&self, py: Python<'_>, number: u64) -> PyResult<&'static str> {
        let s = self.inner.clone();
        engine(py, move || {
            Ok(s.storage().get_trial_state(s.id(), number)?.as_str())
        })
    }

    fn trial_params(&self, py: Python<'_>, number: u64) -> PyResult<Py<PyAny>> {
        common::trial_params(self, py, number)
    }

    #[pyo3(signature = (states=None))]
    fn trials(&self, py: Python<'_>, states: Option<Vec<String>>) -> PyResult<Vec<Py<PyAny>>> {
        common::trials(self, py, states)
    }

    #[pyo3(signature = (states=None))]
    fn n_trials(&self, py: Python<'_>, states: Option<Vec<String>>) -> PyResult<usize> {
        common::n_trials(self, py, states)
    }

    fn best_trial(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        common::best_trial(self, py)
    }

    fn best_trials(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        common::best_trials(self, py)
    }

    fn set_user_attr(&self, py: Python<'_>, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        common::set_attr(self, py, AttrTarget::Study, false, key, value)
    }

    fn set_system_attr(
        &self,
        py: Python<'_>,
        key: String,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        common::set_attr(self, py, AttrTarget::Study, true, key, value)
    }

    fn user_attrs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        common::attrs(self, py, false)
    }

    fn system_attrs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        common::attrs(self, py, true)
    }

    fn set_trial_user_attr(
        &self,
        py: Python<'_>,
        number: u64,
        key: String,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        common::set_attr(self, py, AttrTarget::Trial(number), false, key, value)
    }

    fn set_trial_system_attr(
        &self,
        py: Python<'_>,
        number: u64,
        key: String,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        common::set_attr(self, py, AttrTarget::Trial(number), true, key, value)
    }
    /// Stops the active runs of this study; returns how many there were.
    fn stop(&self, py: Python<'_>) -> PyResult<usize> {
        let s = self.inner.clone();
        engine_ok(py, move || s.stop())
    }

    /// Starts a run that this process evaluates, `concurrency` trials at once (at most
    /// `max_concurrency`); a trial failed by the per-trial timeout is re-run up to
    /// `max_retries` times.
    #[pyo3(signature = (n_trials=None, timeout=None, concurrency=1, trial_timeout=None, max_retries=0, max_concurrency=None, evaluators_ask=false))]
    #[allow(clippy::too_many_arguments)]
    fn start_run(
        &self,
        py: Python<'_>,
        n_trials: Option<u64>,
        timeout: Option<f64>,
        concurrency: usize,
        trial_timeout: Option<f64>,
        max_retries: u32,
        max_concurrency: Option<usize>,
        evaluators_ask: bool,
    ) -> PyResult<PyRun> {
        let secs = |name: &str, v: Option<f64>| -> PyResult<Option<Duration>> {
            v.map(|t| {
                Duration::try_from_secs_f64(t).map_err(|_| {
                    PyValueError::new_err(format!(
                        "{name} must be a non-negative number of seconds, got {t}"
                    ))
                })
            })
            .transpose()
        };
        let opts = RunOptions {
            n_trials,
            timeout: secs("timeout", timeout)?,
            concurrency,
            max_concurrency,
            trial_timeout: secs("trial_timeout", trial_timeout)?,
            evaluators_ask,
        };
        let s = self.inner.clone();
        let run = engine(py, move || {
            EngineRun::start_with_retries(s, opts, max_retries)
        })?;
        Ok(PyRun { inner: run })
    }
}

// ------------------------------------------------------------------ run

fn summary_to_py(py: Python<'_>, s: &RunSummary) -> PyResult<Py<PyAny>> {
    use dspex_engine::StopReason as R;
    let (reason, detail) = match &s.reason {
        R::NTrials => ("n_trials", None),
        R::Timeout => ("timeout", None),
        R::Stopped => ("stopped", None),
        R::Exhausted => ("exhausted", None),
        R::Aborted(m) => ("aborted", Some(m.clone())),
        R::Interrupted(m) => ("interrupted", Some(m.clone())),
        R::Error(m) => ("error", Some(m.clone())),
    };
    Ok((s.started, s.finished, reason, detail, s.timed_out.clone())
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

/// One `optimize` run: evaluators pull trial numbers and answer with `done`.
#[pyclass(frozen, name = "Run", module = "dspex._native")]
struct PyRun {
    inner: Arc<EngineRun>,
}

#[pymethods]
impl PyRun {
    /// Up to `max` trial numbers to evaluate; [] when none came within `timeout` seconds
    /// (None: wait until one comes), None when the run is over. Checks signals while waiting.
    #[pyo3(signature = (max=1, timeout=None))]
    fn pull(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<Option<Vec<u64>>> {
        let got = common::poll(py, timeout, |slice| {
            let run = self.inner.clone();
            Ok(match engine_ok(py, move || run.pull(max, slice))? {
                Pulled::Requests(r) => Some(Some(r.into_iter().map(|r| r.number).collect())),
                Pulled::Closed => Some(None),
                Pulled::Empty => None,
            })
        })?;
        Ok(got.unwrap_or_else(|| Some(Vec::new())))
    }

    /// Tells the outcome of trial `number` and answers the run (`tell` then `done`) in one
    /// crossing. Returns (state, values, fail_reason), or None when the engine had finished
    /// the trial already (per-trial timeout, interrupt). Another error is raised after the run
    /// was answered with it as the abort reason.
    #[pyo3(signature = (number, values=None, state=None, fail_reason=None, abort=None))]
    fn finish(
        &self,
        py: Python<'_>,
        number: u64,
        values: Option<Vec<f64>>,
        state: Option<String>,
        fail_reason: Option<String>,
        abort: Option<String>,
    ) -> PyResult<Option<ToldTuple>> {
        let outcome = common::outcome(values, state, fail_reason)?;
        let run = self.inner.clone();
        engine(py, move || {
            let told = catch_unwind(AssertUnwindSafe(|| {
                run.study().tell(number, outcome, false)
            }))
            .unwrap_or_else(|_| {
                Err(EngineError::Internal(
                    "the engine panicked while finishing a trial".into(),
                ))
            });
            match told {
                Ok(t) => {
                    run.done(number, abort.map_or(Done::Finished, Done::Abort));
                    Ok(Some((t.state.as_str(), t.values, t.fail_reason)))
                }
                Err(EngineError::TrialNotRunning { .. }) => {
                    run.done(number, abort.map_or(Done::Finished, Done::Abort));
                    Ok(None)
                }
                Err(e) => {
                    run.done(number, Done::Abort(e.to_string()));
                    Err(e)
                }
            }
        })
    }

    /// Answers for a trial the evaluator finished (after `tell`); `abort` stops the run.
    #[pyo3(signature = (number, abort=None))]
    fn done(&self, number: u64, abort: Option<String>) {
        self.inner
            .done(number, abort.map_or(Done::Finished, Done::Abort));
    }

    fn stop(&self) {
        self.inner.stop();
    }

    fn interrupt(&self, reason: String) {
        self.inner.interrupt(reason);
    }

    #[getter]
    fn finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Waits for the end of the run: (started, finished, reason, detail, timed_out), or None
    /// after `timeout` seconds. Checks signals while waiting.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        common::poll(py, timeout, |slice| {
            let run = self.inner.clone();
            engine_ok(py, move || run.wait(slice))?
                .map(|s| summary_to_py(py, &s))
                .transpose()
        })
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DSpexError", m.py().get_type::<DSpexError>())?;
    m.add(
        "DuplicatedStudyError",
        m.py().get_type::<DuplicatedStudyError>(),
    )?;
    m.add("StorageError", m.py().get_type::<StorageError>())?;
    m.add_class::<PyStorage>()?;
    m.add_class::<PySampler>()?;
    m.add_class::<PyPruner>()?;
    m.add_class::<PyStudy>()?;
    m.add_class::<PyRun>()?;
    m.add_function(wrap_pyfunction!(random_sampler, m)?)?;
    m.add_function(wrap_pyfunction!(tpe_sampler, m)?)?;
    m.add_function(wrap_pyfunction!(grid_sampler, m)?)?;
    m.add_function(wrap_pyfunction!(nop_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(percentile_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(median_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(successive_halving_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(hyperband_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(threshold_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(patient_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(wilcoxon_pruner, m)?)?;
    m.add_function(wrap_pyfunction!(check_float_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(check_int_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(check_categorical_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(distribution_to_json, m)?)?;
    m.add_function(wrap_pyfunction!(distribution_from_json, m)?)?;
    remote::register(m)?;
    Ok(())
}
