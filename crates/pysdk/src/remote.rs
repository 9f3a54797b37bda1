//! The remote backend: a tonic client of a dspex engine (`dspex serve`, `dspex optimize`)
//! behind the same `Study` / `Run` classes as the embedded backend (`study.rs`), so
//! `dspex.Study` and the evaluator loop of `dspex._optimize` work unchanged against it.
//!
//! Unary calls manage studies; `attach` opens the bidirectional stream: the engine sends
//! `Evaluate`s, Python threads pull them (`Run.pull`), and define-by-run calls of a trial
//! travel on the same stream with correlation ids (many in flight at once). A background task
//! heartbeats; when the stream breaks the run ends for this process and the engine re-runs the
//! lost trials elsewhere.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dspex_engine::grpc::convert::*;
use dspex_engine::grpc::pb;
use dspex_engine::grpc::pb::engine_client::EngineClient;
use dspex_engine::optimizer::{Distribution, ParamValue, StudyDirection, TrialState};
use dspex_engine::study::Told;
use dspex_engine::{AttrMap, AttrValue, EngineError, Outcome, TrialRecord};
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::signal::{watched_fd, LoopSignal};
use crate::study::{AttrTarget, PyStudy, RunBackend, RunRequest, StudyBackend};
use crate::{block, parse_directions, py_err, RemoteError};

#[derive(Clone)]
pub(crate) struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

pub(crate) type Client = EngineClient<InterceptedService<Channel, Token>>;

/// A gRPC status as a Python exception: an engine error by its code (see
/// `dspex_engine::ErrorCode`), a transport failure (unreachable, refused, broken) as RemoteError.
pub(crate) fn status_err(s: tonic::Status) -> PyErr {
    match status_code(&s) {
        Some(code) => py_err(code, s.message().to_string()),
        None => {
            let msg = with_causes(&s, format!("{}: {}", code_name(s.code()), s.message()));
            let hint = if msg.contains("CertificateRequired")
                || msg.contains("certificate required")
            {
                " (the engine requires a client certificate: set DSPEX_TLS_CLIENT_CERT and DSPEX_TLS_CLIENT_KEY)"
            } else if msg.contains("UnknownCA") || msg.contains("BadCertificate") {
                " (the engine refused this client certificate: is DSPEX_TLS_CLIENT_CERT signed by the CA the engine trusts?)"
            } else {
                ""
            };
            RemoteError::new_err(format!("{msg}{hint}"))
        }
    }
}

/// `msg` followed by the causes of `e` that it does not already say.
fn with_causes(e: &dyn std::error::Error, mut msg: String) -> String {
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        src = s.source();
    }
    msg
}

fn code_name(c: tonic::Code) -> String {
    format!("{c:?}").chars().fold(String::new(), |mut s, ch| {
        if ch.is_uppercase() && !s.is_empty() {
            s.push('_');
        }
        s.push(ch.to_ascii_uppercase());
        s
    })
}

/// An engine error carried in a reply on the stream.
fn pb_err(e: &pb::Error) -> PyErr {
    py_err(code_from_pb(e.code), e.message.clone())
}

/// A session as `list_sessions` describes it.
type SessionRow = (String, f64, f64, u64, Vec<String>, Vec<String>);

/// A connection to an engine.
#[pyclass(frozen, name = "RemoteClient", module = "dspex._native")]
#[derive(Clone)]
pub(crate) struct RemoteClient {
    client: Client,
    address: String,
}

