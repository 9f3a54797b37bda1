//! A study bound to its storage, sampler and pruner: the define-by-run trial operations.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use dspex_optimizer::multi_objective::pareto_front;
use dspex_optimizer::pruners::NopPruner;
use dspex_optimizer::samplers::{TpeOptions, TpeSampler};
use dspex_optimizer::{
    Distribution, ParamValue, Pruner, Sampler, SearchSpace, StudyDirection, TrialState,
};
use parking_lot::Mutex;

use crate::error::{EngineError, Result};
use crate::model::{check_compatible, AttrMap, AttrValue, TrialRecord};
use crate::scheduler::Run;
use crate::storage::{with_history, Storage, StudyId};

/// How an evaluation ended, as the evaluator saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The objective returned these values (checked by [`Study::tell`]).
    Values(Vec<f64>),
    /// The objective asked to be pruned.
    Pruned,
    /// The objective failed (an exception, a value that is not a number...).
    Fail(String),
}

/// What a trial became once told.
#[derive(Debug, Clone, PartialEq)]
pub struct Told {
    /// COMPLETE, PRUNED or FAIL.
    pub state: TrialState,
    /// The values stored: the objective's when COMPLETE; for PRUNED, the last intermediate
    /// value when finite (single objective); None otherwise.
    pub values: Option<Vec<f64>>,
    /// Why the trial failed, when FAIL.
    pub fail_reason: Option<String>,
}

impl Told {
    /// What telling `outcome` to a running trial of a study of `n_objectives` objectives
    /// records, as far as it is known without the study: a pruned trial's values (its last
    /// intermediate value) are left out.
    pub fn expected(outcome: &Outcome, n_objectives: usize) -> Told {
        let (state, values, fail_reason) = match outcome {
            Outcome::Values(v) => match check_values(v, n_objectives) {
                None => (TrialState::Complete, Some(v.clone()), None),
                Some(why) => (TrialState::Fail, None, Some(why)),
            },
            Outcome::Pruned => (TrialState::Pruned, None, None),
            Outcome::Fail(why) => (TrialState::Fail, None, Some(why.clone())),
        };
        Told {
            state,
            values,
            fail_reason,
        }
    }
}

/// A suggested value, with the warning to show the user, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggested {
    /// The parameter's external value (the earlier one when the name was already suggested).
    pub value: ParamValue,
    /// A warning to show the user, as Optuna would (e.g. the new distribution of a name
    /// suggested again, or a fixed value outside the distribution, is ignored).
    pub warning: Option<String>,
}

/// A study: storage handle plus the sampler and pruner that drive it.
#[derive(Debug)]
pub struct Study {
    storage: Arc<dyn Storage>,
    id: StudyId,
    name: String,
    directions: Vec<StudyDirection>,
    sampler: Arc<dyn Sampler>,
    pruner: Arc<dyn Pruner>,
    runs: Mutex<Vec<Weak<Run>>>,
}

fn default_sampler() -> Result<Arc<dyn Sampler>> {
    Ok(Arc::new(TpeSampler::new(TpeOptions::default())?))
}

impl Study {
    /// Creates a study (or loads it when `load_if_exists` and the name is taken).
    pub fn create(
        storage: Arc<dyn Storage>,
        name: Option<&str>,
        directions: Vec<StudyDirection>,
        sampler: Option<Arc<dyn Sampler>>,
        pruner: Option<Arc<dyn Pruner>>,
        load_if_exists: bool,
    ) -> Result<Arc<Study>> {
        if directions.is_empty() {
            return Err(EngineError::InvalidArgument(
                "directions must contain at least one direction".into(),
            ));
        }
        let id = match storage.create_new_study(&directions, name) {
            Ok(id) => id,
            Err(EngineError::DuplicatedStudy(n)) if load_if_exists => {
                tracing::info!(study = %n, "using an existing study");
                let id = storage.get_study_id_from_name(&n)?;
                let existing = storage.get_study_directions(id)?;
                if existing != directions {
                    return Err(EngineError::InvalidArgument(format!(
                        "study {n:?} exists with directions {:?}, not {:?}",
                        existing.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
                        directions.iter().map(|d| d.as_str()).collect::<Vec<_>>()
                    )));
                }
                id
            }
            Err(e) => return Err(e),
        };
        Self::bind(storage, id, sampler, pruner)
    }

