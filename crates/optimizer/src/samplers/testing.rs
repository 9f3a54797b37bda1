//! Helpers for the samplers' tests.

use crate::distributions::{Distribution, FloatDistribution};
use crate::history::{History, SearchSpace};
use crate::samplers::Sampler;
use crate::trial::{StudyDirection, TrialState};

/// Runs `n` trials one after another, minimising `f` over `space`; returns the history and
/// the best value.
pub(crate) fn run(
    sampler: &dyn Sampler,
    n: usize,
    f: impl Fn(&[f64]) -> f64,
    space: &SearchSpace,
) -> (History, f64) {
    let h = run_study(
        sampler,
        n,
        |x| vec![f(x)],
        space,
        vec![StudyDirection::Minimize],
    );
    let best = best_value(&h);
    (h, best)
}

/// Runs `n` trials one after another of a study with `directions`, each valued by `f`.
pub(crate) fn run_study(
    sampler: &dyn Sampler,
    n: usize,
    f: impl Fn(&[f64]) -> Vec<f64>,
    space: &SearchSpace,
    directions: Vec<StudyDirection>,
) -> History {
    run_constrained(sampler, n, |x| (f(x), None), space, directions)
}

/// [`run_study`] with constraints: `f` gives each trial's values and constraint values.
pub(crate) fn run_constrained(
    sampler: &dyn Sampler,
    n: usize,
    f: impl Fn(&[f64]) -> (Vec<f64>, Option<Vec<f64>>),
    space: &SearchSpace,
    directions: Vec<StudyDirection>,
) -> History {
    let mut h = History::new(directions);
    for _ in 0..n {
        let (t, xs) = start_trial(sampler, &mut h, space);
        let (values, constraints) = f(&xs);
        h.set_constraints(t, constraints).unwrap();
        h.finish(t, TrialState::Complete, Some(values)).unwrap();
    }
    h
}

/// Starts a trial of `h` and samples every parameter of `space` as a study does (relative
/// params first); returns its number and values in `space`'s order.
pub(crate) fn start_trial(
    sampler: &dyn Sampler,
    h: &mut History,
    space: &SearchSpace,
) -> (u64, Vec<f64>) {
    let t = h.create_trial(TrialState::Running);
    let rel_space = sampler.infer_relative_search_space(h, t);
    let rel = sampler.sample_relative(h, t, &rel_space);
    h.set_relative_params(t, &rel, &rel_space).unwrap();
    let mut xs = Vec::new();
    for (name, dist) in space {
        let v = h
            .pending_relative(t, name)
            .unwrap_or_else(|| sampler.sample_independent(h, t, name, dist));
        assert!(dist.contains(v), "{name}={v} outside {dist:?}");
        h.set_param(t, name, v, dist).unwrap();
        xs.push(v);
    }
    (t, xs)
}

/// Runs `n` trials with `window` of them in flight, trial `t` taking `duration(t)` (a trial
/// starts when one in flight finishes; ties finish in number order); returns the history and
/// the best value.
pub(crate) fn run_concurrent(
    sampler: &dyn Sampler,
    n: usize,
    window: usize,
    duration: impl Fn(u64) -> f64,
    f: impl Fn(&[f64]) -> f64,
    space: &SearchSpace,
) -> (History, f64) {
    let mut h = History::new(vec![StudyDirection::Minimize]);
    // (finish time, trial, value)
    let mut flight: Vec<(f64, u64, f64)> = Vec::new();
    let mut clock = 0.0;
    let finish_first = |h: &mut History, flight: &mut Vec<(f64, u64, f64)>| {
        let i = (0..flight.len())
            .min_by(|&i, &j| {
                flight[i]
                    .0
                    .total_cmp(&flight[j].0)
                    .then(flight[i].1.cmp(&flight[j].1))
            })
            .expect("a trial in flight");
        let (at, t, v) = flight.remove(i);
        h.finish(t, TrialState::Complete, Some(vec![v])).unwrap();
        at
    };
    for _ in 0..n {
        if flight.len() == window {
            clock = finish_first(&mut h, &mut flight);
        }
        let (t, xs) = start_trial(sampler, &mut h, space);
        flight.push((clock + duration(t), t, f(&xs)));
    }
    while !flight.is_empty() {
        finish_first(&mut h, &mut flight);
    }
    let best = best_value(&h);
    (h, best)
}

/// The lowest first value of the trials.
fn best_value(h: &History) -> f64 {
    h.first_values()
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
}

pub(crate) fn float(low: f64, high: f64) -> Distribution {
    Distribution::Float(FloatDistribution::new(low, high, false, None).unwrap())
}
