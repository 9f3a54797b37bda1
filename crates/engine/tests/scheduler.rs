//! Scheduler and study integration tests: evaluators are plain threads pulling requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use dspex_engine::optimizer::samplers::{GridSampler, RandomSampler, TpeOptions, TpeSampler};
use dspex_engine::optimizer::{
    Distribution, FloatDistribution, History, IntDistribution, ParamValue, Sampler, SearchSpace,
    StudyDirection, TrialState,
};
use dspex_engine::{
    Done, EngineError, InMemoryStorage, Outcome, Pulled, Run, RunOptions, RunSummary, StopReason,
    Study, Taken, TrialRecord,
};

fn study(directions: Vec<StudyDirection>, sampler: Option<Arc<dyn Sampler>>) -> Arc<Study> {
    let sampler = sampler.unwrap_or_else(|| Arc::new(RandomSampler::new(Some(1))));
    Study::create(
        Arc::new(InMemoryStorage::new()),
        None,
        directions,
        Some(sampler),
        None,
        false,
    )
    .unwrap()
}

fn xdist() -> Distribution {
    Distribution::Float(FloatDistribution::new(-10.0, 10.0, false, None).unwrap())
}

/// Runs `workers` evaluator threads until the run closes; `eval` decides each outcome.
fn evaluate<F>(run: &Arc<Run>, workers: usize, eval: F)
where
    F: Fn(&Run, u64) -> (Outcome, Done) + Send + Sync + 'static,
{
    let eval = Arc::new(eval);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let run = run.clone();
            let eval = eval.clone();
            thread::spawn(move || loop {
                match run.pull(1, Duration::from_millis(50)) {
                    Pulled::Closed => break,
                    Pulled::Empty => continue,
                    Pulled::Requests(reqs) => {
                        for r in reqs {
                            let (outcome, done) = eval(&run, r.number);
                            match run.study().tell(r.number, outcome, false) {
                                Ok(_) | Err(EngineError::TrialNotRunning { .. }) => {}
                                Err(e) => panic!("tell failed: {e}"),
                            }
                            run.done(r.number, done);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn quadratic(run: &Run, n: u64) -> (Outcome, Done) {
    let x = match run.study().suggest(n, "x", &xdist()) {
        Ok(s) => match s.value {
            ParamValue::Float(x) => x,
            other => panic!("{other:?}"),
        },
        // The trial was failed under us (timeout, interrupt): the evaluator's tell is ignored.
        Err(EngineError::TrialNotRunning { .. }) => {
            return (Outcome::Fail("gone".into()), Done::Finished)
        }
        Err(e) => panic!("{e}"),
    };
    (Outcome::Values(vec![x * x]), Done::Finished)
}

fn count(study: &Study, state: TrialState) -> usize {
    study.trials(Some(&[state])).unwrap().len()
}

#[test]
fn sequential_run_completes_exactly_n_trials() {
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(20),
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 1, quadratic);
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(summary.reason, StopReason::NTrials);
    assert_eq!(summary.started, 20);
    assert_eq!(count(&s, TrialState::Complete), 20);
    let best = s.best_trial().unwrap();
    let all = s.trials(None).unwrap();
    assert!(all
        .iter()
        .all(|t| t.value().unwrap() >= best.value().unwrap()));
    assert!(all
        .iter()
        .all(|t| t.datetime_start.is_some() && t.datetime_complete.is_some()));
}

#[test]
fn outcomes_recorded_in_the_background_are_seen_by_the_next_sample() {
    // One trial at a time with TPE: finishing with `finish_later` must sample every trial as
    // telling and answering at once does, each knowing the outcomes before it.
    let params = |later: bool| -> Vec<String> {
        let tpe = TpeSampler::new(TpeOptions {
            seed: Some(3),
            n_startup_trials: 5,
            ..TpeOptions::default()
        })
        .unwrap();
        let s = study(vec![StudyDirection::Minimize], Some(Arc::new(tpe)));
        let run = Run::start(
            s.clone(),
            RunOptions {
                n_trials: Some(30),
                ..Default::default()
            },
        )
        .unwrap();
        loop {
            match run.pull(1, Duration::from_millis(50)) {
                Pulled::Closed => break,
                Pulled::Empty => continue,
                Pulled::Requests(reqs) => {
                    for r in reqs {
                        let (outcome, done) = quadratic(&run, r.number);
                        if later {
                            run.finish_later(r.number, outcome, None);
                        } else {
                            run.study().tell(r.number, outcome, false).unwrap();
                            run.done(r.number, done);
                        }
                    }
                }
            }
        }
        let summary = run.wait(Duration::from_secs(10)).unwrap();
        assert_eq!(summary.reason, StopReason::NTrials);
        assert_eq!(count(&s, TrialState::Complete), 30);
        let trials = s.trials(None).unwrap();
        trials.iter().map(|t| t.params["x"].to_string()).collect()
    };
    assert_eq!(params(true), params(false));
}

#[test]
fn n_trials_is_exact_under_concurrency_and_in_flight_is_bounded() {
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(97),
            concurrency: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (l, p) = (live.clone(), peak.clone());
    evaluate(&run, 12, move |run, n| {
        let now = l.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(2));
        let r = quadratic(run, n);
        l.fetch_sub(1, Ordering::SeqCst);
        r
    });
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(summary.started, 97);
    assert_eq!(s.trials(None).unwrap().len(), 97);
    assert_eq!(count(&s, TrialState::Complete), 97);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 8, "peak in flight {peak}");
}

/// A sampler whose every trial start is slow: 5 ms (a slow joint sample of `x`) or, `gated`,
/// until `release` is set. It says in `entered` that a sample began.
#[derive(Debug, Default)]
struct SlowSampler {
    gated: bool,
    entered: AtomicBool,
    release: AtomicBool,
}

impl Sampler for SlowSampler {
    fn infer_relative_search_space(&self, _history: &History, _trial: u64) -> SearchSpace {
        [("x".to_string(), xdist())].into()
    }

    fn sample_relative(
        &self,
        _history: &History,
        _trial: u64,
        _space: &SearchSpace,
    ) -> BTreeMap<String, f64> {
        self.entered.store(true, Ordering::SeqCst);
        if !self.gated {
            thread::sleep(Duration::from_millis(5));
        }
        while self.gated && !self.release.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        [("x".to_string(), 1.0)].into()
    }
}

#[test]
fn every_slot_fills_while_sampling_is_the_bottleneck() {
    // Fewer trials are asked for at once (one per core) than the run has slots, and no trial
    // finishes before all 16 have started: each ask that ends must start the next one.
    let s = study(
        vec![StudyDirection::Minimize],
        Some(Arc::new(SlowSampler::default())),
    );
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(16),
            concurrency: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let live = Arc::new(AtomicUsize::new(0));
    let gave_up = Arc::new(AtomicUsize::new(0));
    let (l, g) = (live.clone(), gave_up.clone());
    evaluate(&run, 16, move |run, n| {
        l.fetch_add(1, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while l.load(Ordering::SeqCst) < 16 {
            if std::time::Instant::now() > deadline {
                g.fetch_add(1, Ordering::SeqCst);
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        quadratic(run, n)
    });
    run.wait(Duration::from_secs(10)).unwrap();
    let gave_up = gave_up.load(Ordering::SeqCst);
    assert_eq!(gave_up, 0, "trials that waited 5 s for the others to start");
    assert_eq!(count(&s, TrialState::Complete), 16);
}

#[test]
fn the_limit_is_the_capacity_of_the_joined_evaluators_capped_by_max_concurrency() {
    // (max_concurrency, capacities of the evaluators that join, peak expected)
    for (cap, joins, expect) in [(None, vec![1, 3], 4), (Some(2), vec![1, 3], 2)] {
        let s = study(vec![StudyDirection::Minimize], None);
        let run = Run::start(
            s.clone(),
            RunOptions {
                n_trials: Some(40),
                concurrency: 0,
                max_concurrency: cap,
                ..Default::default()
            },
        )
        .unwrap();
        // Nobody has joined: no trial starts.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(s.trials(None).unwrap().len(), 0);
        assert_eq!(run.limit(), 0);
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let guards: Vec<_> = joins.iter().map(|c| run.join(*c)).collect();
        assert_eq!(run.limit(), expect);
        let (l, p) = (live.clone(), peak.clone());
        evaluate(&run, 6, move |run, n| {
            let now = l.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(20));
            let r = quadratic(run, n);
            l.fetch_sub(1, Ordering::SeqCst);
            r
        });
        drop(guards);
        assert_eq!(run.limit(), 0);
        assert_eq!(count(&s, TrialState::Complete), 40);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            expect,
            "max_concurrency {cap:?}"
        );
    }
}

#[test]
fn a_run_waits_for_evaluators_after_they_all_left() {
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(6),
            concurrency: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let first = run.join(1);
    let Pulled::Requests(reqs) = run.pull(1, Duration::from_secs(5)) else {
        panic!("no trial for the joined evaluator");
    };
    let (o, d) = quadratic(&run, reqs[0].number);
    s.tell(reqs[0].number, o, false).unwrap();
    drop(first);
    run.done(reqs[0].number, d);
    thread::sleep(Duration::from_millis(50));
    // Only the trial of the evaluator that left; nothing starts until another joins.
    assert_eq!(s.trials(None).unwrap().len(), 1);
    assert!(!run.is_finished());
    let _second = run.join(2);
    evaluate(&run, 2, quadratic);
    assert_eq!(count(&s, TrialState::Complete), 6);
}

#[test]
fn timeout_stops_starting_trials_and_running_ones_finish() {
    // Both ways of starting trials: the driver asks, or the evaluators do (their answers then
    // reach the driver late, when permits run low).
    for evaluators_ask in [false, true] {
        let s = study(vec![StudyDirection::Minimize], None);
        let opts = RunOptions {
            timeout: Some(Duration::from_millis(200)),
            concurrency: 2,
            evaluators_ask,
            ..Default::default()
        };
        let run = Run::start(s.clone(), opts).unwrap();
        evaluate(&run, 2, |run, n| {
            thread::sleep(Duration::from_millis(20));
            quadratic(run, n)
        });
        let summary = run.wait(Duration::from_secs(10)).unwrap();
        assert_eq!(summary.reason, StopReason::Timeout);
        let n = s.trials(None).unwrap().len();
        assert!((2..200).contains(&n), "{n} trials");
        assert_eq!(
            summary.finished as usize, n,
            "evaluators_ask={evaluators_ask}"
        );
        assert_eq!(
            count(&s, TrialState::Complete),
            n,
            "no trial is left running"
        );
    }
}

#[test]
fn stop_from_an_evaluator_ends_the_run_after_that_trial() {
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(50),
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 1, |run, n| {
        if n == 4 {
            assert_eq!(run.study().stop(), 1);
        }
        quadratic(run, n)
    });
    assert_eq!(
        run.wait(Duration::from_secs(10)).unwrap().reason,
        StopReason::Stopped
    );
    assert_eq!(s.trials(None).unwrap().len(), 5);
}

#[test]
fn failures_are_recorded_with_their_reason_and_abort_stops() {
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 1, |run, n| match n {
        0 => (Outcome::Fail("ValueError('boom')".into()), Done::Finished),
        1 => (Outcome::Values(vec![f64::NAN]), Done::Finished),
        2 => (Outcome::Values(vec![f64::INFINITY]), Done::Finished),
        3 => (Outcome::Values(vec![1.0, 2.0]), Done::Finished),
        4 => (Outcome::Pruned, Done::Finished),
        5 => (
            Outcome::Fail("RuntimeError('fatal')".into()),
            Done::Abort("fatal".into()),
        ),
        _ => quadratic(run, n),
    });
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(summary.reason, StopReason::Aborted("fatal".into()));
    let trials = s.trials(None).unwrap();
    assert_eq!(trials.len(), 6);
    let reason = |i: usize| trials[i].fail_reason.clone().unwrap();
    assert_eq!(reason(0), "ValueError('boom')");
    assert!(reason(1).contains("NaN"), "{}", reason(1));
    assert!(reason(2).contains("inf"), "{}", reason(2));
    assert!(reason(3).contains("number of values 2"), "{}", reason(3));
    assert_eq!(
        trials[0]
            .system_attrs
            .get("fail_reason")
            .and_then(|v| v.as_str()),
        Some("ValueError('boom')")
    );
    assert_eq!(trials[4].state, TrialState::Pruned);
    assert!(matches!(s.best_trial(), Err(EngineError::NoData(_))));
}

#[test]
fn per_trial_timeout_fails_the_trial_and_frees_the_slot() {
    for evaluators_ask in [false, true] {
        let s = study(vec![StudyDirection::Minimize], None);
        let opts = RunOptions {
            n_trials: Some(3),
            concurrency: if evaluators_ask { 2 } else { 1 },
            trial_timeout: Some(Duration::from_millis(100)),
            evaluators_ask,
            ..Default::default()
        };
        let run = Run::start(s.clone(), opts).unwrap();
        evaluate(&run, 2, |run, n| {
            if n == 1 {
                thread::sleep(Duration::from_millis(400));
            }
            quadratic(run, n)
        });
        let summary = run.wait(Duration::from_secs(10)).unwrap();
        assert_eq!(
            summary.timed_out,
            vec![1],
            "evaluators_ask={evaluators_ask}"
        );
        let t1 = s.trial(1).unwrap();
        assert_eq!(t1.state, TrialState::Fail);
        assert!(t1.fail_reason.unwrap().contains("timed out"));
        assert_eq!(count(&s, TrialState::Complete), 2);
    }
}

#[test]
fn interrupt_fails_trials_in_flight_and_keeps_finished_ones() {
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            concurrency: 2,
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 2, |run, n| {
        if n == 6 {
            run.interrupt("KeyboardInterrupt");
            thread::sleep(Duration::from_millis(50));
        }
        quadratic(run, n)
    });
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(
        summary.reason,
        StopReason::Interrupted("KeyboardInterrupt".into())
    );
    let trials = s.trials(None).unwrap();
    assert!(trials.iter().all(|t| t.state.is_finished()), "{trials:?}");
    assert_eq!(s.trial(6).unwrap().state, TrialState::Fail);
    assert!(count(&s, TrialState::Complete) >= 5);
}

#[test]
fn an_interrupt_during_a_sample_ends_the_run_when_the_sample_ends() {
    // The driver sees the interrupt, then waits for the ask in progress: the ask's end must
    // wake it (Ctrl-C while a trial was being sampled once left the run waiting for ever).
    let sampler = Arc::new(SlowSampler {
        gated: true,
        ..Default::default()
    });
    let s = study(vec![StudyDirection::Minimize], Some(sampler.clone()));
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    while !sampler.entered.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    run.interrupt("KeyboardInterrupt");
    thread::sleep(Duration::from_millis(100)); // the driver is waiting by now
    sampler.release.store(true, Ordering::SeqCst);
    let summary = run
        .wait(Duration::from_secs(10))
        .expect("the run did not end");
    assert_eq!(
        summary.reason,
        StopReason::Interrupted("KeyboardInterrupt".into())
    );
    let trials = s.trials(None).unwrap();
    assert_eq!(trials.len(), 1);
    assert_eq!(trials[0].state, TrialState::Fail);
}

#[test]
fn enqueued_params_are_used_first() {
    let s = study(vec![StudyDirection::Minimize], None);
    let fixed: BTreeMap<String, ParamValue> = [("x".to_string(), ParamValue::Float(3.5))].into();
    s.enqueue(fixed.clone(), Default::default(), false).unwrap();
    assert_eq!(
        s.enqueue(fixed, Default::default(), true).unwrap(),
        None,
        "skip_if_exists"
    );
    assert_eq!(count(&s, TrialState::Waiting), 1);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 1, quadratic);
    run.wait(Duration::from_secs(10)).unwrap();
    let t0 = s.trial(0).unwrap();
    assert_eq!(t0.params.get("x"), Some(&ParamValue::Float(3.5)));
    assert_eq!(t0.value(), Some(12.25));
    assert_eq!(s.trials(None).unwrap().len(), 3);
}

