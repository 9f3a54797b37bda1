//! Asynchronous successive halving (ASHA), also the building block of Hyperband.
//!
//! # Rungs without stored attributes
//!
//! Optuna's `SuccessiveHalvingPruner` writes `completed_rung_{k}` system attributes: when
//! `prune` runs at a step `>= min_resource * reduction_factor^(min_early_stopping_rate + k)` (the
//! promotion step of rung `k`) for a trial that has not completed rung `k` yet, it records the
//! value reported at that step as the trial's rung-`k` value, then compares it with the other
//! trials' rung-`k` values; if the trial is promotable it goes on to rung `k + 1` with the same
//! value, otherwise it is pruned. NaN values are never recorded (the trial is pruned).
//!
//! Here the rung values are rebuilt from the intermediate values, assuming, as Optuna's usage
//! does, that the pruner was asked after every report:
//!
//! - the rung-`k` value of a trial is its first non-NaN value reported at a step at or after the
//!   promotion step of rung `k`;
//! - a trial that went on reporting after a step has passed every rung that step crossed, so
//!   COMPLETE, FAIL and RUNNING trials keep all rungs they crossed;
//! - a PRUNED trial whose last report crossed several rungs at once stopped at one of them: which
//!   one is decided by replaying that decision against the trials with smaller numbers (the ones
//!   that existed when it ran, in a sequential study), processed in number order.
//!
//! The current trial's completed rungs are those crossed by its values before its last step; its
//! last value then goes through the same loop as in Optuna, against the rung values of every
//! other trial. For sequential studies whose trials stop when pruned this reproduces Optuna's
//! decisions exactly (checked on scripted studies, see the tests); one deliberate difference:
//! calling `prune` twice at the same step gives the same answer twice.
//!
//! `min_resource = "auto"`: Optuna estimates `max(1, last_step // 100)` from the COMPLETE trials
//! the first time one exists and freezes it; until then it decides nothing and records no rung.
//! Here the estimate comes from the lowest-numbered COMPLETE trial with intermediate values, and
//! the trials numbered up to it have no rung values, which is what happens in a sequential study
//! (in a parallel one, trials that finish out of order can make the two differ slightly).
//!
//! Trials imported with their intermediate values (Optuna's `add_trial`) count here as if the
//! pruner had been asked after each of their reports, whereas Optuna ignores them.

use std::cmp::Ordering;

use super::{check_at_least, target, Pruner};
use crate::error::OptimizerError;
use crate::history::History;
use crate::trial::{FrozenTrial, StudyDirection, TrialState};

/// The `min_resource` argument of [`SuccessiveHalvingPruner`]: a step count, or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinResource {
    /// Estimated from the COMPLETE trials: `max(1, longest last step // 100)`. No pruning before
    /// a trial completes.
    Auto,
    /// A fixed number of steps (`>= 1`).
    Fixed(i64),
}

impl MinResource {
    /// Parses the string form of the argument: only `"auto"` is accepted (integers are passed as
    /// [`MinResource::Fixed`]).
    pub fn parse(s: &str) -> Result<Self, OptimizerError> {
        if s == "auto" {
            Ok(MinResource::Auto)
        } else {
            Err(OptimizerError::arg(
                "min_resource",
                format!("{s:?}"),
                "must be either an integer >= 1 or 'auto'",
            ))
        }
    }
}

/// Asynchronous successive halving (Optuna's `SuccessiveHalvingPruner`): a trial that reaches
/// the promotion step of a rung continues only if its value there is in the top
/// `1 / reduction_factor` of the values all trials had at that rung (the best value of the
/// first `reduction_factor - 1` trials to reach a rung is also promoted). See the module
/// documentation for how rung values are rebuilt from the history.
#[derive(Debug, Clone, PartialEq)]
pub struct SuccessiveHalvingPruner {
    min_resource: MinResource,
    rungs: Rungs,
}

