//! The in-memory state of one study, shared by the backends: the optimizer's [`History`] plus
//! what a [`TrialRecord`] carries beyond it. [`InMemoryStorage`](super::InMemoryStorage) keeps
//! it as the study itself; [`SqlStorage`](super::SqlStorage) as a cache of the database.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use dspex_optimizer::{Distribution, History, ParamValue, SearchSpace, StudyDirection, TrialState};

use super::ParamContext;
use crate::error::{EngineError, Result};
use crate::model::{check_compatible, AttrMap, AttrValue, TrialRecord};

/// What a trial record holds beyond the history's trial.
#[derive(Debug, Default, Clone)]
pub(super) struct TrialExtra {
    pub user_attrs: AttrMap,
    pub system_attrs: AttrMap,
    pub datetime_start: Option<SystemTime>,
    pub datetime_complete: Option<SystemTime>,
    pub fail_reason: Option<String>,
    pub fixed: Option<BTreeMap<String, ParamValue>>,
    pub relative_space: SearchSpace,
}

/// History and per-trial extras of one study (`extras[n]` belongs to trial `n`).
#[derive(Debug)]
pub(super) struct StudyState {
    pub history: History,
    pub extras: Vec<TrialExtra>,
    /// First distribution seen per parameter name in the study (compatibility checks).
    pub param_dists: HashMap<String, Distribution>,
}

impl StudyState {
    pub fn new(directions: Vec<StudyDirection>) -> Self {
        Self {
            history: History::new(directions),
            extras: Vec::new(),
            param_dists: HashMap::new(),
        }
    }

    pub fn extra(&self, number: u64) -> Result<&TrialExtra> {
        self.extras
            .get(number as usize)
            .ok_or(EngineError::TrialNotFound(number))
    }

    pub fn extra_mut(&mut self, number: u64) -> Result<&mut TrialExtra> {
        self.extras
            .get_mut(number as usize)
            .ok_or(EngineError::TrialNotFound(number))
    }

    /// Sets a system attribute of trial `number`; a constraint value also updates the trial's
    /// violation in the history (what constrained samplers read).
    pub fn set_system_attr(&mut self, number: u64, key: &str, value: AttrValue) -> Result<()> {
        self.extra_mut(number)?
            .system_attrs
            .insert(key.to_string(), value);
        if key.starts_with(crate::model::CONSTRAINTS_KEY) {
            self.sync_violation(number)?;
        }
        Ok(())
    }

    /// Recomputes trial `number`'s constraint values (and violation) in the history from its
    /// system attributes.
    pub fn sync_violation(&mut self, number: u64) -> Result<()> {
        let c = crate::model::constraint_values(&self.extra(number)?.system_attrs);
        self.history.set_constraints(number, c)?;
        Ok(())
    }

    /// Fails unless trial `number` is RUNNING (`op` names the refused operation).
    pub fn running(&self, number: u64, op: &'static str) -> Result<()> {
        let state = self.history.trial(number)?.state;
        if state != TrialState::Running {
            return Err(EngineError::TrialNotRunning { op, number, state });
        }
        Ok(())
    }

