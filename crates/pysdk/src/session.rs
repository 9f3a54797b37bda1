//! Sessions and their variables in this process's engine (`dspex.DSpexSessionContext`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dspex_engine::session::{DType, Data, Session, SessionLimits, Sessions, VarEvent, VarType};
use dspex_engine::tools::{Call, ToolCall, ToolParam, ToolProvider, ToolSpec};
use dspex_engine::EngineError;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::{block, dist_to_py, engine, guard, to_py_err};

/// The sessions of the embedded engine; idle ones are swept every second.
fn registry() -> PyResult<Arc<Sessions>> {
    static REG: OnceLock<Arc<Sessions>> = OnceLock::new();
    if let Some(r) = REG.get() {
        return Ok(r.clone());
    }
    let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
    let reg = REG
        .get_or_init(|| {
            let reg = Arc::new(Sessions::new(SessionLimits::default()));
            let weak = Arc::downgrade(&reg);
            h.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(r) => {
                            r.sweep();
                        }
                        None => break,
                    }
                }
            });
            reg
        })
        .clone();
    Ok(reg)
}

pub(crate) fn data_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Data> {
    if obj.is_none() {
        Ok(Data::Null)
    } else if obj.is_instance_of::<PyBool>() {
        Ok(Data::Bool(obj.extract()?))
    } else if obj.is_instance_of::<PyInt>() {
        obj.extract::<i64>()
            .map(Data::Int)
            .map_err(|_| PyValueError::new_err(format!("integer {obj} is out of the int64 range")))
    } else if obj.is_instance_of::<PyFloat>() {
        Ok(Data::Float(obj.extract()?))
    } else if let Ok(s) = obj.cast::<PyString>() {
        Ok(Data::Str(s.to_cow()?.into_owned()))
    } else if let Ok(b) = obj.cast::<PyBytes>() {
        Ok(Data::Bytes(b.as_bytes().to_vec()))
    } else if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = BTreeMap::new();
        for (k, v) in d.iter() {
            let key: String = k.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "dict keys must be str, got {}",
                    k.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            m.insert(key, data_from_py(&v)?);
        }
        Ok(Data::Map(m))
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        Ok(Data::List(
            obj.try_iter()?
                .map(|x| data_from_py(&x?))
                .collect::<PyResult<Vec<_>>>()?,
        ))
    } else if let Ok(b) = obj
        .call_method0("tobytes")
        .and_then(|b| b.extract::<Vec<u8>>())
    {
        // numpy arrays, memoryviews, array.array: their raw bytes
        Ok(Data::Bytes(b))
    } else {
        Err(PyTypeError::new_err(format!(
            "values must be None, bool, int, float, str, bytes, list or dict, got {} of type {}",
            obj.repr()?,
            obj.get_type().name()?
        )))
    }
}

