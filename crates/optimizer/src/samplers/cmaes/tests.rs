use super::*;
use crate::distributions::FloatDistribution;
use crate::distributions::IntDistribution;
use crate::samplers::testing::{float, run, run_concurrent};

fn cma(opts: CmaOptions) -> CmaEsSampler {
    CmaEsSampler::new(CmaOptions {
        seed: Some(opts.seed.unwrap_or(7)),
        ..opts
    })
    .unwrap()
}

fn space(d: usize) -> SearchSpace {
    (0..d)
        .map(|i| (format!("x{i}"), float(-5.0, 5.0)))
        .collect()
}

fn sphere(x: &[f64]) -> f64 {
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - 1.0 + 0.3 * i as f64).powi(2))
        .sum()
}

#[test]
fn converges_where_random_search_does_not() {
    let (_, best) = run(&cma(CmaOptions::default()), 400, sphere, &space(4));
    assert!(best < 1e-4, "{best}");
    let (_, random) = run(&RandomSampler::new(Some(7)), 400, sphere, &space(4));
    assert!(random > 100.0 * best, "{random} vs {best}");
}

#[test]
fn deterministic_for_a_seed_and_a_fresh_sampler_replays_to_the_same_strategy() {
    let s = space(3);
    let (h1, b1) = run(&cma(CmaOptions::default()), 60, sphere, &s);
    let (h2, b2) = run(&cma(CmaOptions::default()), 60, sphere, &s);
    assert_eq!(b1, b2);
    assert_eq!(h1.trials(), h2.trials());
    // A sampler that never saw the study (a resumed one) samples what the first would.
    let mut h = h1.clone();
    let t = h.create_trial(TrialState::Running);
    let warm = cma(CmaOptions::default());
    let cold = cma(CmaOptions::default());
    let _ = warm.sample_relative(&h1, 59, &s);
    let rel = warm.infer_relative_search_space(&h, t);
    assert_eq!(rel, s);
    assert_eq!(
        warm.sample_relative(&h, t, &rel),
        cold.sample_relative(&h, t, &rel)
    );
    let other = CmaEsSampler::new(CmaOptions {
        seed: Some(8),
        ..CmaOptions::default()
    })
    .unwrap();
    assert_ne!(
        other.sample_relative(&h, t, &rel),
        cold.sample_relative(&h, t, &rel)
    );
}

#[test]
fn generations_end_with_their_lowest_numbered_draws_and_wait_for_running_ones() {
    let s = space(2);
    let sampler = cma(CmaOptions {
        popsize: Some(4),
        n_startup_trials: 0,
        ..CmaOptions::default()
    });
    let mut h = History::new(vec![StudyDirection::Minimize]);
    // Six trials in flight from generation 0; all but the first finish.
    let start = |h: &mut History| {
        let t = h.create_trial(TrialState::Running);
        let rel = sampler.sample_relative(h, t, &s);
        for (name, dist) in &s {
            h.set_param(t, name, rel[name], dist).unwrap();
        }
        t
    };
    let ts: Vec<u64> = (0..6).map(|_| start(&mut h)).collect();
    let finish = |h: &mut History, t: u64| {
        let xs: Vec<f64> = s.keys().map(|n| h.trials()[t as usize].params[n]).collect();
        h.finish(t, TrialState::Complete, Some(vec![sphere(&xs)]))
            .unwrap();
    };
    for &t in &ts[1..] {
        finish(&mut h, t);
    }
    let generation =
        |sampler: &CmaEsSampler| sampler.replay.lock().as_ref().unwrap().run.es.generation;
    let t6 = start(&mut h);
    assert_eq!(
        generation(&sampler),
        0,
        "trial 0 is still running: the generation waits"
    );
    finish(&mut h, ts[0]);
    finish(&mut h, t6);
    let t7 = start(&mut h);
    assert_eq!(generation(&sampler), 1);
    let replay = sampler.replay.lock().clone().unwrap();
    // Trials 0-3 ended generation 0; 4, 5 and 6 were draws of it that finished later: they
    // join generation 1 as injected points (at most popsize - 1 of them).
    assert_eq!(
        replay.solved.iter().map(|s| s.2).collect::<Vec<_>>(),
        [true; 3]
    );
    assert_eq!(replay.next, t7);
    // A running trial drawn from neither generation 0 nor 1 does not hold the replay up.
    let stale = h.create_trial(TrialState::Running);
    for (name, dist) in &s {
        h.set_param(stale, name, 0.123, dist).unwrap();
    }
    finish(&mut h, t7);
    let t9 = start(&mut h);
    assert_eq!(generation(&sampler), 2, "4, 5, 6 and 7 made generation 1");
    assert_eq!(sampler.replay.lock().as_ref().unwrap().next, t9);
}

