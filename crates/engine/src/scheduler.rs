//! The trial scheduler: keeps trials in flight on the global tokio runtime, as many as the
//! evaluators of the run can take at once (capped by `max_concurrency`).
//!
//! A [`Run`] is one `optimize` call. Its driver task decides when a trial starts (n_trials,
//! timeout, stop, sampler exhaustion), asks the study for it on the blocking pool (sampling
//! never runs on an async worker thread) and pushes an [`EvalRequest`] into the run's queue.
//! Evaluators pull requests ([`Run::pull`] from a thread, [`Run::pull_async`] from a task),
//! drive the trial through the [`Study`] (suggest / report / tell) and answer with
//! [`Run::done`]. The scheduler knows nothing about who evaluates: embedded Python threads or a
//! remote stream look the same to it.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{EngineError, Result};
use crate::runtime;
use crate::study::{Outcome, Study};

/// Limits of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Trials to start in this run (None: until timeout, stop or exhaustion).
    pub n_trials: Option<u64>,
    /// No trial starts after this much time (running ones finish).
    pub timeout: Option<Duration>,
    /// Trials the starter of the run evaluates at once itself (its capacity; 0 when only
    /// evaluators that join the run with [`Run::join`] evaluate).
    pub concurrency: usize,
    /// Run-wide cap on the trials in flight. Without it the limit is the capacity of the
    /// evaluators at the time: `concurrency` plus what the joined ones take, growing and
    /// shrinking as they join and leave.
    pub max_concurrency: Option<usize>,
    /// A trial still running after this long is failed and its slot freed.
    pub trial_timeout: Option<Duration>,
    /// Evaluators start trials themselves: the driver hands out permits instead of asking on
    /// the blocking pool, and the thread that takes one samples (two thread hand-offs fewer
    /// per trial): the blocking [`Run::pull`], or [`Run::try_permit`] and [`Run::take_async`]
    /// followed by [`Run::ask_permitted`]. Only for runs whose evaluators all take permits and
    /// bound their own trials in flight (one each for `pull`): their capacity then bounds the
    /// trials in flight (not `max_concurrency`), and the driver keeps permits ready ahead
    /// (the limit, at least 8), so an evaluator that finishes a trial starts the next one
    /// without waiting for the driver to see its answer, and the driver is woken only when
    /// fewer permits than the limit are left.
    pub evaluators_ask: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            n_trials: None,
            timeout: None,
            concurrency: 1,
            max_concurrency: None,
            trial_timeout: None,
            evaluators_ask: false,
        }
    }
}

/// One trial to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalRequest {
    /// The number of the (RUNNING) trial to evaluate.
    pub number: u64,
}

/// An evaluator's answer for a trial it was given (after it told the study the outcome).
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// The trial is finished; go on.
    Finished,
    /// The trial is finished and the run must stop starting trials (an uncaught error).
    Abort(String),
}

/// What [`Run::pull`] got.
#[derive(Debug, Clone, PartialEq)]
pub enum Pulled {
    /// Trials to evaluate now.
    Requests(Vec<EvalRequest>),
    /// Nothing within the timeout; the run goes on.
    Empty,
    /// The run is over: no more requests will come.
    Closed,
}

/// What [`Run::take_async`] got.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// Trials to evaluate now.
    Requests(Vec<EvalRequest>),
    /// A permit to start one trial: the taker starts it with [`Run::ask_permitted`] (see
    /// [`RunOptions::evaluators_ask`]).
    Permit,
    /// The run is over: no more requests will come.
    Closed,
}

/// Why a run stopped starting trials.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// `n_trials` trials were started and all finished.
    NTrials,
    /// The run's `timeout` passed.
    Timeout,
    /// Someone asked the run to stop ([`Run::stop`], `study.stop()`).
    Stopped,
    /// The sampler has nothing left to try (a grid fully evaluated).
    Exhausted,
    /// An evaluator reported an uncaught error ([`Done::Abort`]); its message.
    Aborted(String),
    /// The run was interrupted ([`Run::interrupt`], Ctrl-C); trials in flight were failed with
    /// this reason.
    Interrupted(String),
    /// A trial could not be started (a storage or sampler error); the error.
    Error(String),
}