    /// Fails when `dist` is incompatible with the distribution `name` had earlier in the study.
    pub fn check_compatible(&self, name: &str, dist: &Distribution) -> Result<()> {
        if let Some(old) = self.param_dists.get(name) {
            check_compatible(old, dist).map_err(|reason| {
                EngineError::IncompatibleDistribution {
                    name: name.to_string(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// Sets a parameter in the history and remembers its distribution (no compatibility check).
    pub fn set_param(
        &mut self,
        number: u64,
        name: &str,
        v: f64,
        dist: &Distribution,
    ) -> Result<()> {
        self.history.set_param(number, name, v, dist)?;
        self.param_dists
            .entry(name.to_string())
            .or_insert_with(|| dist.clone());
        Ok(())
    }

    /// Finishes trial `number` at `at` (now when None), recording `fail_reason` for FAIL.
    pub fn finish(
        &mut self,
        number: u64,
        state: TrialState,
        values: Option<Vec<f64>>,
        fail_reason: Option<String>,
        at: Option<SystemTime>,
    ) -> Result<()> {
        self.history.finish(number, state, values)?;
        let x = self.extra_mut(number)?;
        x.datetime_complete = Some(at.unwrap_or_else(SystemTime::now));
        x.relative_space.clear();
        if state == TrialState::Fail {
            if let Some(reason) = fail_reason {
                x.system_attrs
                    .insert("fail_reason".into(), AttrValue::String(reason.clone()));
                x.fail_reason = Some(reason);
            }
        }
        Ok(())
    }

    pub fn record(&self, number: u64) -> Result<TrialRecord> {
        let t = self.history.trial(number)?;
        let x = self.extra(number)?;
        let params = t
            .params
            .iter()
            .filter_map(|(name, v)| {
                t.distributions
                    .get(name)
                    .map(|d| (name.clone(), d.to_external(*v)))
            })
            .collect();
        Ok(TrialRecord {
            number,
            state: t.state,
            params,
            internal_params: t.params.clone(),
            distributions: (*t.distributions).clone(),
            values: t.values.clone(),
            intermediate_values: t.intermediate_values.clone(),
            user_attrs: x.user_attrs.clone(),
            system_attrs: x.system_attrs.clone(),
            datetime_start: x.datetime_start,
            datetime_complete: x.datetime_complete,
            fail_reason: x.fail_reason.clone(),
            fixed_params: x.fixed.clone(),
        })
    }

    /// Records of all trials (optionally only those in `states`), by number.
    pub fn records(&self, states: Option<&[TrialState]>) -> Result<Vec<TrialRecord>> {
        self.history
            .trials()
            .iter()
            .filter(|t| matches(states, t.state))
            .map(|t| self.record(t.number))
            .collect()
    }

    pub fn n_trials(&self, states: Option<&[TrialState]>) -> usize {
        match states {
            None => self.history.trials().len(),
            Some(_) => self
                .history
                .trials()
                .iter()
                .filter(|t| matches(states, t.state))
                .count(),
        }
    }

    /// Whether trial `number` already reported `step`.
    pub fn has_reported(&self, number: u64, step: i64) -> Result<bool> {
        Ok(self
            .history
            .trial(number)?
            .intermediate_values
            .contains_key(&step))
    }

    pub fn param_context(&self, number: u64, name: &str) -> Result<ParamContext> {
        let t = self.history.trial(number)?;
        let x = self.extra(number)?;
        let existing = match (t.params.get(name), t.distributions.get(name)) {
            (Some(v), Some(d)) => Some((*v, d.clone())),
            _ => None,
        };
        let relative = match (
            self.history.pending_relative(number, name),
            x.relative_space.get(name),
        ) {
            (Some(v), Some(d)) => Some((v, d.clone())),
            _ => None,
        };
        Ok(ParamContext {
            existing,
            fixed: x.fixed.as_ref().and_then(|f| f.get(name).cloned()),
            relative,
            study_distribution: self.param_dists.get(name).cloned(),
        })
    }

    /// Records parameters sampled jointly at the start of running trial `number`.
    pub fn set_relative_params(
        &mut self,
        number: u64,
        params: &BTreeMap<String, f64>,
        space: &SearchSpace,
    ) -> Result<()> {
        self.running(number, "set relative parameters of")?;
        self.history.set_relative_params(number, params, space)?;
        self.extra_mut(number)?.relative_space = space.clone();
        Ok(())
    }
}

/// Whether a trial in state `s` is selected by a state filter (None selects all).
fn matches(states: Option<&[TrialState]>, s: TrialState) -> bool {
    states.is_none_or(|ss| ss.contains(&s))
}

/// A generated study name (`name` None in `create_new_study`).
pub(super) fn unique_name() -> String {
    let a: u64 = rand::random();
    let b: u64 = rand::random();
    format!("no-name-{a:016x}{b:016x}")
}