impl SuccessiveHalvingPruner {
    /// `min_resource`: `Auto` or `Fixed(n >= 1)`; `reduction_factor >= 2`;
    /// `min_early_stopping_rate >= 0`; `bootstrap_count >= 0`, and 0 with `Auto` (Optuna's
    /// defaults: `Auto, 4, 0, 0`). `bootstrap_count` trials must reach a rung before any of them
    /// is promoted from it.
    pub fn new(
        min_resource: MinResource,
        reduction_factor: i64,
        min_early_stopping_rate: i64,
        bootstrap_count: i64,
    ) -> Result<Self, OptimizerError> {
        if let MinResource::Fixed(m) = min_resource {
            if m < 1 {
                return Err(OptimizerError::arg(
                    "min_resource",
                    m,
                    "must be either an integer >= 1 or 'auto'",
                ));
            }
        }
        check_at_least(
            "reduction_factor",
            reduction_factor,
            2,
            "the reduction factor",
        )?;
        check_at_least(
            "min_early_stopping_rate",
            min_early_stopping_rate,
            0,
            "the minimum early-stopping rate",
        )?;
        check_at_least("bootstrap_count", bootstrap_count, 0, "the bootstrap count")?;
        if bootstrap_count > 0 && min_resource == MinResource::Auto {
            return Err(OptimizerError::arg(
                "bootstrap_count",
                bootstrap_count,
                "bootstrap_count > 0 and min_resource='auto' are mutually incompatible",
            ));
        }
        Ok(SuccessiveHalvingPruner {
            min_resource,
            rungs: Rungs {
                min_resource: 1,
                reduction_factor,
                min_early_stopping_rate,
                bootstrap_count,
            },
        })
    }
}

impl Pruner for SuccessiveHalvingPruner {
    fn prune(&self, history: &History, trial: u64) -> bool {
        let (min_resource, first) = match self.min_resource {
            MinResource::Fixed(m) => (m, None),
            MinResource::Auto => match first_complete_with_steps(history) {
                Some((number, last_step)) => (last_step.div_euclid(100).max(1), Some(number)),
                None => return false,
            },
        };
        let rungs = Rungs {
            min_resource,
            ..self.rungs.clone()
        };
        // With "auto", trials up to the first COMPLETE one ran while Optuna could not decide
        // anything yet: they recorded no rung.
        rungs.prune(history, trial, |t| first.is_none_or(|f| t.number > f))
    }
}

/// The lowest-numbered COMPLETE trial with intermediate values: (number, last step). In a
/// sequential study this is the trial from which Optuna derives its "auto" resources.
pub(crate) fn first_complete_with_steps(history: &History) -> Option<(u64, i64)> {
    history
        .trials()
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .find_map(|t| t.last_step().map(|(s, _)| (t.number, s)))
}

/// The rung schedule of one successive-halving run (shared with Hyperband's brackets).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rungs {
    pub(crate) min_resource: i64,
    pub(crate) reduction_factor: i64,
    pub(crate) min_early_stopping_rate: i64,
    pub(crate) bootstrap_count: i64,
}

impl Rungs {
    /// `min_resource * reduction_factor^(min_early_stopping_rate + rung)`, None past `i64::MAX`
    /// (no step reaches it).
    fn promotion_step(&self, rung: usize) -> Option<i64> {
        let exp = u32::try_from(self.min_early_stopping_rate)
            .ok()?
            .checked_add(u32::try_from(rung).ok()?)?;
        self.reduction_factor
            .checked_pow(exp)?
            .checked_mul(self.min_resource)
    }

