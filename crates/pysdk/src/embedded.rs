//! The embedded backend: the study and its runs live in this process's engine. Every call
//! runs without the GIL and behind the panic guard ([`crate::engine`]).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dspex_engine::grpc::pb;
use dspex_engine::optimizer::{Distribution, ParamValue, StudyDirection, TrialState};
use dspex_engine::study::Told;
use dspex_engine::{
    AttrMap, AttrValue, Done, EngineError, Outcome, Pulled, Run, Study, TrialRecord,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::signal::{watched_fd, LoopSignal};
use crate::study::{AttrTarget, RunBackend, RunRequest, StudyBackend};
use crate::{engine, engine_ok};

/// A study in this process's engine.
pub(crate) struct Embedded(pub Arc<Study>);

/// Starts a run of `study` from a run specification (validated as the gRPC service does).
pub(crate) fn start_run(
    py: Python<'_>,
    study: Arc<Study>,
    spec: &pb::RunSpec,
    concurrency: usize,
    evaluators_ask: bool,
) -> PyResult<Arc<Run>> {
    let spec = *spec;
    engine(py, move || {
        let (mut opts, retries) = dspex_engine::grpc::run_options(&spec)?;
        opts.concurrency = concurrency;
        opts.evaluators_ask = evaluators_ask;
        Run::start_with_retries(study, opts, retries)
    })
}

impl StudyBackend for Embedded {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn directions(&self) -> &[StudyDirection] {
        self.0.directions()
    }

    fn ask(&self, py: Python<'_>) -> PyResult<u64> {
        let s = self.0.clone();
        engine(py, move || s.ask())
    }

    fn suggest_value(
        &self,
        py: Python<'_>,
        number: u64,
        name: String,
        dist: Distribution,
        given: Option<ParamValue>,
    ) -> PyResult<(ParamValue, Option<String>)> {
        let s = self.0.clone();
        let suggested = engine(py, move || {
            s.suggest_given(number, &name, &dist, given.as_ref())
        })?;
        Ok((suggested.value, suggested.warning))
    }

    fn report_value(&self, py: Python<'_>, number: u64, step: i64, value: f64) -> PyResult<bool> {
        let s = self.0.clone();
        engine(py, move || s.report(number, step, value))
    }

    fn prune_check(&self, py: Python<'_>, number: u64) -> PyResult<bool> {
        let s = self.0.clone();
        engine(py, move || s.should_prune(number))
    }

    fn tell_outcome(
        &self,
        py: Python<'_>,
        number: u64,
        outcome: Outcome,
        strict: bool,
        with_record: bool,
    ) -> PyResult<(Told, Option<TrialRecord>)> {
        let s = self.0.clone();
        engine(py, move || {
            let told = s.tell(number, outcome, strict)?;
            let record = if with_record {
                Some(s.trial(number)?)
            } else {
                None
            };
            Ok((told, record))
        })
    }

    fn enqueue_params(
        &self,
        py: Python<'_>,
        params: BTreeMap<String, ParamValue>,
        user_attrs: AttrMap,
        skip_if_exists: bool,
    ) -> PyResult<Option<u64>> {
        let s = self.0.clone();
        engine(py, move || s.enqueue(params, user_attrs, skip_if_exists))
    }

    fn add_record(&self, py: Python<'_>, record: TrialRecord) -> PyResult<u64> {
        let s = self.0.clone();
        engine(py, move || s.add_trial(&record))
    }

    fn trial_record(&self, py: Python<'_>, number: u64) -> PyResult<TrialRecord> {
        let s = self.0.clone();
        engine(py, move || s.trial(number))
    }

    fn trial_state(&self, py: Python<'_>, number: u64) -> PyResult<TrialState> {
        let s = self.0.clone();
        engine(py, move || s.storage().get_trial_state(s.id(), number))
    }

    fn trial_records(
        &self,
        py: Python<'_>,
        states: Option<Vec<TrialState>>,
    ) -> PyResult<Vec<TrialRecord>> {
        let s = self.0.clone();
        engine(py, move || s.trials(states.as_deref()))
    }

    fn count_trials(&self, py: Python<'_>, states: Option<Vec<TrialState>>) -> PyResult<usize> {
        let s = self.0.clone();
        engine(py, move || {
            s.storage().get_n_trials(s.id(), states.as_deref())
        })
    }

    fn best_record(&self, py: Python<'_>) -> PyResult<TrialRecord> {
        let s = self.0.clone();
        engine(py, move || s.best_trial())
    }

    fn best_records(&self, py: Python<'_>) -> PyResult<Vec<TrialRecord>> {
        let s = self.0.clone();
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
        let s = self.0.clone();
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
        let s = self.0.clone();
        engine(py, move || {
            if system {
                s.system_attrs()
            } else {
                s.user_attrs()
            }
        })
    }

    fn stop_runs(&self, py: Python<'_>) -> PyResult<usize> {
        let s = self.0.clone();
        engine_ok(py, move || s.stop())
    }

    fn start_run(&self, py: Python<'_>, req: RunRequest) -> PyResult<Box<dyn RunBackend>> {
        let run = start_run(
            py,
            self.0.clone(),
            &req.spec,
            req.concurrency as usize,
            req.evaluators_ask,
        )?;
        Ok(Box::new(EmbeddedRun::new(run)))
    }

    fn attach(
        &self,
        _py: Python<'_>,
        _capacity: u32,
        _heartbeat_ms: u32,
        _worker: Option<String>,
    ) -> PyResult<Box<dyn RunBackend>> {
        Err(PyValueError::new_err(
            "attach joins the run of a study in a remote engine; this study is embedded \
             (evaluate it with optimize, or serve it with processes=N)",
        ))
    }

    fn engine_study(&self) -> Option<Arc<Study>> {
        Some(self.0.clone())
    }
}

/// A run in this process's engine.
pub(crate) struct EmbeddedRun {
    run: Arc<Run>,
    signal: OnceLock<Arc<LoopSignal>>,
}

impl EmbeddedRun {
    pub(crate) fn new(run: Arc<Run>) -> Self {
        EmbeddedRun {
            run,
            signal: OnceLock::new(),
        }
    }
}

impl RunBackend for EmbeddedRun {
    fn pull(
        &self,
        py: Python<'_>,
        max: usize,
        slice: Duration,
    ) -> PyResult<Option<Option<Vec<u64>>>> {
        if let Some(s) = self.signal.get() {
            s.rearm();
        }
        let run = self.run.clone();
        Ok(match engine_ok(py, move || run.pull(max, slice))? {
            Pulled::Requests(r) => Some(Some(r.into_iter().map(|r| r.number).collect())),
            Pulled::Closed => Some(None),
            Pulled::Empty => None,
        })
    }

    fn finish(
        &self,
        py: Python<'_>,
        number: u64,
        outcome: Outcome,
        abort: Option<String>,
        wait: bool,
    ) -> PyResult<Option<Told>> {
        // Without a per-trial timeout the trial is still running (only an interrupt, which
        // ends the run, fails it meanwhile): what telling records is known here.
        if !wait && self.run.options().trial_timeout.is_none() {
            let told = Told::expected(&outcome, self.run.study().directions().len());
            self.run.finish_later(number, outcome, abort);
            return Ok(Some(told));
        }
        let run = self.run.clone();
        engine(py, move || {
            // The run is answered whatever telling did, so a panic is caught here too.
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
                    Ok(Some(t))
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

    fn done(&self, py: Python<'_>, number: u64, abort: Option<String>) -> PyResult<()> {
        let run = self.run.clone();
        engine_ok(py, move || {
            run.done(number, abort.map_or(Done::Finished, Done::Abort))
        })
    }

    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let run = self.run.clone();
        engine_ok(py, move || run.stop())
    }

    fn interrupt(&self, py: Python<'_>, reason: String) -> PyResult<()> {
        let run = self.run.clone();
        engine_ok(py, move || run.interrupt(reason))
    }

    fn finished(&self) -> bool {
        self.run.is_finished()
    }

    fn wakeup_fd(&self) -> PyResult<i32> {
        // Trials queued before are found by the loop's first pull.
        watched_fd(&self.signal, |s| {
            if self.run.on_queued(move || s.notify()) {
                Ok(())
            } else {
                Err(PyRuntimeError::new_err(
                    "this run is already watched by another event loop",
                ))
            }
        })
    }

    fn wait(&self, py: Python<'_>, slice: Duration) -> PyResult<Option<pb::RunSummary>> {
        let run = self.run.clone();
        Ok(engine_ok(py, move || run.wait(slice))?
            .map(|s| dspex_engine::grpc::convert::summary_to_pb(&s)))
    }
}
