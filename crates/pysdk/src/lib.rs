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

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use dspex_engine::optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
    Pruner as PrunerTrait, Sampler as SamplerTrait, StudyDirection, TrialState,
};
use dspex_engine::{
    AttrMap, AttrValue, EngineError, ErrorCode, InMemoryStorage, Storage as StorageTrait,
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

create_exception!(
    _native,
    RemoteError,
    DSpexError,
    "The remote engine cannot be reached, refused the call (UNAUTHENTICATED...) or the stream broke."
);
create_exception!(
    _native,
    ToolError,
    DSpexError,
    "A tool call failed: the tool raised (`.kind` is the type name of its exception, \
     `.remote_traceback` its traceback)."
);
create_exception!(
    _native,
    ToolTimeout,
    ToolError,
    "A tool did not answer within its timeout."
);
create_exception!(
    _native,
    ToolUnavailable,
    ToolError,
    "The process that registered a tool is gone."
);

create_exception!(
    _native,
    LMError,
    DSpexError,
    "An LM call failed: the server answered an error (`.status` is the HTTP status), gave no \
     answer after the retries (`.status` is None), or answered something that is not the API's JSON."
);
create_exception!(
    _native,
    BudgetExceeded,
    LMError,
    "A budget of the LM (max_calls, max_total_tokens, max_cost) is exhausted: the call was not made."
);

mod embedded;
mod lm;
mod remote;
mod remote_session;
mod server;
mod session;
mod signal;
mod study;

/// Polling period of blocking waits (signal checks in between).
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// The one map from engine error codes to Python exceptions, for embedded and remote studies
/// alike.
fn py_err(code: ErrorCode, msg: String) -> PyErr {
    py_err_from(code, msg, "", "")
}

/// [`py_err`] with what a tool error carries besides its message: the type name of the
/// exception the tool raised and its traceback (the `kind` and `remote_traceback` attributes).
fn py_err_from(code: ErrorCode, msg: String, kind: &str, traceback: &str) -> PyErr {
    let tool_err = |e: PyErr| {
        Python::attach(|py| {
            let v = e.value(py);
            let kind = if kind.is_empty() {
                v.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            } else {
                kind.to_string()
            };
            // Setting attributes on a fresh exception object cannot fail.
            let _ = v.setattr("kind", kind);
            let _ = v.setattr("remote_traceback", traceback);
        });
        e
    };
    match code {
        ErrorCode::ToolError => tool_err(ToolError::new_err(msg)),
        ErrorCode::ToolTimeout => tool_err(ToolTimeout::new_err(msg)),
        ErrorCode::ToolUnavailable => tool_err(ToolUnavailable::new_err(msg)),
        ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition => PyValueError::new_err(msg),
        ErrorCode::NotFound => PyKeyError::new_err(msg),
        ErrorCode::AlreadyExists => DuplicatedStudyError::new_err(msg),
        ErrorCode::InvalidOperation | ErrorCode::ResourceExhausted | ErrorCode::Internal => {
            PyRuntimeError::new_err(msg)
        }
        ErrorCode::Unimplemented => PyNotImplementedError::new_err(msg),
        ErrorCode::Storage => StorageError::new_err(msg),
    }
}

fn to_py_err(e: EngineError) -> PyErr {
    match &e {
        EngineError::Tool {
            kind, traceback, ..
        } => py_err_from(e.code(), e.to_string(), kind, traceback),
        _ => py_err(e.code(), e.to_string()),
    }
}

fn panicked() -> PyErr {
    PyRuntimeError::new_err("internal error: the dspex engine panicked")
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
        Err(_) => Err(panicked()),
    }
}

/// Runs a short computation of the engine's (with the GIL) without letting a panic escape.
fn guard<T>(f: impl FnOnce() -> T) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| panicked())
}

/// Runs `fut` on the engine's runtime without the GIL and without letting a panic escape.
fn block<T: Send, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: std::future::Future<Output = PyResult<T>> + Send,
{
    let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
    py.detach(|| catch_unwind(AssertUnwindSafe(|| h.block_on(fut))))
        .unwrap_or_else(|_| Err(panicked()))
}

