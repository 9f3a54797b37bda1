//! Optuna's `BruteForceSampler`: every combination of a discrete search space once, in random
//! order, define-by-run (a parameter that only some branches suggest is a branch of its own).
//!
//! The trials so far form a tree: a node is the set of parameters a trial had suggested when
//! it reached it, its children the values of the parameter suggested next. A subtree is
//! explored when a trial ended at each of its leaves. A parameter is sampled among the values
//! whose subtree is not explored yet; the study is exhausted when the root is explored.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::RngExt;

use super::{RandomSampler, Sampler};
use crate::distributions::Distribution;
use crate::history::History;
use crate::rng::{fresh_seed, trial_rng};
use crate::trial::{FrozenTrial, TrialState};

/// More values than this in one parameter are not enumerated (sampled at random instead).
const MAX_VALUES: u64 = 1 << 20;

/// Samples each combination of discrete values once (Optuna's `BruteForceSampler`).
#[derive(Debug, Clone)]
pub struct BruteForceSampler {
    seed: u64,
    avoid_premature_stop: bool,
    fallback: Arc<RandomSampler>,
}

/// A trial as a path in the tree (its params), and whether its leaf counts as explored.
struct Path<'a> {
    trial: &'a FrozenTrial,
    explored: bool,
}

impl BruteForceSampler {
    /// The sampler; `avoid_premature_stop` counts only finished trials (not running ones)
    /// towards the study's exhaustion.
    pub fn new(seed: Option<u64>, avoid_premature_stop: bool) -> Self {
        let seed = seed.unwrap_or_else(fresh_seed);
        BruteForceSampler {
            seed,
            avoid_premature_stop,
            fallback: Arc::new(RandomSampler::new(Some(seed))),
        }
    }

    /// The trials other than `except` as paths; RUNNING ones count as explored leaves when
    /// `running` (a FAIL leaf never does: its combination is tried again). A RUNNING or FAIL
    /// trial without params says nothing of the tree (it would make the root a leaf).
    fn paths<'a>(history: &'a History, except: Option<u64>, running: bool) -> Vec<Path<'a>> {
        history
            .trials()
            .iter()
            .filter(|t| Some(t.number) != except && t.state != TrialState::Waiting)
            .filter(|t| {
                !(t.params.is_empty() && matches!(t.state, TrialState::Running | TrialState::Fail))
            })
            .map(|t| Path {
                trial: t,
                explored: match t.state {
                    TrialState::Complete | TrialState::Pruned => true,
                    TrialState::Running => running,
                    TrialState::Fail | TrialState::Waiting => false,
                },
            })
            .collect()
    }
}

/// Every internal value of a discrete distribution; None for a continuous one (or one too
/// large to enumerate).
fn values(dist: &Distribution) -> Option<Vec<f64>> {
    match dist {
        Distribution::Categorical(d) => Some((0..d.choices.len()).map(|i| i as f64).collect()),
        Distribution::Int(d) => (d.n_steps() < MAX_VALUES)
            .then(|| (0..=d.n_steps()).map(|k| d.value_at(k) as f64).collect()),
        Distribution::Float(d) => {
            let step = d.step?;
            let n = ((d.high - d.low) / step).round();
            (n >= 0.0 && n < MAX_VALUES as f64).then(|| {
                (0..=n as u64)
                    .map(|k| (d.low + k as f64 * step).min(d.high))
                    .collect()
            })
        }
    }
}

