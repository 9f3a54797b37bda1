use super::*;
use crate::distributions::{CategoricalDistribution, IntDistribution, ParamValue};
use crate::multi_objective::{hypervolume, pareto_front};
use crate::samplers::testing::{float, run_study};

fn nsga(opts: NsgaOptions) -> NsgaSampler {
    NsgaSampler::new(NsgaOptions {
        seed: Some(opts.seed.unwrap_or(3)),
        ..opts
    })
    .unwrap()
}

fn unit_space(d: usize) -> SearchSpace {
    (0..d)
        .map(|i| (format!("x{i:02}"), float(0.0, 1.0)))
        .collect()
}

fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

fn dtlz2(x: &[f64]) -> Vec<f64> {
    let g: f64 = x[2..].iter().map(|v| (v - 0.5).powi(2)).sum();
    let h = std::f64::consts::FRAC_PI_2;
    vec![
        (1.0 + g) * (x[0] * h).cos() * (x[1] * h).cos(),
        (1.0 + g) * (x[0] * h).cos() * (x[1] * h).sin(),
        (1.0 + g) * (x[0] * h).sin(),
    ]
}

fn hv(h: &History, reference: &[f64]) -> f64 {
    let points: Vec<Vec<f64>> = h.trials().iter().filter_map(|t| t.values.clone()).collect();
    let front: Vec<Vec<f64>> = pareto_front(&points)
        .into_iter()
        .map(|i| points[i].clone())
        .collect();
    hypervolume(&front, reference)
}

fn two() -> Vec<StudyDirection> {
    vec![StudyDirection::Minimize; 2]
}

#[test]
fn nsga2_beats_random_search_on_zdt1() {
    let s = unit_space(6);
    let h = run_study(&nsga(NsgaOptions::default()), 1500, zdt1, &s, two());
    let r = run_study(&RandomSampler::new(Some(3)), 1500, zdt1, &s, two());
    let (a, b) = (hv(&h, &[1.1, 1.1]), hv(&r, &[1.1, 1.1]));
    // The true front's hypervolume is 1.1^2 - 1/3 ≈ 0.877.
    assert!(a > 0.6 && a > b + 0.4, "nsga2 {a} random {b}");
}

#[test]
fn nsga3_beats_random_search_on_dtlz2_with_three_objectives() {
    let s = unit_space(6);
    let three = vec![StudyDirection::Minimize; 3];
    let opts = NsgaOptions {
        selection: EliteSelection::ReferencePoints {
            points: None,
            dividing_parameter: 3,
        },
        ..NsgaOptions::default()
    };
    let h = run_study(&nsga(opts), 1200, dtlz2, &s, three.clone());
    let r = run_study(&RandomSampler::new(Some(3)), 1200, dtlz2, &s, three);
    let (a, b) = (hv(&h, &[1.5; 3]), hv(&r, &[1.5; 3]));
    assert!(a > b + 0.08, "nsga3 {a} random {b}");
}

#[test]
fn the_first_generation_is_random_and_children_follow_it() {
    let s = unit_space(3);
    let sampler = nsga(NsgaOptions {
        population_size: 4,
        ..NsgaOptions::default()
    });
    let h = run_study(&sampler, 4, zdt1, &s, two());
    // Trials 0..3 made generation 0; the next trial is a child of its parents.
    let mut h2 = History::new(two());
    for t in 0..4 {
        let n = h2.create_trial(TrialState::Running);
        assert!(sampler.sample_relative(&h2, n, &s).is_empty(), "trial {t}");
        for (name, d) in &s {
            h2.set_param(n, name, h.param(t, name, d).unwrap(), d)
                .unwrap();
        }
        h2.finish(
            n,
            TrialState::Complete,
            h.trials()[t as usize].values.clone(),
        )
        .unwrap();
    }
    let n = h2.create_trial(TrialState::Running);
    let child = sampler.sample_relative(&h2, n, &s);
    assert!(!child.is_empty());
    for (name, v) in &child {
        // Uniform crossover: every gene is some parent's.
        assert!(
            (0..4).any(|t| h.param(t, name, &s[name]) == Some(*v)),
            "{name}={v}"
        );
    }
}

#[test]
fn deterministic_for_a_seed_and_a_fresh_sampler_continues_the_same_generations() {
    let s = unit_space(4);
    let opts = || NsgaOptions {
        population_size: 10,
        ..NsgaOptions::default()
    };
    let h1 = run_study(&nsga(opts()), 75, zdt1, &s, two());
    let h2 = run_study(&nsga(opts()), 75, zdt1, &s, two());
    assert_eq!(h1.trials(), h2.trials());
    let mut h = h1.clone();
    let t = h.create_trial(TrialState::Running);
    let warm = nsga(opts());
    let _ = warm.sample_relative(&h1, 40, &s);
    assert_eq!(
        warm.sample_relative(&h, t, &s),
        nsga(opts()).sample_relative(&h, t, &s)
    );
    let other = nsga(NsgaOptions {
        seed: Some(4),
        ..opts()
    });
    assert_ne!(
        other.sample_relative(&h, t, &s),
        nsga(opts()).sample_relative(&h, t, &s)
    );
}