fn endpoint(address: &str, tls_ca: Option<&str>) -> PyResult<Endpoint> {
    let (url, tls) = if address.starts_with("https://") {
        (address.to_string(), true)
    } else if address.starts_with("http://") {
        (address.to_string(), false)
    } else {
        (format!("http://{address}"), false)
    };
    let mut ep = Endpoint::from_str(&url)
        .map_err(|e| PyValueError::new_err(format!("bad engine address {address:?}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    if tls {
        let mut cfg = ClientTlsConfig::new();
        if let Some(path) = tls_ca {
            let pem = std::fs::read(path)
                .map_err(|e| PyValueError::new_err(format!("tls_ca {path:?}: {e}")))?;
            cfg = cfg.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(identity) = client_identity()? {
            cfg = cfg.identity(identity);
        }
        ep = ep
            .tls_config(cfg)
            .map_err(|e| PyValueError::new_err(format!("TLS: {e}")))?;
    }
    Ok(ep)
}

/// The client certificate for an engine that requires one (`dspex serve --tls-client-ca`):
/// PEM files named by DSPEX_TLS_CLIENT_CERT and DSPEX_TLS_CLIENT_KEY, both or neither. Variables
/// rather than arguments so that every connection of a process (and of the workers it starts)
/// presents it.
fn client_identity() -> PyResult<Option<Identity>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("DSPEX_TLS_CLIENT_CERT"), var("DSPEX_TLS_CLIENT_KEY")) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let read = |name: &str, path: &str| {
                std::fs::read(path).map_err(|e| PyValueError::new_err(format!("{name} {path:?}: {e}")))
            };
            Ok(Some(Identity::from_pem(
                read("DSPEX_TLS_CLIENT_CERT", &cert)?,
                read("DSPEX_TLS_CLIENT_KEY", &key)?,
            )))
        }
        (Some(_), None) => Err(PyValueError::new_err(
            "DSPEX_TLS_CLIENT_CERT is set but DSPEX_TLS_CLIENT_KEY is not: set both (PEM files) or neither",
        )),
        (None, Some(_)) => Err(PyValueError::new_err(
            "DSPEX_TLS_CLIENT_KEY is set but DSPEX_TLS_CLIENT_CERT is not: set both (PEM files) or neither",
        )),
    }
}

impl RemoteClient {
    pub(crate) fn c(&self) -> Client {
        self.client.clone()
    }
}

#[pymethods]
impl RemoteClient {
    /// Connects to `address` ("host:port", "http://host:port" or "https://host:port").
    #[staticmethod]
    #[pyo3(signature = (address, token=None, tls_ca=None))]
    fn connect(
        py: Python<'_>,
        address: String,
        token: Option<String>,
        tls_ca: Option<String>,
    ) -> PyResult<RemoteClient> {
        let ep = endpoint(&address, tls_ca.as_deref())?;
        let tls = address.starts_with("https://");
        let has_ca = tls_ca.is_some();
        let token = token
            .filter(|t| !t.is_empty())
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| PyValueError::new_err("the token must be printable ASCII"))
            })
            .transpose()?;
        let addr = address.clone();
        let channel = block(py, async move {
            ep.connect().await.map_err(|e| {
                let msg = with_causes(&e, e.to_string());
                let hint = if tls && msg.contains("certificate") {
                    if has_ca {
                        " (is tls_ca the certificate of the CA that signed the engine's certificate, for this host name?)"
                    } else {
                        " (pass tls_ca= the CA certificate that signed the engine's certificate)"
                    }
                } else {
                    ""
                };
                RemoteError::new_err(format!("cannot reach the engine at {addr}: {msg}{hint}"))
            })
        })?;
        let client = EngineClient::with_interceptor(channel, Token(token))
            .max_decoding_message_size(i32::MAX as usize)
            .max_encoding_message_size(i32::MAX as usize);
        Ok(RemoteClient { client, address })
    }

    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// Creates a study; `sampler` / `pruner` are (kind, options_json).
    #[pyo3(signature = (name, directions, sampler=None, pruner=None, load_if_exists=false))]
    fn create_study(
        &self,
        py: Python<'_>,
        name: Option<String>,
        directions: Vec<String>,
        sampler: Option<(String, String)>,
        pruner: Option<(String, String)>,
        load_if_exists: bool,
    ) -> PyResult<PyStudy> {
        let dirs = parse_directions(directions)?;
        let req = pb::CreateStudyRequest {
            name,
            directions: dirs.iter().map(|d| direction_to_pb(*d)).collect(),
            sampler: sampler.map(|(kind, options_json)| pb::Component { kind, options_json }),
            pruner: pruner.map(|(kind, options_json)| pb::Component { kind, options_json }),
            load_if_exists,
        };
        let mut c = self.c();
        let info = block(py, async move {
            c.create_study(req)
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })?;
        RemoteStudy::open_study(self.clone(), info)
    }

    /// The engine's open sessions: (id, idle seconds, ttl seconds, variables, registered
    /// tools, indexes).
    fn list_sessions(&self, py: Python<'_>) -> PyResult<Vec<SessionRow>> {
        let mut c = self.c();
        let list = block(py, async move {
            c.list_sessions(pb::Empty {})
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })?;
        Ok(list
            .sessions
            .into_iter()
            .map(|s| {
                (
                    s.session_id,
                    s.idle_seconds,
                    s.ttl_seconds,
                    s.variables,
                    s.tools,
                    s.indexes,
                )
            })
            .collect())
    }

    /// Closes the engine's session `session_id` (KeyError when it is not open).
    fn close_session(&self, py: Python<'_>, session_id: String) -> PyResult<()> {
        let mut c = self.c();
        block(py, async move {
            c.close_session(pb::CloseSessionRequest { session_id })
                .await
                .map(drop)
                .map_err(status_err)
        })
    }

    fn load_study(&self, py: Python<'_>, name: String) -> PyResult<PyStudy> {
        let mut c = self.c();
        let info = block(py, async move {
            c.get_study(pb::GetStudyRequest { name })
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })?;
        RemoteStudy::open_study(self.clone(), info)
    }

    fn study_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let mut c = self.c();
        block(py, async move {
            c.list_studies(pb::ListStudiesRequest {})
                .await
                .map(|r| r.into_inner().studies.into_iter().map(|s| s.name).collect())
                .map_err(status_err)
        })
    }

    fn delete_study(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let mut c = self.c();
        block(py, async move {
            c.delete_study(pb::DeleteStudyRequest { name })
                .await
                .map(|_| ())
                .map_err(status_err)
        })
    }
}