    /// The rung values a trial's reports give it if it passed every rung it crossed: for each
    /// rung in order, (first non-NaN step at or after the promotion step, its value).
    fn candidates(&self, t: &FrozenTrial, before: Option<i64>) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        while let Some(p) = self.promotion_step(out.len()) {
            let found = t
                .intermediate_values
                .range(p..)
                .take_while(|(s, _)| before.is_none_or(|b| **s < b))
                .find(|(_, v)| !v.is_nan());
            match found {
                Some((s, v)) => out.push((*s, *v)),
                None => break,
            }
        }
        out
    }

    /// True when the trial with `value` at some rung is promoted against `others` (the other
    /// trials' values at that rung), including the bootstrap rule: Optuna's
    /// `_is_trial_promotable_to_next_rung` plus the `bootstrap_count` check.
    fn passes(&self, value: f64, others: &[f64], direction: StudyDirection) -> bool {
        let n = others.len() + 1;
        if (n as u64) <= self.bootstrap_count as u64 {
            return false;
        }
        let rf = usize::try_from(self.reduction_factor).unwrap_or(usize::MAX);
        let idx = (n / rf).saturating_sub(1);
        let mut competing: Vec<f64> = Vec::with_capacity(n);
        competing.extend_from_slice(others);
        competing.push(value);
        let cmp = |a: &f64, b: &f64| a.partial_cmp(b).unwrap_or(Ordering::Equal);
        match direction {
            StudyDirection::Minimize => {
                let (_, kth, _) = competing.select_nth_unstable_by(idx, cmp);
                value <= *kth
            }
            StudyDirection::Maximize => {
                let (_, kth, _) = competing.select_nth_unstable_by(n - 1 - idx, cmp);
                value >= *kth
            }
        }
    }

    /// The recorded rung values of every in-scope trial except `skip`, per rung.
    fn recorded(
        &self,
        history: &History,
        skip: u64,
        direction: StudyDirection,
        in_scope: &impl Fn(&FrozenTrial) -> bool,
    ) -> Vec<Vec<f64>> {
        let mut per_rung: Vec<Vec<f64>> = Vec::new();
        for o in history.trials() {
            if o.number == skip || !in_scope(o) {
                continue;
            }
            let cands = self.candidates(o, None);
            if per_rung.len() < cands.len() {
                per_rung.resize_with(cands.len(), Vec::new);
            }
            // A PRUNED trial whose last report crossed several rungs: replay where it stopped.
            let last = o.last_step().filter(|(_, v)| !v.is_nan()).map(|(s, _)| s);
            let at_last = cands.iter().filter(|(s, _)| Some(*s) == last).count();
            let ambiguous = o.state == TrialState::Pruned && at_last >= 2;
            for (k, (s, v)) in cands.iter().enumerate() {
                let stop =
                    ambiguous && Some(*s) == last && !self.passes(*v, &per_rung[k], direction);
                per_rung[k].push(*v);
                if stop {
                    break;
                }
            }
        }
        per_rung
    }

    /// The successive-halving decision for `trial` against the in-scope trials.
    pub(crate) fn prune(
        &self,
        history: &History,
        trial: u64,
        in_scope: impl Fn(&FrozenTrial) -> bool,
    ) -> bool {
        let Some((t, direction)) = target(history, trial) else {
            return false;
        };
        let Some((step, value)) = t.last_step() else {
            return false;
        };
        let mut rung = self.candidates(t, Some(step)).len();
        let mut others: Option<Vec<Vec<f64>>> = None;
        loop {
            match self.promotion_step(rung) {
                Some(p) if step >= p => {}
                _ => return false,
            }
            if value.is_nan() {
                return true;
            }
            let per_rung =
                others.get_or_insert_with(|| self.recorded(history, trial, direction, &in_scope));
            let at_rung = per_rung.get(rung).map(Vec::as_slice).unwrap_or(&[]);
            if !self.passes(value, at_rung, direction) {
                return true;
            }
            rung += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_scenarios, history};
    use super::*;
    use crate::trial::TrialState::{Complete, Pruned, Running};

    fn sh(min_resource: i64, rf: i64, rate: i64, bootstrap: i64) -> SuccessiveHalvingPruner {
        SuccessiveHalvingPruner::new(MinResource::Fixed(min_resource), rf, rate, bootstrap).unwrap()
    }

    #[test]
    fn matches_optuna_on_scripted_studies() {
        check_scenarios("successive_halving");
    }

    #[test]
    fn rung_values_come_from_reports() {
        let r = Rungs {
            min_resource: 1,
            reduction_factor: 2,
            min_early_stopping_rate: 0,
            bootstrap_count: 0,
        };
        let h = history(
            StudyDirection::Minimize,
            &[(
                Running,
                None,
                &[(0, 5.0), (1, f64::NAN), (2, 3.0), (9, 1.0)],
            )],
        );
        let t = &h.trials()[0];
        // promotion steps 1, 2, 4, 8, 16: rung 0 skips the NaN at step 1.
        assert_eq!(
            r.candidates(t, None),
            vec![(2, 3.0), (2, 3.0), (9, 1.0), (9, 1.0)]
        );
        assert_eq!(r.candidates(t, Some(9)), vec![(2, 3.0), (2, 3.0)]);
    }

    #[test]
    fn pruned_trial_jumping_rungs_stops_where_it_failed() {
        // Trial 0 completes with rung values 1.0 at every rung; trial 1 is PRUNED after a single
        // report at step 8 (rungs 0..3 for min_resource 1, rf 2) with a worse value: it failed
        // at rung 0 (2 competitors, promotable index 0), so it never recorded rungs 1..3.
        let r = Rungs {
            min_resource: 1,
            reduction_factor: 2,
            min_early_stopping_rate: 0,
            bootstrap_count: 0,
        };
        let h = history(
            StudyDirection::Minimize,
            &[
                (
                    Complete,
                    Some(1.0),
                    &[(1, 1.0), (2, 1.0), (4, 1.0), (8, 1.0)],
                ),
                (Pruned, None, &[(8, 2.0)]),
            ],
        );
        let rec = r.recorded(&h, 99, StudyDirection::Minimize, &|_| true);
        assert_eq!(rec, vec![vec![1.0, 2.0], vec![1.0], vec![1.0], vec![1.0]]);
        // Maximizing, the same report passes every rung.
        let rec = r.recorded(&h, 99, StudyDirection::Maximize, &|_| true);
        assert_eq!(rec, vec![vec![1.0, 2.0]; 4]);
    }

    #[test]
    fn hand_built_decisions() {
        // Optuna 5.0 with SuccessiveHalvingPruner(min_resource=1, reduction_factor=2) decides
        // the same when the history is produced by ask/report/should_prune (the scripted
        // scenarios); here: the first trial is always promoted, NaN past a rung is pruned,
        // steps before the first promotion step never are.
        let p = sh(1, 2, 0, 0);
        let h = history(
            StudyDirection::Minimize,
            &[(Running, None, &[(0, 1.0), (1, 1.0), (2, 1.0)])],
        );
        assert!(!p.prune(&h, 0));
        let h = history(
            StudyDirection::Minimize,
            &[(Running, None, &[(0, f64::NAN)])],
        );
        assert!(!p.prune(&h, 0));
        let h = history(
            StudyDirection::Minimize,
            &[(Running, None, &[(0, 1.0), (1, f64::NAN)])],
        );
        assert!(p.prune(&h, 0));
        // bootstrap_count: the first trials to reach a rung are pruned until enough are there.
        let h = history(StudyDirection::Minimize, &[(Running, None, &[(1, 1.0)])]);
        assert!(sh(1, 2, 0, 1).prune(&h, 0));
        // min_early_stopping_rate 2 moves the first rung to step 4.
        let h = history(
            StudyDirection::Minimize,
            &[
                (Complete, Some(0.0), &[(4, 0.0)]),
                (Running, None, &[(0, 9.0), (3, 9.0)]),
            ],
        );
        assert!(!sh(1, 2, 2, 0).prune(&h, 1));
        assert!(sh(1, 2, 1, 0).prune(&h, 1));
        // Auto min resource: nothing COMPLETE, nothing pruned.
        let auto = SuccessiveHalvingPruner::new(MinResource::Auto, 2, 0, 0).unwrap();
        let h = history(
            StudyDirection::Minimize,
            &[
                (Pruned, None, &[(0, 0.0), (1, 0.0)]),
                (Running, None, &[(0, 9.0), (1, f64::NAN)]),
            ],
        );
        assert!(!auto.prune(&h, 1));
        assert!(!p.prune(&h, 7), "unknown trial");
    }

    #[test]
    fn validation_names_the_argument() {
        let e = |r: Result<SuccessiveHalvingPruner, OptimizerError>| r.unwrap_err().to_string();
        assert!(
            e(SuccessiveHalvingPruner::new(MinResource::Fixed(0), 4, 0, 0))
                .contains("min_resource=0")
        );
        assert!(
            e(SuccessiveHalvingPruner::new(MinResource::Fixed(1), 1, 0, 0))
                .contains("reduction_factor=1")
        );
        assert!(e(SuccessiveHalvingPruner::new(
            MinResource::Fixed(1),
            4,
            -1,
            0
        ))
        .contains("min_early_stopping_rate=-1"));
        assert!(e(SuccessiveHalvingPruner::new(
            MinResource::Fixed(1),
            4,
            0,
            -1
        ))
        .contains("bootstrap_count=-1"));
        let msg = e(SuccessiveHalvingPruner::new(MinResource::Auto, 4, 0, 2));
        assert!(
            msg.contains("bootstrap_count=2") && msg.contains("auto"),
            "{msg}"
        );
        assert!(MinResource::parse("auto").is_ok());
        assert!(
            e(MinResource::parse("fast").map(|_| sh(1, 2, 0, 0))).contains("min_resource=\"fast\"")
        );
    }
}
