//! The `dspex.v1.Engine` service: study management, study and trial calls, and `Attach`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dspex_optimizer::{Distribution, TrialState};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::*;
use super::pb;
use super::pb::attach_request::Msg as In;
use super::pb::attach_response::Msg as Out;
use super::sessions;
use crate::config;
use crate::error::{EngineError, Result};
use crate::scheduler::{Done, Run, RunOptions, Taken};
use crate::session::{SessionLimits, Sessions};
use crate::storage::Storage;
use crate::study::{Outcome, Study};

/// Define-by-run calls of one stream executing at once (more wait: backpressure).
const MAX_CALLS_PER_STREAM: usize = 1024;
/// Messages queued towards one client.
const OUTBOUND_QUEUE: usize = 4096;
/// Default heartbeat period of both sides.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// The run a study is executing, as attached streams see it.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    /// The run; attached evaluators join it and pull its trials.
    pub run: Arc<Run>,
    /// Parameters declared up front (study.toml): sampled before the evaluation is sent.
    pub space: Arc<BTreeMap<String, Distribution>>,
}

#[derive(Debug)]
struct Entry {
    study: Arc<Study>,
    active: watch::Sender<Option<ActiveRun>>,
}

#[derive(Debug)]
struct Shared {
    storage: Arc<dyn Storage>,
    studies: Mutex<HashMap<String, Arc<Entry>>>,
    heartbeat: Duration,
    /// True once the server shuts down: streams end.
    closing: watch::Sender<bool>,
    /// The engine's sessions (swept from their first use).
    sessions: Arc<Sessions>,
    sweeper: std::sync::Once,
    /// The server's message size limit, told to session clients.
    max_message_bytes: std::sync::atomic::AtomicUsize,
    /// Attach and Session streams open now, and the most allowed at once.
    streams: Arc<AtomicUsize>,
    max_streams: AtomicUsize,
}

/// One open Attach or Session stream, counted against the engine's limit while it lives.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The gRPC service over one storage.
#[derive(Debug, Clone)]
pub struct EngineService {
    shared: Arc<Shared>,
}

/// Runs engine work, turning a panic into an internal error.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(EngineError::Internal("the engine panicked".into())))
}

/// Runs blocking engine work on the blocking pool, turning panics into internal errors.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(move || guarded(f)).await {
        Ok(r) => r,
        Err(e) => Err(EngineError::Internal(format!(
            "a blocking task failed: {e}"
        ))),
    }
}

fn status(e: EngineError) -> Status {
    error_to_status(&e)
}

fn secs(name: &str, v: Option<f64>) -> Result<Option<Duration>> {
    v.map(|t| {
        Duration::try_from_secs_f64(t).map_err(|_| {
            EngineError::InvalidArgument(format!(
                "{name} must be a non-negative number of seconds, got {t}"
            ))
        })
    })
    .transpose()
}

/// Starts a run whose evaluators are Attach streams. Without `max_concurrency` they start
/// its trials themselves (see [`RunOptions::evaluators_ask`]): a stream that is told a trial's
/// outcome samples the next one on the same thread, two thread hand-offs fewer per trial than
/// waiting for the driver to ask. Each stream bounds its trials in flight by its capacity; a
/// `max_concurrency` below their sum needs the driver to count, so the driver asks then.
pub(super) fn start_stream_run(
    study: Arc<Study>,
    mut options: RunOptions,
    max_retries: u32,
) -> Result<Arc<Run>> {
    options.evaluators_ask = options.max_concurrency.is_none();
    Run::start_with_retries(study, options, max_retries)
}

/// Checks a run specification from the wire.
pub fn run_options(spec: &pb::RunSpec) -> Result<(RunOptions, u32)> {
    if spec.max_concurrency == Some(0) {
        return Err(EngineError::InvalidArgument(
            "max_concurrency must be unset or >= 1, got 0".into(),
        ));
    }
    Ok((
        RunOptions {
            n_trials: spec.n_trials,
            timeout: secs("timeout", spec.timeout)?,
            // Every evaluator, the owner's stream included, adds its capacity when it joins.
            concurrency: 0,
            max_concurrency: spec.max_concurrency.map(|m| m as usize),
            trial_timeout: secs("trial_timeout", spec.trial_timeout)?,
            evaluators_ask: false,
        },
        spec.max_retries,
    ))
}