    /// Loads an existing study by name.
    pub fn load(
        storage: Arc<dyn Storage>,
        name: &str,
        sampler: Option<Arc<dyn Sampler>>,
        pruner: Option<Arc<dyn Pruner>>,
    ) -> Result<Arc<Study>> {
        let id = storage.get_study_id_from_name(name)?;
        Self::bind(storage, id, sampler, pruner)
    }

    fn bind(
        storage: Arc<dyn Storage>,
        id: StudyId,
        sampler: Option<Arc<dyn Sampler>>,
        pruner: Option<Arc<dyn Pruner>>,
    ) -> Result<Arc<Study>> {
        let name = storage.get_study_name(id)?;
        let directions = storage.get_study_directions(id)?;
        let sampler = match sampler {
            Some(s) => s,
            None => default_sampler()?,
        };
        sampler.check_study(&directions)?;
        let pruner = pruner.unwrap_or_else(|| Arc::new(NopPruner));
        let pruner = match pruner.for_study(&name) {
            Some(bound) => Arc::from(bound),
            None => pruner,
        };
        Ok(Arc::new(Study {
            storage,
            id,
            name,
            directions,
            sampler,
            pruner,
            runs: Mutex::new(Vec::new()),
        }))
    }

    /// The storage the study lives in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
    /// The study's id in its storage.
    pub fn id(&self) -> StudyId {
        self.id
    }
    /// The study's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// One direction per objective.
    pub fn directions(&self) -> &[StudyDirection] {
        &self.directions
    }
    /// The sampler (TPE with default options unless one was given).
    pub fn sampler(&self) -> &Arc<dyn Sampler> {
        &self.sampler
    }
    /// The pruner, bound to this study (no pruning unless one was given).
    pub fn pruner(&self) -> &Arc<dyn Pruner> {
        &self.pruner
    }

    // ---------------------------------------------------------------- trial lifecycle

    /// Starts a trial (an enqueued WAITING one first) and samples its relative parameters.
    pub fn ask(&self) -> Result<u64> {
        let number = match self.storage.pop_waiting_trial(self.id)? {
            Some(n) => n,
            None => self.storage.create_new_trial(self.id, None)?,
        };
        self.prepare(number)?;
        Ok(number)
    }

    /// Like [`Study::ask`], but returns None when no trial is waiting and the sampler has
    /// nothing left to propose (the scheduler then stops).
    pub fn ask_unless_exhausted(&self) -> Result<Option<u64>> {
        let number = match self.storage.pop_waiting_trial(self.id)? {
            Some(n) => n,
            None => {
                let sampler = self.sampler.clone();
                if with_history(self.storage.as_ref(), self.id, |h| sampler.is_exhausted(h))? {
                    return Ok(None);
                }
                self.storage.create_new_trial(self.id, None)?
            }
        };
        self.prepare(number)?;
        Ok(Some(number))
    }

    /// Fixed params from the sampler, then joint (relative) sampling.
    fn prepare(&self, number: u64) -> Result<()> {
        let sampler = self.sampler.clone();
        let record_fixed = self
            .storage
            .get_trial(self.id, number)?
            .fixed_params
            .is_none();
        let (fixed, space, work) = with_history(self.storage.as_ref(), self.id, |h| {
            let fixed = if record_fixed {
                sampler.fixed_params(h, number)
            } else {
                None
            };
            let space = sampler.infer_relative_search_space(h, number);
            let work = (!space.is_empty()).then(|| sampler.prepare_relative(h, number, &space));
            (fixed, space, work)
        })?;
        // The sample itself is computed without the history's lock: the evaluators of other
        // trials go on recording their results meanwhile.
        let params = work.map_or_else(BTreeMap::new, |work| work());
        if let Some(fixed) = fixed {
            self.storage
                .set_trial_fixed_params(self.id, number, fixed)?;
        }
        if !params.is_empty() {
            let space: SearchSpace = space
                .into_iter()
                .filter(|(k, _)| params.contains_key(k))
                .collect();
            self.storage
                .set_trial_relative_params(self.id, number, &params, &space)?;
        }
        Ok(())
    }

    /// Suggests a value for `name` in running trial `number` (define-by-run).
    pub fn suggest(&self, number: u64, name: &str, dist: &Distribution) -> Result<Suggested> {
        self.suggest_given(number, name, dist, None)
    }

