//! The study history that samplers and pruners read.
//!
//! A [`History`] is updated incrementally as trials are created, suggest parameters, report and
//! finish. Besides the trials themselves it keeps, per parameter name, a column of internal values
//! indexed by trial number, and the intersection / group decomposition of the search spaces of
//! finished trials, so a sampler at 10,000 trials never walks maps of strings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use crate::distributions::Distribution;
use crate::error::OptimizerError;
use crate::trial::{FrozenTrial, StudyDirection, TrialState};

/// Parameter name -> distribution, ordered by name so iteration is deterministic.
pub type SearchSpace = BTreeMap<String, Distribution>;

#[derive(Debug, Clone)]
struct Column {
    /// Internal value per trial number; NaN when the trial has none.
    values: Vec<f64>,
    /// The distribution of the first trial that used this name.
    distribution: Distribution,
    /// False once some trial used this name with another distribution.
    consistent: bool,
    /// Trial numbers with a value, ascending by (value, number): built when a sampler first
    /// asks for it (TPE), then kept up to date. Studies whose sampler never asks (random, grid)
    /// pay neither its memory nor its O(trials) insertions.
    sorted: OnceLock<Vec<u32>>,
}

fn position(sorted: &[u32], values: &[f64], number: u32, value: f64) -> Result<usize, usize> {
    sorted.binary_search_by(|&t| values[t as usize].total_cmp(&value).then(t.cmp(&number)))
}

impl Column {
    fn sorted(&self) -> &[u32] {
        self.sorted.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.values.len() as u32)
                .filter(|&t| !self.values[t as usize].is_nan())
                .collect();
            order.sort_unstable_by(|&a, &b| {
                self.values[a as usize]
                    .total_cmp(&self.values[b as usize])
                    .then(a.cmp(&b))
            });
            order
        })
    }

    /// Sets trial `number`'s value; true when it replaced another value.
    fn set(&mut self, number: u64, value: f64) -> bool {
        let n = number as u32;
        let old = self.values[number as usize];
        if old.to_bits() == value.to_bits() {
            // The same value again (a suggested relative param): nothing moves.
            return false;
        }
        let replaced = !old.is_nan();
        let sorted = self.sorted.get_mut();
        if let Some(sorted) = sorted.filter(|_| !old.is_nan()) {
            if let Ok(i) = position(sorted, &self.values, n, old) {
                sorted.remove(i);
            }
        }
        self.values[number as usize] = value;
        if let Some(sorted) = self.sorted.get_mut().filter(|_| !value.is_nan()) {
            let i = position(sorted, &self.values, n, value).unwrap_or_else(|i| i);
            sorted.insert(i, n);
        }
        replaced
    }
}

/// Everything a sampler or pruner may read about a study.
#[derive(Debug, Clone)]
pub struct History {
    directions: Vec<StudyDirection>,
    trials: Vec<FrozenTrial>,
    /// Compact copies of every trial's state and first value (NaN when none), for O(n) scans
    /// that touch no per-trial heap data.
    states: Vec<TrialState>,
    first_values: Vec<f64>,
    columns: HashMap<String, Column>,
    /// Relative (jointly sampled) params of unfinished trials that were not suggested yet.
    pending: HashMap<u64, BTreeMap<String, f64>>,
    /// Intersection of the search spaces of COMPLETE and PRUNED trials (None before the first).
    intersection: Option<SearchSpace>,
    /// Group decomposition of the same trials' search spaces.
    groups: Vec<SearchSpace>,
    n_complete: usize,
    n_pruned: usize,
    /// Trials that violate their constraints (see [`FrozenTrial::infeasible`]).
    n_infeasible: usize,
    /// Numbers of the trials not finished yet, and how many of them are WAITING (so a storage
    /// finds them without a scan of every trial).
    unfinished: BTreeSet<u64>,
    n_waiting: usize,
    /// The search space of the last finished trial (see [`FrozenTrial::distributions`]).
    last_space: Option<Arc<SearchSpace>>,
    /// This history's identity (kept by clones) and how many times a recorded parameter value
    /// was replaced or removed: see [`History::values_version`].
    id: u64,
    replaced_values: u64,
}