#[test]
fn grid_exhaustion_stops_the_run() {
    let space: BTreeMap<String, Vec<ParamValue>> = [(
        "k".to_string(),
        vec![ParamValue::Int(1), ParamValue::Int(2), ParamValue::Int(3)],
    )]
    .into();
    let grid: Arc<dyn Sampler> = Arc::new(GridSampler::new(space, Some(0)).unwrap());
    let s = study(vec![StudyDirection::Minimize], Some(grid));
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    let k = Distribution::Int(IntDistribution::new(0, 5, false, 1).unwrap());
    evaluate(&run, 1, move |run, n| {
        let v = match run.study().suggest(n, "k", &k).unwrap().value {
            ParamValue::Int(i) => i as f64,
            other => panic!("{other:?}"),
        };
        (Outcome::Values(vec![v]), Done::Finished)
    });
    assert_eq!(
        run.wait(Duration::from_secs(10)).unwrap().reason,
        StopReason::Exhausted
    );
    let mut ks: Vec<String> = s
        .trials(None)
        .unwrap()
        .iter()
        .map(|t| t.params["k"].to_string())
        .collect();
    ks.sort();
    assert_eq!(ks, vec!["1", "2", "3"]);
}

#[test]
fn suggest_rules_same_name_and_kinds() {
    let s = study(vec![StudyDirection::Minimize], None);
    let n = s.ask().unwrap();
    let a = s.suggest(n, "x", &xdist()).unwrap();
    let again = s.suggest(n, "x", &xdist()).unwrap();
    assert_eq!(a, again);
    let narrower = Distribution::Float(FloatDistribution::new(0.0, 1.0, false, None).unwrap());
    let w = s.suggest(n, "x", &narrower).unwrap();
    assert_eq!(w.value, a.value);
    assert!(w.warning.is_some());
    let int = Distribution::Int(IntDistribution::new(0, 3, false, 1).unwrap());
    assert!(matches!(
        s.suggest(n, "x", &int),
        Err(EngineError::IncompatibleDistribution { .. })
    ));
    s.tell(n, Outcome::Values(vec![1.0]), false).unwrap();
    // Other trials: another kind for the same name is refused too.
    let m = s.ask().unwrap();
    assert!(matches!(
        s.suggest(m, "x", &int),
        Err(EngineError::IncompatibleDistribution { .. })
    ));
    // Telling twice is an error; strict tell keeps the trial running on bad values.
    assert!(matches!(
        s.tell(n, Outcome::Pruned, false),
        Err(EngineError::TrialNotRunning { .. })
    ));
    assert!(matches!(
        s.tell(m, Outcome::Values(vec![f64::NAN]), true),
        Err(EngineError::InvalidArgument(_))
    ));
    assert_eq!(s.trial(m).unwrap().state, TrialState::Running);
}

