//! Exhaustive grid search over given values, in a seeded random order.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use rand::RngExt;

use crate::distributions::{Distribution, ParamValue};
use crate::error::OptimizerError;
use crate::history::History;
use crate::rng::{fresh_seed, trial_rng};
use crate::samplers::Sampler;
use crate::trial::TrialState;

/// Visits every point of a Cartesian grid once (Optuna's `GridSampler`). When every point has
/// been started, repeats unfinished ones; once all are finished the sampler is exhausted.
#[derive(Debug)]
pub struct GridSampler {
    names: Vec<String>,
    values: Vec<Vec<ParamValue>>,
    n_points: usize,
    seed: u64,
    /// Grid point given to each trial that is not finished yet.
    assigned: Mutex<HashMap<u64, usize>>,
}

impl GridSampler {
    /// A sampler over the Cartesian product of `space` (parameter name -> its values, each
    /// non-empty, without duplicates), visited in an order shuffled by `seed` (None: a fresh
    /// random seed).
    pub fn new(
        space: BTreeMap<String, Vec<ParamValue>>,
        seed: Option<u64>,
    ) -> Result<Self, OptimizerError> {
        let mut n_points: usize = 1;
        for (name, vals) in &space {
            if vals.is_empty() {
                return Err(OptimizerError::arg(
                    "search_space",
                    name,
                    "each parameter needs at least one value",
                ));
            }
            for (i, v) in vals.iter().enumerate() {
                if vals[..i].iter().any(|p| p.same_choice(v)) {
                    return Err(OptimizerError::arg(
                        "search_space",
                        format!("{name}={v}"),
                        "duplicate grid value",
                    ));
                }
            }
            n_points = n_points.checked_mul(vals.len()).ok_or_else(|| {
                OptimizerError::arg("search_space", name, "the grid has too many points")
            })?;
        }
        let (names, values) = space.into_iter().unzip();
        Ok(GridSampler {
            names,
            values,
            n_points,
            seed: seed.unwrap_or_else(fresh_seed),
            assigned: Mutex::new(HashMap::new()),
        })
    }

    /// Number of grid points.
    pub fn len(&self) -> usize {
        self.n_points
    }

    /// True when the grid has no point.
    pub fn is_empty(&self) -> bool {
        self.n_points == 0
    }

    fn point(&self, mut id: usize) -> BTreeMap<String, ParamValue> {
        let mut out = BTreeMap::new();
        for (name, vals) in self.names.iter().zip(&self.values).rev() {
            out.insert(name.clone(), vals[id % vals.len()].clone());
            id /= vals.len();
        }
        out
    }

    /// The grid id a finished trial covered, recovered from its params.
    fn id_of(&self, history: &History, trial: u64) -> Option<usize> {
        let t = history.trial(trial).ok()?;
        let mut id = 0;
        for (name, vals) in self.names.iter().zip(&self.values) {
            let dist = t.distributions.get(name)?;
            let internal = *t.params.get(name)?;
            let value = dist.to_external(internal);
            // Ints beyond 2^53 share their internal value with neighbours, so the external
            // value may be a neighbour of the grid value: compare internal values then.
            let idx = vals
                .iter()
                .position(|v| grid_value_matches(v, &value))
                .or_else(|| {
                    vals.iter()
                        .position(|v| dist.to_internal(v).is_ok_and(|i| i == internal))
                })?;
            id = id * vals.len() + idx;
        }
        Some(id)
    }

    /// (finished ids, running ids).
    fn visited(&self, history: &History) -> (Vec<bool>, Vec<bool>) {
        let mut finished = vec![false; self.n_points];
        let mut running = vec![false; self.n_points];
        let assigned = self.assigned.lock();
        for t in history.trials() {
            let id = if t.state.is_finished() {
                self.id_of(history, t.number)
            } else {
                None
            };
            match (t.state, id, assigned.get(&t.number)) {
                (s, Some(id), _) if s.is_finished() => finished[id] = true,
                (s, None, Some(&id)) if s.is_finished() => finished[id] = true,
                (TrialState::Running, _, Some(&id)) => running[id] = true,
                _ => {}
            }
        }
        (finished, running)
    }
}

fn grid_value_matches(grid: &ParamValue, actual: &ParamValue) -> bool {
    match (grid, actual) {
        (ParamValue::Int(a), ParamValue::Float(b)) | (ParamValue::Float(b), ParamValue::Int(a)) => {
            *a as f64 == *b
        }
        _ => grid.same_choice(actual),
    }
}