impl History {
    /// An empty history for a study with these directions (one per objective).
    pub fn new(directions: Vec<StudyDirection>) -> Self {
        History {
            directions,
            trials: Vec::new(),
            states: Vec::new(),
            first_values: Vec::new(),
            columns: HashMap::new(),
            pending: HashMap::new(),
            intersection: None,
            groups: Vec::new(),
            n_complete: 0,
            n_infeasible: 0,
            n_pruned: 0,
            unfinished: BTreeSet::new(),
            n_waiting: 0,
            last_space: None,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            replaced_values: 0,
        }
    }

    /// (this history's identity, the number of parameter values replaced or removed so far).
    /// While it is unchanged, the value a trial has for a parameter stays what it was: a
    /// sampler may keep what it derived from values across samples. Trials only gain values.
    /// A clone keeps the identity: it is the same study.
    pub fn values_version(&self) -> (u64, u64) {
        (self.id, self.replaced_values)
    }

    /// The study's directions, one per objective.
    pub fn directions(&self) -> &[StudyDirection] {
        &self.directions
    }

    /// True when the study has more than one objective.
    pub fn is_multi_objective(&self) -> bool {
        self.directions.len() > 1
    }

    /// All trials, indexed by number.
    pub fn trials(&self) -> &[FrozenTrial] {
        &self.trials
    }

    /// Every trial's state, indexed by number.
    pub fn states(&self) -> &[TrialState] {
        &self.states
    }

    /// Every trial's first objective value (NaN when it has none), indexed by number.
    pub fn first_values(&self) -> &[f64] {
        &self.first_values
    }

