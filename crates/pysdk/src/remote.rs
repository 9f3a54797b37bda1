//! Remote mode: a tonic client of a dspex engine (`dspex serve`, `dspex optimize`), with the
//! same Python-facing interface as the embedded `Study` / `Run`, so `dspex.Study` and the
//! evaluator loops of `dspex._optimize` work unchanged against a remote engine.
//!
//! Unary calls manage studies; `attach` opens the bidirectional stream: the engine sends
//! `Evaluate`s, Python threads pull them (`RemoteRun.pull`), and define-by-run calls of a trial
//! travel on the same stream with correlation ids (many in flight at once). A background task
//! heartbeats; when the stream breaks the run ends for this process and the engine re-runs the
//! lost trials elsewhere.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspex_engine::grpc::convert::*;
use dspex_engine::grpc::pb;
use dspex_engine::grpc::pb::engine_client::EngineClient;
use dspex_engine::optimizer::{Distribution, ParamValue, TrialState};
use dspex_engine::{runtime, AttrMap, AttrValue, EngineError, Outcome, TrialRecord};
use parking_lot::{Condvar, Mutex};
use pyo3::create_exception;
use pyo3::exceptions::{PyKeyError, PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::common::{self, AttrTarget, StudyBackend};
use crate::{
    attrs_from_py, dist_from_py, parse_directions, parse_state, DSpexError, DuplicatedStudyError,
    ToldTuple, SLICE,
};

create_exception!(
    _native,
    RemoteError,
    DSpexError,
    "The remote engine cannot be reached, refused the call (UNAUTHENTICATED...) or the stream broke."
);

#[derive(Clone)]
struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

type Client = EngineClient<InterceptedService<Channel, Token>>;

fn status_err(s: tonic::Status) -> PyErr {
    use tonic::Code;
    let msg = s.message().to_string();
    match s.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            PyValueError::new_err(msg)
        }
        Code::NotFound => PyKeyError::new_err(msg),
        Code::AlreadyExists => DuplicatedStudyError::new_err(msg),
        Code::Unimplemented => PyNotImplementedError::new_err(msg),
        c => RemoteError::new_err(format!("{}: {msg}", code_name(c))),
    }
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

fn pb_err(e: &pb::Error) -> PyErr {
    use pb::error::Code;
    match Code::try_from(e.code) {
        Ok(Code::InvalidArgument | Code::FailedPrecondition) => {
            PyValueError::new_err(e.message.clone())
        }
        Ok(Code::NotFound) => PyKeyError::new_err(e.message.clone()),
        Ok(Code::AlreadyExists) => DuplicatedStudyError::new_err(e.message.clone()),
        Ok(Code::Unimplemented) => PyNotImplementedError::new_err(e.message.clone()),
        _ => PyRuntimeError::new_err(e.message.clone()),
    }
}

fn engine_err(e: EngineError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Runs `fut` on the global runtime without the GIL.
fn block<T: Send, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: std::future::Future<Output = PyResult<T>> + Send,
{
    let h = runtime::handle().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    py.detach(|| h.block_on(fut))
}

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
        ep = ep
            .tls_config(cfg)
            .map_err(|e| PyValueError::new_err(format!("TLS: {e}")))?;
    }
    Ok(ep)
}

impl RemoteClient {
    fn c(&self) -> Client {
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
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    let text = s.to_string();
                    if !msg.contains(&text) {
                        msg = format!("{msg}: {text}");
                    }
                    src = s.source();
                }
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
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
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
    ) -> PyResult<RemoteStudy> {
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
        Ok(RemoteStudy::new(self.clone(), info))
    }

    fn load_study(&self, py: Python<'_>, name: String) -> PyResult<RemoteStudy> {
        let mut c = self.c();
        let info = block(py, async move {
            c.get_study(pb::GetStudyRequest { name })
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })?;
        Ok(RemoteStudy::new(self.clone(), info))
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
        // Calls still waiting get an error.
        self.pending.lock().clear();
    }

    fn send(&self, m: pb::attach_request::Msg) {
        let _ = self.out.send(pb::AttachRequest { msg: Some(m) });
    }

    /// One define-by-run call on the stream (blocking: call it without the GIL).
    fn call(&self, call: pb::TrialCall) -> Result<pb::TrialReply, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if self.queue.lock().summary.is_some() {
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
    });
    let s = session.clone();
    tokio::spawn(async move {
        use pb::attach_response::Msg;
        loop {
            match inbound.message().await {
                Ok(Some(m)) => match m.msg {
                    Some(Msg::Evaluate(e)) => {
                        s.queue.lock().items.push_back(e.trial);
                        s.cv.notify_one();
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
                    msg: Some(pb::attach_request::Msg::Heartbeat(pb::Heartbeat {})),
                })
                .is_err()
            {
                break;
            }
        }
    });
    Ok(session)
}