#[test]
fn add_trial_and_pareto_front() {
    let s = study(
        vec![StudyDirection::Minimize, StudyDirection::Maximize],
        None,
    );
    for (i, (a, b)) in [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (0.5, 0.2)]
        .into_iter()
        .enumerate()
    {
        let mut t = TrialRecord::new(0, TrialState::Complete);
        t.values = Some(vec![a, b]);
        t.internal_params.insert("x".into(), i as f64);
        t.distributions.insert("x".into(), xdist());
        s.add_trial(&t).unwrap();
    }
    let mut front: Vec<u64> = s.best_trials().unwrap().iter().map(|t| t.number).collect();
    front.sort();
    assert_eq!(front, vec![0, 1, 3]);
    assert!(matches!(
        s.best_trial(),
        Err(EngineError::InvalidOperation(_))
    ));
    let mut bad = TrialRecord::new(0, TrialState::Complete);
    bad.values = Some(vec![1.0]);
    assert!(s.add_trial(&bad).is_err());
    assert_eq!(s.trials(None).unwrap().len(), 4);
}

#[test]
fn async_pull_and_wait() {
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(30),
            concurrency: 10,
            ..Default::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let r = run.clone();
    let summary = rt.block_on(async move {
        loop {
            let reqs = r.pull_async(16).await;
            if reqs.is_empty() {
                break;
            }
            for req in reqs {
                let (o, d) = quadratic(&r, req.number);
                r.study().tell(req.number, o, false).unwrap();
                r.done(req.number, d);
            }
        }
        r.wait_async().await
    });
    assert_eq!(summary.started, 30);
    assert_eq!(count(&s, TrialState::Complete), 30);
}