// ------------------------------------------------------------------ the stream

/// State of one Attach stream, shared by the Python threads and the background tasks.
struct Session {
    out: mpsc::UnboundedSender<pb::AttachRequest>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<pb::TrialReply>>>,
    queue: Mutex<SessionQueue>,
    cv: Condvar,
    /// Parameters the engine sampled before sending a trial (a declared search space, as in
    /// study.toml), by trial: the objective's suggest of one of them is answered here, without
    /// a round trip (the engine has recorded it already).
    sampled: Mutex<HashMap<u64, BTreeMap<String, ParamValue>>>,
    /// Evaluate messages read so far: each heartbeat tells the engine (see `Heartbeat`).
    received: AtomicU64,
    /// Set when an event loop evaluates the run's trials (see `signal`).
    signal: OnceLock<Arc<LoopSignal>>,
}

#[derive(Default)]
struct SessionQueue {
    items: VecDeque<u64>,
    /// Set when the run ended or the stream broke: (started, finished, reason, detail, timed_out).
    summary: Option<pb::RunSummary>,
}

impl Session {
    fn close(&self, summary: pb::RunSummary) {
        let mut q = self.queue.lock();
        if q.summary.is_none() {
            q.summary = Some(summary);
        }
        drop(q);
        self.cv.notify_all();
        self.notify_loop();
        // Calls still waiting get an error.
        self.pending.lock().clear();
    }

    fn notify_loop(&self) {
        if let Some(s) = self.signal.get() {
            s.notify();
        }
    }

    fn send(&self, m: pb::attach_request::Msg) {
        let _ = self.out.send(pb::AttachRequest { msg: Some(m) });
    }

    /// Whether the run is over (its stream closed).
    fn ended(&self) -> bool {
        self.queue.lock().summary.is_some()
    }

    /// One define-by-run call on the stream (blocking: call it without the GIL).
    fn call(&self, call: pb::TrialCall) -> Result<pb::TrialReply, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if self.ended() {
            self.pending.lock().remove(&id);
            return Err("the stream to the engine is closed".into());
        }
        self.send(pb::attach_request::Msg::Call(pb::Call {
            id,
            call: Some(call),
        }));
        rx.blocking_recv()
            .map_err(|_| "the stream to the engine closed before the reply".to_string())
    }
}