/// Whether the subtree at `node` (the params a trial has when it gets there) is explored;
/// `paths` are the trials that have those params.
fn explored(paths: &[&Path<'_>], node: &BTreeMap<String, f64>) -> bool {
    if paths.is_empty() {
        return false;
    }
    // A trial that ended here makes the node a leaf.
    let ended: Vec<_> = paths
        .iter()
        .filter(|p| p.trial.params.len() == node.len())
        .collect();
    if !ended.is_empty() {
        return ended.iter().any(|p| p.explored);
    }
    // The parameter suggested next: one beyond the node's that every trial here has (the
    // order of suggestion is not stored, and any of them splits the subtree the same way);
    // none means the trials here went different ways, which a deterministic objective does
    // not do: not explored.
    let first = paths[0];
    let next = first.trial.params.keys().find_map(|name| {
        (!node.contains_key(name) && paths.iter().all(|p| p.trial.params.contains_key(name)))
            .then(|| first.trial.distributions.get(name).map(|d| (name, d)))
            .flatten()
    });
    let Some((name, vals)) = next.and_then(|(name, dist)| Some((name, values(dist)?))) else {
        return false;
    };
    vals.iter().all(|v| {
        let child: Vec<&Path<'_>> = paths
            .iter()
            .filter(|p| p.trial.params[name] == *v)
            .copied()
            .collect();
        let mut node = node.clone();
        node.insert(name.clone(), *v);
        explored(&child, &node)
    })
}

impl Sampler for BruteForceSampler {
    fn sample_independent(
        &self,
        history: &History,
        trial: u64,
        name: &str,
        dist: &Distribution,
    ) -> f64 {
        let Some(vals) = values(dist) else {
            tracing::warn!(
                "BruteForceSampler: {name:?} is not discrete ({dist:?}); it is sampled at random \
                 (give a float parameter a step)"
            );
            return self.fallback.sample_independent(history, trial, name, dist);
        };
        let assigned = history
            .trial(trial)
            .map(|t| t.params.clone())
            .unwrap_or_default();
        let all = Self::paths(history, Some(trial), true);
        let here: Vec<&Path<'_>> = all
            .iter()
            .filter(|p| {
                p.trial.params.contains_key(name)
                    && assigned
                        .iter()
                        .all(|(k, v)| p.trial.params.get(k) == Some(v))
            })
            .collect();
        let open: Vec<f64> = vals
            .iter()
            .copied()
            .filter(|v| {
                let child: Vec<&Path<'_>> = here
                    .iter()
                    .filter(|p| p.trial.params[name] == *v)
                    .copied()
                    .collect();
                let mut node = assigned.clone();
                node.insert(name.to_string(), *v);
                !explored(&child, &node)
            })
            .collect();
        let pool = if open.is_empty() { &vals } else { &open };
        let mut rng = trial_rng(self.seed, trial, name);
        pool[rng.random_range(0..pool.len())]
    }

    fn is_exhausted(&self, history: &History) -> bool {
        let all = Self::paths(history, None, !self.avoid_premature_stop);
        let refs: Vec<&Path<'_>> = all.iter().collect();
        explored(&refs, &BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::{
        CategoricalDistribution, FloatDistribution, IntDistribution, ParamValue,
    };
    use crate::trial::StudyDirection;

    /// Runs trials until the sampler is exhausted (at most `max`): `objective` suggests
    /// through `suggest(name, dist)`. Returns the params of each trial.
    fn run(
        sampler: &BruteForceSampler,
        max: usize,
        objective: impl Fn(&mut dyn FnMut(&str, Distribution) -> f64),
    ) -> Vec<BTreeMap<String, f64>> {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let mut out = Vec::new();
        while out.len() < max && !sampler.is_exhausted(&h) {
            let t = h.create_trial(TrialState::Running);
            let mut suggest = |name: &str, dist: Distribution| {
                let v = sampler.sample_independent(&h, t, name, &dist);
                assert!(dist.contains(v), "{name} = {v}");
                h.set_param(t, name, v, &dist).unwrap();
                v
            };
            objective(&mut suggest);
            out.push(h.trial(t).unwrap().params.clone());
            h.finish(t, TrialState::Complete, Some(vec![0.0])).unwrap();
        }
        out
    }

    fn cat(n: usize) -> Distribution {
        Distribution::Categorical(
            CategoricalDistribution::new((0..n as i64).map(ParamValue::Int).collect()).unwrap(),
        )
    }

    #[test]
    fn every_combination_once_then_exhausted() {
        let sampler = BruteForceSampler::new(Some(0), false);
        let int = Distribution::Int(IntDistribution::new(1, 7, false, 3).unwrap()); // 1, 4, 7
        let float =
            Distribution::Float(FloatDistribution::new(0.0, 1.0, false, Some(0.5)).unwrap());
        let seen = run(&sampler, 100, |s| {
            s("a", cat(2));
            s("b", int.clone());
            s("c", float.clone());
        });
        assert_eq!(seen.len(), 2 * 3 * 3);
        let mut distinct = seen.clone();
        distinct.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        distinct.dedup();
        assert_eq!(distinct.len(), 18);
    }

    #[test]
    fn define_by_run_branches_are_enumerated_separately() {
        // a = 0 suggests b (3 values), a = 1 suggests c (2 values) and stops: 5 leaves.
        let sampler = BruteForceSampler::new(Some(4), false);
        let seen = run(&sampler, 100, |s| {
            if s("a", cat(2)) == 0.0 {
                s("b", cat(3));
            } else {
                s("c", cat(2));
            }
        });
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert_eq!(seen.iter().filter(|p| p.contains_key("b")).count(), 3);
    }

    #[test]
    fn failed_combinations_are_tried_again_and_running_ones_count_unless_asked() {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let s = BruteForceSampler::new(Some(1), false);
        // A trial that started and has suggested nothing yet does not end the study.
        let first = h.create_trial(TrialState::Running);
        assert!(!s.is_exhausted(&h));
        h.finish(first, TrialState::Fail, None).unwrap();
        for finish_as in [Some(TrialState::Fail), None] {
            let t = h.create_trial(TrialState::Running);
            let v = s.sample_independent(&h, t, "a", &cat(1));
            h.set_param(t, "a", v, &cat(1)).unwrap();
            if let Some(state) = finish_as {
                h.finish(t, state, None).unwrap();
                assert!(
                    !s.is_exhausted(&h),
                    "a FAIL trial does not explore its combination"
                );
            }
        }
        // One FAIL and one RUNNING trial on the only combination: exhausted only when running
        // trials count.
        assert!(BruteForceSampler::new(Some(1), false).is_exhausted(&h));
        assert!(!BruteForceSampler::new(Some(1), true).is_exhausted(&h));
        let continuous =
            Distribution::Float(FloatDistribution::new(0.0, 1.0, false, None).unwrap());
        let s = BruteForceSampler::new(Some(1), false);
        let t = h.create_trial(TrialState::Running);
        assert!(continuous.contains(s.sample_independent(&h, t, "x", &continuous)));
    }
}