#[test]
fn async_evaluators_start_trials_with_permits_within_their_capacity() {
    // Two evaluators on a runtime (as two Attach streams), 3 trials each at most: they take
    // permits with take_async and start the trials on the blocking pool.
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(61),
            concurrency: 0,
            evaluators_ask: true,
            ..Default::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let evaluator = |run: Arc<Run>, live: Arc<AtomicUsize>, peak: Arc<AtomicUsize>| async move {
        let _joined = run.join(3);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.len() < 3 {
                let numbers = match run.take_async(3 - tasks.len()).await {
                    Taken::Closed => return,
                    Taken::Requests(r) => r.into_iter().map(|r| Some(r.number)).collect(),
                    Taken::Permit => {
                        let r = run.clone();
                        vec![tokio::task::spawn_blocking(move || r.ask_permitted())
                            .await
                            .unwrap()]
                    }
                };
                for n in numbers.into_iter().flatten() {
                    let (run, live, peak) = (run.clone(), live.clone(), peak.clone());
                    tasks.spawn(async move {
                        peak.fetch_max(live.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        live.fetch_sub(1, Ordering::SeqCst);
                        let (o, d) = quadratic(&run, n);
                        run.study().tell(n, o, false).unwrap();
                        run.done(n, d);
                    });
                }
            }
            tasks.join_next().await;
        }
    };
    let summary = rt.block_on(async {
        let a = tokio::spawn(evaluator(run.clone(), live.clone(), peak.clone()));
        let b = tokio::spawn(evaluator(run.clone(), live.clone(), peak.clone()));
        let summary = tokio::time::timeout(Duration::from_secs(20), run.wait_async())
            .await
            .expect("the evaluators did not finish the run");
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = a.await;
            let _ = b.await;
        })
        .await;
        summary
    });
    assert_eq!(summary.reason, StopReason::NTrials);
    assert_eq!(summary.started, 61);
    assert_eq!(s.trials(None).unwrap().len(), 61);
    assert_eq!(count(&s, TrialState::Complete), 61);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 6, "peak in flight {peak}");
    // A stopped run hands out no permit.
    assert!(!run.try_permit());
}