#[test]
fn failed_pruned_and_enqueued_trials_are_left_out() {
    let s = space(2);
    let sampler = cma(CmaOptions {
        popsize: Some(3),
        n_startup_trials: 0,
        ..CmaOptions::default()
    });
    let mut h = History::new(vec![StudyDirection::Maximize]);
    let step = |h: &mut History, state: TrialState, own: bool| {
        let t = h.create_trial(TrialState::Running);
        let rel = sampler.sample_relative(h, t, &s);
        for (name, dist) in &s {
            let v = if own { rel[name] } else { 0.25 };
            h.set_param(t, name, v, dist).unwrap();
        }
        if state == TrialState::Pruned {
            h.report(t, 3, 1.0).unwrap();
        }
        let values = (state == TrialState::Complete).then(|| vec![1.0]);
        h.finish(t, state, values).unwrap();
    };
    step(&mut h, TrialState::Complete, true);
    step(&mut h, TrialState::Fail, true);
    step(&mut h, TrialState::Pruned, true);
    step(&mut h, TrialState::Complete, false);
    step(&mut h, TrialState::Complete, true);
    let t = h.create_trial(TrialState::Running);
    sampler.sample_relative(&h, t, &s);
    let replay = sampler.replay.lock().clone().unwrap();
    assert_eq!((replay.run.es.generation, replay.solved.len()), (0, 2));
    // With consider_pruned_trials the pruned trial counts, at its last report.
    let pruned = cma(CmaOptions {
        popsize: Some(3),
        n_startup_trials: 0,
        consider_pruned_trials: true,
        ..CmaOptions::default()
    });
    pruned.sample_relative(&h, t, &s);
    assert_eq!(pruned.replay.lock().as_ref().unwrap().run.es.generation, 1);
}

#[test]
fn ipop_restarts_a_converged_run_with_a_larger_population() {
    // A flat objective stops a run after a few dozen generations.
    let sampler = cma(CmaOptions {
        restart_strategy: Some(RestartStrategy::Ipop),
        ..CmaOptions::default()
    });
    let s = space(2);
    let (h, _) = run(&sampler, 600, |_| 1.0, &s);
    let t = h.trials().len() as u64;
    sampler.sample_relative(&h, t, &s);
    let replay = sampler.replay.lock().clone().unwrap();
    assert!(replay.run.restarts >= 1, "no restart in 600 flat trials");
    assert_eq!(
        replay.run.es.popsize(),
        6 * 2usize.pow(replay.run.restarts as u32)
    );
    let bipop = cma(CmaOptions {
        restart_strategy: Some(RestartStrategy::Bipop),
        ..CmaOptions::default()
    });
    let (h, _) = run(&bipop, 600, |_| 1.0, &s);
    bipop.sample_relative(&h, h.trials().len() as u64, &s);
    assert!(bipop.replay.lock().as_ref().unwrap().run.restarts >= 1);
}