impl StopReason {
    /// The reason's name, as the CLI, the wire and Python report it.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::NTrials => "n_trials",
            StopReason::Timeout => "timeout",
            StopReason::Stopped => "stopped",
            StopReason::Exhausted => "exhausted",
            StopReason::Aborted(_) => "aborted",
            StopReason::Interrupted(_) => "interrupted",
            StopReason::Error(_) => "error",
        }
    }

    /// What the abort, interrupt or error said.
    pub fn detail(&self) -> Option<&str> {
        match self {
            StopReason::NTrials
            | StopReason::Timeout
            | StopReason::Stopped
            | StopReason::Exhausted => None,
            StopReason::Aborted(m) | StopReason::Interrupted(m) | StopReason::Error(m) => Some(m),
        }
    }
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Trials the run started.
    pub started: u64,
    /// Trials of the run that finished, including those it failed itself (interrupted,
    /// timed out, lost).
    pub finished: u64,
    /// Why the run stopped starting trials.
    pub reason: StopReason,
    /// Trials failed by the per-trial timeout.
    pub timed_out: Vec<u64>,
}

/// Permits kept ready at least, for evaluators that ask (see [`RunOptions::evaluators_ask`]).
const PERMITS_AHEAD: usize = 8;

#[derive(Debug)]
enum Event {
    /// A trial was started (or could not be; see [`Run::started`]). Whoever asked then queues
    /// it, or evaluates it itself.
    Asked(Result<Option<u64>>),
    Done(u64, Done),
    /// A trial's outcome could not be recorded ([`Run::finish_later`]): the run ends with the
    /// error.
    Unrecorded(u64, String),
    /// The evaluator of a trial went away (crashed, silent, garbage): fail and maybe retry.
    Lost(u64, String),
    /// A lost trial was failed; true when a retry was enqueued.
    Requeued(bool),
    Stop,
    Interrupt(String),
    /// Nothing but a wake-up: take the deferred events.
    Wake,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<EvalRequest>,
    /// Permits to start a trial, taken by pulling evaluators (`evaluators_ask`).
    permits: usize,
    closed: bool,
}

/// One optimization run (see the module docs).
#[derive(Debug)]
pub struct Run {
    study: Arc<Study>,
    options: RunOptions,
    max_retries: u32,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    queue_notify: Notify,
    events: mpsc::UnboundedSender<Event>,
    /// Events the driver needs only when it next wakes (a trial started without a per-trial
    /// timeout, an answer while permits remain): sending each would wake it twice per trial.
    /// It takes them before every event it receives, in the order they came.
    deferred: Mutex<Vec<Event>>,
    /// Set by the driver once the run is ending (stop, timeout, error...): from then on, and
    /// for any answer deferred before the driver saw it set, the driver is woken at once (it
    /// takes back the permits, so waiting for them to run low would wait forever).
    draining: AtomicBool,
    /// Capacity of the evaluators that joined the run ([`Run::join`]).
    joined: AtomicUsize,
    stop_requested: AtomicBool,
    /// Set by [`Run::interrupt`]: trials asked from then on are not queued.
    interrupted: AtomicBool,
    /// Outcomes [`Run::finish_later`] has yet to record, and whether a task records them.
    telling: Mutex<(VecDeque<Later>, bool)>,
    /// See [`Run::on_queued`].
    on_queued: OnceLock<QueuedHook>,
    /// Set by the driver when it could start more trials once an ask in progress ends: the
    /// asking thread then wakes it instead of only deferring its event.
    wake_on_ask: AtomicBool,
    summary: Mutex<Option<RunSummary>>,
    summary_cv: Condvar,
    summary_notify: Notify,
}