fn broken(reason: String) -> pb::RunSummary {
    pb::RunSummary {
        started: 0,
        finished: 0,
        reason: "error".into(),
        detail: Some(reason),
        timed_out: Vec::new(),
    }
}

/// Opens the stream: Hello, then background reading and heartbeats.
async fn open_session(
    mut client: Client,
    hello: pb::Hello,
    heartbeat: Duration,
) -> PyResult<Arc<Session>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(pb::AttachRequest {
        msg: Some(pb::attach_request::Msg::Hello(hello)),
    });
    let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let mut inbound = client
        .attach(outbound)
        .await
        .map_err(status_err)?
        .into_inner();
    // The Welcome (or the refusal) comes first.
    match inbound.message().await {
        Ok(Some(pb::AttachResponse {
            msg: Some(pb::attach_response::Msg::Welcome(_)),
        })) => {}
        Ok(_) => {
            return Err(RemoteError::new_err(
                "the engine did not welcome the stream",
            ))
        }
        Err(s) => return Err(status_err(s)),
    }
    let session = Arc::new(Session {
        out: tx,
        next_id: AtomicU64::new(1),
        pending: Mutex::new(HashMap::new()),
        queue: Mutex::new(SessionQueue::default()),
        cv: Condvar::new(),
        sampled: Mutex::new(HashMap::new()),
        received: AtomicU64::new(0),
        signal: OnceLock::new(),
    });
    let s = session.clone();
    tokio::spawn(async move {
        use pb::attach_response::Msg;
        loop {
            match inbound.message().await {
                Ok(Some(m)) => match m.msg {
                    Some(Msg::Evaluate(e)) => {
                        s.received.fetch_add(1, Ordering::Relaxed);
                        if !e.params.is_empty() {
                            if let Ok(p) = params_from_pb(&e.params) {
                                s.sampled.lock().insert(e.trial, p);
                            }
                        }
                        s.queue.lock().items.push_back(e.trial);
                        s.cv.notify_one();
                        s.notify_loop();
                    }
                    Some(Msg::Reply(r)) => {
                        if let Some(tx) = s.pending.lock().remove(&r.id) {
                            let _ = tx.send(r.reply.unwrap_or_default());
                        }
                    }
                    Some(Msg::RunEnded(summary)) => {
                        s.close(summary);
                        break;
                    }
                    Some(Msg::Heartbeat(_)) | Some(Msg::Welcome(_)) | None => {}
                },
                Ok(None) => {
                    s.close(broken("the engine closed the stream".into()));
                    break;
                }
                Err(st) => {
                    s.close(broken(format!(
                        "the stream to the engine broke: {}: {}",
                        code_name(st.code()),
                        st.message()
                    )));
                    break;
                }
            }
        }
    });
    let s = session.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            tick.tick().await;
            if s.queue.lock().summary.is_some() {
                break;
            }
            if s.out
                .send(pb::AttachRequest {
                    msg: Some(pb::attach_request::Msg::Heartbeat(pb::Heartbeat {
                        received: s.received.load(Ordering::Relaxed),
                    })),
                })
                .is_err()
            {
                break;
            }
        }
    });
    Ok(session)
}

/// A run as seen through an Attach stream.
struct RemoteRun {
    session: Arc<Session>,
    /// The study's current stream, cleared when this run is over.
    current: Arc<Mutex<Option<Arc<Session>>>>,
    n_objectives: usize,
}

impl RunBackend for RemoteRun {
    fn pull(
        &self,
        py: Python<'_>,
        max: usize,
        slice: Duration,
    ) -> PyResult<Option<Option<Vec<u64>>>> {
        if let Some(s) = self.session.signal.get() {
            s.rearm();
        }
        let s = self.session.clone();
        Ok(py.detach(move || {
            let deadline = Instant::now() + slice;
            let mut q = s.queue.lock();
            loop {
                if !q.items.is_empty() {
                    let k = max.max(1).min(q.items.len());
                    return Some(Some(q.items.drain(..k).collect::<Vec<_>>()));
                }
                if q.summary.is_some() {
                    return Some(None);
                }
                if s.cv.wait_until(&mut q, deadline).timed_out() {
                    return None;
                }
            }
        }))
    }

