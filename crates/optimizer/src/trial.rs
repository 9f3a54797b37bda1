//! What samplers and pruners may read about a trial.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::distributions::Distribution;

/// The lifecycle state of a trial (Optuna's names and meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialState {
    /// Started and not finished: being evaluated.
    Running,
    /// Finished with its objective values.
    Complete,
    /// Stopped early, after a pruner's decision.
    Pruned,
    /// Finished without values: the objective raised, returned something invalid, or the
    /// trial was lost.
    Fail,
    /// Enqueued (e.g. with fixed parameters), not started yet.
    Waiting,
}

impl TrialState {
    /// True for COMPLETE, PRUNED and FAIL: the states a trial never leaves.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TrialState::Complete | TrialState::Pruned | TrialState::Fail
        )
    }

    /// Optuna's name of the state (`"COMPLETE"`, ...), as stored and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Fail => "FAIL",
            TrialState::Waiting => "WAITING",
        }
    }

    /// The state named `s` (any case), if any.
    pub fn parse(s: &str) -> Option<TrialState> {
        Some(match s.to_ascii_uppercase().as_str() {
            "RUNNING" => TrialState::Running,
            "COMPLETE" => TrialState::Complete,
            "PRUNED" => TrialState::Pruned,
            "FAIL" => TrialState::Fail,
            "WAITING" => TrialState::Waiting,
            _ => return None,
        })
    }
}

/// Whether an objective is minimized or maximized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StudyDirection {
    /// Smaller values are better.
    Minimize,
    /// Larger values are better.
    Maximize,
}

impl StudyDirection {
    /// The direction named `s` (`"minimize"` / `"maximize"`, any case), if any.
    pub fn parse(s: &str) -> Option<StudyDirection> {
        match s.to_ascii_lowercase().as_str() {
            "minimize" => Some(StudyDirection::Minimize),
            "maximize" => Some(StudyDirection::Maximize),
            _ => None,
        }
    }

    /// `"minimize"` or `"maximize"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StudyDirection::Minimize => "minimize",
            StudyDirection::Maximize => "maximize",
        }
    }

    /// Maps a value to a loss (smaller is better).
    #[inline]
    pub fn loss(self, v: f64) -> f64 {
        match self {
            StudyDirection::Minimize => v,
            StudyDirection::Maximize => -v,
        }
    }

    /// True when `a` is strictly better than `b`.
    #[inline]
    pub fn better(self, a: f64, b: f64) -> bool {
        self.loss(a) < self.loss(b)
    }
}

/// A read-only view of one trial: the sampler and pruner inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenTrial {
    /// The trial's number in its study, from 0 in creation order.
    pub number: u64,
    /// The trial's state.
    pub state: TrialState,
    /// Suggested parameters, in internal representation.
    pub params: BTreeMap<String, f64>,
    /// The distribution of each suggested parameter. Shared (copy on write) between the trials
    /// of a study that have the same ones: most studies have one search space.
    pub distributions: Arc<BTreeMap<String, Distribution>>,
    /// One value per objective once COMPLETE.
    pub values: Option<Vec<f64>>,
    /// step -> reported value.
    pub intermediate_values: BTreeMap<i64, f64>,
    /// The trial's constraint values (feasible when every one is <= 0); None for a trial
    /// without constraints.
    pub constraints: Option<Vec<f64>>,
    /// How far the trial is from satisfying its constraints: the sum of its positive constraint
    /// values (0: feasible); None for a trial without constraints.
    pub violation: Option<f64>,
}

impl FrozenTrial {
    /// A trial with no parameters, values or intermediate values yet.
    pub fn new(number: u64, state: TrialState) -> Self {
        FrozenTrial {
            number,
            state,
            params: BTreeMap::new(),
            distributions: Arc::default(),
            values: None,
            intermediate_values: BTreeMap::new(),
            constraints: None,
            violation: None,
        }
    }

    /// True when the trial has constraints and violates one.
    pub fn infeasible(&self) -> bool {
        self.violation.is_some_and(|v| v > 0.0)
    }

    /// The single objective value (first value), if any.
    pub fn value(&self) -> Option<f64> {
        self.values.as_ref().and_then(|v| v.first().copied())
    }

    /// The last reported (step, value), if any.
    pub fn last_step(&self) -> Option<(i64, f64)> {
        self.intermediate_values
            .iter()
            .next_back()
            .map(|(s, v)| (*s, *v))
    }
}