#[test]
fn a_running_trial_holds_the_walk_and_its_completion_moves_the_boundary() {
    let s = unit_space(2);
    let sampler = nsga(NsgaOptions {
        population_size: 3,
        ..NsgaOptions::default()
    });
    let mut h = History::new(two());
    let add = |h: &mut History, state: TrialState, x: f64| {
        let n = h.create_trial(TrialState::Running);
        for (i, (name, d)) in s.iter().enumerate() {
            h.set_param(n, name, (x + 0.1 * i as f64).min(1.0), d)
                .unwrap();
        }
        if state != TrialState::Running {
            let y = zdt1(&[x, (x + 0.1).min(1.0)]);
            h.finish(n, state, (state == TrialState::Complete).then_some(y))
                .unwrap();
        }
        n
    };
    let slow = add(&mut h, TrialState::Running, 0.5);
    for x in [0.1, 0.2, 0.3] {
        add(&mut h, TrialState::Complete, x);
    }
    // Trials 1..3 fill generation 0 while trial 0 runs: trial 4 is a child of 1..3.
    let t = h.create_trial(TrialState::Running);
    let parents: Vec<u64> = sampler.parents(&h, t).iter().map(|i| i.number).collect();
    assert_eq!(parents, vec![1, 2, 3]);
    h.finish(t, TrialState::Fail, None).unwrap();
    // Trial 0 completes: generation 0 is now trials 0..2 and trial 3 joins generation 1.
    h.finish(slow, TrialState::Complete, Some(zdt1(&[0.5, 0.6])))
        .unwrap();
    let t = h.create_trial(TrialState::Running);
    let mut parents: Vec<u64> = sampler.parents(&h, t).iter().map(|i| i.number).collect();
    parents.sort();
    assert_eq!(parents, vec![0, 1, 2]);
    let fresh = nsga(NsgaOptions {
        population_size: 3,
        ..NsgaOptions::default()
    });
    assert_eq!(
        fresh
            .parents(&h, t)
            .iter()
            .map(|i| i.number)
            .collect::<Vec<_>>(),
        sampler
            .parents(&h, t)
            .iter()
            .map(|i| i.number)
            .collect::<Vec<_>>()
    );
}

#[test]
fn feasible_trials_are_the_parents_before_infeasible_ones() {
    let s = unit_space(2);
    let sampler = nsga(NsgaOptions {
        population_size: 4,
        ..NsgaOptions::default()
    });
    let mut h = History::new(two());
    // Eight trials in two generations; the ones with x0 < 0.5 violate a constraint. The
    // infeasible ones dominate in the objectives, yet only feasible ones become parents.
    for k in 0..8 {
        let x = k as f64 / 8.0;
        let n = h.create_trial(TrialState::Running);
        for (name, d) in &s {
            h.set_param(n, name, x, d).unwrap();
        }
        h.set_constraints(n, Some(vec![0.5 - x])).unwrap();
        h.finish(n, TrialState::Complete, Some(vec![x, x])).unwrap();
    }
    let t = h.create_trial(TrialState::Running);
    let mut parents: Vec<u64> = sampler.parents(&h, t).iter().map(|i| i.number).collect();
    parents.sort();
    assert_eq!(parents, vec![4, 5, 6, 7]);
}

#[test]
fn every_crossover_and_the_mutation_keep_values_in_their_distributions() {
    let mut s = unit_space(2);
    s.insert(
        "i".into(),
        Distribution::Int(IntDistribution::new(1, 9, false, 2).unwrap()),
    );
    s.insert(
        "l".into(),
        Distribution::Float(
            crate::distributions::FloatDistribution::new(1e-3, 10.0, true, None).unwrap(),
        ),
    );
    s.insert(
        "c".into(),
        Distribution::Categorical(
            CategoricalDistribution::new(vec![
                ParamValue::Str("a".into()),
                ParamValue::Str("b".into()),
                ParamValue::Int(3),
            ])
            .unwrap(),
        ),
    );
    let f = |x: &[f64]| vec![x.iter().sum::<f64>(), -x[0]];
    let crossovers = [
        Crossover::Uniform {
            swapping_prob: None,
        },
        Crossover::BlxAlpha { alpha: 0.5 },
        Crossover::Sbx {
            eta: None,
            uniform_crossover_prob: 0.5,
            use_child_gene_prob: 0.5,
        },
        Crossover::Vsbx {
            eta: None,
            uniform_crossover_prob: 0.5,
            use_child_gene_prob: 0.5,
        },
        Crossover::Undx {
            sigma_xi: 0.5,
            sigma_eta: None,
        },
        Crossover::Spx { epsilon: None },
    ];
    for crossover in crossovers {
        for mutation_eta in [None, Some(20.0)] {
            let sampler = nsga(NsgaOptions {
                population_size: 6,
                crossover: crossover.clone(),
                mutation_eta,
                ..NsgaOptions::default()
            });
            // run_study checks every value is in its distribution.
            let h = run_study(&sampler, 40, f, &s, two());
            assert_eq!(h.n_complete(), 40);
        }
    }
}