    /// [`suggest`](Self::suggest) with the value a sampler in the caller's process chose
    /// (`given`, a custom Python sampler) in place of the engine's sampler; an enqueued (fixed)
    /// value still comes first, as in Optuna.
    pub fn suggest_given(
        &self,
        number: u64,
        name: &str,
        dist: &Distribution,
        given: Option<&ParamValue>,
    ) -> Result<Suggested> {
        let state = self.storage.get_trial_state(self.id, number)?;
        if state != TrialState::Running {
            return Err(EngineError::TrialNotRunning {
                op: "suggest a parameter in",
                number,
                state,
            });
        }
        let ctx = self.storage.param_context(self.id, number, name)?;
        if let Some((internal, old)) = ctx.existing {
            check_compatible(&old, dist).map_err(|reason| {
                EngineError::IncompatibleDistribution {
                    name: name.to_string(),
                    reason,
                }
            })?;
            let warning = (old != *dist).then(|| {
                format!(
                    "parameter {name:?} was already suggested in trial {number} with {}; the first value is \
                     kept and the new distribution {} is ignored",
                    old.to_json(),
                    dist.to_json()
                )
            });
            return Ok(Suggested {
                value: old.to_external(internal),
                warning,
            });
        }
        if let Some(old) = &ctx.study_distribution {
            check_compatible(old, dist).map_err(|reason| {
                EngineError::IncompatibleDistribution {
                    name: name.to_string(),
                    reason,
                }
            })?;
        }
        let mut warning = None;
        let mut internal = None;
        if let Some(fixed) = &ctx.fixed {
            match dist.to_internal(fixed) {
                Ok(v) => internal = Some(v),
                Err(e) => {
                    warning = Some(format!(
                        "fixed parameter {name:?} with value {fixed} is ignored: {e}; a value is sampled instead"
                    ));
                }
            }
        }
        if internal.is_none() && dist.single() {
            internal = Some(single_value(dist));
        }
        if let (None, Some(g)) = (internal, given) {
            internal = Some(dist.to_internal(g).map_err(|e| {
                EngineError::InvalidArgument(format!(
                    "the sampler's value {g} for {name:?} does not fit {}: {e}",
                    dist.to_json()
                ))
            })?);
        }
        if internal.is_none() {
            if let Some((v, rel_dist)) = ctx.relative {
                if rel_dist == *dist && dist.contains(v) {
                    internal = Some(v);
                }
            }
        }
        let internal = match internal {
            Some(v) => v,
            None => {
                let sampler = self.sampler.clone();
                // Computed without the history's lock, like a relative sample (see `prepare`).
                with_history(self.storage.as_ref(), self.id, |h| {
                    sampler.prepare_independent(h, number, name, dist)
                })?()
            }
        };
        self.storage
            .set_trial_param(self.id, number, name, internal, dist)?;
        Ok(Suggested {
            value: dist.to_external(internal),
            warning,
        })
    }

    /// Records an intermediate value. Returns false when `step` was already reported (the value
    /// is then ignored, as Optuna does).
    pub fn report(&self, number: u64, step: i64, value: f64) -> Result<bool> {
        if self.directions.len() > 1 {
            return Err(EngineError::InvalidOperation(
                "report is not supported for multi-objective optimization".into(),
            ));
        }
        if step < 0 {
            return Err(EngineError::InvalidArgument(format!(
                "step must be >= 0, got {step}"
            )));
        }
        self.storage
            .set_trial_intermediate_value(self.id, number, step, value)
    }

    /// Asks the pruner whether running trial `number` should stop now.
    pub fn should_prune(&self, number: u64) -> Result<bool> {
        if self.directions.len() > 1 {
            return Err(EngineError::InvalidOperation(
                "should_prune is not supported for multi-objective optimization".into(),
            ));
        }
        let pruner = self.pruner.clone();
        with_history(self.storage.as_ref(), self.id, |h| pruner.prune(h, number))
    }