/// A run as seen through an Attach stream (same interface as the embedded `Run`).
#[pyclass(frozen, name = "RemoteRun", module = "dspex._native")]
pub(crate) struct RemoteRun {
    session: Arc<Session>,
    study: Py<RemoteStudy>,
}

fn summary_tuple(py: Python<'_>, s: &pb::RunSummary) -> PyResult<Py<PyAny>> {
    Ok((
        s.started,
        s.finished,
        s.reason.clone(),
        s.detail.clone(),
        s.timed_out.clone(),
    )
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

#[pymethods]
impl RemoteRun {
    /// Up to `max` trial numbers to evaluate; [] when none came within `timeout` seconds, None
    /// when the run is over (or the stream broke). Checks signals while waiting.
    #[pyo3(signature = (max=1, timeout=None))]
    fn pull(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<Option<Vec<u64>>> {
        let got = common::poll(py, timeout, |slice| {
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
        })?;
        Ok(got.unwrap_or_else(|| Some(Vec::new())))
    }

    /// Tells the outcome of trial `number` and answers the run in one message, without
    /// waiting for the engine (`tell` then `done` cost a round trip more). Returns what the
    /// engine records: (state, values, fail_reason), the values of a pruned trial left out.
    #[pyo3(signature = (number, values=None, state=None, fail_reason=None, abort=None))]
    fn finish(
        &self,
        number: u64,
        values: Option<Vec<f64>>,
        state: Option<String>,
        fail_reason: Option<String>,
        abort: Option<String>,
    ) -> PyResult<Option<ToldTuple>> {
        let outcome = crate::common::outcome(values, state, fail_reason)?;
        let n_objectives = self.study.get().directions.len();
        let told = match &outcome {
            Outcome::Values(v) => match dspex_engine::study::check_values(v, n_objectives) {
                None => (TrialState::Complete.as_str(), Some(v.clone()), None),
                Some(why) => (TrialState::Fail.as_str(), None, Some(why)),
            },
            Outcome::Pruned => (TrialState::Pruned.as_str(), None, None),
            Outcome::Fail(why) => (TrialState::Fail.as_str(), None, Some(why.clone())),
        };
        self.session
            .send(pb::attach_request::Msg::Finished(pb::Finished {
                trial: number,
                outcome: Some(outcome_to_pb(outcome)),
                abort,
            }));
        Ok(Some(told))
    }

    /// The evaluator finished trial `number` (after telling it); `abort` stops the run.
    #[pyo3(signature = (number, abort=None))]
    fn done(&self, number: u64, abort: Option<String>) {
        self.session
            .send(pb::attach_request::Msg::Finished(pb::Finished {
                trial: number,
                outcome: None,
                abort,
            }));
    }

    fn stop(&self) {
        self.session
            .send(pb::attach_request::Msg::Stop(pb::StopRun {
                interrupt: false,
                reason: String::new(),
            }));
    }

    fn interrupt(&self, reason: String) {
        self.session
            .send(pb::attach_request::Msg::Stop(pb::StopRun {
                interrupt: true,
                reason,
            }));
    }

    #[getter]
    fn finished(&self) -> bool {
        self.session.queue.lock().summary.is_some()
    }

    /// Waits for the end of the run: (started, finished, reason, detail, timed_out), or None
    /// after `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        common::poll(py, timeout, |slice| {
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
            let Some(s) = got else { return Ok(None) };
            // The stream is over: define-by-run calls go back to unary calls.
            let study = self.study.get();
            let mut cur = study.session.lock();
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.session)) {
                *cur = None;
            }
            Ok(Some(summary_tuple(py, &s)?))
        })
    }
}

// ------------------------------------------------------------------ study

/// A study living in a remote engine (same interface as the embedded `Study`).
#[pyclass(frozen, name = "RemoteStudy", module = "dspex._native")]
pub(crate) struct RemoteStudy {
    client: RemoteClient,
    name: String,
    directions: Vec<&'static str>,
    /// The stream of the current run of this process: define-by-run calls go through it.
    session: Mutex<Option<Arc<Session>>>,
}