#[test]
fn margin_keeps_integer_parameters_exploring() {
    // The optimum needs b = 1 although most of the range prefers b = 0 at first: without the
    // margin a binary parameter tends to freeze; with it both values keep being tried.
    let int = |low, high| Distribution::Int(IntDistribution::new(low, high, false, 1).unwrap());
    let s: SearchSpace = [
        ("a".to_string(), float(-3.0, 3.0)),
        ("b".to_string(), int(0, 1)),
        ("c".to_string(), int(-10, 10)),
    ]
    .into_iter()
    .collect();
    let f = |x: &[f64]| (x[0] - 1.0).powi(2) + (x[2] - 3.0).powi(2) + 5.0 * (1.0 - x[1]) * 0.2;
    let sampler = cma(CmaOptions {
        with_margin: true,
        ..CmaOptions::default()
    });
    let (h, best) = run(&sampler, 300, f, &s);
    assert!(best < 0.05, "{best}");
    let late_b: Vec<f64> = h.trials()[200..].iter().map(|t| t.params["b"]).collect();
    assert!(late_b.contains(&0.0) && late_b.contains(&1.0));
    for t in h.trials() {
        assert!(s["c"].contains(t.params["c"]));
    }
}

#[test]
fn thresholds_sit_between_grid_values() {
    let p = UnitParam::new(
        "c",
        &Distribution::Int(IntDistribution::new(0, 4, false, 2).unwrap()),
        false,
    );
    assert_eq!(thresholds(&p, 0.0), Some((None, Some(0.25))));
    assert_eq!(thresholds(&p, 0.5), Some((Some(0.25), Some(0.75))));
    assert_eq!(thresholds(&p, 0.9), Some((Some(0.75), None)));
    assert_eq!(
        thresholds(&UnitParam::new("x", &float(0.0, 1.0), false), 0.5),
        None
    );
}

#[test]
fn warm_start_begins_at_the_source_trials_best_points() {
    let s = space(2);
    let source: Vec<SourceTrial> = (0..50)
        .map(|i| {
            let (x0, x1) = (-5.0 + 0.2 * i as f64, 2.0);
            SourceTrial {
                params: [("x0".to_string(), x0), ("x1".to_string(), x1)].into(),
                value: (x0 - 3.0f64).abs(),
            }
        })
        .collect();
    let sampler = cma(CmaOptions {
        source_trials: source,
        ..CmaOptions::default()
    });
    let params = sampler.params(&s);
    let run = sampler.first_run(&params, StudyDirection::Minimize);
    // The best tenth: x0 in [2.2, 3.8], x1 = 2: in the cube, around (0.8, 0.7).
    assert!((run.es.mean[0] - 0.8).abs() < 0.02, "{}", run.es.mean);
    assert!((run.es.mean[1] - 0.7).abs() < 1e-9, "{}", run.es.mean);
}

#[test]
fn categoricals_startup_and_several_objectives_go_to_the_independent_sampler() {
    let sampler = cma(CmaOptions::default());
    let mut h = History::new(vec![StudyDirection::Minimize]);
    let t = h.create_trial(TrialState::Running);
    assert!(
        sampler.sample_relative(&h, t, &space(2)).is_empty(),
        "startup"
    );
    h.finish(t, TrialState::Fail, None).unwrap();
    // One parameter is searched too (as in Optuna 5.0).
    let (h, best) = run(&sampler, 60, sphere, &space(1));
    assert!(best < 1e-3, "{best}");
    assert!(!sampler.sample_relative(&h, 60, &space(1)).is_empty());
    let mo = History::new(vec![StudyDirection::Minimize; 2]);
    assert!(sampler.sample_relative(&mo, 0, &space(2)).is_empty());
    let cat = Distribution::Categorical(
        crate::distributions::CategoricalDistribution::new(vec![
            crate::distributions::ParamValue::Int(1),
            crate::distributions::ParamValue::Int(2),
        ])
        .unwrap(),
    );
    let mut s = space(2);
    s.insert("c".into(), cat);
    let (h, _) = run(&sampler, 3, |x| x[0], &s);
    let rel = sampler.infer_relative_search_space(&h, 3);
    assert_eq!(rel.keys().collect::<Vec<_>>(), ["x0", "x1"]);
}