    /// Tells the outcome and answers the run in one message, without waiting for the engine
    /// (`tell` then `done` cost a round trip more): what the engine records is built here by
    /// the engine's own check, the values of a pruned trial left out.
    fn finish(
        &self,
        _py: Python<'_>,
        number: u64,
        outcome: Outcome,
        abort: Option<String>,
        _wait: bool,
    ) -> PyResult<Option<Told>> {
        let told = Told::expected(&outcome, self.n_objectives);
        self.session.sampled.lock().remove(&number);
        self.session
            .send(pb::attach_request::Msg::Finished(pb::Finished {
                trial: number,
                outcome: Some(outcome_to_pb(outcome)),
                abort,
            }));
        Ok(Some(told))
    }

    fn done(&self, _py: Python<'_>, number: u64, abort: Option<String>) -> PyResult<()> {
        self.session.sampled.lock().remove(&number);
        self.session
            .send(pb::attach_request::Msg::Finished(pb::Finished {
                trial: number,
                outcome: None,
                abort,
            }));
        Ok(())
    }

    fn stop(&self, _py: Python<'_>) -> PyResult<()> {
        self.session
            .send(pb::attach_request::Msg::Stop(pb::StopRun {
                interrupt: false,
                reason: String::new(),
            }));
        Ok(())
    }

    fn interrupt(&self, _py: Python<'_>, reason: String) -> PyResult<()> {
        self.session
            .send(pb::attach_request::Msg::Stop(pb::StopRun {
                interrupt: true,
                reason,
            }));
        Ok(())
    }

    fn finished(&self) -> bool {
        self.session.queue.lock().summary.is_some()
    }

    fn wakeup_fd(&self) -> PyResult<i32> {
        // Trials queued before are found by the loop's first pull.
        watched_fd(&self.session.signal, |_| Ok(()))
    }

    fn wait(&self, py: Python<'_>, slice: Duration) -> PyResult<Option<pb::RunSummary>> {
        let s = self.session.clone();
        let got = py.detach(move || {
            let deadline = Instant::now() + slice;
            let mut q = s.queue.lock();
            while q.summary.is_none() {
                if s.cv.wait_until(&mut q, deadline).timed_out() {
                    break;
                }
            }
            q.summary.clone()
        });
        if got.is_some() {
            // The stream is over: define-by-run calls go back to unary calls.
            let mut cur = self.current.lock();
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.session)) {
                *cur = None;
            }
        }
        Ok(got)
    }
}

// ------------------------------------------------------------------ study

/// A study living in a remote engine.
pub(crate) struct RemoteStudy {
    client: RemoteClient,
    name: String,
    directions: Vec<StudyDirection>,
    /// The stream of the current run of this process: define-by-run calls go through it.
    session: Arc<Mutex<Option<Arc<Session>>>>,
}