/// Like [`block`] for waits that may be long (a program study, a tool call): `fut` runs as a
/// task of the engine's runtime while this thread checks signals every [`SLICE`]. When a signal
/// handler raises (Ctrl-C: `KeyboardInterrupt`) the task is cancelled, dropping the work it was
/// doing (a program study then stops and fails its trials in flight), and the exception is
/// raised once the cancellation and its clean-up are done.
fn block_interruptible<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = PyResult<T>> + Send + 'static,
{
    let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
    interruptible(
        py,
        h.spawn(fut),
        |task| match h.block_on(async { tokio::time::timeout(SLICE, task).await }) {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) if e.is_panic() => Some(Err(panicked())),
            Ok(Err(_)) => Some(Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the engine's task was cancelled",
            ))),
            Err(_) => None,
        },
        |task| {
            task.abort();
            h.block_on(async {
                let _ = task.await;
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), dspex_engine::runtime::settled())
                        .await;
            })
        },
    )
}

/// Waits without the GIL for what `poll(&mut waiting)` returns (it waits up to [`SLICE`], None
/// when nothing came), checking signals in between; when a signal handler raises,
/// `cancel(waiting)` runs (without the GIL) and then the exception is raised. A panic in either
/// becomes an error.
fn interruptible<W: Send, T: Send>(
    py: Python<'_>,
    mut waiting: W,
    mut poll: impl FnMut(&mut W) -> Option<PyResult<T>> + Send,
    cancel: impl FnOnce(W) + Send,
) -> PyResult<T> {
    loop {
        let got = py
            .detach(|| catch_unwind(AssertUnwindSafe(|| poll(&mut waiting))))
            .map_err(|_| panicked())?;
        if let Some(r) = got {
            return r;
        }
        if let Err(e) = py.check_signals() {
            let _ = py.detach(|| catch_unwind(AssertUnwindSafe(|| cancel(waiting))));
            return Err(e);
        }
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
                guard(|| FloatDistribution::new(low, high, log, step))?
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            )
        }
        "int" => {
            let (_, low, high, log, step): (String, i64, i64, bool, i64) = t.extract()?;
            Distribution::Int(
                guard(|| IntDistribution::new(low, high, log, step))?
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
                guard(|| CategoricalDistribution::new(choices))?
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

// ------------------------------------------------------------------ storage, samplers, pruners

/// An in-memory storage shared by the studies created on it.
#[pyclass(frozen, name = "InMemoryStorage", module = "dspex._native")]
pub(crate) struct PyStorage {
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
            load_chunk: None,
        };
        let inner = engine(py, move || {
            dspex_engine::storage::open_url_with(&url, options)
        })?;
        Ok(PyStorage { inner })
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

    /// Fails the stale RUNNING trials of study `name` (no heartbeat past the grace period) and
    /// re-queues them under the retry policy; the failed trial numbers.
    fn fail_stale_trials(&self, py: Python<'_>, name: String) -> PyResult<Vec<u64>> {
        let s = self.inner.clone();
        engine(py, move || {
            let id = s.get_study_id_from_name(&name)?;
            s.fail_stale_trials(id)
        })
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
pub(crate) struct PySampler {
    inner: Arc<dyn SamplerTrait>,
    kind: String,
}

#[pymethods]
impl PySampler {
    #[getter]
    fn kind(&self) -> &str {
        &self.kind
    }
    fn __repr__(&self) -> String {
        format!("<dspex native sampler {}>", self.kind)
    }

    /// Optuna's `infer_relative_search_space(study, trial)` on the study's trials read now:
    /// (name, distribution JSON) pairs.
    fn infer_relative_space(
        &self,
        py: Python<'_>,
        study: PyRef<'_, study::PyStudy>,
        trial: u64,
    ) -> PyResult<Vec<(String, String)>> {
        let h = history_now(py, &study)?;
        let s = self.inner.clone();
        engine(py, move || {
            Ok(s.infer_relative_search_space(&h, trial)
                .into_iter()
                .map(|(k, d)| (k, d.to_json()))
                .collect())
        })
    }

    /// Optuna's `sample_relative(study, trial, search_space)` (the space as (name, distribution
    /// JSON) pairs): internal values by name.
    fn sample_relative_params(
        &self,
        py: Python<'_>,
        study: PyRef<'_, study::PyStudy>,
        trial: u64,
        space: Vec<(String, String)>,
    ) -> PyResult<Vec<(String, f64)>> {
        let space = space
            .into_iter()
            .map(|(k, d)| dist_from_json(&d).map(|d| (k, d)))
            .collect::<PyResult<_>>()?;
        let h = history_now(py, &study)?;
        let s = self.inner.clone();
        engine(py, move || {
            Ok(s.sample_relative(&h, trial, &space).into_iter().collect())
        })
    }

    /// Optuna's `sample_independent(study, trial, name, distribution)`: the internal value.
    fn sample_independent_param(
        &self,
        py: Python<'_>,
        study: PyRef<'_, study::PyStudy>,
        trial: u64,
        name: String,
        distribution_json: String,
    ) -> PyResult<f64> {
        let dist = dist_from_json(&distribution_json)?;
        let h = history_now(py, &study)?;
        let s = self.inner.clone();
        engine(
            py,
            move || Ok(s.sample_independent(&h, trial, &name, &dist)),
        )
    }
}

/// The study's trials read now, as a sampler or pruner sees them (one read of every trial: what
/// a built-in sampler or pruner called from Python costs).
fn history_now(
    py: Python<'_>,
    study: &study::PyStudy,
) -> PyResult<dspex_engine::optimizer::History> {
    let records = study.backend.trial_records(py, None)?;
    let directions = study.backend.directions().to_vec();
    engine(py, move || {
        Ok(dspex_engine::model::history_from_records(
            &directions,
            &records,
        )?)
    })
}

fn dist_from_json(json: &str) -> PyResult<Distribution> {
    Distribution::from_json(json).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The GP sampler's Gaussian process on its own (Optuna's terminator evaluators use it).
#[pyclass(frozen, name = "GaussianProcess", module = "dspex._native")]
pub(crate) struct PyGaussianProcess {
    inner: Arc<dspex_engine::optimizer::samplers::GpRegressor>,
    dim: usize,
}

impl PyGaussianProcess {
    fn check(&self, what: &str, x: &[f64]) -> PyResult<()> {
        if x.len() != self.dim || x.iter().any(|v| !v.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "{what}: {} finite coordinates expected, got {x:?}",
                self.dim
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl PyGaussianProcess {
    /// Fits the kernel to rows `x` of normalised coordinates and standardised values `y`,
    /// starting from `start`'s hyperparameters when given.
    #[new]
    #[pyo3(signature = (x, y, is_categorical, deterministic=false, start=None))]
    fn new(
        py: Python<'_>,
        x: Vec<Vec<f64>>,
        y: Vec<f64>,
        is_categorical: Vec<bool>,
        deterministic: bool,
        start: Option<PyRef<'_, PyGaussianProcess>>,
    ) -> PyResult<Self> {
        let start = start.map(|s| s.inner.clone());
        let dim = is_categorical.len();
        let inner = engine(py, move || {
            dspex_engine::optimizer::samplers::GpRegressor::fit(
                &x,
                &y,
                &is_categorical,
                deterministic,
                start.as_deref(),
            )
            .map_err(EngineError::from)
        })?;
        Ok(PyGaussianProcess {
            inner: Arc::new(inner),
            dim,
        })
    }

    /// (mean, variance) of the latent function at each point.
    fn posterior(&self, py: Python<'_>, xs: Vec<Vec<f64>>) -> PyResult<Vec<(f64, f64)>> {
        for x in &xs {
            self.check("posterior", x)?;
        }
        let gp = self.inner.clone();
        engine(py, move || Ok(gp.posterior(&xs)))
    }

    /// The posterior covariance between two points.
    fn covariance(&self, a: Vec<f64>, b: Vec<f64>) -> PyResult<f64> {
        self.check("covariance", &a)?;
        self.check("covariance", &b)?;
        Ok(self.inner.covariance(&a, &b))
    }
}

/// Builds a sampler from its kind and constructor keywords (JSON; null means not given): the
/// engine validates them, as for study.toml and the wire.
#[pyfunction]
fn sampler(py: Python<'_>, kind: String, options_json: String) -> PyResult<PySampler> {
    let k = kind.clone();
    let inner = engine(py, move || {
        dspex_engine::config::sampler_from_component(&k, &options_json)
    })?;
    Ok(PySampler { inner, kind })
}

/// A pruner built by the engine (see `dspex.pruners`).
#[pyclass(frozen, name = "Pruner", module = "dspex._native")]
pub(crate) struct PyPruner {
    inner: Arc<dyn PrunerTrait>,
    kind: String,
}

#[pymethods]
impl PyPruner {
    #[getter]
    fn kind(&self) -> &str {
        &self.kind
    }

    /// Optuna's `prune(study, trial)` on the study's trials read now.
    fn prune_trial(
        &self,
        py: Python<'_>,
        study: PyRef<'_, study::PyStudy>,
        trial: u64,
    ) -> PyResult<bool> {
        let h = history_now(py, &study)?;
        let name = study.backend.name().to_string();
        let p = self.inner.clone();
        engine(py, move || {
            Ok(match p.for_study(&name) {
                Some(own) => own.prune(&h, trial),
                None => p.prune(&h, trial),
            })
        })
    }
}

/// Builds a pruner from its kind and constructor keywords (see [`sampler`]).
#[pyfunction]
fn pruner(py: Python<'_>, kind: String, options_json: String) -> PyResult<PyPruner> {
    let k = kind.clone();
    let inner = engine(py, move || {
        dspex_engine::config::pruner_from_component(&k, &options_json)
    })?;
    Ok(PyPruner { inner, kind })
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
    guard(|| FloatDistribution::checked(low, high, log, step))?
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
    guard(|| IntDistribution::checked(low, high, log, step))?
        .map(|(d, note)| (d.high, note))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pyfunction]
fn check_categorical_distribution(choices: &Bound<'_, PyAny>) -> PyResult<()> {
    let values = choices
        .try_iter()?
        .map(|c| param_from_py(&c?))
        .collect::<PyResult<Vec<_>>>()?;
    guard(|| CategoricalDistribution::new(values))?
        .map(|_| ())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Importance of parameters from a random forest fitted on `x` (rows: the trials' encoded
/// parameters) and `y` (their objective values), each parameter being a group of columns of
/// `x` inside `space` (one (low, high) per column). `method` is "fanova" (functional ANOVA,
/// None when the forest is constant) or "mdi" (mean decrease in impurity). Runs without the GIL.
#[pyfunction]
#[pyo3(signature = (x, y, space, groups, method, n_trees, max_depth, seed))]
#[allow(clippy::too_many_arguments)]
fn forest_importances(
    py: Python<'_>,
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
    space: Vec<(f64, f64)>,
    groups: Vec<Vec<usize>>,
    method: &str,
    n_trees: usize,
    max_depth: usize,
    seed: Option<u64>,
) -> PyResult<Option<Vec<f64>>> {
    use dspex_engine::optimizer::importance::{fanova_importances, Forest, ForestOptions};
    let bad = |m: String| Err(PyValueError::new_err(m));
    if x.len() != y.len() || x.is_empty() {
        return bad(format!(
            "{} rows of parameters for {} values",
            x.len(),
            y.len()
        ));
    }
    if let Some(i) = x.iter().position(|r| r.len() != space.len()) {
        return bad(format!(
            "row {i} has {} columns, the space {}",
            x[i].len(),
            space.len()
        ));
    }
    if let Some(i) =
        (0..x.len()).find(|&i| !y[i].is_finite() || x[i].iter().any(|v| !v.is_finite()))
    {
        return bad(format!("row {i} holds a value that is not finite"));
    }
    if let Some(g) = groups
        .iter()
        .find(|g| g.is_empty() || g.iter().any(|&c| c >= space.len()))
    {
        return bad(format!(
            "column group {g:?} is empty or out of the {} columns",
            space.len()
        ));
    }
    if n_trees == 0 || max_depth == 0 {
        return bad(format!(
            "n_trees and max_depth must be positive, got {n_trees} and {max_depth}"
        ));
    }
    let options = ForestOptions::new(
        n_trees,
        max_depth,
        seed.unwrap_or_else(dspex_engine::optimizer::rng::fresh_seed),
    );
    let method = method.to_owned();
    py.detach(move || {
        guard(move || {
            let forest = Forest::fit(&x, &y, options);
            match method.as_str() {
                "fanova" => Ok(fanova_importances(&forest, &space, &groups)),
                "mdi" => {
                    let per_column = forest.impurity_importances();
                    Ok(Some(
                        groups
                            .iter()
                            .map(|g| g.iter().map(|&c| per_column[c]).sum())
                            .collect(),
                    ))
                }
                other => bad(format!(
                    "unknown importance method {other:?} (fanova or mdi)"
                )),
            }
        })
    })?
}

/// Which `k` of the loss vectors (to minimise) are best, as multi-objective TPE splits trials:
/// whole non-domination ranks, the boundary rank tie-broken by hypervolume subset selection.
#[pyfunction]
fn best_of(py: Python<'_>, losses: Vec<Vec<f64>>, k: usize) -> PyResult<Vec<bool>> {
    let m = losses.first().map_or(0, Vec::len);
    if losses
        .iter()
        .any(|l| l.len() != m || l.iter().any(|v| v.is_nan()))
    {
        return Err(PyValueError::new_err(
            "loss vectors must have one length and no NaN",
        ));
    }
    py.detach(|| guard(|| dspex_engine::optimizer::multi_objective::best_of(&losses, k)))
}

/// The hypervolume dominated by `points` (to minimise) up to `reference`; points not better
/// than the reference in every objective add nothing.
#[pyfunction]
fn hypervolume(py: Python<'_>, points: Vec<Vec<f64>>, reference: Vec<f64>) -> PyResult<f64> {
    if points.iter().any(|p| p.len() != reference.len()) || reference.iter().any(|v| v.is_nan()) {
        return Err(PyValueError::new_err(format!(
            "every point needs {} values, as the reference point, and no NaN",
            reference.len()
        )));
    }
    py.detach(|| {
        guard(|| dspex_engine::optimizer::multi_objective::hypervolume(&points, &reference))
    })
}

/// Writes the batched updates of running trials of every open SQL storage (at exit).
#[pyfunction]
fn flush_storages(py: Python<'_>) -> PyResult<()> {
    py.detach(|| guard(dspex_engine::storage::flush_open_storages))?
        .map_err(to_py_err)
}

/// Whether a parameter recorded with `old` may be suggested again with `new` (the engine's
/// rule: same kind, same log setting, same choices); ValueError saying why not.
#[pyfunction]
fn check_distribution_compatibility(
    old: &Bound<'_, PyAny>,
    new: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (a, b) = (dist_from_py(old)?, dist_from_py(new)?);
    dspex_engine::model::check_compatible(&a, &b).map_err(PyValueError::new_err)
}

/// Optuna's JSON form of a distribution tuple.
#[pyfunction]
fn distribution_to_json(dist: &Bound<'_, PyAny>) -> PyResult<String> {
    let d = dist_from_py(dist)?;
    guard(|| d.to_json())
}

#[pyfunction]
fn distribution_from_json(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    let d = guard(|| Distribution::from_json(text))?
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
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
    m.add("RemoteError", m.py().get_type::<RemoteError>())?;
    m.add("ToolError", m.py().get_type::<ToolError>())?;
    m.add("ToolTimeout", m.py().get_type::<ToolTimeout>())?;
    m.add("ToolUnavailable", m.py().get_type::<ToolUnavailable>())?;
    m.add("LMError", m.py().get_type::<LMError>())?;
    m.add("BudgetExceeded", m.py().get_type::<BudgetExceeded>())?;
    m.add_class::<lm::PyLm>()?;
    m.add_class::<session::PyToolInbox>()?;
    m.add_class::<study::PyStudy>()?;
    m.add_class::<PyGaussianProcess>()?;
    m.add_class::<study::PyRun>()?;
    m.add_class::<study::PyTrialRecord>()?;
    m.add_class::<study::PyTold>()?;
    m.add_class::<study::PyRunSummary>()?;
    m.add_class::<remote::RemoteClient>()?;
    m.add_class::<server::EmbeddedServer>()?;
    m.add_class::<server::PyWorkerPool>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<session::PyVarWatch>()?;
    m.add_function(wrap_pyfunction!(session::tokenize, m)?)?;
    m.add_function(wrap_pyfunction!(server::cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(server::serve_embedded, m)?)?;
    m.add_function(wrap_pyfunction!(server::serve_sessions, m)?)?;
    m.add_function(wrap_pyfunction!(sampler, m)?)?;
    m.add_function(wrap_pyfunction!(forest_importances, m)?)?;
    m.add_function(wrap_pyfunction!(best_of, m)?)?;
    m.add_function(wrap_pyfunction!(check_distribution_compatibility, m)?)?;
    m.add_function(wrap_pyfunction!(flush_storages, m)?)?;
    m.add_function(wrap_pyfunction!(hypervolume, m)?)?;
    m.add_function(wrap_pyfunction!(pruner, m)?)?;
    m.add_function(wrap_pyfunction!(check_float_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(check_int_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(check_categorical_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(distribution_to_json, m)?)?;
    m.add_function(wrap_pyfunction!(distribution_from_json, m)?)?;
    Ok(())
}