impl EngineService {
    /// A service over `storage` with the default heartbeat period (1 s).
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self::with_heartbeat(storage, DEFAULT_HEARTBEAT)
    }

    /// A service over `storage` that heartbeats attached streams every `heartbeat` (at least
    /// 10 ms).
    pub fn with_heartbeat(storage: Arc<dyn Storage>, heartbeat: Duration) -> Self {
        EngineService {
            shared: Arc::new(Shared {
                storage,
                studies: Mutex::new(HashMap::new()),
                heartbeat: heartbeat.max(Duration::from_millis(10)),
                closing: watch::channel(false).0,
                sessions: Arc::new(Sessions::default()),
                sweeper: std::sync::Once::new(),
                max_message_bytes: std::sync::atomic::AtomicUsize::new(
                    super::DEFAULT_MAX_MESSAGE_BYTES,
                ),
                streams: Arc::default(),
                max_streams: AtomicUsize::new(super::DEFAULT_MAX_STREAMS),
            }),
        }
    }

    /// The same service serving `sessions` (already swept by their owner) instead of sessions
    /// of its own.
    pub fn sharing_sessions(self, sessions: Arc<Sessions>) -> Self {
        let shared = Arc::try_unwrap(self.shared)
            .unwrap_or_else(|_| unreachable!("a new service is not shared yet"));
        shared.sweeper.call_once(|| {});
        EngineService {
            shared: Arc::new(Shared { sessions, ..shared }),
        }
    }

    /// Tells session clients the server's message size limit.
    pub fn set_max_message_bytes(&self, n: usize) {
        self.shared
            .max_message_bytes
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets how many Attach and Session streams may be open at once (more are refused with
    /// RESOURCE_EXHAUSTED).
    pub fn set_max_streams(&self, n: usize) {
        self.shared.max_streams.store(n, Ordering::Relaxed);
    }

    /// Takes a stream slot, or says why there is none.
    fn stream_slot(&self) -> std::result::Result<StreamSlot, Status> {
        let max = self.shared.max_streams.load(Ordering::Relaxed);
        let open = self.shared.streams.fetch_add(1, Ordering::Relaxed);
        let slot = StreamSlot(self.shared.streams.clone());
        if open >= max {
            return Err(Status::resource_exhausted(format!(
                "the engine has {open} streams open, its limit (dspex serve --max-streams {max}): \
                 close streams that are not needed, or raise the limit"
            )));
        }
        Ok(slot)
    }

    /// Sets the limits of the engine's sessions.
    pub fn set_session_limits(&self, limits: SessionLimits) {
        self.shared.sessions.set_limits(limits);
    }

    /// The engine's sessions; the first call starts their sweeper on the current runtime.
    pub fn sessions(&self) -> Arc<Sessions> {
        self.shared.sweeper.call_once(|| {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                Sessions::spawn_sweeper(&self.shared.sessions, &h);
            }
        });
        self.shared.sessions.clone()
    }

    /// Ends every stream and interrupts the active runs (graceful server shutdown: the
    /// server waits for open streams).
    pub fn shutdown(&self) {
        let entries: Vec<Arc<Entry>> = self.shared.studies.lock().values().cloned().collect();
        for e in entries {
            if let Some(a) = e.active.borrow().as_ref() {
                a.run.interrupt("the engine is shutting down");
            }
        }
        self.shared.closing.send_replace(true);
    }

    /// Serves `study` (with its sampler and pruner) under its name.
    pub fn add_study(&self, study: Arc<Study>) {
        let (tx, _) = watch::channel(None);
        self.shared.studies.lock().insert(
            study.name().to_string(),
            Arc::new(Entry { study, active: tx }),
        );
    }

    /// Makes `active` the run that streams of `study` join. Fails when one is active already.
    pub fn set_active_run(&self, study: &str, active: ActiveRun) -> Result<()> {
        let entry = self
            .shared
            .studies
            .lock()
            .get(study)
            .cloned()
            .ok_or_else(|| EngineError::StudyNotFound(study.to_string()))?;
        let mut ok = false;
        entry.active.send_if_modified(|a| {
            if a.as_ref().is_some_and(|a| !a.run.is_finished()) {
                return false;
            }
            *a = Some(active.clone());
            ok = true;
            true
        });
        if !ok {
            return Err(EngineError::InvalidOperation(format!(
                "study {study:?} is already running"
            )));
        }
        let run = active.run.clone();
        let handle = crate::runtime::handle()?;
        handle.spawn(async move {
            run.wait_async().await;
            entry.active.send_if_modified(|a| {
                if a.as_ref().is_some_and(|a| Arc::ptr_eq(&a.run, &run)) {
                    *a = None;
                    true
                } else {
                    false
                }
            });
        });
        Ok(())
    }

    async fn entry(&self, name: &str) -> Result<Arc<Entry>> {
        if let Some(e) = self.shared.studies.lock().get(name) {
            return Ok(e.clone());
        }
        let storage = self.shared.storage.clone();
        let n = name.to_string();
        let study = blocking(move || Study::load(storage, &n, None, None)).await?;
        let mut studies = self.shared.studies.lock();
        let (tx, _) = watch::channel(None);
        Ok(studies
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Entry { study, active: tx }))
            .clone())
    }

    async fn info(&self, entry: &Entry) -> Result<pb::StudyInfo> {
        let study = entry.study.clone();
        let n = blocking(move || study.storage().get_n_trials(study.id(), None)).await?;
        Ok(pb::StudyInfo {
            name: entry.study.name().to_string(),
            directions: entry
                .study
                .directions()
                .iter()
                .map(|d| direction_to_pb(*d))
                .collect(),
            n_trials: n as u64,
            running: entry
                .active
                .borrow()
                .as_ref()
                .is_some_and(|a| !a.run.is_finished()),
        })
    }
}

fn trial_error(e: EngineError) -> pb::TrialReply {
    pb::TrialReply {
        result: Some(pb::trial_reply::Result::Error(error_to_pb(&e))),
    }
}

