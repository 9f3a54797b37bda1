//! Sessions and their variables in this process's engine (`dspex.DSpexSessionContext`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dspex_engine::session::{Data, Session, SessionLimits, Sessions, VarEvent, VarType};
use dspex_engine::session_ops::{self, Applied, SessionOp, SessionOut};
use dspex_engine::tools::{ToolCall, ToolParam, ToolProvider, ToolSpec};
use dspex_engine::EngineError;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::remote::RemoteClient;
use crate::remote_session::{Failure, RemoteSession, WatchEvent};
use crate::{block, block_interruptible, dist_to_py, engine, guard, to_py_err};

/// The sessions of the embedded engine; idle ones are swept every second.
pub(crate) fn registry() -> PyResult<Arc<Sessions>> {
    static REG: OnceLock<Arc<Sessions>> = OnceLock::new();
    if let Some(r) = REG.get() {
        return Ok(r.clone());
    }
    let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
    let reg = REG
        .get_or_init(|| {
            let reg = Arc::new(Sessions::new(SessionLimits::default()));
            Sessions::spawn_sweeper(&reg, &h);
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

/// Where a session lives: in this process's engine, or on a served engine.
#[derive(Clone)]
enum Backend {
    Local(Arc<Session>),
    Remote(Arc<RemoteSession>),
}

/// A session (`dspex.DSpexSessionContext`): of this process's engine or of a served one.
#[pyclass(frozen, name = "Session", module = "dspex._native")]
pub(crate) struct PySession {
    backend: Backend,
}

fn py_map(d: Option<&Bound<'_, PyDict>>) -> PyResult<BTreeMap<String, Data>> {
    let mut m = BTreeMap::new();
    if let Some(d) = d {
        for (k, v) in d.iter() {
            m.insert(k.extract::<String>()?, data_from_py(&v)?);
        }
    }
    Ok(m)
}

fn unexpected(out: SessionOut) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(format!(
        "internal error: an unexpected answer {out:?}"
    ))
}

#[pymethods]
impl PySession {
    /// Joins session `session_id` of this process's engine, or creates it (a generated id when
    /// None); idle for `ttl` seconds, it expires.
    #[staticmethod]
    #[pyo3(signature = (session_id=None, ttl=3600.0))]
    fn open(py: Python<'_>, session_id: Option<String>, ttl: f64) -> PyResult<PySession> {
        let ttl = Duration::try_from_secs_f64(ttl).map_err(|_| {
            PyValueError::new_err(format!("ttl must be a number of seconds > 0, got {ttl}"))
        })?;
        let reg = registry()?;
        let inner = engine(py, move || reg.open(session_id.as_deref(), ttl))?;
        Ok(PySession {
            backend: Backend::Local(inner),
        })
    }

    /// Joins (or creates) session `session_id` of the served engine `client` is connected to.
    #[staticmethod]
    #[pyo3(signature = (client, session_id=None, ttl=3600.0))]
    fn connect(
        py: Python<'_>,
        client: &RemoteClient,
        session_id: Option<String>,
        ttl: f64,
    ) -> PyResult<PySession> {
        if !(ttl.is_finite() && ttl > 0.0) {
            return Err(PyValueError::new_err(format!(
                "ttl must be a number of seconds > 0, got {ttl}"
            )));
        }
        Ok(PySession {
            backend: Backend::Remote(RemoteSession::open(py, client, session_id, ttl)?),
        })
    }

    /// The ids of the open sessions of this process's engine.
    #[staticmethod]
    fn list_ids() -> PyResult<Vec<String>> {
        Ok(registry()?.list().into_iter().map(|s| s.id).collect())
    }

    #[getter]
    fn id(&self) -> String {
        match &self.backend {
            Backend::Local(s) => s.id().to_string(),
            Backend::Remote(r) => r.id.clone(),
        }
    }

    /// True while the session is open (not closed, not expired; for a served engine: while
    /// its stream is open).
    #[getter]
    fn alive(&self) -> PyResult<bool> {
        Ok(match &self.backend {
            Backend::Local(s) => registry()?
                .peek(s.id())
                .is_some_and(|open| Arc::ptr_eq(&open, s)),
            Backend::Remote(r) => r.alive(),
        })
    }

    /// Closes the session and releases what it owns.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        match &self.backend {
            Backend::Local(s) => {
                let reg = registry()?;
                guard(|| reg.close(s.id()))?.map_err(to_py_err)
            }
            Backend::Remote(r) => remote(py, || r.close()),
        }
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
        let ty = VarType::from_constraints(&kind, &py_map(constraints)?).map_err(to_py_err)?;
        let op = SessionOp::Define {
            name,
            ty,
            value: data_from_py(value)?,
            tunable,
        };
        match self.run(py, op)? {
            SessionOut::Version(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// (value, version) of `name`.
    fn get(&self, py: Python<'_>, name: String) -> PyResult<(Py<PyAny>, u64)> {
        match self.run(py, SessionOp::Get(name))? {
            SessionOut::Variable(d, v) => Ok((data_to_py(py, &d)?, v)),
            other => Err(unexpected(other)),
        }
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
        let op = SessionOp::Set(vec![(name, data_from_py(value)?, expected_version)]);
        match self.run(py, op)? {
            SessionOut::Versions(v) if v.len() == 1 => Ok(v[0]),
            other => Err(unexpected(other)),
        }
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
        match self.run(py, SessionOp::Set(changes))? {
            SessionOut::Versions(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    fn delete(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.run(py, SessionOp::Delete(name)).map(drop)
    }

    /// Names of the variables matching the glob `pattern` (all when None), sorted.
    #[pyo3(signature = (pattern=None))]
    fn list(&self, py: Python<'_>, pattern: Option<String>) -> PyResult<Vec<String>> {
        match self.run(py, SessionOp::List(pattern))? {
            SessionOut::Names(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// (type name, tunable, distribution tuple or None) of `name`.
    fn spec(&self, py: Python<'_>, name: String) -> PyResult<(String, bool, Py<PyAny>)> {
        match self.run(py, SessionOp::Spec(name))? {
            SessionOut::Spec(ty, tunable, dist) => {
                let dist = match dist {
                    Some(d) => dist_to_py(py, &d)?,
                    None => py.None(),
                };
                Ok((ty, tunable, dist))
            }
            other => Err(unexpected(other)),
        }
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
    ) -> PyResult<u64> {
        let ids = ids
            .map(|ids| {
                ids.try_iter()?
                    .map(|x| data_from_py(&x?))
                    .collect::<PyResult<Vec<_>>>()
            })
            .transpose()?;
        let op = SessionOp::Index {
            name,
            texts,
            ids,
            stop_words,
            stem,
        };
        match self.run(py, op)? {
            SessionOut::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// The session's tools (native and registered): name -> {description, params: [{name,
    /// type, default, required, description}], extra_args, returns}.
    fn tool_specs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let SessionOut::Tools(specs) = self.run(py, SessionOp::ToolSpecs)? else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "internal error: an unexpected answer to tool_specs",
            ));
        };
        let out = PyDict::new(py);
        for spec in specs {
            out.set_item(&spec.name, spec_to_py(py, &spec)?)?;
        }
        Ok(out)
    }

    /// Adds (or replaces) the LM `name` of the session from the JSON settings of
    /// `dspex.native.LM`; the `lm` tool and programs call it in the engine.
    fn add_lm(
        &self,
        py: Python<'_>,
        name: String,
        config_json: String,
        lm: PyRef<'_, crate::lm::PyLm>,
    ) -> PyResult<()> {
        match &self.backend {
            // this process's engine calls the very client Python holds: one accounting, one budget
            Backend::Local(_) => self
                .live()?
                .add_lm(&name, lm.lm.clone())
                .map_err(to_py_err)?,
            Backend::Remote(_) => {
                self.run(
                    py,
                    SessionOp::AddLm {
                        name,
                        config: config_json,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Runs a program (`action` "run") or a program study ("optimize") in the engine from
    /// its JSON settings (see `dspex.optimizer`); returns the result as data.
    fn program(&self, py: Python<'_>, action: String, spec_json: String) -> PyResult<Py<PyAny>> {
        let action = session_ops::ProgramAction::parse(&action).map_err(to_py_err)?;
        match self.run(
            py,
            SessionOp::Program {
                action,
                spec: spec_json,
            },
        )? {
            SessionOut::Value(d) => data_to_py(py, &d),
            other => Err(unexpected(other)),
        }
    }

    /// Calls the tool `name` (native or registered) with the keyword arguments `kwargs`.
    fn call_tool(
        &self,
        py: Python<'_>,
        name: String,
        kwargs: &Bound<'_, PyDict>,
    ) -> PyResult<Py<PyAny>> {
        let op = SessionOp::Call {
            tool: name,
            args: py_map(Some(kwargs))?,
        };
        match self.run(py, op)? {
            SessionOut::Value(d) => data_to_py(py, &d),
            other => Err(unexpected(other)),
        }
    }

    /// Starts serving tools of this process: the inbox registers them and receives their calls.
    fn provide_tools(&self) -> PyResult<PyToolInbox> {
        let (provider, rx) = ToolProvider::new();
        let backend = match &self.backend {
            Backend::Local(_) => InboxBackend::Local(self.live()?, provider),
            Backend::Remote(r) => {
                // The engine's calls come over the stream; this process's channel feeds the
                // inbox as the local engine's provider channel does.
                r.serve_tools(provider.sender());
                InboxBackend::Remote(r.clone())
            }
        };
        Ok(PyToolInbox {
            backend,
            calls: tokio::sync::Mutex::new(Some(rx)),
            closed: Default::default(),
            closing: Default::default(),
            pending: parking_lot::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// A stream of the changes to this session's variables from now on.
    fn watch(&self, py: Python<'_>) -> PyResult<PyVarWatch> {
        let rx = match &self.backend {
            Backend::Local(_) => {
                let s = self.live()?;
                let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
                let _enter = h.enter();
                Watch::Local(s.watch())
            }
            Backend::Remote(r) => Watch::Remote(remote(py, || r.watch())?),
        };
        Ok(PyVarWatch {
            rx: tokio::sync::Mutex::new(rx),
        })
    }
}

impl PySession {
    /// The local session, refreshed; an error once it was closed or expired.
    fn live(&self) -> PyResult<Arc<Session>> {
        let Backend::Local(inner) = &self.backend else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "internal error: a local operation on a remote session",
            ));
        };
        let reg = registry()?;
        match reg.get(inner.id()) {
            Ok(s) if Arc::ptr_eq(&s, inner) => Ok(s),
            _ => Err(to_py_err(EngineError::NotFoundIn {
                what: "session",
                name: format!("{} (closed or expired)", inner.id()),
            })),
        }
    }

    /// Runs `op` where the session lives.
    fn run(&self, py: Python<'_>, op: SessionOp) -> PyResult<SessionOut> {
        match &self.backend {
            Backend::Local(_) => {
                let s = self.live()?;
                match guard(|| session_ops::apply(&s, None, op))? {
                    Ok(Applied::Done(out)) => Ok(out),
                    Err(e) => Err(to_py_err(e)),
                    Ok(pending) => {
                        block_interruptible(
                            py,
                            async move { pending.wait().await.map_err(to_py_err) },
                        )
                    }
                }
            }
            Backend::Remote(r) => r.apply_interruptible(py, &op),
        }
    }
}

/// Runs a blocking call on a served engine's session without the GIL and without letting a
/// panic escape.
fn remote<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Failure> + Send) -> PyResult<T> {
    match py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))) {
        Ok(r) => r.map_err(Failure::into_py),
        Err(_) => Err(crate::panicked()),
    }
}

enum Watch {
    Local(tokio::sync::broadcast::Receiver<VarEvent>),
    Remote(tokio::sync::mpsc::UnboundedReceiver<WatchEvent>),
}

/// Changes to a session's variables, in order.
#[pyclass(frozen, name = "VariableWatch", module = "dspex._native")]
pub(crate) struct PyVarWatch {
    rx: tokio::sync::Mutex<Watch>,
}

#[pymethods]
impl PyVarWatch {
    /// The next change as (name, value or None when deleted, version), waiting at most
    /// `timeout` seconds (None when nothing came); a RuntimeError when changes were missed.
    #[pyo3(signature = (timeout=1.0))]
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<(String, Py<PyAny>, u64)>> {
        use tokio::sync::broadcast::error::RecvError;
        let wait = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
        let got: Option<WatchEvent> = block(py, async {
            let mut rx = self.rx.lock().await;
            let event = tokio::time::timeout(wait, async {
                match &mut *rx {
                    Watch::Local(rx) => match rx.recv().await {
                        Ok(e) => Some(Ok((e.name, e.value, e.version))),
                        Err(RecvError::Lagged(n)) => Some(Err(n)),
                        Err(RecvError::Closed) => None,
                    },
                    Watch::Remote(rx) => rx.recv().await,
                }
            })
            .await;
            Ok(event.ok().flatten())
        })?;
        match got {
            None => Ok(None),
            Some(Ok((name, value, version))) => {
                let v = match &value {
                    Some(d) => data_to_py(py, d)?,
                    None => py.None(),
                };
                Ok(Some((name, v, version)))
            }
            Some(Err(n)) => Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "the watch missed {n} changes (read it faster)"
            ))),
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
        shared: match d.get_item("shared")? {
            Some(v) => v.extract()?,
            None => false,
        },
    })
}

/// A call as Python threads take it: (call id, tool name, kwargs).
type TakenCall<'py> = (u64, String, Bound<'py, PyDict>);

type Reply = tokio::sync::oneshot::Sender<Result<Data, EngineError>>;

/// Where an inbox's tools are registered.
enum InboxBackend {
    /// In this process's engine, run by this provider.
    Local(Arc<Session>, Arc<ToolProvider>),
    /// On a served engine, whose calls come over the session stream.
    Remote(Arc<RemoteSession>),
}

/// The calls to the tools this process registered in a session, and their answers. Python
/// threads take calls with `next`, run them and answer with `reply` or `fail`.
#[pyclass(frozen, name = "ToolInbox", module = "dspex._native")]
pub(crate) struct PyToolInbox {
    backend: InboxBackend,
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
    fn register(&self, py: Python<'_>, spec: &Bound<'_, PyDict>, timeout: f64) -> PyResult<()> {
        let spec = spec_from_py(spec)?;
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            PyValueError::new_err(format!(
                "timeout must be a number of seconds > 0, got {timeout}"
            ))
        })?;
        match &self.backend {
            InboxBackend::Local(s, provider) => {
                guard(|| s.register_tool(spec, provider, timeout))?.map_err(to_py_err)
            }
            InboxBackend::Remote(r) => {
                remote(py, || r.apply(&SessionOp::Register { spec, timeout })).map(drop)
            }
        }
    }

    /// Removes the tool `name` of this inbox.
    fn unregister(&self, py: Python<'_>, name: String) -> PyResult<()> {
        match &self.backend {
            InboxBackend::Local(s, provider) => {
                guard(|| s.unregister_tool(&name, provider))?.map_err(to_py_err)
            }
            InboxBackend::Remote(r) => {
                remote(py, || r.apply(&SessionOp::Unregister(name))).map(drop)
            }
        }
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
        match &self.backend {
            InboxBackend::Local(s, provider) => s.drop_provider(provider.id()),
            InboxBackend::Remote(r) => r.stop_serving(),
        }
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