impl Run {
    /// Starts a run of `study` on the global runtime.
    pub fn start(study: Arc<Study>, options: RunOptions) -> Result<Arc<Run>> {
        Self::start_with_retries(study, options, 0)
    }

    /// Like [`Run::start`]; a trial lost with its evaluator ([`Run::lost`]) or failed by the
    /// per-trial timeout is re-run (same parameters, as a new trial that does not count against
    /// `n_trials`) up to `max_retries` times. The retry records Optuna's `failed_trial` and
    /// `retry_history` system attributes.
    pub fn start_with_retries(
        study: Arc<Study>,
        options: RunOptions,
        max_retries: u32,
    ) -> Result<Arc<Run>> {
        if options.max_concurrency == Some(0) {
            return Err(EngineError::InvalidArgument(
                "max_concurrency must be None or >= 1, got 0".into(),
            ));
        }
        let handle = runtime::handle()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let run = Arc::new(Run {
            study: study.clone(),
            options,
            max_retries,
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            queue_notify: Notify::new(),
            events: tx,
            deferred: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            joined: AtomicUsize::new(0),
            stop_requested: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            wake_on_ask: AtomicBool::new(false),
            telling: Mutex::new((VecDeque::new(), false)),
            on_queued: OnceLock::new(),
            summary: Mutex::new(None),
            summary_cv: Condvar::new(),
            summary_notify: Notify::new(),
        });
        study.register_run(&run);
        let driver = handle.spawn(drive(run.clone(), rx));
        let r = run.clone();
        handle.spawn(async move {
            let summary = match driver.await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("the scheduler task failed: {e}");
                    RunSummary {
                        started: 0,
                        finished: 0,
                        reason: StopReason::Error(format!(
                            "internal error: the scheduler task failed: {e}"
                        )),
                        timed_out: Vec::new(),
                    }
                }
            };
            r.finish(summary);
        });
        Ok(run)
    }

    /// The study the run starts trials in.
    pub fn study(&self) -> &Arc<Study> {
        &self.study
    }

    /// The options the run was started with.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Trials in flight allowed now: the capacity of the evaluators (the starter's and the
    /// joined ones'), capped by `max_concurrency`.
    pub fn limit(&self) -> usize {
        let capacity = self.options.concurrency + self.joined.load(Ordering::SeqCst);
        self.options
            .max_concurrency
            .map_or(capacity, |m| m.min(capacity))
    }

    /// An evaluator that takes `capacity` trials at once joins the run: the run's limit grows
    /// by as much until the returned guard is dropped (the evaluator left).
    pub fn join(self: &Arc<Self>, capacity: usize) -> Joined {
        self.joined.fetch_add(capacity, Ordering::SeqCst);
        let _ = self.events.send(Event::Wake);
        Joined {
            run: self.clone(),
            capacity,
        }
    }

    fn push(&self, req: EvalRequest) {
        self.queue.lock().items.push_back(req);
        self.queue_cv.notify_one();
        self.queue_notify.notify_one();
        self.call_on_queued();
    }

    /// Has `wake` called whenever a trial is queued for the evaluators or the run ends: for an
    /// evaluator that watches for that (an event loop) instead of blocking in [`Run::pull`].
    /// False when a hook was set already (it is kept).
    pub fn on_queued(&self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        self.on_queued.set(QueuedHook(Box::new(wake))).is_ok()
    }

    fn call_on_queued(&self) {
        if let Some(hook) = self.on_queued.get() {
            (hook.0)();
        }
    }

    fn grant_permit(&self) {
        self.queue.lock().permits += 1;
        self.queue_cv.notify_one();
        self.queue_notify.notify_one();
    }

    /// Takes a permit to start a trial from `q`, unless none is left or the run was stopped
    /// (a permit granted before stop() must not start a trial after it: the driver takes such
    /// permits back when it sees the stop).
    fn take_permit(&self, q: &mut Queue) -> bool {
        if q.permits > 0 && !self.stop_requested.load(Ordering::SeqCst) {
            q.permits -= 1;
            true
        } else {
            false
        }
    }

    /// Takes a permit to start a trial (see [`RunOptions::evaluators_ask`]), if one is ready:
    /// the caller then starts it with [`Run::ask_permitted`].
    pub fn try_permit(&self) -> bool {
        self.take_permit(&mut self.queue.lock())
    }

    /// Starts a trial with a permit taken by [`Run::try_permit`] or [`Run::take_async`]
    /// (blocking: it samples and writes to the storage); None when none could be started (the
    /// study is exhausted, or the storage failed: the run then ends with the error).
    pub fn ask_permitted(&self) -> Option<u64> {
        self.started(ask(&self.study))
    }

    /// Takes back the permits nobody used; returns how many.
    fn revoke_permits(&self) -> usize {
        std::mem::take(&mut self.queue.lock().permits)
    }

    fn unqueue(&self, number: u64) {
        self.queue.lock().items.retain(|r| r.number != number);
    }

    fn finish(&self, summary: RunSummary) {
        {
            let mut q = self.queue.lock();
            q.closed = true;
            q.items.clear();
            q.permits = 0;
        }
        self.queue_cv.notify_all();
        self.queue_notify.notify_waiters();
        *self.summary.lock() = Some(summary);
        self.summary_cv.notify_all();
        self.summary_notify.notify_waiters();
        self.call_on_queued();
    }

    /// Takes up to `max` requests, waiting at most `timeout` for the first one (blocking: call
    /// it from an evaluator thread, never from an async task).
    pub fn pull(&self, max: usize, timeout: Duration) -> Pulled {
        let deadline = std::time::Instant::now() + timeout;
        let mut q = self.queue.lock();
        loop {
            if !q.items.is_empty() {
                let k = max.max(1).min(q.items.len());
                return Pulled::Requests(q.items.drain(..k).collect());
            }
            if q.closed {
                return Pulled::Closed;
            }
            if self.take_permit(&mut q) {
                drop(q);
                if let Some(n) = self.ask_permitted() {
                    return Pulled::Requests(vec![EvalRequest { number: n }]);
                }
                q = self.queue.lock();
                continue;
            }
            if self.queue_cv.wait_until(&mut q, deadline).timed_out() && q.items.is_empty() {
                return if q.closed {
                    Pulled::Closed
                } else {
                    Pulled::Empty
                };
            }
        }
    }

    /// Tells the driver that a trial was started (or could not be), before anyone evaluates
    /// it, so the driver never sees a trial's answer before its start; returns its number.
    /// Deferred (no wake-up) when the driver needs it only when it next wakes: unless it waits
    /// for this ask to start more trials or, the run ending, for its asks to come back; or it
    /// watches the trial's timeout.
    fn started(&self, asked: Result<Option<u64>>) -> Option<u64> {
        let number = asked.as_ref().ok().copied().flatten();
        if number.is_some() && self.options.trial_timeout.is_none() {
            self.deferred.lock().push(Event::Asked(asked));
            // After the push: a driver that set either flag after these reads finds the event
            // among the deferred ones before it waits.
            if self.wake_on_ask.swap(false, Ordering::SeqCst)
                || self.draining.load(Ordering::SeqCst)
            {
                let _ = self.events.send(Event::Wake);
            }
        } else {
            let _ = self.events.send(Event::Asked(asked));
        }
        number
    }

    /// [`Run::take_async`] for a run whose evaluators do not ask: waits for at least one
    /// request; an empty vector means the run is over.
    pub async fn pull_async(&self, max: usize) -> Vec<EvalRequest> {
        debug_assert!(!self.options.evaluators_ask);
        match self.take_async(max).await {
            Taken::Requests(r) => r,
            Taken::Permit | Taken::Closed => Vec::new(),
        }
    }

    /// Async form of [`Run::pull`] for evaluators that live on the runtime (a remote stream):
    /// waits for at least one request or, when evaluators ask, a permit to start a trial.
    pub async fn take_async(&self, max: usize) -> Taken {
        loop {
            let notified = self.queue_notify.notified();
            {
                let mut q = self.queue.lock();
                if !q.items.is_empty() {
                    let k = max.max(1).min(q.items.len());
                    return Taken::Requests(q.items.drain(..k).collect());
                }
                if q.closed {
                    return Taken::Closed;
                }
                if self.take_permit(&mut q) {
                    return Taken::Permit;
                }
            }
            notified.await;
        }
    }

    /// The evaluator's answer for trial `number` (after it told the study).
    pub fn done(&self, number: u64, done: Done) {
        if matches!(done, Done::Abort(_)) {
            // Like stop(): effective at once for evaluators holding a permit.
            self.stop_requested.store(true, Ordering::SeqCst);
        }
        // Deferred exactly when the trial's start was (see `pull`), so the two keep their order.
        if self.options.evaluators_ask
            && self.options.trial_timeout.is_none()
            && matches!(done, Done::Finished)
        {
            // The driver needs the answer to free the slot: at once when the run is ending or
            // the evaluators may soon run out of permits, otherwise when it next wakes. (Pushed
            // before `draining` is read: a driver that set it after this read still finds the
            // answer, as it looks at the deferred events before it waits.)
            self.deferred.lock().push(Event::Done(number, done));
            if self.draining.load(Ordering::SeqCst) || self.queue.lock().permits <= self.limit() {
                let _ = self.events.send(Event::Wake);
            }
            return;
        }
        let _ = self.events.send(Event::Done(number, done));
    }

    /// Tells the study `outcome` for trial `number`, then answers the run (`abort`: stop it), in
    /// the background: for an evaluator that must not wait for the storage (an event loop whose
    /// other trials go on meanwhile). Outcomes are recorded in the order they came, by one task
    /// of the blocking pool at a time; a trial's answer reaches the driver after its outcome is
    /// recorded, so the trial it starts next is sampled knowing it. An error of the storage
    /// ends the run with it ([`StopReason::Error`]).
    pub fn finish_later(self: &Arc<Self>, number: u64, outcome: Outcome, abort: Option<String>) {
        {
            let mut t = self.telling.lock();
            t.0.push_back((number, outcome, abort));
            if std::mem::replace(&mut t.1, true) {
                return; // the task recording them takes it
            }
        }
        let run = self.clone();
        let next = |run: &Run| {
            let mut t = run.telling.lock();
            let next = t.0.pop_front();
            t.1 = next.is_some();
            next
        };
        let work = move || {
            while let Some((number, outcome, abort)) = next(&run) {
                run.record(number, outcome, abort);
            }
        };
        match runtime::handle() {
            Ok(h) => drop(h.spawn_blocking(work)),
            Err(_) => work(),
        }
    }

    /// Tells the study `outcome` for trial `number`, then answers the run (see
    /// [`Run::finish_later`]).
    fn record(&self, number: u64, outcome: Outcome, abort: Option<String>) {
        let why = match catch_unwind(AssertUnwindSafe(|| self.study.tell(number, outcome, false))) {
            Ok(Ok(_)) | Ok(Err(EngineError::TrialNotRunning { .. })) => {
                return self.done(number, abort.map_or(Done::Finished, Done::Abort));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("internal error: the engine panicked recording trial {number}"),
        };
        self.stop_requested.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Unrecorded(number, why));
    }

    /// The evaluator of trial `number` is gone (its stream broke, it went silent, it answered
    /// garbage): the trial is failed with `reason` and retried per the run's `max_retries`.
    pub fn lost(&self, number: u64, reason: impl Into<String>) {
        let _ = self.events.send(Event::Lost(number, reason.into()));
    }

    /// Start no more trials; running ones finish normally.
    pub fn stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Stop);
    }

    /// Stop now: every trial in flight is failed with `reason` and the run ends without waiting
    /// for their evaluators (Ctrl-C).
    pub fn interrupt(&self, reason: impl Into<String>) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.interrupted.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Interrupt(reason.into()));
    }

    /// True once the run has ended (its summary is available).
    pub fn is_finished(&self) -> bool {
        self.summary.lock().is_some()
    }

    /// Waits up to `timeout` for the end of the run (blocking).
    pub fn wait(&self, timeout: Duration) -> Option<RunSummary> {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.summary.lock();
        while s.is_none() {
            if self.summary_cv.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        s.clone()
    }

    /// Waits for the end of the run (async).
    pub async fn wait_async(&self) -> RunSummary {
        loop {
            let notified = self.summary_notify.notified();
            if let Some(s) = self.summary.lock().clone() {
                return s;
            }
            notified.await;
        }
    }
}