/// Executes one define-by-run operation (blocking).
fn exec_trial_call(study: &Study, call: &pb::TrialCall) -> pb::TrialReply {
    use pb::trial_call::Op;
    use pb::trial_reply::Result as R;
    let n = call.number;
    let r: Result<R> = (|| {
        Ok(match &call.op {
            None => {
                return Err(EngineError::InvalidArgument(
                    "a trial call has no op".into(),
                ))
            }
            Some(Op::Suggest(s)) => {
                let dist = s
                    .distribution
                    .as_ref()
                    .ok_or_else(|| {
                        EngineError::InvalidArgument("suggest without a distribution".into())
                    })
                    .and_then(dist_from_pb)?;
                let given = s.given.as_ref().map(param_from_pb).transpose()?;
                let v = study.suggest_given(n, &s.name, &dist, given.as_ref())?;
                R::Suggested(pb::Suggested {
                    value: Some(param_to_pb(&v.value)),
                    warning: v.warning,
                })
            }
            Some(Op::Report(r)) => R::Flag(study.report(n, r.step, r.value)?),
            Some(Op::ShouldPrune(_)) => R::Flag(study.should_prune(n)?),
            Some(Op::SetUserAttr(a)) => {
                let v = value_from_json(&a.value_json)?;
                study
                    .storage()
                    .set_trial_user_attr(study.id(), n, &a.key, v)?;
                R::Ok(pb::Empty {})
            }
            Some(Op::SetSystemAttr(a)) => {
                let v = value_from_json(&a.value_json)?;
                study
                    .storage()
                    .set_trial_system_attr(study.id(), n, &a.key, v)?;
                R::Ok(pb::Empty {})
            }
            Some(Op::Tell(t)) => {
                let o = t
                    .outcome
                    .as_ref()
                    .ok_or_else(|| EngineError::InvalidArgument("tell without an outcome".into()))
                    .and_then(outcome_from_pb)?;
                let mut told = told_to_pb(&study.tell(n, o, t.strict)?);
                if t.with_trial {
                    told.trial = Some(trial_to_pb(&study.trial(n)?));
                }
                R::Told(told)
            }
            Some(Op::GetTrial(_)) => R::Trial(trial_to_pb(&study.trial(n)?)),
            Some(Op::GetState(_)) => {
                R::State(state_to_pb(study.storage().get_trial_state(study.id(), n)?) as i32)
            }
        })
    })();
    match r {
        Ok(r) => pb::TrialReply { result: Some(r) },
        Err(e) => trial_error(e),
    }
}

/// Executes one study-level operation (blocking).
fn exec_study_call(study: &Study, op: &pb::study_call_request::Op) -> Result<pb::StudyCallReply> {
    use pb::study_call_reply::Result as R;
    use pb::study_call_request::Op;
    let r = match op {
        Op::Ask(_) => R::Number(study.ask()?),
        Op::BestTrial(_) => R::Trial(trial_to_pb(&study.best_trial()?)),
        Op::BestTrials(_) => R::Trials(pb::Trials {
            trials: study.best_trials()?.iter().map(trial_to_pb).collect(),
        }),
        Op::UserAttrs(_) => R::Json(attrs_to_json(&study.user_attrs()?)),
        Op::SystemAttrs(_) => R::Json(attrs_to_json(&study.system_attrs()?)),
        Op::SetUserAttr(a) => {
            study.set_user_attr(&a.key, value_from_json(&a.value_json)?)?;
            R::Ok(pb::Empty {})
        }
        Op::SetSystemAttr(a) => {
            study.set_system_attr(&a.key, value_from_json(&a.value_json)?)?;
            R::Ok(pb::Empty {})
        }
        Op::Enqueue(e) => {
            let params = params_from_pb(&e.params)?;
            let attrs = attrs_from_json(&e.user_attrs_json)?;
            match study.enqueue(params, attrs, e.skip_if_exists)? {
                Some(n) => R::Number(n),
                None => R::Skipped(pb::Empty {}),
            }
        }
        Op::AddTrial(t) => R::Number(study.add_trial(&trial_from_pb(t)?)?),
        Op::NTrials(s) => {
            let states = states_from_pb(&s.states)?;
            R::Count(
                study
                    .storage()
                    .get_n_trials(study.id(), states.as_deref())? as u64,
            )
        }
        Op::Stop(_) => R::Count(study.stop() as u64),
    };
    Ok(pb::StudyCallReply { result: Some(r) })
}

type SessionStream =
    Pin<Box<dyn tokio_stream::Stream<Item = std::result::Result<pb::SessionReply, Status>> + Send>>;

