//! Pruners: whether a running trial should stop early, from its intermediate values and the
//! study history. Each pruner is a pure function of the [`History`] and the trial number.
//!
//! The decisions follow Optuna 5.0's pruners (`optuna.pruners`), including their handling of NaN
//! intermediate values. Where Optuna keeps state between calls (successive halving stores rung
//! values as trial system attributes, Hyperband hashes the study name), the pruners here
//! reconstruct the same information from the history; see each pruner's documentation.
//!
//! Every pruner reads the first study direction (`history.directions()[0]`), and returns `false`
//! for a trial number the history does not know.

use std::fmt;

use crate::history::History;
use crate::trial::{FrozenTrial, StudyDirection};

mod hyperband;
mod patient;
mod percentile;
mod successive_halving;
mod threshold;
mod wilcoxon;

pub use hyperband::HyperbandPruner;
pub use patient::PatientPruner;
pub use percentile::{MedianPruner, PercentilePruner};
pub use successive_halving::{MinResource, SuccessiveHalvingPruner};
pub use threshold::ThresholdPruner;
pub use wilcoxon::{wilcoxon_signed_rank_p_value, Alternative, WilcoxonPruner};

/// A pruning rule.
pub trait Pruner: Send + Sync + fmt::Debug {
    /// True when trial `trial` (RUNNING, with its intermediate values in `history`) should be
    /// pruned now.
    fn prune(&self, history: &History, trial: u64) -> bool;

    /// This pruner as it should run for the study named `study_name`, when it depends on the
    /// name (Hyperband's brackets); None when it does not.
    fn for_study(&self, _study_name: &str) -> Option<Box<dyn Pruner>> {
        None
    }
}

/// Never prunes.
#[derive(Debug, Clone, Default)]
pub struct NopPruner;

impl Pruner for NopPruner {
    fn prune(&self, _history: &History, _trial: u64) -> bool {
        false
    }
}

/// The trial and the study direction a pruner works with, or None when either is missing.
fn target(history: &History, trial: u64) -> Option<(&FrozenTrial, StudyDirection)> {
    let direction = *history.directions().first()?;
    let t = history.trial(trial).ok()?;
    Some((t, direction))
}

/// Optuna's `_is_first_in_interval_step`: true when `step` is the first reported step at or after
/// the latest pruning checkpoint (`n_warmup_steps + k * interval_steps`), i.e. no earlier
/// reported step already falls at or after that checkpoint. Callers guarantee
/// `step >= n_warmup_steps >= 0` and `interval_steps >= 1`.
fn is_first_in_interval_step(
    step: i64,
    trial: &FrozenTrial,
    n_warmup_steps: i64,
    interval_steps: i64,
) -> bool {
    let nearest_lower_pruning_step =
        (step - n_warmup_steps).div_euclid(interval_steps) * interval_steps + n_warmup_steps;
    // The largest reported step other than `step`, or -1 (Optuna's fold starts at -1).
    let second_last_step = trial
        .intermediate_values
        .keys()
        .copied()
        .filter(|&s| s != step)
        .fold(-1, i64::max);
    second_last_step < nearest_lower_pruning_step
}

