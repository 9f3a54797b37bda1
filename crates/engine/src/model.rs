//! The study model: what a trial and a study look like to users of the engine.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use dspex_optimizer::{Distribution, ParamValue, StudyDirection, TrialState};

/// A user or system attribute value (JSON, so every storage backend can keep it).
pub type AttrValue = serde_json::Value;
/// Attribute name -> value.
pub type AttrMap = BTreeMap<String, AttrValue>;

/// The system attribute of a trial's constraint values, as Optuna keeps them: a list under
/// `constraints` (from a sampler's `constraints_func`) and one value per `constraints:<key>`
/// (from `trial.set_constraint`).
pub const CONSTRAINTS_KEY: &str = "constraints";

/// The constraint values in these system attributes (the list first, then the keyed ones by
/// key); None when there are none.
pub fn constraint_values(system_attrs: &AttrMap) -> Option<Vec<f64>> {
    let mut values: Vec<f64> = Vec::new();
    if let Some(AttrValue::Array(list)) = system_attrs.get(CONSTRAINTS_KEY) {
        values.extend(list.iter().filter_map(AttrValue::as_f64));
    }
    let prefix = format!("{CONSTRAINTS_KEY}:");
    values.extend(
        system_attrs
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, v)| v.as_f64()),
    );
    (!values.is_empty()).then_some(values)
}

/// How far a trial with these system attributes is from satisfying its constraints: the sum of
/// its positive constraint values (0: feasible); None when it has no constraint values.
pub fn constraint_violation(system_attrs: &AttrMap) -> Option<f64> {
    constraint_values(system_attrs).map(|v| v.iter().filter(|x| **x > 0.0).sum())
}

/// Everything known about one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    /// 0-based number of the trial in its study.
    pub number: u64,
    /// Where the trial is in its lifecycle.
    pub state: TrialState,
    /// Parameter values as the objective saw them.
    pub params: BTreeMap<String, ParamValue>,
    /// The same values in internal representation (what samplers read).
    pub internal_params: BTreeMap<String, f64>,
    /// The distribution each parameter was suggested from.
    pub distributions: BTreeMap<String, Distribution>,
    /// One value per objective once COMPLETE (a PRUNED trial may carry its last reported value).
    pub values: Option<Vec<f64>>,
    /// Values reported for pruning, by step.
    pub intermediate_values: BTreeMap<i64, f64>,
    /// Attributes set by the user (`trial.set_user_attr`).
    pub user_attrs: AttrMap,
    /// Attributes set by dspex or Optuna internals, not the user (`fail_reason`, ...).
    pub system_attrs: AttrMap,
    /// When the trial started running (None while WAITING).
    pub datetime_start: Option<SystemTime>,
    /// When the trial finished (None while unfinished).
    pub datetime_complete: Option<SystemTime>,
    /// Why a FAIL trial failed (also kept as the system attribute `fail_reason`).
    pub fail_reason: Option<String>,
    /// Parameters fixed before the trial ran (enqueued trials, grid points), external values.
    pub fixed_params: Option<BTreeMap<String, ParamValue>>,
}

impl TrialRecord {
    /// An empty record in `state`, with no timestamps.
    pub fn new(number: u64, state: TrialState) -> Self {
        TrialRecord {
            number,
            state,
            params: BTreeMap::new(),
            internal_params: BTreeMap::new(),
            distributions: BTreeMap::new(),
            values: None,
            intermediate_values: BTreeMap::new(),
            user_attrs: AttrMap::new(),
            system_attrs: AttrMap::new(),
            datetime_start: None,
            datetime_complete: None,
            fail_reason: None,
            fixed_params: None,
        }
    }

    /// The single objective value, if any.
    pub fn value(&self) -> Option<f64> {
        self.values.as_ref().and_then(|v| v.first().copied())
    }

    /// Time between start and completion, when both are known.
    pub fn duration(&self) -> Option<Duration> {
        match (self.datetime_start, self.datetime_complete) {
            (Some(s), Some(c)) => c.duration_since(s).ok(),
            _ => None,
        }
    }

    /// The last reported (step, value).
    pub fn last_step(&self) -> Option<(i64, f64)> {
        self.intermediate_values
            .iter()
            .next_back()
            .map(|(s, v)| (*s, *v))
    }
}

/// A study as listed by a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySummary {
    /// The storage's id of the study.
    pub study_id: u64,
    /// The study's unique name.
    pub name: String,
    /// One direction per objective.
    pub directions: Vec<StudyDirection>,
    /// Number of trials, in every state.
    pub n_trials: usize,
    /// Attributes set by the user (`study.set_user_attr`).
    pub user_attrs: AttrMap,
    /// Attributes set by dspex or Optuna internals.
    pub system_attrs: AttrMap,
    /// When the study started: its creation time in memory, its earliest trial start in a SQL
    /// storage (as Optuna reports it; None before any trial started).
    pub datetime_start: Option<SystemTime>,
}

/// Seconds since the Unix epoch (negative before it), for bindings that want a float.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The inverse of [`unix_seconds`]; None for non-finite input.
pub fn from_unix_seconds(s: f64) -> Option<SystemTime> {
    if !s.is_finite() {
        return None;
    }
    let d = Duration::try_from_secs_f64(s.abs()).ok()?;
    if s >= 0.0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
}

/// A sampler's view of trials read as records (numbered densely from 0, in order): what a
/// sampler asked outside the engine's run (from Python, on a study's trials) reads.
pub fn history_from_records(
    directions: &[StudyDirection],
    records: &[TrialRecord],
) -> Result<dspex_optimizer::History, dspex_optimizer::OptimizerError> {
    let mut h = dspex_optimizer::History::new(directions.to_vec());
    for r in records {
        let n = h.create_trial(match r.state {
            TrialState::Waiting => TrialState::Waiting,
            _ => TrialState::Running,
        });
        for (name, v) in &r.internal_params {
            if let Some(d) = r.distributions.get(name) {
                h.set_param(n, name, *v, d)?;
            }
        }
        for (step, v) in &r.intermediate_values {
            h.report(n, *step, *v)?;
        }
        h.set_constraints(n, constraint_values(&r.system_attrs))?;
        if r.state.is_finished() {
            h.finish(n, r.state, r.values.clone())?;
        }
    }
    Ok(h)
}

/// Optuna's compatibility rule for one name suggested with two distributions: same kind, same
/// log flag, and for categoricals the same choices. Ranges and steps may differ.
pub fn check_compatible(old: &Distribution, new: &Distribution) -> Result<(), String> {
    match (old, new) {
        (Distribution::Float(a), Distribution::Float(b)) if a.log != b.log => {
            Err("cannot use a different log setting for the same parameter name".into())
        }
        (Distribution::Int(a), Distribution::Int(b)) if a.log != b.log => {
            Err("cannot use a different log setting for the same parameter name".into())
        }
        (Distribution::Float(_), Distribution::Float(_))
        | (Distribution::Int(_), Distribution::Int(_)) => Ok(()),
        (Distribution::Categorical(a), Distribution::Categorical(b)) => {
            if a.choices.len() == b.choices.len()
                && a.choices
                    .iter()
                    .zip(&b.choices)
                    .all(|(x, y)| x.same_choice(y))
            {
                Ok(())
            } else {
                Err(format!(
                    "cannot use different categorical choices for the same parameter name: {} then {}",
                    old.to_json(),
                    new.to_json()
                ))
            }
        }
        _ => Err(format!(
            "cannot use a different distribution kind for the same parameter name: {} then {}",
            old.to_json(),
            new.to_json()
        )),
    }
}