type AttachStream = Pin<
    Box<dyn tokio_stream::Stream<Item = std::result::Result<pb::AttachResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl pb::engine_server::Engine for EngineService {
    async fn create_study(
        &self,
        request: Request<pb::CreateStudyRequest>,
    ) -> std::result::Result<Response<pb::StudyInfo>, Status> {
        let r = request.into_inner();
        let directions = if r.directions.is_empty() {
            vec![dspex_optimizer::StudyDirection::Minimize]
        } else {
            r.directions
                .iter()
                .map(|d| direction_from_i32(*d))
                .collect::<Result<Vec<_>>>()
                .map_err(status)?
        };
        if r.load_if_exists {
            if let Some(name) = &r.name {
                let existing = self.shared.studies.lock().get(name).cloned();
                if let Some(e) = existing {
                    if e.study.directions() != directions.as_slice() {
                        return Err(Status::invalid_argument(format!(
                            "study {name:?} exists with other directions"
                        )));
                    }
                    return Ok(Response::new(self.info(&e).await.map_err(status)?));
                }
            }
        }
        let storage = self.shared.storage.clone();
        let study = blocking(move || {
            let sampler = r
                .sampler
                .as_ref()
                .map(|c| config::sampler_from_component(&c.kind, &c.options_json))
                .transpose()?;
            let pruner = r
                .pruner
                .as_ref()
                .map(|c| config::pruner_from_component(&c.kind, &c.options_json))
                .transpose()?;
            Study::create(
                storage,
                r.name.as_deref(),
                directions,
                sampler,
                pruner,
                r.load_if_exists,
            )
        })
        .await
        .map_err(status)?;
        self.add_study(study.clone());
        let entry = self.entry(study.name()).await.map_err(status)?;
        Ok(Response::new(self.info(&entry).await.map_err(status)?))
    }

    async fn get_study(
        &self,
        request: Request<pb::GetStudyRequest>,
    ) -> std::result::Result<Response<pb::StudyInfo>, Status> {
        let entry = self
            .entry(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(self.info(&entry).await.map_err(status)?))
    }

    async fn list_studies(
        &self,
        _request: Request<pb::ListStudiesRequest>,
    ) -> std::result::Result<Response<pb::ListStudiesResponse>, Status> {
        let storage = self.shared.storage.clone();
        let all = blocking(move || storage.get_all_studies())
            .await
            .map_err(status)?;
        let studies = all
            .into_iter()
            .map(|s| {
                let running = self.shared.studies.lock().get(&s.name).is_some_and(|e| {
                    e.active
                        .borrow()
                        .as_ref()
                        .is_some_and(|a| !a.run.is_finished())
                });
                pb::StudyInfo {
                    name: s.name,
                    directions: s.directions.iter().map(|d| direction_to_pb(*d)).collect(),
                    n_trials: s.n_trials as u64,
                    running,
                }
            })
            .collect();
        Ok(Response::new(pb::ListStudiesResponse { studies }))
    }

    async fn delete_study(
        &self,
        request: Request<pb::DeleteStudyRequest>,
    ) -> std::result::Result<Response<pb::DeleteStudyResponse>, Status> {
        let name = request.into_inner().name;
        let entry = self.entry(&name).await.map_err(status)?;
        if entry
            .active
            .borrow()
            .as_ref()
            .is_some_and(|a| !a.run.is_finished())
        {
            return Err(Status::failed_precondition(format!(
                "study {name:?} is running"
            )));
        }
        let study = entry.study.clone();
        blocking(move || study.storage().delete_study(study.id()))
            .await
            .map_err(status)?;
        self.shared.studies.lock().remove(&name);
        Ok(Response::new(pb::DeleteStudyResponse {}))
    }

    async fn list_trials(
        &self,
        request: Request<pb::ListTrialsRequest>,
    ) -> std::result::Result<Response<pb::ListTrialsResponse>, Status> {
        let r = request.into_inner();
        let entry = self.entry(&r.study).await.map_err(status)?;
        let states = states_from_pb(&r.states).map_err(status)?;
        let study = entry.study.clone();
        let trials = blocking(move || study.trials(states.as_deref()))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListTrialsResponse {
            trials: trials.iter().map(trial_to_pb).collect(),
        }))
    }

    async fn study_call(
        &self,
        request: Request<pb::StudyCallRequest>,
    ) -> std::result::Result<Response<pb::StudyCallReply>, Status> {
        let r = request.into_inner();
        let entry = self.entry(&r.study).await.map_err(status)?;
        let op =
            r.op.ok_or_else(|| Status::invalid_argument("a study call has no op"))?;
        let study = entry.study.clone();
        let reply = blocking(move || exec_study_call(&study, &op)).await;
        Ok(Response::new(reply.unwrap_or_else(|e| {
            pb::StudyCallReply {
                result: Some(pb::study_call_reply::Result::Error(error_to_pb(&e))),
            }
        })))
    }

    async fn trial_call(
        &self,
        request: Request<pb::TrialCallRequest>,
    ) -> std::result::Result<Response<pb::TrialCallReply>, Status> {
        let call = request
            .into_inner()
            .call
            .ok_or_else(|| Status::invalid_argument("a trial call request has no call"))?;
        let entry = self.entry(&call.study).await.map_err(status)?;
        let study = entry.study.clone();
        let reply = blocking(move || Ok(exec_trial_call(&study, &call)))
            .await
            .unwrap_or_else(trial_error);
        Ok(Response::new(pb::TrialCallReply { reply: Some(reply) }))
    }

    type AttachStream = AttachStream;
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> std::result::Result<Response<Self::SessionStream>, Status> {
        let slot = self.stream_slot()?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.shared.heartbeat * 10, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no open message"))??
            .ok_or_else(|| Status::invalid_argument("the stream ended before open"))?;
        let registry = self.sessions();
        let (id, session) = sessions::open(&registry, first).map_err(status)?;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let opened = pb::SessionReply {
            id,
            kind: Some(pb::session_reply::Kind::Opened(pb::Opened {
                session_id: session.id().to_string(),
                max_message_bytes: self
                    .shared
                    .max_message_bytes
                    .load(std::sync::atomic::Ordering::Relaxed)
                    as u64,
            })),
        };
        let _ = tx.send(Ok(opened)).await;
        tracing::info!(session = session.id(), "session stream opened");
        let closing = self.shared.closing.subscribe();
        tokio::spawn(async move {
            sessions::drive(registry, session, inbound, tx, closing).await;
            drop(slot);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::Empty>,
    ) -> std::result::Result<Response<pb::SessionList>, Status> {
        Ok(Response::new(sessions::list(&self.sessions())))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        let id = request.into_inner().session_id;
        self.sessions().close(&id).map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachRequest>>,
    ) -> std::result::Result<Response<Self::AttachStream>, Status> {
        let slot = self.stream_slot()?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.shared.heartbeat * 10, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello"))??;
        let hello = match first.and_then(|m| m.msg) {
            Some(In::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a stream must be Hello",
                ))
            }
        };
        let entry = self.entry(&hello.study).await.map_err(status)?;
        let mut owned = None;
        if let Some(spec) = &hello.start {
            let (opts, retries) = run_options(spec).map_err(status)?;
            let run = start_stream_run(entry.study.clone(), opts, retries).map_err(status)?;
            let active = ActiveRun {
                run: run.clone(),
                space: Arc::new(BTreeMap::new()),
            };
            if let Err(e) = self.set_active_run(&hello.study, active) {
                run.interrupt("could not start");
                return Err(status(e));
            }
            owned = Some(run);
        }
        let client_hb = if hello.heartbeat_ms == 0 {
            DEFAULT_HEARTBEAT
        } else {
            Duration::from_millis(u64::from(hello.heartbeat_ms.max(10)))
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = pb::AttachResponse {
            msg: Some(Out::Welcome(pb::Welcome {
                study: entry.study.name().to_string(),
                directions: entry
                    .study
                    .directions()
                    .iter()
                    .map(|d| direction_to_pb(*d))
                    .collect(),
                heartbeat_ms: self.shared.heartbeat.as_millis() as u32,
            })),
        };
        let _ = tx.send(Ok(welcome)).await;
        let callable = hello
            .callables
            .iter()
            .find(|c| c.kind == pb::callable::Kind::Objective as i32)
            .map_or_else(|| "objective".to_string(), |c| c.name.clone());
        tracing::info!(study = %hello.study, worker = %hello.worker, capacity = hello.capacity, "evaluator attached");
        let session = Session {
            closing: self.shared.closing.subscribe(),
            entry,
            tx,
            capacity: hello.capacity as usize,
            client_timeout: (client_hb * 3).max(Duration::from_millis(100)),
            server_hb: self.shared.heartbeat,
            callable,
            worker: hello.worker,
        };
        crate::runtime::handle().map_err(status)?.spawn(async move {
            session.run(inbound, owned).await;
            drop(slot);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type Tx = mpsc::Sender<std::result::Result<pb::AttachResponse, Status>>;

struct Session {
    closing: watch::Receiver<bool>,
    entry: Arc<Entry>,
    tx: Tx,
    capacity: usize,
    client_timeout: Duration,
    server_hb: Duration,
    callable: String,
    worker: String,
}

fn msg(m: Out) -> std::result::Result<pb::AttachResponse, Status> {
    Ok(pb::AttachResponse { msg: Some(m) })
}

/// Queues `m` towards a client, waiting at most `patience` for room in its queue. The error
/// says why it could not: the stream is gone, or the client took nothing off a full queue for
/// that long (it stopped reading).
pub(super) async fn deliver<T>(
    tx: &mpsc::Sender<T>,
    m: T,
    patience: Duration,
) -> std::result::Result<(), &'static str> {
    tx.send_timeout(m, patience).await.map_err(|e| match e {
        mpsc::error::SendTimeoutError::Timeout(_) => "stopped reading its stream",
        mpsc::error::SendTimeoutError::Closed(_) => "closed its stream",
    })
}

async fn take(run: Option<Arc<Run>>, max: usize) -> Taken {
    match run {
        Some(r) => r.take_async(max).await,
        None => std::future::pending().await,
    }
}

type Asked = mpsc::UnboundedSender<(Arc<Run>, Option<u64>)>;

/// Hands trial `number` (None: no trial was started) of `run` to the stream on `asked`; a
/// trial the stream can no longer take is lost with it.
fn hand_over(run: Arc<Run>, number: Option<u64>, asked: &Asked) {
    if let Err(e) = asked.send((run, number)) {
        if let (run, Some(n)) = e.0 {
            run.lost(n, "its evaluator's stream ended");
        }
    }
}

/// Runs `work` (blocking engine work on `run`, which may start a trial) where `cost` says:
/// inline, returning the trial it started; or on the blocking pool, which hands that trial
/// over on `asked` when `starts` (counted in `asking` until it comes back), and returns None.
fn start_work(
    cost: &Arc<WorkCost>,
    asked: &Asked,
    asking: &mut usize,
    run: Arc<Run>,
    starts: bool,
    work: impl FnOnce(&Run) -> Option<u64> + Send + 'static,
) -> Option<u64> {
    if cost.cheap() {
        return cost.measure(|| work(&run));
    }
    *asking += usize::from(starts);
    let (cost, asked) = (cost.clone(), asked.clone());
    tokio::task::spawn_blocking(move || {
        let next = cost.measure(|| work(&run));
        if starts {
            hand_over(run, next, &asked);
        }
    });
    None
}

/// Records the outcome an evaluator sent for trial `f.trial` and answers the run; then, when
/// `ask_next`, starts the next trial with a permit if one is ready (blocking work).
fn record_finished(study: &Arc<Study>, run: &Run, f: pb::Finished, ask_next: bool) -> Option<u64> {
    let n = f.trial;
    let outcome = f.outcome.as_ref().map(outcome_from_pb);
    let r = guarded(|| {
        let outcome = match outcome {
            Some(Ok(o)) => Some(o),
            Some(Err(e)) => Some(Outcome::Fail(format!(
                "the evaluator sent a bad outcome: {e}"
            ))),
            None => None,
        };
        match outcome {
            Some(o) => match study.tell(n, o, false) {
                Ok(_) | Err(EngineError::TrialNotRunning { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            None => {
                if study.storage().get_trial_state(study.id(), n)? == TrialState::Running {
                    study.tell(
                        n,
                        Outcome::Fail("the evaluator finished the trial without an outcome".into()),
                        false,
                    )?;
                }
                Ok(())
            }
        }
    });
    if let Err(e) = r {
        tracing::warn!(trial = n, "could not finish the trial: {e}");
    }
    run.done(n, f.abort.map_or(Done::Finished, Done::Abort));
    if ask_next && run.try_permit() {
        run.ask_permitted()
    } else {
        None
    }
}

/// How long one kind of a stream's blocking engine work (recording an outcome and starting a
/// trial; a define-by-run call) took lately, to decide where the next runs: work this short
/// (an in-memory study with a cheap sampler) runs on the stream's task, which saves the two
/// thread hand-offs to the blocking pool and back (a third of a round trip with one trial in
/// flight); longer work (a SQL storage, a sampler that fits a model) goes to the blocking pool
/// so that the stream's runtime thread keeps moving messages.
struct WorkCost(std::sync::atomic::AtomicU64);

impl WorkCost {
    /// Work below this on average runs inline (tokio's advice for the time between awaits).
    const INLINE: Duration = Duration::from_micros(50);

    fn new() -> Arc<Self> {
        Arc::new(WorkCost(std::sync::atomic::AtomicU64::new(u64::MAX)))
    }

    fn cheap(&self) -> bool {
        self.0.load(Ordering::Relaxed) < Self::INLINE.as_nanos() as u64
    }

    /// Runs `f`, folding its duration into the average (the newest counts for an eighth).
    fn measure<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        let ns = t.elapsed().as_nanos().min(u64::MAX as u128 / 16) as u64;
        let old = self.0.load(Ordering::Relaxed);
        let avg = if old == u64::MAX {
            ns
        } else {
            (old * 7 + ns) / 8
        };
        self.0.store(avg, Ordering::Relaxed);
        out
    }
}

impl Session {
    async fn run(self, mut inbound: Streaming<pb::AttachRequest>, owned: Option<Arc<Run>>) {
        let study = self.entry.study.clone();
        let mut active_rx = self.entry.active.subscribe();
        let mut current: Option<ActiveRun> = active_rx.borrow_and_update().clone();
        if let Some(run) = &owned {
            if !current.as_ref().is_some_and(|a| Arc::ptr_eq(&a.run, run)) {
                current = Some(ActiveRun {
                    run: run.clone(),
                    space: Arc::new(BTreeMap::new()),
                });
            }
        }
        // This stream's capacity counts in the run's limit while it is joined.
        let mut joined = current.as_ref().map(|a| a.run.join(self.capacity));
        let mut in_flight: HashSet<u64> = HashSet::new();
        let mut closing = self.closing.clone();
        let mut last_seen = Instant::now();
        let tick = self.server_hb.min(self.client_timeout / 2);
        let mut hb = tokio::time::interval(tick);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sent_hb = Instant::now();
        let calls = Arc::new(Semaphore::new(MAX_CALLS_PER_STREAM));
        // Trials this stream is starting with a permit (see `start_stream_run`): each takes
        // one of its credits until its number comes back on `asked`.
        let (asked_tx, mut asked_rx): (Asked, _) = mpsc::unbounded_channel();
        let mut asking = 0usize;
        // Recording outcomes and starting trials; define-by-run calls (suggest, report...).
        let (cost, call_cost) = (WorkCost::new(), WorkCost::new());
        // Evaluates the client has not confirmed reading yet (sequence number, trial, sent at):
        // its heartbeats count what it read, and finishing a trial shows it read up to it.
        let mut unread: VecDeque<(u64, u64, Instant)> = VecDeque::new();
        let mut sent = 0u64;
        let patience = self.client_timeout;
        let reason: String;
        loop {
            let run = current.as_ref().map(|a| a.run.clone());
            let credits = if run.is_some() {
                self.capacity.saturating_sub(in_flight.len() + asking)
            } else {
                0
            };
            tokio::select! {
                m = inbound.message() => {
                    last_seen = Instant::now();
                    match m {
                        Ok(Some(req)) => match req.msg {
                            Some(In::Call(c)) => {
                                let Some(call) = c.call else {
                                    reason = "protocol error: a Call without a TrialCall".into();
                                    let _ = deliver(&self.tx, Err(Status::invalid_argument(reason.clone())), patience).await;
                                    break;
                                };
                                let id = c.id;
                                let exec = move |study: &Arc<Study>, cost: &WorkCost| {
                                    let reply = cost.measure(|| guarded(|| Ok(exec_trial_call(study, &call))));
                                    msg(Out::Reply(pb::Reply { id, reply: Some(reply.unwrap_or_else(trial_error)) }))
                                };
                                if call_cost.cheap() {
                                    let m = exec(&study, &call_cost);
                                    if let Err(why) = deliver(&self.tx, m, patience).await {
                                        reason = format!("evaluator {} {why}", self.worker);
                                        break;
                                    }
                                    continue;
                                }
                                let Ok(permit) = calls.clone().acquire_owned().await else {
                                    reason = "internal error: semaphore closed".into();
                                    break;
                                };
                                let (study, cost, tx) = (study.clone(), call_cost.clone(), self.tx.clone());
                                // Straight to the blocking pool, which answers on the stream:
                                // one thread hand-off fewer than a task that awaits it.
                                tokio::task::spawn_blocking(move || {
                                    let m = exec(&study, &cost);
                                    let _ = tokio::runtime::Handle::current().block_on(deliver(&tx, m, patience));
                                    drop(permit);
                                });
                            }
                            Some(In::Finished(f)) => {
                                if let Some(i) = unread.iter().position(|u| u.1 == f.trial) {
                                    unread.drain(..=i);
                                }
                                if !in_flight.remove(&f.trial) {
                                    tracing::warn!(trial = f.trial, worker = %self.worker, "Finished for a trial this stream was not evaluating; ignored");
                                    continue;
                                }
                                let Some(a) = current.clone() else { continue };
                                // The thread that records the outcome starts the next trial
                                // in the slot it frees, when the run lets evaluators ask.
                                let ask_next = a.run.options().evaluators_ask;
                                let study = study.clone();
                                let work = move |run: &Run| record_finished(&study, run, f, ask_next);
                                if let Some(n) = start_work(&cost, &asked_tx, &mut asking, a.run.clone(), ask_next, work) {
                                    if let Err(why) = self.send_all(&a, vec![n], &mut in_flight, &mut unread, &mut sent).await {
                                        reason = format!("evaluator {} {why}", self.worker);
                                        break;
                                    }
                                }
                            }
                            Some(In::Heartbeat(h)) => {
                                while unread.front().is_some_and(|u| u.0 < h.received) {
                                    unread.pop_front();
                                }
                            }
                            Some(In::Stop(s)) => {
                                if let Some(a) = &current {
                                    if s.interrupt {
                                        a.run.interrupt(if s.reason.is_empty() { "interrupted".to_string() } else { s.reason });
                                    } else {
                                        a.run.stop();
                                    }
                                }
                            }
                            Some(In::Hello(_)) | None => {
                                reason = "protocol error: unexpected or empty message".into();
                                let _ = deliver(&self.tx, Err(Status::invalid_argument(reason.clone())), patience).await;
                                break;
                            }
                        },
                        Ok(None) => {
                            reason = format!("the evaluator {} closed its stream", self.worker);
                            break;
                        }
                        Err(s) => {
                            reason = format!("the stream of evaluator {} broke: {}", self.worker, s.message());
                            break;
                        }
                    }
                }
                taken = take(run.clone(), credits), if credits > 0 => {
                    let reqs = match taken {
                        Taken::Requests(reqs) => reqs,
                        Taken::Permit => {
                            let Some(r) = run.clone() else { continue };
                            match start_work(&cost, &asked_tx, &mut asking, r, true, Run::ask_permitted) {
                                Some(n) => vec![crate::EvalRequest { number: n }],
                                None => continue,
                            }
                        }
                        Taken::Closed => {
                            if let Some(r) = &run {
                                let s = r.wait_async().await;
                                let _ = deliver(&self.tx, msg(Out::RunEnded(summary_to_pb(&s))), patience).await;
                            }
                            in_flight.clear();
                            reason = "the run is over".into();
                            break;
                        }
                    };
                    let Some(a) = current.clone() else { continue };
                    let numbers = reqs.iter().map(|r| r.number).collect();
                    if let Err(why) = self.send_all(&a, numbers, &mut in_flight, &mut unread, &mut sent).await {
                        reason = format!("evaluator {} {why}", self.worker);
                        break;
                    }
                }
                Some((r, number)) = asked_rx.recv() => {
                    asking -= 1;
                    let Some(n) = number else { continue };
                    let Some(a) = current.clone().filter(|a| Arc::ptr_eq(&a.run, &r)) else {
                        r.lost(n, "its evaluator's stream left the run");
                        continue;
                    };
                    if let Err(why) = self.send_all(&a, vec![n], &mut in_flight, &mut unread, &mut sent).await {
                        reason = format!("evaluator {} {why}", self.worker);
                        break;
                    }
                }
                s = async { match &run { Some(r) => r.wait_async().await, None => std::future::pending().await } }, if run.is_some() && credits == 0 => {
                    let _ = deliver(&self.tx, msg(Out::RunEnded(summary_to_pb(&s))), patience).await;
                    in_flight.clear();
                    reason = "the run is over".into();
                    break;
                }
                changed = active_rx.changed(), if current.is_none() => {
                    if changed.is_err() {
                        reason = "the study was removed".into();
                        break;
                    }
                    current = active_rx.borrow_and_update().clone();
                    joined = current.as_ref().map(|a| a.run.join(self.capacity));
                }
                _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                    reason = "the engine is shutting down".into();
                    let _ = deliver(&self.tx, Err(Status::unavailable(reason.clone())), patience).await;
                    break;
                }
                _ = hb.tick() => {
                    if last_seen.elapsed() > self.client_timeout {
                        reason = format!(
                            "evaluator {} sent nothing for {:.1} s (no heartbeat)",
                            self.worker,
                            last_seen.elapsed().as_secs_f64()
                        );
                        let _ = deliver(&self.tx, Err(Status::deadline_exceeded(reason.clone())), patience).await;
                        break;
                    }
                    if let Some((_, trial, at)) = unread.front() {
                        if at.elapsed() > patience {
                            reason = format!(
                                "evaluator {} did not read trial {trial} in {:.1} s: it stopped reading its stream",
                                self.worker,
                                at.elapsed().as_secs_f64()
                            );
                            let _ = deliver(&self.tx, Err(Status::deadline_exceeded(reason.clone())), patience).await;
                            break;
                        }
                    }
                    if last_sent_hb.elapsed() >= self.server_hb {
                        last_sent_hb = Instant::now();
                        let beat = msg(Out::Heartbeat(pb::Heartbeat::default()));
                        if let Err(why) = deliver(&self.tx, beat, patience).await {
                            reason = format!("evaluator {} {why}", self.worker);
                            break;
                        }
                    }
                }
            }
        }
        drop(joined);
        if let Some(a) = &current {
            for n in in_flight {
                a.run.lost(n, reason.clone());
            }
        }
        // Trials started for this stream that it will not send (those started from now on are
        // lost by `hand_over`).
        asked_rx.close();
        while let Ok((r, n)) = asked_rx.try_recv() {
            if let Some(n) = n {
                r.lost(n, reason.clone());
            }
        }
        if let Some(run) = owned {
            if !run.is_finished() {
                run.interrupt(format!("the stream that started the run ended: {reason}"));
            }
        }
        tracing::info!(worker = %self.worker, "evaluator detached: {reason}");
    }

    /// Sends trials `numbers` of `a` to the evaluator, counting them in flight and unread; an
    /// error when the stream took nothing for the client's patience (the trials after the one
    /// that could not be sent are lost).
    async fn send_all(
        &self,
        a: &ActiveRun,
        numbers: Vec<u64>,
        in_flight: &mut HashSet<u64>,
        unread: &mut VecDeque<(u64, u64, Instant)>,
        sent: &mut u64,
    ) -> std::result::Result<(), &'static str> {
        let mut failed = None;
        for number in numbers {
            if failed.is_some() {
                a.run.lost(number, "its evaluator's stream ended");
                continue;
            }
            in_flight.insert(number);
            match self.send_evaluate(a, number).await {
                Ok(true) => {
                    unread.push_back((*sent, number, Instant::now()));
                    *sent += 1;
                }
                Ok(false) => {
                    in_flight.remove(&number);
                }
                Err(why) => failed = Some(why),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Sends trial `number` to the evaluator: false when sampling its declared space failed
    /// (the trial is lost), an error when the stream took nothing for the client's patience.
    async fn send_evaluate(
        &self,
        a: &ActiveRun,
        number: u64,
    ) -> std::result::Result<bool, &'static str> {
        let mut params = HashMap::new();
        if !a.space.is_empty() {
            let study = self.entry.study.clone();
            let space = a.space.clone();
            let r = blocking(move || {
                let mut out = BTreeMap::new();
                for (name, dist) in space.iter() {
                    out.insert(name.clone(), study.suggest(number, name, dist)?.value);
                }
                Ok(out)
            })
            .await;
            match r {
                Ok(p) => params = params_to_pb(&p),
                Err(e) => {
                    a.run
                        .lost(number, format!("sampling the declared space failed: {e}"));
                    return Ok(false);
                }
            }
        }
        let m = msg(Out::Evaluate(pb::Evaluate {
            trial: number,
            callable: self.callable.clone(),
            params,
        }));
        deliver(&self.tx, m, self.client_timeout)
            .await
            .map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_inline_only_while_it_is_cheap_on_average() {
        let cost = WorkCost::new();
        assert!(!cost.cheap(), "nothing measured yet: the blocking pool");
        assert_eq!(cost.measure(|| 7), 7);
        assert!(cost.cheap());
        // A slow stretch moves the work to the blocking pool, a cheap one brings it back.
        for _ in 0..3 {
            cost.measure(|| std::thread::sleep(Duration::from_millis(1)));
        }
        assert!(!cost.cheap());
        for _ in 0..60 {
            cost.measure(|| ());
        }
        assert!(cost.cheap());
    }
}