pub(crate) fn data_to_py(py: Python<'_>, d: &Data) -> PyResult<Py<PyAny>> {
    Ok(match d {
        Data::Null => py.None(),
        Data::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Data::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Data::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        Data::Str(s) => PyString::new(py, s).into_any().unbind(),
        Data::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        Data::List(l) => PyList::new(
            py,
            l.iter()
                .map(|x| data_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any()
        .unbind(),
        Data::Map(m) => {
            let out = PyDict::new(py);
            for (k, v) in m {
                out.set_item(k, data_to_py(py, v)?)?;
            }
            out.into_any().unbind()
        }
    })
}

/// A variable type from its name and constraints (the keywords of `define`).
fn var_type(kind: &str, c: &Bound<'_, PyDict>) -> PyResult<VarType> {
    fn opt<'py, T: pyo3::conversion::FromPyObjectOwned<'py>>(
        c: &Bound<'py, PyDict>,
        key: &str,
    ) -> PyResult<Option<T>> {
        match c.get_item(key)? {
            Some(v) if !v.is_none() => v.extract().map(Some).map_err(|_| {
                PyTypeError::new_err(format!(
                    "{key}={}: wrong type",
                    v.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            }),
            _ => Ok(None),
        }
    }
    let allowed: &[&str] = match kind {
        "float" | "int" => &["min", "max", "log"],
        "str" => &["max_length", "pattern"],
        "bool" => &[],
        "choice" => &["choices"],
        "tensor" | "embedding" => &["shape", "dtype"],
        other => {
            return Err(PyValueError::new_err(format!(
            "unknown variable type {other:?} (float, int, str, bool, choice, embedding or tensor)"
        )))
        }
    };
    for k in c.keys() {
        let k: String = k.extract()?;
        if !allowed.contains(&k.as_str()) {
            return Err(PyTypeError::new_err(format!(
                "a {kind} variable takes no constraint {k:?} (it takes {allowed:?})"
            )));
        }
    }
    let log = opt::<bool>(c, "log")?.unwrap_or(false);
    Ok(match kind {
        "float" => VarType::Float {
            min: opt(c, "min")?,
            max: opt(c, "max")?,
            log,
        },
        "int" => VarType::Int {
            min: opt(c, "min")?,
            max: opt(c, "max")?,
            log,
        },
        "str" => VarType::Str {
            max_length: opt(c, "max_length")?,
            pattern: opt::<String>(c, "pattern")?
                .map(|p| {
                    dspex_engine::session::Regex::new(&p).map_err(|e| {
                        PyValueError::new_err(format!(
                            "pattern {p:?} is not a regular expression: {e}"
                        ))
                    })
                })
                .transpose()?,
        },
        "bool" => VarType::Bool,
        "choice" => {
            let choices = c
                .get_item("choices")?
                .ok_or_else(|| PyValueError::new_err("a choice variable needs choices=[...]"))?;
            VarType::Choice {
                choices: choices
                    .try_iter()?
                    .map(|x| data_from_py(&x?))
                    .collect::<PyResult<Vec<_>>>()?,
            }
        }
        _ => {
            let shape: Vec<usize> = opt(c, "shape")?.ok_or_else(|| {
                PyValueError::new_err(format!("a {kind} variable needs shape=(...)"))
            })?;
            let dtype = opt::<String>(c, "dtype")?.unwrap_or_else(|| "float32".into());
            VarType::Tensor {
                shape,
                dtype: DType::parse(&dtype).map_err(to_py_err)?,
            }
        }
    })
}

/// A session of the embedded engine.
#[pyclass(frozen, name = "Session", module = "dspex._native")]
pub(crate) struct PySession {
    inner: Arc<Session>,
}

#[pymethods]
impl PySession {
    /// Joins session `session_id` or creates it (a generated id when None); idle for `ttl`
    /// seconds, it expires.
    #[staticmethod]
    #[pyo3(signature = (session_id=None, ttl=3600.0))]
    fn open(py: Python<'_>, session_id: Option<String>, ttl: f64) -> PyResult<PySession> {
        let ttl = Duration::try_from_secs_f64(ttl).map_err(|_| {
            PyValueError::new_err(format!("ttl must be a number of seconds > 0, got {ttl}"))
        })?;
        let reg = registry()?;
        let inner = engine(py, move || reg.open(session_id.as_deref(), ttl))?;
        Ok(PySession { inner })
    }

    /// The ids of the embedded engine's open sessions.
    #[staticmethod]
    fn list_ids() -> PyResult<Vec<String>> {
        Ok(registry()?.list().into_iter().map(|s| s.id).collect())
    }

    #[getter]
    fn id(&self) -> &str {
        self.inner.id()
    }

    /// True while the session is open (not closed, not expired).
    #[getter]
    fn alive(&self) -> PyResult<bool> {
        Ok(registry()?
            .peek(self.inner.id())
            .is_some_and(|s| Arc::ptr_eq(&s, &self.inner)))
    }

    /// Closes the session and releases what it owns.
    fn close(&self) -> PyResult<()> {
        let reg = registry()?;
        guard(|| reg.close(self.inner.id()))?.map_err(to_py_err)
    }

    /// Declares a variable; returns its version.
    #[pyo3(signature = (name, kind, value, tunable=false, **constraints))]
    fn define(
        &self,
        py: Python<'_>,
        name: String,
        kind: String,
        value: &Bound<'_, PyAny>,
        tunable: bool,
        constraints: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<u64> {
        let empty = PyDict::new(py);
        let ty = var_type(&kind, constraints.unwrap_or(&empty))?;
        let value = data_from_py(value)?;
        let s = self.live()?;
        engine(py, move || s.define(&name, ty, value, tunable))
    }

    /// (value, version) of `name`.
    fn get(&self, py: Python<'_>, name: String) -> PyResult<(Py<PyAny>, u64)> {
        let s = self.live()?;
        let v = engine(py, move || s.variable(&name))?;
        Ok((data_to_py(py, &v.value)?, v.version))
    }

    /// Sets `name`; with `expected_version`, only if it is still at that version. Returns the
    /// new version.
    #[pyo3(signature = (name, value, expected_version=None))]
    fn set(
        &self,
        py: Python<'_>,
        name: String,
        value: &Bound<'_, PyAny>,
        expected_version: Option<u64>,
    ) -> PyResult<u64> {
        let value = data_from_py(value)?;
        let s = self.live()?;
        engine(py, move || s.set(&name, value, expected_version))
    }

    /// Sets several variables at once, all or none: `changes` is a list of (name, value,
    /// expected_version or None). Returns the new versions in order.
    fn set_many(
        &self,
        py: Python<'_>,
        changes: Vec<(String, Bound<'_, PyAny>, Option<u64>)>,
    ) -> PyResult<Vec<u64>> {
        let changes = changes
            .into_iter()
            .map(|(n, v, e)| Ok((n, data_from_py(&v)?, e)))
            .collect::<PyResult<Vec<_>>>()?;
        let s = self.live()?;
        engine(py, move || s.set_many(changes))
    }

    fn delete(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let s = self.live()?;
        engine(py, move || s.delete(&name))
    }

    /// Names of the variables matching the glob `pattern` (all when None), sorted.
    #[pyo3(signature = (pattern=None))]
    fn list(&self, pattern: Option<String>) -> PyResult<Vec<String>> {
        let s = self.live()?;
        guard(|| s.list(pattern.as_deref()))
    }

    /// (type name, tunable, distribution tuple or None) of `name`.
    fn spec(&self, py: Python<'_>, name: String) -> PyResult<(&'static str, bool, Py<PyAny>)> {
        let s = self.live()?;
        let v = engine(py, move || s.variable(&name))?;
        let dist = if v.tunable {
            let d = guard(|| v.ty.distribution())?.map_err(to_py_err)?;
            dist_to_py(py, &d)?
        } else {
            py.None()
        };
        Ok((v.ty.name(), v.tunable, dist))
    }

    /// Builds (or replaces) the BM25 index `name` over `texts` (`ids`: how results name the
    /// documents; their positions when None). Returns how many documents it holds.
    #[pyo3(signature = (name, texts, ids=None, stop_words=true, stem=false))]
    fn index(
        &self,
        py: Python<'_>,
        name: String,
        texts: Vec<String>,
        ids: Option<&Bound<'_, PyAny>>,
        stop_words: bool,
        stem: bool,
    ) -> PyResult<usize> {
        let ids = ids
            .map(|ids| {
                ids.try_iter()?
                    .map(|x| data_from_py(&x?))
                    .collect::<PyResult<Vec<_>>>()
            })
            .transpose()?;
        let s = self.live()?;
        let tok = dspex_engine::tools::tokenizer(stop_words, stem);
        engine(py, move || s.index(&name, texts, ids, tok))
    }

    /// The names of the session's indexes.
    fn index_names(&self) -> PyResult<Vec<String>> {
        Ok(self.live()?.index_names())
    }

    /// The session's tools (native and registered): name -> {description, params: [{name,
    /// type, default, required, description}], extra_args, returns}.
    fn tool_specs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for spec in self.live()?.tool_specs() {
            out.set_item(&spec.name, spec_to_py(py, &spec)?)?;
        }
        Ok(out)
    }

    /// Calls the tool `name` (native or registered) with the keyword arguments `kwargs`.
    fn call_tool(
        &self,
        py: Python<'_>,
        name: String,
        kwargs: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let mut args = BTreeMap::new();
        for (k, v) in kwargs.iter() {
            args.insert(k.extract::<String>()?, data_from_py(&v)?);
        }
        let s = self.live()?;
        let out = match dspex_engine::tools::call(&s, &name, args) {
            Call::Ready(r) => guard(|| r)?.map_err(to_py_err)?,
            pending => block(py, async move { pending.wait().await.map_err(to_py_err) })?,
        };
        data_to_py(py, &out)
    }

    /// Starts serving tools of this process: the inbox registers them and receives their calls.
    fn provide_tools(&self) -> PyResult<PyToolInbox> {
        let session = self.live()?;
        let (provider, rx) = ToolProvider::new();
        Ok(PyToolInbox {
            session,
            provider,
            calls: tokio::sync::Mutex::new(Some(rx)),
            closed: Default::default(),
            closing: Default::default(),
            pending: parking_lot::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// A stream of the changes to this session's variables from now on.
    fn watch(&self) -> PyResult<PyVarWatch> {
        let s = self.live()?;
        let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
        let rx = {
            let _enter = h.enter();
            s.watch()
        };
        Ok(PyVarWatch {
            rx: tokio::sync::Mutex::new(rx),
        })
    }
}

impl PySession {
    /// The session, refreshed; an error once it was closed or expired.
    fn live(&self) -> PyResult<Arc<Session>> {
        let reg = registry()?;
        match reg.get(self.inner.id()) {
            Ok(s) if Arc::ptr_eq(&s, &self.inner) => Ok(s),
            _ => Err(to_py_err(dspex_engine::EngineError::NotFoundIn {
                what: "session",
                name: format!("{} (closed or expired)", self.inner.id()),
            })),
        }
    }
}

/// Changes to a session's variables, in order.
#[pyclass(frozen, name = "VariableWatch", module = "dspex._native")]
pub(crate) struct PyVarWatch {
    rx: tokio::sync::Mutex<tokio::sync::broadcast::Receiver<VarEvent>>,
}

#[pymethods]
impl PyVarWatch {
    /// The next change as (name, value or None when deleted, version), waiting at most
    /// `timeout` seconds (None when nothing came); `lagged` is raised as a RuntimeError when
    /// changes were missed.
    #[pyo3(signature = (timeout=1.0))]
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<(String, Py<PyAny>, u64)>> {
        let wait = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
        let got = block(py, async {
            let mut rx = self.rx.lock().await;
            Ok(tokio::time::timeout(wait, rx.recv()).await)
        })?;
        match got {
            Err(_) => Ok(None),
            Ok(Ok(e)) => {
                let v = match &e.value {
                    Some(d) => data_to_py(py, d)?,
                    None => py.None(),
                };
                Ok(Some((e.name, v, e.version)))
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "the watch missed {n} changes (read it faster)"
                )))
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => Ok(None),
        }
    }
}

fn spec_to_py<'py>(py: Python<'py>, spec: &ToolSpec) -> PyResult<Bound<'py, PyDict>> {
    let params = PyList::empty(py);
    for p in &spec.params {
        let d = PyDict::new(py);
        d.set_item("name", &p.name)?;
        d.set_item("type", &p.ty)?;
        d.set_item("required", p.required)?;
        d.set_item(
            "default",
            match &p.default {
                Some(v) => data_to_py(py, v)?,
                None => py.None(),
            },
        )?;
        d.set_item("description", &p.description)?;
        params.append(d)?;
    }
    let s = PyDict::new(py);
    s.set_item("description", &spec.description)?;
    s.set_item("params", params)?;
    s.set_item("extra_args", spec.extra_args)?;
    s.set_item("returns", &spec.returns)?;
    Ok(s)
}

/// A spec as `dspex.session` derives it from a function's signature: {name, description,
/// params: [{name, type, required, default (optional)}], extra_args, returns}.
fn spec_from_py(d: &Bound<'_, PyDict>) -> PyResult<ToolSpec> {
    fn item<'py>(d: &Bound<'py, PyDict>, k: &str) -> PyResult<Bound<'py, PyAny>> {
        d.get_item(k)?
            .ok_or_else(|| PyValueError::new_err(format!("a tool spec needs {k:?}")))
    }
    let mut params = Vec::new();
    for p in item(d, "params")?.try_iter()? {
        let p = p?;
        let p = p.cast::<PyDict>()?;
        params.push(ToolParam {
            name: item(p, "name")?.extract()?,
            ty: item(p, "type")?.extract()?,
            required: item(p, "required")?.extract()?,
            default: match p.get_item("default")? {
                Some(v) => Some(data_from_py(&v)?),
                None => None,
            },
            description: String::new(),
        });
    }
    Ok(ToolSpec {
        name: item(d, "name")?.extract()?,
        description: item(d, "description")?.extract()?,
        params,
        extra_args: item(d, "extra_args")?.extract()?,
        returns: item(d, "returns")?.extract()?,
    })
}

/// A call as Python threads take it: (call id, tool name, kwargs).
type TakenCall<'py> = (u64, String, Bound<'py, PyDict>);

type Reply = tokio::sync::oneshot::Sender<Result<Data, EngineError>>;

/// The calls to the tools this process registered in a session, and their answers. Python
/// threads take calls with `next`, run them and answer with `reply` or `fail`.
#[pyclass(frozen, name = "ToolInbox", module = "dspex._native")]
pub(crate) struct PyToolInbox {
    session: Arc<Session>,
    provider: Arc<ToolProvider>,
    /// None once closed.
    calls: tokio::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ToolCall>>>,
    closed: std::sync::atomic::AtomicBool,
    /// Wakes the thread waiting in `next` when the inbox closes.
    closing: tokio::sync::Notify,
    /// The calls taken and not answered yet: their tool and where the answer goes.
    pending: parking_lot::Mutex<HashMap<u64, (String, Reply)>>,
    next_id: AtomicU64,
}

#[pymethods]
impl PyToolInbox {
    /// Registers (or replaces) a tool served by this inbox; its calls time out after `timeout`
    /// seconds.
    fn register(&self, spec: &Bound<'_, PyDict>, timeout: f64) -> PyResult<()> {
        let spec = spec_from_py(spec)?;
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            PyValueError::new_err(format!(
                "timeout must be a number of seconds > 0, got {timeout}"
            ))
        })?;
        guard(|| self.session.register_tool(spec, &self.provider, timeout))?.map_err(to_py_err)
    }

    /// Removes the tool `name` of this inbox.
    fn unregister(&self, name: &str) -> PyResult<()> {
        guard(|| self.session.unregister_tool(name, &self.provider))?.map_err(to_py_err)
    }

    /// Up to `max` calls as (call id, tool name, kwargs), waiting at most `timeout` seconds
    /// for the first; None once the inbox is closed.
    #[pyo3(signature = (max=16, timeout=0.2))]
    fn next<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout: f64,
    ) -> PyResult<Option<Vec<TakenCall<'py>>>> {
        let wait = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
        let got = block(py, async {
            let mut calls = self.calls.lock().await;
            if self.closed.load(Ordering::Acquire) {
                calls.take(); // calls still queued fail with ToolUnavailable
            }
            let Some(rx) = calls.as_mut() else {
                return Ok(None);
            };
            let mut out = Vec::new();
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => out.push(c),
                    None => return Ok(None),
                },
                _ = tokio::time::sleep(wait) => return Ok(Some(out)),
                _ = self.closing.notified() => {
                    calls.take();
                    return Ok(None);
                }
            }
            while out.len() < max.max(1) {
                match rx.try_recv() {
                    Ok(c) => out.push(c),
                    Err(_) => break,
                }
            }
            Ok(Some(out))
        })?;
        let Some(got) = got else { return Ok(None) };
        let mut out = Vec::with_capacity(got.len());
        for c in got {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let kwargs = PyDict::new(py);
            for (k, v) in &c.args {
                kwargs.set_item(k, data_to_py(py, v)?)?;
            }
            self.pending.lock().insert(id, (c.tool.clone(), c.reply));
            out.push((id, c.tool, kwargs));
        }
        Ok(Some(out))
    }

    /// Answers call `call_id` with `value` (None, bool, int, float, str, bytes, lists, dicts).
    fn reply(&self, call_id: u64, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = data_from_py(value)?;
        if let Some((_, tx)) = self.pending.lock().remove(&call_id) {
            let _ = tx.send(Ok(v)); // the caller may have timed out: nobody to tell
        }
        Ok(())
    }

    /// Answers call `call_id` with the exception the tool raised (its type name, message and
    /// formatted traceback).
    fn fail(&self, call_id: u64, kind: &str, message: &str, traceback: &str) {
        if let Some((tool, tx)) = self.pending.lock().remove(&call_id) {
            let _ = tx.send(Err(EngineError::tool_raised(
                &tool, kind, message, traceback,
            )));
        }
    }

    /// Stops serving: this inbox's tools leave the session and calls in flight fail with
    /// ToolUnavailable.
    fn close(&self) {
        self.session.drop_provider(self.provider.id());
        self.closed.store(true, Ordering::Release);
        self.closing.notify_waiters();
        self.pending.lock().clear();
    }
}

/// The terms BM25 indexes for `text` (the tokenizer of `Session.index`).
#[pyfunction]
#[pyo3(signature = (text, stop_words=true, stem=false))]
pub(crate) fn tokenize(text: &str, stop_words: bool, stem: bool) -> PyResult<Vec<String>> {
    guard(|| dspex_engine::tools::tokenizer(stop_words, stem).tokens(text))
}