/// Checks a step count argument (`>= min`).
fn check_at_least(
    name: &'static str,
    value: i64,
    min: i64,
    what: &str,
) -> Result<(), crate::OptimizerError> {
    if value < min {
        return Err(crate::OptimizerError::arg(
            name,
            value,
            format!("{what} must be at least {min}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Helpers for the pruner tests: hand-built histories, and the replay of the scripted studies
    //! of `tests/data/pruners_optuna.json`, whose expected decisions were recorded with Optuna 5.0
    //! by `tests/data/pruners_optuna.py`.

    use serde_json::Value;

    use super::*;
    use crate::trial::TrialState;

    /// A finished or running trial for [`history`]: state, objective value, intermediate values.
    pub type Spec<'a> = (TrialState, Option<f64>, &'a [(i64, f64)]);

    /// Builds a single-objective history from trial specs (numbers follow the slice order).
    pub fn history(direction: StudyDirection, trials: &[Spec<'_>]) -> History {
        let mut h = History::new(vec![direction]);
        for (state, value, iv) in trials {
            add(&mut h, *state, *value, iv);
        }
        h
    }

    /// Appends one trial to `h` and returns its number.
    pub fn add(h: &mut History, state: TrialState, value: Option<f64>, iv: &[(i64, f64)]) -> u64 {
        let n = h.create_trial(TrialState::Running);
        for (s, v) in iv {
            h.report(n, *s, *v).unwrap();
        }
        match state {
            TrialState::Running => {}
            TrialState::Waiting => panic!("waiting trials cannot carry values here"),
            TrialState::Complete => h.finish(n, state, Some(vec![value.unwrap()])).unwrap(),
            _ => h.finish(n, state, None).unwrap(),
        }
        n
    }

    const DATA: &str = include_str!("../../tests/data/pruners_optuna.json");

    fn num(v: &Value) -> f64 {
        match v {
            Value::Null => f64::NAN,
            Value::String(s) => s.parse().unwrap(),
            other => other.as_f64().unwrap(),
        }
    }

    fn int(args: &Value, key: &str, default: i64) -> i64 {
        args.get(key).and_then(Value::as_i64).unwrap_or(default)
    }

    fn opt_f64(args: &Value, key: &str) -> Option<f64> {
        args.get(key).filter(|v| !v.is_null()).map(num)
    }

    /// Builds the pruner a scenario describes (same defaults as Optuna's constructors).
    pub fn build(spec: &Value, study_name: &str) -> Box<dyn Pruner> {
        let args = spec.get("args").cloned().unwrap_or(Value::Null);
        let kind = spec["kind"].as_str().unwrap();
        match kind {
            "median" => Box::new(
                MedianPruner::new(
                    int(&args, "n_startup_trials", 5),
                    int(&args, "n_warmup_steps", 0),
                    int(&args, "interval_steps", 1),
                    int(&args, "n_min_trials", 1),
                )
                .unwrap(),
            ),
            "percentile" => Box::new(
                PercentilePruner::new(
                    num(&args["percentile"]),
                    int(&args, "n_startup_trials", 5),
                    int(&args, "n_warmup_steps", 0),
                    int(&args, "interval_steps", 1),
                    int(&args, "n_min_trials", 1),
                )
                .unwrap(),
            ),
            "successive_halving" => {
                let min_resource = match args.get("min_resource") {
                    None => MinResource::Auto,
                    Some(Value::String(s)) => MinResource::parse(s).unwrap(),
                    Some(v) => MinResource::Fixed(v.as_i64().unwrap()),
                };
                Box::new(
                    SuccessiveHalvingPruner::new(
                        min_resource,
                        int(&args, "reduction_factor", 4),
                        int(&args, "min_early_stopping_rate", 0),
                        int(&args, "bootstrap_count", 0),
                    )
                    .unwrap(),
                )
            }
            "hyperband" => {
                let max_resource = match args.get("max_resource") {
                    None => None,
                    Some(Value::String(s)) if s == "auto" => None,
                    Some(v) => Some(v.as_i64().unwrap()),
                };
                Box::new(
                    HyperbandPruner::new(
                        int(&args, "min_resource", 1),
                        max_resource,
                        int(&args, "reduction_factor", 3),
                        int(&args, "bootstrap_count", 0),
                    )
                    .unwrap()
                    .with_bracket_key(study_name),
                )
            }
            "threshold" => Box::new(
                ThresholdPruner::new(
                    opt_f64(&args, "lower"),
                    opt_f64(&args, "upper"),
                    int(&args, "n_warmup_steps", 0),
                    int(&args, "interval_steps", 1),
                )
                .unwrap(),
            ),
            "patient" => {
                let inner = spec
                    .get("inner")
                    .filter(|v| !v.is_null())
                    .map(|s| build(s, study_name));
                Box::new(
                    PatientPruner::new(
                        inner,
                        int(&args, "patience", 0),
                        args.get("min_delta").map(num).unwrap_or(0.0),
                    )
                    .unwrap(),
                )
            }
            "wilcoxon" => Box::new(
                WilcoxonPruner::new(
                    args.get("p_threshold").map(num).unwrap_or(0.1),
                    int(&args, "n_startup_steps", 2),
                )
                .unwrap(),
            ),
            other => panic!("unknown pruner kind {other}"),
        }
    }

    fn state(s: &str) -> TrialState {
        TrialState::parse(s).unwrap()
    }

    fn steps(op: &Value) -> Vec<(i64, f64)> {
        op["iv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), num(&p[1])))
            .collect()
    }

    /// Replays every scenario whose (outer) pruner kind is `kind` and compares each decision with
    /// Optuna's. Returns the number of decisions compared.
    pub fn check_scenarios(kind: &str) -> usize {
        let data: Value = serde_json::from_str(DATA).unwrap();
        let mut checked = 0;
        for scn in data["scenarios"].as_array().unwrap() {
            if scn["pruner"]["kind"].as_str() != Some(kind) {
                continue;
            }
            let name = scn["name"].as_str().unwrap();
            let study_name = scn["study_name"].as_str().unwrap();
            let direction = StudyDirection::parse(scn["direction"].as_str().unwrap()).unwrap();
            let pruner = build(&scn["pruner"], study_name);
            let mut h = History::new(vec![direction]);
            for (i, op) in scn["ops"].as_array().unwrap().iter().enumerate() {
                let iv = steps(op);
                let st = state(op["state"].as_str().unwrap());
                let value = opt_f64(op, "value");
                if op["op"] == "add" {
                    add(&mut h, st, value, &iv);
                    continue;
                }
                let n = h.create_trial(TrialState::Running);
                let expect: Vec<bool> = op["expect"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_bool().unwrap())
                    .collect();
                let obey = op["obey"].as_bool().unwrap_or(true);
                let mut got = Vec::new();
                let mut pruned = false;
                for (s, v) in &iv {
                    h.report(n, *s, *v).unwrap();
                    let d = pruner.prune(&h, n);
                    got.push(d);
                    if d && obey {
                        h.finish(n, TrialState::Pruned, None).unwrap();
                        pruned = true;
                        break;
                    }
                }
                assert_eq!(
                    got, expect,
                    "scenario {name}, op {i} (trial {n}): decisions differ from Optuna"
                );
                checked += got.len();
                if !pruned {
                    match st {
                        TrialState::Running => {}
                        TrialState::Complete => {
                            h.finish(n, st, Some(vec![value.unwrap()])).unwrap()
                        }
                        _ => h.finish(n, st, None).unwrap(),
                    }
                }
            }
        }
        assert!(checked > 0, "no Optuna scenario for {kind}");
        checked
    }
}