    /// The numbers of the trials not finished yet (RUNNING or WAITING), ascending.
    pub fn unfinished(&self) -> impl Iterator<Item = u64> + '_ {
        self.unfinished.iter().copied()
    }

    /// Whether any trial is WAITING.
    pub fn has_waiting(&self) -> bool {
        self.n_waiting > 0
    }

    /// The trial numbered `number`.
    pub fn trial(&self, number: u64) -> Result<&FrozenTrial, OptimizerError> {
        self.trials
            .get(number as usize)
            .ok_or(OptimizerError::UnknownTrial(number))
    }

    /// Number of COMPLETE plus PRUNED trials.
    pub fn n_finished_for_sampling(&self) -> usize {
        self.n_complete + self.n_pruned
    }

    /// Number of COMPLETE trials.
    pub fn n_complete(&self) -> usize {
        self.n_complete
    }

    /// Intersection of the search spaces of COMPLETE and PRUNED trials (Optuna's
    /// `IntersectionSearchSpace(include_pruned=True)`).
    pub fn intersection_search_space(&self) -> SearchSpace {
        self.intersection.clone().unwrap_or_default()
    }

    /// Disjoint groups of parameters that always appear together in COMPLETE/PRUNED trials.
    pub fn group_search_spaces(&self) -> &[SearchSpace] {
        &self.groups
    }

    /// Appends a new trial (RUNNING or WAITING) and returns its number.
    pub fn create_trial(&mut self, state: TrialState) -> u64 {
        let number = self.trials.len() as u64;
        self.trials.push(FrozenTrial::new(number, state));
        self.states.push(state);
        if !state.is_finished() {
            self.unfinished.insert(number);
        }
        self.n_waiting += usize::from(state == TrialState::Waiting);
        self.first_values.push(f64::NAN);
        for col in self.columns.values_mut() {
            col.values.push(f64::NAN);
        }
        number
    }

    fn trial_mut(&mut self, number: u64) -> Result<&mut FrozenTrial, OptimizerError> {
        self.trials
            .get_mut(number as usize)
            .ok_or(OptimizerError::UnknownTrial(number))
    }

    fn unfinished_mut(&mut self, number: u64) -> Result<&mut FrozenTrial, OptimizerError> {
        let t = self.trial_mut(number)?;
        if t.state.is_finished() {
            return Err(OptimizerError::TrialFinished {
                number,
                state: t.state,
            });
        }
        Ok(t)
    }

    /// Moves a WAITING trial to RUNNING.
    pub fn start_trial(&mut self, number: u64) -> Result<(), OptimizerError> {
        let t = self.unfinished_mut(number)?;
        let was = std::mem::replace(&mut t.state, TrialState::Running);
        self.n_waiting -= usize::from(was == TrialState::Waiting);
        self.states[number as usize] = TrialState::Running;
        Ok(())
    }

    fn write_column(&mut self, number: u64, name: &str, value: f64, dist: &Distribution) {
        let n = self.trials.len();
        let col = self
            .columns
            .entry(name.to_string())
            .or_insert_with(|| Column {
                values: vec![f64::NAN; n],
                distribution: dist.clone(),
                consistent: true,
                sorted: OnceLock::new(),
            });
        if col.distribution != *dist {
            col.consistent = false;
        }
        if col.set(number, value) {
            self.replaced_values += 1;
        }
    }

    /// Records a suggested parameter. The value must be the internal representation and lie in
    /// `dist`; re-setting a name with another distribution in the same trial is an error.
    pub fn set_param(
        &mut self,
        number: u64,
        name: &str,
        internal: f64,
        dist: &Distribution,
    ) -> Result<(), OptimizerError> {
        if !dist.contains(internal) {
            return Err(OptimizerError::Param {
                name: name.to_string(),
                reason: format!("value {internal} is outside {}", dist.to_json()),
            });
        }
        let t = self.unfinished_mut(number)?;
        if let Some(existing) = t.distributions.get(name) {
            if existing != dist {
                return Err(OptimizerError::Param {
                    name: name.to_string(),
                    reason: format!(
                        "already suggested in trial {number} with {}, now asked with {}",
                        existing.to_json(),
                        dist.to_json()
                    ),
                });
            }
        }
        t.params.insert(name.to_string(), internal);
        Arc::make_mut(&mut t.distributions).insert(name.to_string(), dist.clone());
        if let Some(p) = self.pending.get_mut(&number) {
            p.remove(name);
        }
        self.write_column(number, name, internal, dist);
        Ok(())
    }

    /// Records the jointly sampled params of a running trial before they are suggested, so other
    /// trials see them (constant liar). They are dropped when the trial finishes unless suggested.
    pub fn set_relative_params(
        &mut self,
        number: u64,
        params: &BTreeMap<String, f64>,
        space: &SearchSpace,
    ) -> Result<(), OptimizerError> {
        self.unfinished_mut(number)?;
        for (name, value) in params {
            if let Some(dist) = space.get(name) {
                self.write_column(number, name, *value, dist);
            }
        }
        self.pending.insert(number, params.clone());
        Ok(())
    }

    /// A relative (pre-sampled) value for `name` in trial `number`, if one is pending.
    pub fn pending_relative(&self, number: u64, name: &str) -> Option<f64> {
        self.pending.get(&number).and_then(|p| p.get(name).copied())
    }

    /// Sets trial `number`'s constraint values, and with them its violation (see
    /// [`FrozenTrial::constraints`] and [`FrozenTrial::violation`]).
    pub fn set_constraints(
        &mut self,
        number: u64,
        constraints: Option<Vec<f64>>,
    ) -> Result<(), OptimizerError> {
        let trial = self.trial_mut(number)?;
        let was = trial.infeasible();
        trial.violation = constraints
            .as_ref()
            .map(|c| c.iter().filter(|v| **v > 0.0).sum());
        trial.constraints = constraints;
        let now = trial.infeasible();
        self.n_infeasible = self.n_infeasible + usize::from(now) - usize::from(was);
        Ok(())
    }

    /// Whether a trial violates its constraints (see [`FrozenTrial::infeasible`]).
    pub fn any_infeasible(&self) -> bool {
        self.n_infeasible > 0
    }

    /// Records intermediate `value` at `step` of an unfinished trial (a repeated step
    /// overwrites the earlier value).
    pub fn report(&mut self, number: u64, step: i64, value: f64) -> Result<(), OptimizerError> {
        let t = self.unfinished_mut(number)?;
        t.intermediate_values.insert(step, value);
        Ok(())
    }

    /// Finishes a trial. COMPLETE needs one value per direction.
    pub fn finish(
        &mut self,
        number: u64,
        state: TrialState,
        values: Option<Vec<f64>>,
    ) -> Result<(), OptimizerError> {
        if !state.is_finished() {
            return Err(OptimizerError::arg(
                "state",
                state.as_str(),
                "a trial can only finish as COMPLETE, PRUNED or FAIL",
            ));
        }
        let n_dirs = self.directions.len();
        if state == TrialState::Complete {
            match &values {
                Some(v) if v.len() == n_dirs => {}
                other => {
                    return Err(OptimizerError::arg(
                        "values",
                        format!("{other:?}"),
                        format!("a COMPLETE trial needs {n_dirs} value(s)"),
                    ))
                }
            }
        }
        let first = values
            .as_ref()
            .and_then(|v| v.first().copied())
            .unwrap_or(f64::NAN);
        self.unfinished_mut(number)?;
        let t = &mut self.trials[number as usize];
        self.n_waiting -= usize::from(t.state == TrialState::Waiting);
        self.unfinished.remove(&number);
        t.state = state;
        t.values = values;
        // One copy of a search space that trials share.
        match &self.last_space {
            Some(s) if Arc::ptr_eq(s, &t.distributions) => {}
            Some(s) if **s == *t.distributions => t.distributions = s.clone(),
            _ => self.last_space = Some(t.distributions.clone()),
        }
        self.states[number as usize] = state;
        self.first_values[number as usize] = first;
        // Unsuggested relative params were never part of this trial.
        if let Some(pending) = self.pending.remove(&number) {
            for name in pending.keys() {
                if let Some(col) = self.columns.get_mut(name) {
                    if col.set(number, f64::NAN) {
                        self.replaced_values += 1;
                    }
                }
            }
        }
        match state {
            TrialState::Complete => self.n_complete += 1,
            TrialState::Pruned => self.n_pruned += 1,
            _ => return Ok(()),
        }
        let dists = self.trials[number as usize].distributions.clone();
        self.update_search_spaces(&dists);
        Ok(())
    }

    fn update_search_spaces(&mut self, dists: &BTreeMap<String, Distribution>) {
        self.intersection = Some(match self.intersection.take() {
            None => dists.clone(),
            Some(mut inter) => {
                inter.retain(|name, d| dists.get(name) == Some(d));
                inter
            }
        });
        // Group decomposition: split every group by this trial's space, add what is new.
        let mut next: Vec<SearchSpace> = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for g in &self.groups {
            let (inside, outside): (SearchSpace, SearchSpace) = g
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .partition(|(k, _)| dists.contains_key(k));
            seen.extend(g.keys().map(String::as_str));
            next.extend([inside, outside].into_iter().filter(|s| !s.is_empty()));
        }
        let fresh: SearchSpace = dists
            .iter()
            .filter(|(k, _)| !seen.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !fresh.is_empty() {
            next.push(fresh);
        }
        self.groups = next;
    }

    /// The internal values of `name` for trial numbers `numbers`, when every one of them has the
    /// parameter with distribution `dist` (or a value `dist` contains, when the column mixed
    /// distributions). Returns None for a trial that lacks it.
    #[inline]
    pub fn param(&self, number: u64, name: &str, dist: &Distribution) -> Option<f64> {
        let col = self.columns.get(name)?;
        let v = *col.values.get(number as usize)?;
        if v.is_nan() {
            return None;
        }
        if col.consistent && col.distribution == *dist {
            return Some(v);
        }
        match self.trials[number as usize].distributions.get(name) {
            Some(d) if d == dist => Some(v),
            Some(_) => None,
            // A pending relative value: it was sampled from the relative space's distribution.
            None => dist.contains(v).then_some(v),
        }
    }

    /// Column of `name` with the distribution check done once: fast path for samplers. Returns
    /// (value per trial number, NaN when absent; trial numbers with a value in ascending value
    /// order), or None when the column mixes distributions (callers then use [`History::param`]).
    pub fn consistent_column(&self, name: &str, dist: &Distribution) -> Option<(&[f64], &[u32])> {
        let col = self.columns.get(name)?;
        (col.consistent && col.distribution == *dist).then(|| (col.values.as_slice(), col.sorted()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::FloatDistribution;

    fn fd(low: f64, high: f64) -> Distribution {
        Distribution::Float(FloatDistribution::new(low, high, false, None).unwrap())
    }

    #[test]
    fn infeasible_trials_are_counted() {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let (a, b) = (
            h.create_trial(TrialState::Running),
            h.create_trial(TrialState::Running),
        );
        assert!(!h.any_infeasible());
        h.set_constraints(a, Some(vec![-1.0, 0.0])).unwrap();
        assert!(!h.any_infeasible());
        h.set_constraints(a, Some(vec![-1.0, 0.5])).unwrap();
        h.set_constraints(b, Some(vec![2.0])).unwrap();
        h.set_constraints(b, Some(vec![3.0])).unwrap();
        assert!(h.any_infeasible());
        h.set_constraints(a, None).unwrap();
        assert!(h.any_infeasible());
        h.set_constraints(b, Some(vec![0.0])).unwrap();
        assert!(!h.any_infeasible());
    }

    #[test]
    fn unfinished_and_waiting_trials_are_tracked() {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let a = h.create_trial(TrialState::Running);
        let b = h.create_trial(TrialState::Waiting);
        let c = h.create_trial(TrialState::Running);
        assert_eq!(h.unfinished().collect::<Vec<_>>(), [a, b, c]);
        assert!(h.has_waiting());
        h.start_trial(b).unwrap();
        assert!(!h.has_waiting());
        h.finish(a, TrialState::Complete, Some(vec![1.0])).unwrap();
        h.finish(c, TrialState::Fail, None).unwrap();
        assert_eq!(h.unfinished().collect::<Vec<_>>(), [b]);
        let d = h.create_trial(TrialState::Waiting);
        assert!(h.has_waiting());
        h.finish(d, TrialState::Fail, None).unwrap();
        assert!(!h.has_waiting());
        // A refused finish changes nothing.
        assert!(h.finish(d, TrialState::Complete, Some(vec![1.0])).is_err());
        assert_eq!(h.unfinished().collect::<Vec<_>>(), [b]);
    }

    #[test]
    fn intersection_and_groups_follow_finished_trials() {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let a = h.create_trial(TrialState::Running);
        h.set_param(a, "x", 0.5, &fd(0.0, 1.0)).unwrap();
        h.set_param(a, "y", 0.5, &fd(0.0, 1.0)).unwrap();
        h.finish(a, TrialState::Complete, Some(vec![1.0])).unwrap();
        let b = h.create_trial(TrialState::Running);
        h.set_param(b, "x", 0.5, &fd(0.0, 1.0)).unwrap();
        h.set_param(b, "z", 0.5, &fd(0.0, 1.0)).unwrap();
        h.finish(b, TrialState::Pruned, None).unwrap();
        let c = h.create_trial(TrialState::Running);
        h.set_param(c, "w", 0.5, &fd(0.0, 1.0)).unwrap();
        h.finish(c, TrialState::Fail, None).unwrap();
        let inter = h.intersection_search_space();
        assert_eq!(inter.keys().collect::<Vec<_>>(), vec!["x"]);
        let groups: Vec<Vec<&String>> = h
            .group_search_spaces()
            .iter()
            .map(|g| g.keys().collect())
            .collect();
        assert_eq!(groups, vec![vec!["x"], vec!["y"], vec!["z"]]);
        assert_eq!(h.n_finished_for_sampling(), 2);
    }

    #[test]
    fn distribution_conflicts_and_bad_values_are_errors() {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let a = h.create_trial(TrialState::Running);
        h.set_param(a, "x", 0.5, &fd(0.0, 1.0)).unwrap();
        let e = h
            .set_param(a, "x", 0.5, &fd(0.0, 2.0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already suggested"), "{e}");
        assert!(h.set_param(a, "y", 3.0, &fd(0.0, 1.0)).is_err());
        assert!(h.finish(a, TrialState::Complete, Some(vec![])).is_err());
        h.finish(a, TrialState::Complete, Some(vec![0.0])).unwrap();
        assert!(h.report(a, 1, 0.0).is_err());
        assert!(h.trial(9).is_err());
    }

    #[test]
    fn pending_relative_params_vanish_unless_suggested() {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let a = h.create_trial(TrialState::Running);
        let space: SearchSpace = [
            ("x".to_string(), fd(0.0, 1.0)),
            ("y".to_string(), fd(0.0, 1.0)),
        ]
        .into();
        let rel: BTreeMap<String, f64> = [("x".to_string(), 0.25), ("y".to_string(), 0.75)].into();
        h.set_relative_params(a, &rel, &space).unwrap();
        assert_eq!(h.param(a, "y", &fd(0.0, 1.0)), Some(0.75));
        h.set_param(a, "x", 0.25, &fd(0.0, 1.0)).unwrap();
        h.finish(a, TrialState::Complete, Some(vec![0.0])).unwrap();
        assert_eq!(h.param(a, "x", &fd(0.0, 1.0)), Some(0.25));
        assert_eq!(h.param(a, "y", &fd(0.0, 1.0)), None);
        let (_, sorted) = h.consistent_column("y", &fd(0.0, 1.0)).unwrap();
        assert!(sorted.is_empty());
    }

    #[test]
    fn columns_keep_trials_sorted_by_value() {
        let mut h = History::new(vec![StudyDirection::Minimize]);
        for v in [0.5, 0.1, 0.9, 0.1, 0.3] {
            let t = h.create_trial(TrialState::Running);
            h.set_param(t, "x", v, &fd(0.0, 1.0)).unwrap();
        }
        let (values, sorted) = h.consistent_column("x", &fd(0.0, 1.0)).unwrap();
        assert_eq!(sorted, &[1, 3, 4, 0, 2]);
        assert_eq!(values[2], 0.9);
        // Built once asked for, then kept up to date: a new value, and a pending relative value
        // dropped when its trial finishes without suggesting it.
        let t = h.create_trial(TrialState::Running);
        h.set_param(t, "x", 0.2, &fd(0.0, 1.0)).unwrap();
        let u = h.create_trial(TrialState::Running);
        let space = BTreeMap::from([("x".to_string(), fd(0.0, 1.0))]);
        h.set_relative_params(u, &BTreeMap::from([("x".to_string(), 0.0)]), &space)
            .unwrap();
        assert_eq!(
            h.consistent_column("x", &fd(0.0, 1.0)).unwrap().1,
            &[6, 1, 3, 5, 4, 0, 2]
        );
        h.finish(u, TrialState::Fail, None).unwrap();
        assert_eq!(
            h.consistent_column("x", &fd(0.0, 1.0)).unwrap().1,
            &[1, 3, 5, 4, 0, 2]
        );
    }
}