#[test]
fn bad_options_are_refused_with_the_argument_named() {
    let err = |opts: NsgaOptions| NsgaSampler::new(opts).unwrap_err().to_string();
    assert!(err(NsgaOptions {
        population_size: 1,
        ..NsgaOptions::default()
    })
    .contains("population_size"));
    assert!(err(NsgaOptions {
        population_size: 2,
        crossover: Crossover::Spx { epsilon: None },
        ..NsgaOptions::default()
    })
    .contains(">= 3"));
    assert!(err(NsgaOptions {
        crossover_prob: 1.5,
        ..NsgaOptions::default()
    })
    .contains("crossover_prob"));
    assert!(err(NsgaOptions {
        mutation_prob: Some(-0.1),
        ..NsgaOptions::default()
    })
    .contains("mutation_prob"));
    assert!(err(NsgaOptions {
        crossover: Crossover::Sbx {
            eta: Some(-1.0),
            uniform_crossover_prob: 0.5,
            use_child_gene_prob: 0.5
        },
        ..NsgaOptions::default()
    })
    .contains("eta"));
    assert!(err(NsgaOptions {
        selection: EliteSelection::ReferencePoints {
            points: Some(vec![vec![1.0, 0.0], vec![1.0]]),
            dividing_parameter: 3
        },
        ..NsgaOptions::default()
    })
    .contains("reference_points"));
    let s = nsga(NsgaOptions {
        selection: EliteSelection::ReferencePoints {
            points: Some(vec![vec![1.0, 0.0], vec![0.0, 1.0]]),
            dividing_parameter: 3,
        },
        ..NsgaOptions::default()
    });
    assert!(s.check_study(&two()).is_ok());
    let e = s
        .check_study(&[StudyDirection::Minimize; 3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("one weight per objective (3"), "{e}");
}

#[test]
fn single_objective_studies_improve_too() {
    let s = unit_space(4);
    let f = |x: &[f64]| vec![x.iter().map(|v| (v - 0.3).powi(2)).sum::<f64>()];
    let h = run_study(
        &nsga(NsgaOptions::default()),
        600,
        f,
        &s,
        vec![StudyDirection::Minimize],
    );
    let r = run_study(
        &RandomSampler::new(Some(3)),
        600,
        f,
        &s,
        vec![StudyDirection::Minimize],
    );
    let best = |h: &History| {
        h.first_values()
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    };
    assert!(best(&h) < best(&r) / 2.0, "{} vs {}", best(&h), best(&r));
}

#[test]
fn a_trial_left_running_for_good_changes_nothing_the_cached_walk_gives() {
    use rand::SeedableRng;
    let s = unit_space(2);
    let opts = || NsgaOptions {
        population_size: 8,
        ..NsgaOptions::default()
    };
    let sampler = nsga(opts());
    let mut h = History::new(two());
    // Trial 0 never finishes (a process died with it); three others run at a time and finish
    // in a random order.
    let _zombie = h.create_trial(TrialState::Running);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let mut flight: Vec<u64> = Vec::new();
    for _ in 0..300 {
        if flight.len() == 3 {
            let t = flight.remove(rng.random_range(0..3));
            let x: Vec<f64> = s.keys().map(|n| h.trials()[t as usize].params[n]).collect();
            h.finish(t, TrialState::Complete, Some(zdt1(&x))).unwrap();
        }
        let t = h.create_trial(TrialState::Running);
        let cached: Vec<u64> = sampler.parents(&h, t).iter().map(|i| i.number).collect();
        let fresh: Vec<u64> = nsga(opts())
            .parents(&h, t)
            .iter()
            .map(|i| i.number)
            .collect();
        assert_eq!(cached, fresh, "trial {t}");
        let rel = sampler.sample_relative(&h, t, &s);
        for (name, d) in &s {
            let v = rel
                .get(name)
                .copied()
                .unwrap_or_else(|| rng.random_range(0.0..1.0));
            h.set_param(t, name, v, d).unwrap();
        }
        flight.push(t);
    }
    let ahead = sampler
        .cache
        .lock()
        .as_ref()
        .unwrap()
        .ahead
        .clone()
        .unwrap();
    assert_eq!(sampler.cache.lock().as_ref().unwrap().walk.next, 0);
    assert!(
        ahead.walk.next > 290 && ahead.passed.len() <= 4,
        "{}",
        ahead.passed.len()
    );
}