    /// Finishes running trial `number`. Invalid values (NaN, infinite, wrong count) make the
    /// trial FAIL with the reason; with `strict` they are an error instead and the trial stays
    /// RUNNING.
    pub fn tell(&self, number: u64, outcome: Outcome, strict: bool) -> Result<Told> {
        let record = self.storage.get_trial(self.id, number)?;
        if record.state != TrialState::Running {
            return Err(EngineError::TrialNotRunning {
                op: "tell",
                number,
                state: record.state,
            });
        }
        let told = match outcome {
            Outcome::Values(values) => match self.check_values(&values) {
                None => Told {
                    state: TrialState::Complete,
                    values: Some(values),
                    fail_reason: None,
                },
                Some(reason) if strict => return Err(EngineError::InvalidArgument(reason)),
                Some(reason) => Told {
                    state: TrialState::Fail,
                    values: None,
                    fail_reason: Some(reason),
                },
            },
            Outcome::Pruned => {
                let values = match record.last_step() {
                    Some((_, v)) if v.is_finite() && self.directions.len() == 1 => Some(vec![v]),
                    _ => None,
                };
                Told {
                    state: TrialState::Pruned,
                    values,
                    fail_reason: None,
                }
            }
            Outcome::Fail(reason) => Told {
                state: TrialState::Fail,
                values: None,
                fail_reason: Some(reason),
            },
        };
        self.storage.set_trial_state_values(
            self.id,
            number,
            told.state,
            told.values.clone(),
            told.fail_reason.clone(),
        )?;
        match told.state {
            TrialState::Fail => {
                tracing::debug!(trial = number, reason = ?told.fail_reason, "trial failed")
            }
            s => {
                tracing::debug!(trial = number, state = s.as_str(), values = ?told.values, "trial finished")
            }
        }
        Ok(told)
    }

    /// Why `values` cannot complete a trial of this study, if they cannot.
    pub fn check_values(&self, values: &[f64]) -> Option<String> {
        check_values(values, self.directions.len())
    }

    /// Adds a WAITING trial whose params are fixed to `params` (when suggested). With
    /// `skip_if_exists`, nothing is added when a trial with the same params exists already.
    pub fn enqueue(
        &self,
        params: BTreeMap<String, ParamValue>,
        user_attrs: AttrMap,
        skip_if_exists: bool,
    ) -> Result<Option<u64>> {
        if skip_if_exists {
            for t in self.storage.get_all_trials(self.id, None)? {
                let same = |p: &BTreeMap<String, ParamValue>| {
                    p.len() == params.len()
                        && params.iter().all(|(k, v)| {
                            p.get(k).is_some_and(|w| w.same_choice(v) || num_eq(v, w))
                        })
                };
                if same(&t.params) || t.fixed_params.as_ref().is_some_and(same) {
                    tracing::info!(
                        trial = t.number,
                        "trial with the same params exists; not enqueued"
                    );
                    return Ok(None);
                }
            }
        }
        let mut template = TrialRecord::new(0, TrialState::Waiting);
        template.fixed_params = Some(params);
        template.user_attrs = user_attrs;
        Ok(Some(
            self.storage.create_new_trial(self.id, Some(&template))?,
        ))
    }

    /// Adds a finished (or waiting) trial built elsewhere; params must match distributions.
    pub fn add_trial(&self, template: &TrialRecord) -> Result<u64> {
        if template.state == TrialState::Complete {
            if let Some(values) = &template.values {
                if let Some(reason) = self.check_values(values) {
                    return Err(EngineError::InvalidArgument(reason));
                }
            }
        }
        self.storage.create_new_trial(self.id, Some(template))
    }

    // ---------------------------------------------------------------- queries

    /// Every trial, in number order, or only those in `states`.
    pub fn trials(&self, states: Option<&[TrialState]>) -> Result<Vec<TrialRecord>> {
        self.storage.get_all_trials(self.id, states)
    }

    /// Trial `number`.
    pub fn trial(&self, number: u64) -> Result<TrialRecord> {
        self.storage.get_trial(self.id, number)
    }

    /// The best COMPLETE trial of a single-objective study.
    pub fn best_trial(&self) -> Result<TrialRecord> {
        if self.directions.len() > 1 {
            return Err(EngineError::InvalidOperation(
                "a single best trial cannot be retrieved from a multi-objective study; use best_trials".into(),
            ));
        }
        let dir = self.directions[0];
        // Scanned in the history (no copy of every trial's record), then the best one read.
        let mut best: Option<(u64, f64)> = None;
        let mut infeasible = 0;
        self.storage.read_history(self.id, &mut |h| {
            let complete = h
                .states()
                .iter()
                .zip(h.first_values())
                .enumerate()
                .filter(|(_, (s, _))| **s == TrialState::Complete);
            for (n, (_, &v)) in complete {
                // a trial that violates its constraints is never the best (as in Optuna)
                if h.trials()[n].violation.is_some_and(|x| x > 0.0) {
                    infeasible += 1;
                    continue;
                }
                if !v.is_nan() && best.is_none_or(|(_, b)| dir.better(v, b)) {
                    best = Some((n as u64, v));
                }
            }
        })?;
        if let Some((n, _)) = best {
            return self.storage.get_trial(self.id, n);
        }
        Err(EngineError::NoData(if infeasible > 0 {
            "no feasible trials are completed yet".into()
        } else {
            "no trials are completed yet".into()
        }))
    }