#[test]
fn bad_options_are_rejected() {
    let bad = |opts: CmaOptions| CmaEsSampler::new(opts).unwrap_err().to_string();
    assert!(bad(CmaOptions {
        sigma0: Some(0.0),
        ..Default::default()
    })
    .contains("sigma0"));
    assert!(bad(CmaOptions {
        popsize: Some(1),
        ..Default::default()
    })
    .contains("popsize"));
    assert!(bad(CmaOptions {
        inc_popsize: 0,
        ..Default::default()
    })
    .contains("inc_popsize"));
    let e = bad(CmaOptions {
        with_margin: true,
        use_separable_cma: true,
        ..Default::default()
    });
    assert!(
        e.contains("with_margin") && e.contains("use_separable_cma"),
        "{e}"
    );
    let source = vec![SourceTrial {
        params: BTreeMap::new(),
        value: 1.0,
    }];
    let e = bad(CmaOptions {
        source_trials: source,
        restart_strategy: Some(RestartStrategy::Ipop),
        ..Default::default()
    });
    assert!(
        e.contains("source_trials") && e.contains("restart_strategy"),
        "{e}"
    );
}

#[test]
fn separable_cma_runs_on_many_parameters() {
    let sampler = cma(CmaOptions {
        use_separable_cma: true,
        ..CmaOptions::default()
    });
    let (_, best) = run(&sampler, 600, sphere, &space(10));
    let (_, random) = run(&RandomSampler::new(Some(7)), 600, sphere, &space(10));
    assert!(best < random / 20.0, "{best} vs {random}");
}

/// The test ellipsoid of the Python suite: a log-scaled coordinate between two linear ones.
fn ellipsoid() -> (SearchSpace, impl Fn(&[f64]) -> f64) {
    let log = Distribution::Float(FloatDistribution::new(1e-3, 10.0, true, None).unwrap());
    let s = [
        ("x".to_string(), float(-5.0, 5.0)),
        ("y".to_string(), log),
        ("z".to_string(), float(-5.0, 5.0)),
    ]
    .into_iter()
    .collect();
    let f = |v: &[f64]| {
        (v[0] - 1.3).powi(2) + 10.0 * (v[1] - 2.0).powi(2) + 100.0 * (v[2] + 0.5).powi(2)
    };
    (s, f)
}

#[test]
fn concurrent_trials_are_not_wasted_and_a_replay_reaches_the_same_strategy() {
    let (s, f) = ellipsoid();
    // Four trials in flight, finishing in order or staggered (every fourth one slower).
    for stagger in [false, true] {
        let mut bests = Vec::new();
        for seed in 0..6 {
            let opts = || CmaOptions {
                seed: Some(seed),
                popsize: Some(6),
                ..CmaOptions::default()
            };
            let live = cma(opts());
            let duration = |t: u64| if stagger { (t % 4) as f64 } else { 1.0 };
            let (mut h, best) = run_concurrent(&live, 400, 4, duration, &f, &s);
            bests.push(best);
            // One at a time, 400 trials make 66 generations; late draws join the next
            // generation, so four at a time lose few (without them: 43 and 33).
            let generation = live.replay.lock().as_ref().unwrap().run.es.generation;
            assert!(
                generation >= 60,
                "stagger={stagger}: {generation} generations"
            );
            // A sampler that replays the finished study (a resumed one) samples what this
            // one does: which trials made each generation did not depend on finish times.
            let t = h.create_trial(TrialState::Running);
            assert_eq!(
                live.sample_relative(&h, t, &s),
                cma(opts()).sample_relative(&h, t, &s)
            );
        }
        bests.sort_by(f64::total_cmp);
        assert!(bests[3] < 1e-2, "stagger={stagger}: {bests:?}");
    }
}
