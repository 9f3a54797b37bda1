//! Pruning on fixed bounds.

use super::{check_at_least, is_first_in_interval_step, target, Pruner};
use crate::error::OptimizerError;
use crate::history::History;

/// Prunes a trial whose latest intermediate value leaves `[lower, upper]` or is NaN (Optuna's
/// `ThresholdPruner`). Checks follow the same warmup and interval rules as
/// [`PercentilePruner`](super::PercentilePruner): from step `n_warmup_steps` on, at the first
/// reported step at or after each checkpoint `n_warmup_steps + k * interval_steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdPruner {
    lower: f64,
    upper: f64,
    n_warmup_steps: i64,
    interval_steps: i64,
}

impl ThresholdPruner {
    /// At least one of `lower` / `upper` (a missing one is unbounded), not NaN, with
    /// `lower <= upper`; `n_warmup_steps >= 0`; `interval_steps >= 1` (Optuna's defaults:
    /// `None, None, 0, 1`).
    pub fn new(
        lower: Option<f64>,
        upper: Option<f64>,
        n_warmup_steps: i64,
        interval_steps: i64,
    ) -> Result<Self, OptimizerError> {
        if lower.is_none() && upper.is_none() {
            return Err(OptimizerError::arg(
                "lower",
                "None",
                "either lower or upper must be specified",
            ));
        }
        if let Some(l) = lower.filter(|l| l.is_nan()) {
            return Err(OptimizerError::arg("lower", l, "must be a number, not NaN"));
        }
        if let Some(u) = upper.filter(|u| u.is_nan()) {
            return Err(OptimizerError::arg("upper", u, "must be a number, not NaN"));
        }
        let lower = lower.unwrap_or(f64::NEG_INFINITY);
        let upper = upper.unwrap_or(f64::INFINITY);
        if lower > upper {
            return Err(OptimizerError::arg(
                "lower",
                lower,
                format!("must not exceed upper ({upper})"),
            ));
        }
        check_at_least(
            "n_warmup_steps",
            n_warmup_steps,
            0,
            "the number of warmup steps",
        )?;
        check_at_least("interval_steps", interval_steps, 1, "the pruning interval")?;
        Ok(ThresholdPruner {
            lower,
            upper,
            n_warmup_steps,
            interval_steps,
        })
    }
}

impl Pruner for ThresholdPruner {
    fn prune(&self, history: &History, trial: u64) -> bool {
        let Some((t, _)) = target(history, trial) else {
            return false;
        };
        let Some((step, latest)) = t.last_step() else {
            return false;
        };
        if step < self.n_warmup_steps {
            return false;
        }
        if !is_first_in_interval_step(step, t, self.n_warmup_steps, self.interval_steps) {
            return false;
        }
        latest.is_nan() || latest < self.lower || latest > self.upper
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_scenarios, history};
    use super::*;
    use crate::trial::StudyDirection;
    use crate::trial::TrialState::Running;

    #[test]
    fn matches_optuna_on_scripted_studies() {
        check_scenarios("threshold");
    }

    #[test]
    fn bounds_warmup_and_interval() {
        // Same decisions as Optuna 5.0's ThresholdPruner on these single-trial histories.
        let p = ThresholdPruner::new(Some(0.0), Some(1.0), 2, 3).unwrap();
        let decide = |iv: &[(i64, f64)]| {
            p.prune(
                &history(StudyDirection::Minimize, &[(Running, None, iv)]),
                0,
            )
        };
        assert!(!decide(&[(1, 5.0)]), "warmup");
        assert!(decide(&[(2, 5.0)]));
        assert!(decide(&[(2, -0.5)]));
        assert!(!decide(&[(2, 1.0)]), "bounds are inclusive");
        assert!(decide(&[(2, f64::NAN)]));
        assert!(
            !decide(&[(2, 0.5), (3, 5.0)]),
            "step 3 is inside the interval started at 2"
        );
        assert!(
            decide(&[(2, 0.5), (6, 5.0)]),
            "step 6 is past checkpoint 5, first there"
        );
        assert!(
            !decide(&[(5, 0.5), (6, 5.0)]),
            "checkpoint 5 already checked"
        );
        let upper_only = ThresholdPruner::new(None, Some(1.0), 0, 1).unwrap();
        let h = history(StudyDirection::Maximize, &[(Running, None, &[(0, -1e300)])]);
        assert!(!upper_only.prune(&h, 0));
        assert!(!upper_only.prune(&History::new(vec![StudyDirection::Minimize]), 0));
    }

    #[test]
    fn validation_names_the_argument() {
        let e = |r: Result<ThresholdPruner, OptimizerError>| r.unwrap_err().to_string();
        assert!(e(ThresholdPruner::new(None, None, 0, 1)).contains("lower or upper"));
        assert!(e(ThresholdPruner::new(Some(2.0), Some(1.0), 0, 1)).contains("lower=2"));
        assert!(e(ThresholdPruner::new(Some(f64::NAN), None, 0, 1)).contains("lower=NaN"));
        assert!(e(ThresholdPruner::new(None, Some(f64::NAN), 0, 1)).contains("upper=NaN"));
        assert!(e(ThresholdPruner::new(Some(0.0), None, -1, 1)).contains("n_warmup_steps=-1"));
        assert!(e(ThresholdPruner::new(Some(0.0), None, 0, 0)).contains("interval_steps=0"));
        assert!(ThresholdPruner::new(Some(1.0), Some(1.0), 0, 1).is_ok());
    }
}