impl Sampler for GridSampler {
    fn fixed_params(&self, history: &History, trial: u64) -> Option<BTreeMap<String, ParamValue>> {
        if let Some(&id) = self.assigned.lock().get(&trial) {
            return Some(self.point(id));
        }
        let (finished, running) = self.visited(history);
        let mut free: Vec<usize> = (0..self.n_points)
            .filter(|&i| !finished[i] && !running[i])
            .collect();
        if free.is_empty() {
            free = (0..self.n_points).filter(|&i| !finished[i]).collect();
        }
        if free.is_empty() {
            free = (0..self.n_points).collect();
        }
        let mut rng = trial_rng(self.seed, trial, "grid");
        let id = free[rng.random_range(0..free.len())];
        let mut assigned = self.assigned.lock();
        assigned.retain(|n, _| {
            history
                .trial(*n)
                .map(|t| !t.state.is_finished())
                .unwrap_or(false)
        });
        assigned.insert(trial, id);
        Some(self.point(id))
    }

    fn sample_independent(
        &self,
        history: &History,
        trial: u64,
        name: &str,
        dist: &Distribution,
    ) -> f64 {
        // Only reached for a parameter outside the grid: Optuna raises; we fall back to random
        // sampling and log it, so the trial still runs.
        tracing::warn!(
            param = name,
            trial,
            "parameter is not in the grid; sampling it at random"
        );
        super::random::RandomSampler::new(Some(self.seed))
            .sample_independent(history, trial, name, dist)
    }

    fn is_exhausted(&self, history: &History) -> bool {
        let (finished, _) = self.visited(history);
        finished.iter().all(|f| *f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::*;
    use crate::trial::StudyDirection;

    #[test]
    fn grid_visits_every_point_once_then_is_exhausted() {
        let space: BTreeMap<String, Vec<ParamValue>> = [
            (
                "a".to_string(),
                vec![ParamValue::Int(1), ParamValue::Int(2), ParamValue::Int(3)],
            ),
            (
                "b".to_string(),
                vec![ParamValue::Str("x".into()), ParamValue::Str("y".into())],
            ),
        ]
        .into();
        let g = GridSampler::new(space, Some(1)).unwrap();
        assert_eq!(g.len(), 6);
        let da = Distribution::Int(IntDistribution::new(1, 3, false, 1).unwrap());
        let db = Distribution::Categorical(
            CategoricalDistribution::new(vec![
                ParamValue::Str("x".into()),
                ParamValue::Str("y".into()),
            ])
            .unwrap(),
        );
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let mut seen = std::collections::BTreeSet::new();
        let mut order = Vec::new();
        for _ in 0..6 {
            assert!(!g.is_exhausted(&h));
            let t = h.create_trial(TrialState::Running);
            let p = g.fixed_params(&h, t).unwrap();
            h.set_param(t, "a", da.to_internal(&p["a"]).unwrap(), &da)
                .unwrap();
            h.set_param(t, "b", db.to_internal(&p["b"]).unwrap(), &db)
                .unwrap();
            h.finish(t, TrialState::Complete, Some(vec![0.0])).unwrap();
            assert!(seen.insert(format!("{:?}", p)));
            order.push(format!("{:?}", p));
        }
        assert!(g.is_exhausted(&h));
        assert_ne!(
            order,
            {
                let mut s = order.clone();
                s.sort();
                s
            },
            "order should be shuffled"
        );
        assert!(GridSampler::new([("a".to_string(), vec![])].into(), None).is_err());
    }

    #[test]
    fn grid_with_int_values_at_the_ends_of_i64() {
        let values = vec![
            ParamValue::Int(i64::MIN),
            ParamValue::Int(-1),
            ParamValue::Int(i64::MAX - 1),
        ];
        let space: BTreeMap<String, Vec<ParamValue>> = [("a".to_string(), values.clone())].into();
        let g = GridSampler::new(space.clone(), Some(4)).unwrap();
        let da = Distribution::Int(IntDistribution::new(i64::MIN, i64::MAX, false, 1).unwrap());
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let t = h.create_trial(TrialState::Running);
            let p = g.fixed_params(&h, t).unwrap();
            let internal = da.to_internal(&p["a"]).unwrap();
            h.set_param(t, "a", internal, &da).unwrap();
            h.finish(t, TrialState::Complete, Some(vec![0.0])).unwrap();
            seen.push(p["a"].clone());
        }
        seen.sort_by_key(|v| match v {
            ParamValue::Int(i) => *i,
            _ => 0,
        });
        assert_eq!(seen, values);
        assert!(g.is_exhausted(&h));
        // A sampler that did not hand out the points (a restarted engine) finds them from the
        // stored values, although i64::MAX - 1 is stored as 2^63.
        let fresh = GridSampler::new(space, Some(4)).unwrap();
        assert!(fresh.is_exhausted(&h));
        // A parameter outside the grid is sampled in its range.
        let db = IntDistribution::new(i64::MIN, i64::MAX, false, 1 << 62).unwrap();
        let t = h.create_trial(TrialState::Running);
        let v = g.sample_independent(&h, t, "b", &Distribution::Int(db.clone()));
        crate::samplers::random::tests::external_on_grid(&db, v);
    }
}