/// An outcome for [`Run::finish_later`] to record: trial, outcome, abort reason.
type Later = (u64, Outcome, Option<String>);

/// What [`Run::on_queued`] calls.
struct QueuedHook(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for QueuedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueuedHook")
    }
}

/// The capacity an evaluator added to a run (see [`Run::join`]); dropping it takes it back.
#[derive(Debug)]
pub struct Joined {
    run: Arc<Run>,
    capacity: usize,
}

impl Joined {
    /// The run joined.
    pub fn run(&self) -> &Arc<Run> {
        &self.run
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.run.joined.fetch_sub(self.capacity, Ordering::SeqCst);
    }
}

/// Starts the next trial of `study` (sampling included); a panic becomes an error.
fn ask(study: &Study) -> Result<Option<u64>> {
    catch_unwind(AssertUnwindSafe(|| study.ask_unless_exhausted()))
        .unwrap_or_else(|_| Err(EngineError::Internal("panic while starting a trial".into())))
}

/// Fails `number` with `reason` and, within `max_retries`, enqueues a retry with the same
/// parameters. Returns whether a retry was enqueued.
fn fail_and_retry(study: &Study, number: u64, reason: String, max_retries: u32) -> Result<bool> {
    let record = study.trial(number)?;
    match study.tell(number, Outcome::Fail(reason), false) {
        Ok(_) => {}
        // Told by its evaluator just before it went away: nothing was lost.
        Err(EngineError::TrialNotRunning { .. }) => return Ok(false),
        Err(e) => return Err(e),
    }
    let mut history: Vec<u64> = record
        .system_attrs
        .get("retry_history")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    if history.len() >= max_retries as usize {
        return Ok(false);
    }
    let failed = record
        .system_attrs
        .get("failed_trial")
        .and_then(|v| v.as_u64())
        .unwrap_or(number);
    history.push(number);
    let Some(retry) = study.enqueue(record.params, record.user_attrs, false)? else {
        return Ok(false);
    };
    let storage = study.storage();
    storage.set_trial_system_attr(study.id(), retry, "failed_trial", failed.into())?;
    storage.set_trial_system_attr(study.id(), retry, "retry_history", history.into())?;
    tracing::info!(trial = number, retry, "trial lost; retrying it");
    Ok(true)
}