impl RemoteStudy {
    fn open_study(client: RemoteClient, info: pb::StudyInfo) -> PyResult<PyStudy> {
        let directions = info
            .directions
            .iter()
            .map(|d| direction_from_i32(*d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        let backend = RemoteStudy {
            client,
            name: info.name,
            directions,
            session: Arc::new(Mutex::new(None)),
        };
        Ok(PyStudy {
            backend: Arc::new(backend),
        })
    }

    fn trial_call(
        &self,
        py: Python<'_>,
        number: u64,
        op: pb::trial_call::Op,
    ) -> PyResult<pb::trial_reply::Result> {
        let call = pb::TrialCall {
            study: self.name.clone(),
            number,
            op: Some(op),
        };
        let session = self.session.lock().clone();
        let streamed = match session {
            Some(s) => {
                let c = call.clone();
                match py.detach(|| s.call(c)) {
                    Ok(r) => Some(r),
                    // The run is over and its stream closed (a log line built afterwards):
                    // the unary call answers instead.
                    Err(_) if s.ended() => None,
                    Err(e) => return Err(RemoteError::new_err(e)),
                }
            }
            None => None,
        };
        let reply = match streamed {
            Some(r) => r,
            None => {
                let mut c = self.client.c();
                block(py, async move {
                    c.trial_call(pb::TrialCallRequest { call: Some(call) })
                        .await
                        .map(|r| r.into_inner().reply.unwrap_or_default())
                        .map_err(status_err)
                })?
            }
        };
        match reply.result {
            Some(pb::trial_reply::Result::Error(e)) => Err(pb_err(&e)),
            Some(r) => Ok(r),
            None => Err(RemoteError::new_err("the engine sent an empty reply")),
        }
    }

    fn study_call(
        &self,
        py: Python<'_>,
        op: pb::study_call_request::Op,
    ) -> PyResult<pb::study_call_reply::Result> {
        let req = pb::StudyCallRequest {
            study: self.name.clone(),
            op: Some(op),
        };
        let mut c = self.client.c();
        let reply = block(py, async move {
            c.study_call(req)
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })?;
        match reply.result {
            Some(pb::study_call_reply::Result::Error(e)) => Err(pb_err(&e)),
            Some(r) => Ok(r),
            None => Err(RemoteError::new_err("the engine sent an empty reply")),
        }
    }

    /// The value the engine sampled for `name` before sending trial `number`, when `dist` (what
    /// the objective asks) is of the same kind and holds it; otherwise the engine answers (and
    /// checks the distributions as for any suggest).
    fn presampled(&self, number: u64, name: &str, dist: &Distribution) -> Option<ParamValue> {
        let session = self.session.lock().clone()?;
        let sampled = session.sampled.lock();
        let v = sampled.get(&number)?.get(name)?;
        let same_kind = matches!(
            (dist, v),
            (Distribution::Float(_), ParamValue::Float(_))
                | (Distribution::Int(_), ParamValue::Int(_))
                | (Distribution::Categorical(_), _)
        );
        let inside = same_kind && dist.to_internal(v).is_ok_and(|x| dist.contains(x));
        inside.then(|| v.clone())
    }

    /// Opens an Attach stream: starting a run (`start`) or joining the active one.
    fn open(
        &self,
        py: Python<'_>,
        start: Option<pb::RunSpec>,
        capacity: u32,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<Box<dyn RunBackend>> {
        let hb = heartbeat_ms.max(10);
        let hello = pb::Hello {
            study: self.name.clone(),
            callables: vec![pb::Callable {
                name: "objective".into(),
                kind: pb::callable::Kind::Objective as i32,
            }],
            capacity,
            start,
            worker: worker.unwrap_or_else(|| format!("pid {}", std::process::id())),
            heartbeat_ms: hb,
        };
        let client = self.client.c();
        let session = block(
            py,
            open_session(client, hello, Duration::from_millis(u64::from(hb))),
        )?;
        *self.session.lock() = Some(session.clone());
        Ok(Box::new(RemoteRun {
            session,
            current: self.session.clone(),
            n_objectives: self.directions.len(),
        }))
    }
}

impl StudyBackend for RemoteStudy {
    fn name(&self) -> &str {
        &self.name
    }

    fn directions(&self) -> &[StudyDirection] {
        &self.directions
    }

    fn ask(&self, py: Python<'_>) -> PyResult<u64> {
        match self.study_call(py, pb::study_call_request::Op::Ask(pb::Empty {}))? {
            pb::study_call_reply::Result::Number(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    fn suggest_value(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: Distribution,
        given: Option<ParamValue>,
    ) -> PyResult<(ParamValue, Option<String>)> {
        if given.is_none() {
            if let Some(v) = self.presampled(number, &name, &dist) {
                return Ok((v, None));
            }
        }
        let r = self.trial_call(
            py,
            number,
            pb::trial_call::Op::Suggest(pb::Suggest {
                name,
                distribution: Some(dist_to_pb(&dist)),
                given: given.as_ref().map(param_to_pb),
            }),
        )?;
        match r {
            pb::trial_reply::Result::Suggested(s) => {
                let v = s
                    .value
                    .ok_or_else(|| RemoteError::new_err("a suggestion without a value"))?;
                Ok((param_from_pb(&v).map_err(malformed)?, s.warning))
            }
            _ => Err(unexpected()),
        }
    }

    fn report_value(&self, py: Python<'_>, number: u64, step: i64, value: f64) -> PyResult<bool> {
        match self.trial_call(
            py,
            number,
            pb::trial_call::Op::Report(pb::Report { step, value }),
        )? {
            pb::trial_reply::Result::Flag(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }

    fn prune_check(&self, py: Python<'_>, number: u64) -> PyResult<bool> {
        match self.trial_call(py, number, pb::trial_call::Op::ShouldPrune(pb::Empty {}))? {
            pb::trial_reply::Result::Flag(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }

    fn tell_outcome(
        &self,
        py: Python<'_>,
        number: u64,
        outcome: Outcome,
        strict: bool,
        with_record: bool,
    ) -> PyResult<(Told, Option<TrialRecord>)> {
        let r = self.trial_call(
            py,
            number,
            pb::trial_call::Op::Tell(pb::Tell {
                outcome: Some(outcome_to_pb(outcome)),
                strict,
                with_trial: with_record,
            }),
        )?;
        match r {
            pb::trial_reply::Result::Told(t) => {
                let record = match (&t.trial, with_record) {
                    (Some(trial), true) => Some(trial_from_pb(trial).map_err(malformed)?),
                    (None, true) => return Err(unexpected()),
                    _ => None,
                };
                let told = Told {
                    state: state_from_i32(t.state).map_err(malformed)?,
                    values: t.has_values.then_some(t.values),
                    fail_reason: t.fail_reason,
                };
                Ok((told, record))
            }
            _ => Err(unexpected()),
        }
    }

    fn enqueue_params(
        &self,
        py: Python<'_>,
        params: BTreeMap<String, ParamValue>,
        user_attrs: AttrMap,
        skip_if_exists: bool,
    ) -> PyResult<Option<u64>> {
        let op = pb::study_call_request::Op::Enqueue(pb::Enqueue {
            params: params_to_pb(&params),
            user_attrs_json: attrs_to_json(&user_attrs),
            skip_if_exists,
        });
        match self.study_call(py, op)? {
            pb::study_call_reply::Result::Number(n) => Ok(Some(n)),
            pb::study_call_reply::Result::Skipped(_) => Ok(None),
            _ => Err(unexpected()),
        }
    }

    fn add_record(&self, py: Python<'_>, record: TrialRecord) -> PyResult<u64> {
        let op = pb::study_call_request::Op::AddTrial(trial_to_pb(&record));
        match self.study_call(py, op)? {
            pb::study_call_reply::Result::Number(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    fn trial_record(&self, py: Python<'_>, number: u64) -> PyResult<TrialRecord> {
        match self.trial_call(py, number, pb::trial_call::Op::GetTrial(pb::Empty {}))? {
            pb::trial_reply::Result::Trial(t) => trial_from_pb(&t).map_err(malformed),
            _ => Err(unexpected()),
        }
    }

    fn trial_state(&self, py: Python<'_>, number: u64) -> PyResult<TrialState> {
        match self.trial_call(py, number, pb::trial_call::Op::GetState(pb::Empty {}))? {
            pb::trial_reply::Result::State(s) => state_from_i32(s).map_err(malformed),
            _ => Err(unexpected()),
        }
    }

    fn trial_records(
        &self,
        py: Python<'_>,
        states: Option<Vec<TrialState>>,
    ) -> PyResult<Vec<TrialRecord>> {
        let req = pb::ListTrialsRequest {
            study: self.name.clone(),
            states: states_to_pb(states),
        };
        let mut c = self.client.c();
        let ts = block(py, async move {
            c.list_trials(req)
                .await
                .map(|r| r.into_inner().trials)
                .map_err(status_err)
        })?;
        ts.iter()
            .map(|t| trial_from_pb(t).map_err(malformed))
            .collect()
    }

    fn count_trials(&self, py: Python<'_>, states: Option<Vec<TrialState>>) -> PyResult<usize> {
        let op = pb::study_call_request::Op::NTrials(pb::NTrials {
            states: states_to_pb(states),
        });
        match self.study_call(py, op)? {
            pb::study_call_reply::Result::Count(n) => Ok(n as usize),
            _ => Err(unexpected()),
        }
    }

    fn best_record(&self, py: Python<'_>) -> PyResult<TrialRecord> {
        match self.study_call(py, pb::study_call_request::Op::BestTrial(pb::Empty {}))? {
            pb::study_call_reply::Result::Trial(t) => trial_from_pb(&t).map_err(malformed),
            _ => Err(unexpected()),
        }
    }

    fn best_records(&self, py: Python<'_>) -> PyResult<Vec<TrialRecord>> {
        match self.study_call(py, pb::study_call_request::Op::BestTrials(pb::Empty {}))? {
            pb::study_call_reply::Result::Trials(ts) => ts
                .trials
                .iter()
                .map(|t| trial_from_pb(t).map_err(malformed))
                .collect(),
            _ => Err(unexpected()),
        }
    }

    fn store_attr(
        &self,
        py: Python<'_>,
        target: AttrTarget,
        system: bool,
        key: String,
        value: AttrValue,
    ) -> PyResult<()> {
        let a = pb::SetAttr {
            key,
            value_json: value.to_string(),
        };
        match target {
            AttrTarget::Study => {
                let op = if system {
                    pb::study_call_request::Op::SetSystemAttr(a)
                } else {
                    pb::study_call_request::Op::SetUserAttr(a)
                };
                self.study_call(py, op)?;
            }
            AttrTarget::Trial(number) => {
                let op = if system {
                    pb::trial_call::Op::SetSystemAttr(a)
                } else {
                    pb::trial_call::Op::SetUserAttr(a)
                };
                self.trial_call(py, number, op)?;
            }
        }
        Ok(())
    }

    fn load_attrs(&self, py: Python<'_>, system: bool) -> PyResult<AttrMap> {
        let op = if system {
            pb::study_call_request::Op::SystemAttrs(pb::Empty {})
        } else {
            pb::study_call_request::Op::UserAttrs(pb::Empty {})
        };
        match self.study_call(py, op)? {
            pb::study_call_reply::Result::Json(j) => attrs_from_json(&j).map_err(malformed),
            _ => Err(unexpected()),
        }
    }

    fn stop_runs(&self, py: Python<'_>) -> PyResult<usize> {
        match self.study_call(py, pb::study_call_request::Op::Stop(pb::Empty {}))? {
            pb::study_call_reply::Result::Count(n) => Ok(n as usize),
            _ => Err(unexpected()),
        }
    }

    /// The run is owned by this process's stream, which evaluates `concurrency` trials at
    /// once. Over a stream the engine always starts the trials it sends (`evaluators_ask` is
    /// an embedded option).
    fn start_run(&self, py: Python<'_>, req: RunRequest) -> PyResult<Box<dyn RunBackend>> {
        self.open(
            py,
            Some(req.spec),
            req.concurrency,
            req.heartbeat_ms,
            req.worker,
        )
    }

    fn attach(
        &self,
        py: Python<'_>,
        capacity: u32,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<Box<dyn RunBackend>> {
        self.open(py, None, capacity, heartbeat_ms, worker)
    }

    fn client(&self) -> Option<RemoteClient> {
        Some(self.client.clone())
    }
}

/// States as a filter on the wire (empty: all).
fn states_to_pb(states: Option<Vec<TrialState>>) -> Vec<i32> {
    states
        .unwrap_or_default()
        .iter()
        .map(|s| state_to_pb(*s) as i32)
        .collect()
}

fn unexpected() -> PyErr {
    RemoteError::new_err("the engine sent an unexpected reply")
}

/// A reply that does not decode.
fn malformed(e: EngineError) -> PyErr {
    RemoteError::new_err(format!("the engine sent a malformed reply: {e}"))
}