impl RemoteStudy {
    fn new(client: RemoteClient, info: pb::StudyInfo) -> Self {
        let directions = info
            .directions
            .iter()
            .map(|d| direction_from_i32(*d).map_or("minimize", |d| d.as_str()))
            .collect();
        RemoteStudy {
            client,
            name: info.name,
            directions,
            session: Mutex::new(None),
        }
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
        let reply = match session {
            Some(s) => py
                .detach(move || s.call(call))
                .map_err(RemoteError::new_err)?,
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
}

impl StudyBackend for RemoteStudy {
    fn suggest_value(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: Distribution,
    ) -> PyResult<(ParamValue, Option<String>)> {
        let r = self.trial_call(
            py,
            number,
            pb::trial_call::Op::Suggest(pb::Suggest {
                name,
                distribution: Some(dist_to_pb(&dist)),
            }),
        )?;
        match r {
            pb::trial_reply::Result::Suggested(s) => {
                let v = s
                    .value
                    .ok_or_else(|| RemoteError::new_err("a suggestion without a value"))?;
                Ok((param_from_pb(&v).map_err(engine_err)?, s.warning))
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
    ) -> PyResult<ToldTuple> {
        let r = self.trial_call(
            py,
            number,
            pb::trial_call::Op::Tell(pb::Tell {
                outcome: Some(outcome_to_pb(outcome)),
                strict,
            }),
        )?;
        match r {
            pb::trial_reply::Result::Told(t) => {
                let state = state_from_i32(t.state).map_err(engine_err)?;
                Ok((
                    state.as_str(),
                    t.has_values.then_some(t.values),
                    t.fail_reason,
                ))
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

    fn trial_record(&self, py: Python<'_>, number: u64) -> PyResult<TrialRecord> {
        match self.trial_call(py, number, pb::trial_call::Op::GetTrial(pb::Empty {}))? {
            pb::trial_reply::Result::Trial(t) => record_from_pb(&t),
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
        ts.iter().map(record_from_pb).collect()
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
            pb::study_call_reply::Result::Trial(t) => record_from_pb(&t),
            _ => Err(unexpected()),
        }
    }

    fn best_records(&self, py: Python<'_>) -> PyResult<Vec<TrialRecord>> {
        match self.study_call(py, pb::study_call_request::Op::BestTrials(pb::Empty {}))? {
            pb::study_call_reply::Result::Trials(ts) => {
                ts.trials.iter().map(record_from_pb).collect()
            }
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
            pb::study_call_reply::Result::Json(j) => attrs_from_json(&j).map_err(engine_err),
            _ => Err(unexpected()),
        }
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

/// A wire trial as an engine record (for the Python tuple form).
fn record_from_pb(t: &pb::Trial) -> PyResult<dspex_engine::TrialRecord> {
    use dspex_engine::model::from_unix_seconds;
    let mut r =
        dspex_engine::TrialRecord::new(t.number, state_from_i32(t.state).map_err(engine_err)?);
    for (k, d) in &t.distributions {
        r.distributions
            .insert(k.clone(), dist_from_pb(d).map_err(engine_err)?);
    }
    r.params = params_from_pb(&t.params).map_err(engine_err)?;
    r.values = t.has_values.then(|| t.values.clone());
    r.intermediate_values = t
        .intermediate_values
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    r.user_attrs = attrs_from_json(&t.user_attrs_json).map_err(engine_err)?;
    r.system_attrs = attrs_from_json(&t.system_attrs_json).map_err(engine_err)?;
    if let Some(f) = &t.fixed_params_json {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(f) {
            let fixed: BTreeMap<String, ParamValue> = m
                .iter()
                .filter_map(|(k, v)| ParamValue::from_json(v).ok().map(|p| (k.clone(), p)))
                .collect();
            r.fixed_params = Some(fixed);
        }
    }
    r.datetime_start = t.datetime_start.and_then(from_unix_seconds);
    r.datetime_complete = t.datetime_complete.and_then(from_unix_seconds);
    r.fail_reason = t.fail_reason.clone();
    Ok(r)
}

#[pymethods]
impl RemoteStudy {
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[getter]
    fn directions(&self) -> Vec<&'static str> {
        self.directions.clone()
    }

    #[getter]
    fn client(&self) -> RemoteClient {
        self.client.clone()
    }

    fn ask(&self, py: Python<'_>) -> PyResult<u64> {
        match self.study_call(py, pb::study_call_request::Op::Ask(pb::Empty {}))? {
            pb::study_call_reply::Result::Number(n) => Ok(n),
            _ => Err(unexpected()),
        }
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
        let st = parse_state(&state)?;
        let mut t = pb::Trial {
            state: state_to_pb(st) as i32,
            has_values: values.is_some(),
            values: values.unwrap_or_default(),
            intermediate_values: intermediate_values.into_iter().collect(),
            user_attrs_json: attrs_to_json(&attrs_from_py(user_attrs)?),
            system_attrs_json: attrs_to_json(&attrs_from_py(system_attrs)?),
            datetime_start,
            datetime_complete,
            ..Default::default()
        };
        for (k, d) in distributions.iter() {
            t.distributions
                .insert(k.extract()?, dist_to_pb(&dist_from_py(&d)?));
        }
        t.params = params_to_pb(&common::params_from_py(params)?);
        match self.study_call(py, pb::study_call_request::Op::AddTrial(t))? {
            pb::study_call_reply::Result::Number(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    fn trial(&self, py: Python<'_>, number: u64) -> PyResult<Py<PyAny>> {
        common::trial(self, py, number)
    }

    fn trial_state(&self, py: Python<'_>, number: u64) -> PyResult<&'static str> {
        match self.trial_call(py, number, pb::trial_call::Op::GetState(pb::Empty {}))? {
            pb::trial_reply::Result::State(s) => {
                Ok(state_from_i32(s).map_err(engine_err)?.as_str())
            }
            _ => Err(unexpected()),
        }
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
    /// Stops the active runs of this study in the engine; returns how many there were.
    fn stop(&self, py: Python<'_>) -> PyResult<usize> {
        match self.study_call(py, pb::study_call_request::Op::Stop(pb::Empty {}))? {
            pb::study_call_reply::Result::Count(n) => Ok(n as usize),
            _ => Err(unexpected()),
        }
    }

    /// Starts a run in the engine owned by this process's stream, which evaluates up to
    /// `concurrency` trials at once (0: only own the run). The run keeps as many trials in
    /// flight as its evaluators take (this one and those that attach), at most
    /// `max_concurrency`. `evaluators_ask` (the embedded `start_run`'s) is accepted and
    /// ignored: over a stream the engine always starts the trials it sends.
    #[pyo3(signature = (n_trials=None, timeout=None, concurrency=1, trial_timeout=None, max_retries=0, max_concurrency=None, evaluators_ask=false, heartbeat_ms=1000, worker=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_run(
        slf: &Bound<'_, Self>,
        n_trials: Option<u64>,
        timeout: Option<f64>,
        concurrency: u32,
        trial_timeout: Option<f64>,
        max_retries: u32,
        max_concurrency: Option<u32>,
        evaluators_ask: bool,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<RemoteRun> {
        let _ = evaluators_ask;
        let spec = pb::RunSpec {
            n_trials,
            timeout,
            max_concurrency,
            trial_timeout,
            max_retries,
        };
        Self::open(slf, Some(spec), concurrency, heartbeat_ms, worker)
    }

    /// Joins the study's active run (waiting for one) as an evaluator of `capacity` trials at
    /// once.
    #[pyo3(signature = (capacity=1, heartbeat_ms=1000, worker=None))]
    fn attach(
        slf: &Bound<'_, Self>,
        capacity: u32,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<RemoteRun> {
        Self::open(slf, None, capacity, heartbeat_ms, worker)
    }
}

impl RemoteStudy {
    fn open(
        slf: &Bound<'_, Self>,
        start: Option<pb::RunSpec>,
        capacity: u32,
        heartbeat_ms: u32,
        worker: Option<String>,
    ) -> PyResult<RemoteRun> {
        let py = slf.py();
        let this = slf.get();
        let hb = heartbeat_ms.max(10);
        let hello = pb::Hello {
            study: this.name.clone(),
            callables: vec![pb::Callable {
                name: "objective".into(),
                kind: pb::callable::Kind::Objective as i32,
            }],
            capacity,
            start,
            worker: worker.unwrap_or_else(|| format!("pid {}", std::process::id())),
            heartbeat_ms: hb,
        };
        let client = this.client.c();
        let session = block(
            py,
            open_session(client, hello, Duration::from_millis(u64::from(hb))),
        )?;
        *this.session.lock() = Some(session.clone());
        Ok(RemoteRun {
            session,
            study: slf.clone().unbind(),
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("RemoteError", m.py().get_type::<RemoteError>())?;
    m.add_class::<RemoteClient>()?;
    m.add_class::<RemoteStudy>()?;
    m.add_class::<RemoteRun>()?;
    m.add_class::<EmbeddedServer>()?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(serve_embedded, m)?)?;
    Ok(())
}

/// Runs the `dspex` command line (the Rust CLI) with `argv`; returns the exit code. Ctrl-C
/// in Python stops the command gracefully.
#[pyfunction]
#[pyo3(signature = (argv, python=None))]
fn cli_main(py: Python<'_>, argv: Vec<String>, python: Option<String>) -> PyResult<i32> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let env = dspex_engine::cli::CliEnv { python, cancel: rx };
    let worker = std::thread::Builder::new()
        .name("dspex-cli".into())
        .spawn(move || dspex_engine::cli::run(argv, env))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the CLI thread: {e}")))?;
    let mut interrupted = false;
    loop {
        if worker.is_finished() {
            break;
        }
        py.detach(|| std::thread::sleep(SLICE));
        if let Err(e) = py.check_signals() {
            if interrupted {
                return Err(e);
            }
            interrupted = true;
            let _ = tx.send(true);
        }
    }
    match worker.join() {
        Ok(code) => Ok(code),
        Err(_) => Err(PyRuntimeError::new_err(
            "internal error: the dspex CLI panicked",
        )),
    }
}

/// An in-process engine server on a loopback port that serves one embedded study, so worker
/// processes can attach to it (`study.optimize(..., processes=N)` on an embedded study).
#[pyclass(frozen, name = "EmbeddedServer", module = "dspex._native")]
pub(crate) struct EmbeddedServer {
    study: Arc<dspex_engine::Study>,
    service: dspex_engine::grpc::EngineService,
    address: String,
    token: String,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Serves `study` on 127.0.0.1 (a free port) with a fresh random token.
#[pyfunction]
fn serve_embedded(py: Python<'_>, study: &crate::PyStudy) -> PyResult<EmbeddedServer> {
    let inner = study.inner.clone();
    let service = dspex_engine::grpc::EngineService::with_heartbeat(
        inner.storage().clone(),
        Duration::from_millis(500),
    );
    service.add_study(inner.clone());
    let token = dspex_engine::cli::random_token();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let svc = service.clone();
    let tok = token.clone();
    let address = block(py, async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RemoteError::new_err(format!("cannot listen on loopback: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| RemoteError::new_err(e.to_string()))?;
        let mut rx = stop_rx;
        tokio::spawn(dspex_engine::grpc::serve(
            listener,
            svc,
            dspex_engine::grpc::ServeOptions {
                token: Some(tok),
                ..Default::default()
            },
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
        Ok(addr.to_string())
    })?;
    Ok(EmbeddedServer {
        study: inner,
        service,
        address,
        token,
        stop,
    })
}

#[pymethods]
impl EmbeddedServer {
    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    #[getter]
    fn token(&self) -> String {
        self.token.clone()
    }

    /// Starts a run of the study that attached workers evaluate (the embedded `Run`): as many
    /// trials in flight as they take, at most `max_concurrency`.
    #[pyo3(signature = (n_trials=None, timeout=None, max_concurrency=None, trial_timeout=None, max_retries=0))]
    fn start_run(
        &self,
        py: Python<'_>,
        n_trials: Option<u64>,
        timeout: Option<f64>,
        max_concurrency: Option<u32>,
        trial_timeout: Option<f64>,
        max_retries: u32,
    ) -> PyResult<crate::PyRun> {
        let spec = pb::RunSpec {
            n_trials,
            timeout,
            max_concurrency,
            trial_timeout,
            max_retries,
        };
        let (opts, retries) = dspex_engine::grpc::run_options(&spec).map_err(crate::to_py_err)?;
        let study = self.study.clone();
        let service = self.service.clone();
        let run = py
            .detach(move || {
                let run = dspex_engine::Run::start_with_retries(study.clone(), opts, retries)?;
                service.set_active_run(
                    study.name(),
                    dspex_engine::grpc::ActiveRun {
                        run: run.clone(),
                        space: Arc::new(BTreeMap::new()),
                    },
                )?;
                Ok::<_, EngineError>(run)
            })
            .map_err(crate::to_py_err)?;
        Ok(crate::PyRun { inner: run })
    }

    /// Stops the server (open streams end).
    fn close(&self) {
        self.service.shutdown();
        let _ = self.stop.send(true);
    }
}