fn retry_in_background(run: &Arc<Run>, number: u64, reason: String) {
    let study = run.study.clone();
    let tx = run.events.clone();
    let max = run.max_retries;
    tokio::task::spawn_blocking(move || {
        let r = catch_unwind(AssertUnwindSafe(|| {
            fail_and_retry(&study, number, reason, max)
        }));
        let requeued = match r {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(trial = number, "could not fail or retry the trial: {e}");
                false
            }
            Err(_) => {
                tracing::error!(trial = number, "panic while failing the trial");
                false
            }
        };
        let _ = tx.send(Event::Requeued(requeued));
    });
}

fn fail_in_background(study: &Arc<Study>, number: u64, reason: String) -> JoinHandle<()> {
    let study = study.clone();
    tokio::task::spawn_blocking(move || {
        let r = catch_unwind(AssertUnwindSafe(|| {
            study.tell(number, Outcome::Fail(reason), false)
        }));
        match r {
            Ok(Ok(_)) | Ok(Err(EngineError::TrialNotRunning { .. })) => {}
            Ok(Err(e)) => tracing::warn!(trial = number, "could not fail the trial: {e}"),
            Err(_) => tracing::error!(trial = number, "panic while failing the trial"),
        }
    })
}

async fn drive(run: Arc<Run>, mut rx: mpsc::UnboundedReceiver<Event>) -> RunSummary {
    let opts = run.options.clone();
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    // Sampling is CPU work: more asks at once than cores only adds contention, and trials would
    // start in bursts instead of as soon as each is sampled.
    let ask_limit = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Permits ready ahead when evaluators ask (see `RunOptions::evaluators_ask`).
    let slots = |limit: usize| {
        if opts.evaluators_ask && limit > 0 {
            limit + limit.max(PERMITS_AHEAD)
        } else {
            limit
        }
    };
    let mut started: u64 = 0;
    let mut finished: u64 = 0;
    let mut asking: usize = 0;
    let mut requeuing: usize = 0;
    let mut in_flight: HashMap<u64, Option<Instant>> = HashMap::new();
    let mut reason: Option<StopReason> = None;
    let mut timed_out = Vec::new();
    let mut background: Vec<JoinHandle<()>> = Vec::new();
    loop {
        if reason.is_none() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                reason = Some(StopReason::Timeout);
            } else if run.stop_requested.load(Ordering::SeqCst) {
                reason = Some(StopReason::Stopped);
            }
        }
        let slots = slots(run.limit());
        while reason.is_none()
            && in_flight.len() + asking < slots
            && (opts.evaluators_ask || asking < ask_limit)
        {
            if opts.n_trials.is_some_and(|n| started >= n) {
                break;
            }
            started += 1;
            asking += 1;
            if opts.evaluators_ask {
                run.grant_permit();
                continue;
            }
            let r = run.clone();
            tokio::task::spawn_blocking(move || {
                // Queued from here, not by the driver: one thread hand-off fewer before an
                // evaluator sees the trial.
                let number = r.started(ask(&r.study));
                // An interrupt fails the trial (the driver does it); it must not be evaluated.
                if let (Some(n), false) = (number, r.interrupted.load(Ordering::SeqCst)) {
                    r.push(EvalRequest { number: n });
                }
            });
        }
        // Set before the deferred events are looked at (see `Run::started`).
        let blocked = reason.is_none()
            && !opts.evaluators_ask
            && asking >= ask_limit
            && in_flight.len() + asking < slots
            && opts.n_trials.is_none_or(|n| started < n);
        run.wake_on_ask.store(blocked, Ordering::SeqCst);
        if reason.is_some() {
            run.draining.store(true, Ordering::SeqCst);
            let revoked = run.revoke_permits();
            asking -= revoked;
            started -= revoked as u64;
        }
        // Without evaluators (limit 0) a run with trials left waits for one to join.
        let all_started = reason.is_some() || opts.n_trials.is_some_and(|n| started >= n);
        if all_started && in_flight.is_empty() && asking == 0 && requeuing == 0 {
            reason.get_or_insert(StopReason::NTrials);
            break;
        }
        let mut wake = if reason.is_none() { deadline } else { None };
        for d in in_flight.values().flatten() {
            wake = Some(wake.map_or(*d, |w| w.min(*d)));
        }
        // Never wait while deferred events are pending: they may be all that is left to come.
        let pending = !run.deferred.lock().is_empty();
        let event = match wake {
            _ if pending => Some(Event::Wake),
            Some(w) => tokio::select! {
                ev = rx.recv() => ev,
                _ = tokio::time::sleep_until(w) => None,
            },
            None => rx.recv().await,
        };
        let mut batch: Vec<Option<Event>> = run.deferred.lock().drain(..).map(Some).collect();
        batch.push(event);
        for event in batch {
            match event {
                Some(Event::Asked(r)) => {
                    asking -= 1;
                    match r {
                        Ok(Some(n)) => {
                            if let Some(StopReason::Interrupted(msg)) = &reason {
                                background.push(fail_in_background(&run.study, n, msg.clone()));
                                finished += 1;
                            } else {
                                in_flight.insert(n, opts.trial_timeout.map(|t| Instant::now() + t));
                            }
                        }
                        Ok(None) => {
                            started -= 1;
                            reason.get_or_insert(StopReason::Exhausted);
                        }
                        Err(e) => {
                            started -= 1;
                            tracing::error!("cannot start a trial: {e}");
                            reason.get_or_insert(StopReason::Error(e.to_string()));
                        }
                    }
                }
                Some(Event::Done(n, done)) => {
                    if in_flight.remove(&n).is_some() {
                        finished += 1;
                    }
                    if let Done::Abort(msg) = done {
                        if !matches!(
                            reason,
                            Some(StopReason::Aborted(_)) | Some(StopReason::Interrupted(_))
                        ) {
                            reason = Some(StopReason::Aborted(msg));
                        }
                    }
                }
                Some(Event::Unrecorded(n, why)) => {
                    if in_flight.remove(&n).is_some() {
                        finished += 1;
                    }
                    tracing::error!(trial = n, "could not record the trial: {why}");
                    if !matches!(reason, Some(StopReason::Interrupted(_))) {
                        reason = Some(StopReason::Error(why));
                    }
                }
                Some(Event::Lost(n, why)) => {
                    if in_flight.remove(&n).is_some() {
                        run.unqueue(n);
                        finished += 1;
                        requeuing += 1;
                        tracing::warn!(trial = n, "trial lost: {why}");
                        retry_in_background(&run, n, why);
                    }
                }
                Some(Event::Requeued(requeued)) => {
                    requeuing -= 1;
                    if requeued {
                        // The retry does not count against n_trials: one more trial starts, and
                        // `ask` takes the enqueued retry first.
                        started = started.saturating_sub(1);
                    }
                }
                Some(Event::Wake) => {}
                Some(Event::Stop) => {
                    reason.get_or_insert(StopReason::Stopped);
                }
                Some(Event::Interrupt(msg)) => {
                    for (n, _) in in_flight.drain() {
                        run.unqueue(n);
                        background.push(fail_in_background(&run.study, n, msg.clone()));
                        finished += 1;
                    }
                    reason = Some(StopReason::Interrupted(msg));
                }
                None => {
                    // A deadline passed: fail the trials that ran out of time.
                    let now = Instant::now();
                    let expired: Vec<u64> = in_flight
                        .iter()
                        .filter(|(_, d)| d.is_some_and(|d| d <= now))
                        .map(|(n, _)| *n)
                        .collect();
                    for n in expired {
                        in_flight.remove(&n);
                        run.unqueue(n);
                        let secs = opts.trial_timeout.map_or(0.0, |t| t.as_secs_f64());
                        tracing::warn!(trial = n, "trial timed out after {secs} s");
                        let why = format!("trial timed out after {secs} s");
                        if run.max_retries > 0 {
                            requeuing += 1;
                            retry_in_background(&run, n, why);
                        } else {
                            background.push(fail_in_background(&run.study, n, why));
                        }
                        timed_out.push(n);
                        finished += 1;
                    }
                }
            }
        }
    }
    for h in background {
        let _ = h.await;
    }
    let reason = reason.unwrap_or(StopReason::NTrials);
    tracing::debug!(started, finished, ?reason, "run finished");
    RunSummary {
        started,
        finished,
        reason,
        timed_out,
    }
}