/// A 1000-trial run with one evaluator that starts its trials itself, until `eval` ends it.
fn one_asking_evaluator<F>(eval: F) -> (Arc<Study>, RunSummary)
where
    F: Fn(&Run, u64) -> (Outcome, Done) + Send + Sync + 'static,
{
    let s = study(vec![StudyDirection::Minimize], None);
    let options = RunOptions {
        n_trials: Some(1000),
        evaluators_ask: true,
        ..Default::default()
    };
    let run = Run::start(s.clone(), options).unwrap();
    evaluate(&run, 1, eval);
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    (s, summary)
}

#[test]
fn evaluators_that_ask_themselves_keep_every_limit() {
    // n_trials exact with several pulling threads that sample for themselves.
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(40),
            concurrency: 4,
            evaluators_ask: true,
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 4, quadratic);
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(summary.reason, StopReason::NTrials);
    assert_eq!(count(&s, TrialState::Complete), 40);
    assert_eq!(s.trials(None).unwrap().len(), 40);

    // stop() from an evaluator: no permit left over starts a trial afterwards.
    let s = study(vec![StudyDirection::Minimize], None);
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: Some(1000),
            concurrency: 2,
            evaluators_ask: true,
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 2, |run, n| {
        if n == 5 {
            run.stop();
        }
        quadratic(run, n)
    });
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(summary.reason, StopReason::Stopped);
    let all = s.trials(None).unwrap();
    assert!(all.len() <= 8, "{} trials started after stop", all.len());
    assert!(all.iter().all(|t| t.state == TrialState::Complete));

    // One evaluator: stop() inside trial 5 means trial 5 is the last one, even though a permit
    // for the next trial is already waiting.
    for _ in 0..20 {
        let (s, summary) = one_asking_evaluator(|run, n| {
            if n == 5 {
                run.stop();
            }
            quadratic(run, n)
        });
        assert_eq!(summary.reason, StopReason::Stopped);
        assert_eq!(s.trials(None).unwrap().len(), 6);
    }

    // An evaluator aborting the run (an uncaught error) ends it after that trial too.
    for _ in 0..20 {
        let (s, summary) = one_asking_evaluator(|run, n| {
            let (outcome, _) = quadratic(run, n);
            (outcome, Done::Abort("boom".into()))
        });
        assert_eq!(summary.reason, StopReason::Aborted("boom".into()));
        assert_eq!(s.trials(None).unwrap().len(), 1);
    }

    // A grid runs out: the run ends as exhausted.
    let grid: BTreeMap<String, Vec<ParamValue>> = [(
        "x".to_string(),
        vec![
            ParamValue::Float(1.0),
            ParamValue::Float(2.0),
            ParamValue::Float(3.0),
        ],
    )]
    .into();
    let s = study(
        vec![StudyDirection::Minimize],
        Some(Arc::new(GridSampler::new(grid, Some(0)).unwrap())),
    );
    let run = Run::start(
        s.clone(),
        RunOptions {
            n_trials: None,
            evaluators_ask: true,
            ..Default::default()
        },
    )
    .unwrap();
    evaluate(&run, 1, quadratic);
    let summary = run.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(summary.reason, StopReason::Exhausted);
    assert_eq!(count(&s, TrialState::Complete), 3);
}