    /// The Pareto-optimal COMPLETE trials.
    pub fn best_trials(&self) -> Result<Vec<TrialRecord>> {
        let complete: Vec<TrialRecord> = self
            .storage
            .get_all_trials(self.id, Some(&[TrialState::Complete]))?
            .into_iter()
            .filter(|t| {
                t.values
                    .as_ref()
                    .is_some_and(|v| v.len() == self.directions.len())
                    && !infeasible_record(t)
            })
            .collect();
        let losses: Vec<Vec<f64>> = complete
            .iter()
            .map(|t| {
                t.values
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .zip(&self.directions)
                    .map(|(v, d)| d.loss(*v))
                    .collect()
            })
            .collect();
        let front = pareto_front(&losses);
        Ok(front
            .into_iter()
            .filter_map(|i| complete.get(i).cloned())
            .collect())
    }

    /// Sets the study's user attribute `key` (Optuna's `study.set_user_attr`).
    pub fn set_user_attr(&self, key: &str, value: AttrValue) -> Result<()> {
        self.storage.set_study_user_attr(self.id, key, value)
    }
    /// The study's user attributes.
    pub fn user_attrs(&self) -> Result<AttrMap> {
        self.storage.get_study_user_attrs(self.id)
    }
    /// Sets the study's system attribute `key` (reserved for dspex and Optuna internals).
    pub fn set_system_attr(&self, key: &str, value: AttrValue) -> Result<()> {
        self.storage.set_study_system_attr(self.id, key, value)
    }
    /// The study's system attributes.
    pub fn system_attrs(&self) -> Result<AttrMap> {
        self.storage.get_study_system_attrs(self.id)
    }

    // ---------------------------------------------------------------- runs

    pub(crate) fn register_run(&self, run: &Arc<Run>) {
        let mut runs = self.runs.lock();
        runs.retain(|w| w.strong_count() > 0);
        runs.push(Arc::downgrade(run));
    }

    /// Asks every active run of this study to start no more trials. Returns how many runs were
    /// active.
    pub fn stop(&self) -> usize {
        let runs: Vec<Arc<Run>> = self.runs.lock().iter().filter_map(Weak::upgrade).collect();
        let mut n = 0;
        for r in runs {
            if !r.is_finished() {
                r.stop();
                n += 1;
            }
        }
        n
    }
}

fn num_eq(a: &ParamValue, b: &ParamValue) -> bool {
    let f = |v: &ParamValue| match v {
        ParamValue::Int(i) => Some(*i as f64),
        ParamValue::Float(x) => Some(*x),
        _ => None,
    };
    matches!((f(a), f(b)), (Some(x), Some(y)) if x == y)
}

fn single_value(dist: &Distribution) -> f64 {
    match dist {
        Distribution::Float(d) => d.low,
        Distribution::Int(d) => d.low as f64,
        Distribution::Categorical(_) => 0.0,
    }
}

/// Why `values` cannot complete a trial of a study with `n_objectives` objectives (None when
/// they can): every value finite, one per objective.
pub fn check_values(values: &[f64], n_objectives: usize) -> Option<String> {
    let bad: Vec<String> = values
        .iter()
        .filter(|v| !v.is_finite())
        .map(|v| format!("the value {v} is not acceptable"))
        .collect();
    if !bad.is_empty() {
        return Some(bad.join("; "));
    }
    if values.len() != n_objectives {
        return Some(format!(
            "the number of values {} did not match the number of objectives {}",
            values.len(),
            n_objectives
        ));
    }
    None
}

/// True when a trial has constraint values and violates one.
fn infeasible_record(t: &TrialRecord) -> bool {
    crate::model::constraint_violation(&t.system_attrs).is_some_and(|v| v > 0.0)
}
