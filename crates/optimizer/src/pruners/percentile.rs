//! Percentile and median stopping rules.

use super::{check_at_least, is_first_in_interval_step, target, Pruner};
use crate::error::OptimizerError;
use crate::history::History;
use crate::trial::{StudyDirection, TrialState};

/// Prunes a trial whose best intermediate value so far is worse than the given percentile of the
/// values that COMPLETE trials reported at the same step (Optuna's `PercentilePruner`).
///
/// - Pruning is off while fewer than `n_startup_trials` trials are COMPLETE (or none is), and
///   while the current (last reported) step is below `n_warmup_steps`.
/// - Checks happen at the first reported step at or after each checkpoint
///   `n_warmup_steps + k * interval_steps`.
/// - When fewer than `n_min_trials` COMPLETE trials reported a value at the current step, the
///   trial is kept.
/// - NaN: a trial whose intermediate values are all NaN is pruned; NaN values of the COMPLETE
///   trials are ignored by the percentile (but count for `n_min_trials`, as in Optuna).
///
/// The percentile is NumPy's linear interpolation; for a maximized study the trial is compared
/// with the `100 - percentile` percentile, so `percentile` always names the kept top share.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentilePruner {
    percentile: f64,
    n_startup_trials: i64,
    n_warmup_steps: i64,
    interval_steps: i64,
    n_min_trials: i64,
}

impl PercentilePruner {
    /// `percentile` in [0, 100]; `n_startup_trials >= 0`; `n_warmup_steps >= 0`;
    /// `interval_steps >= 1`; `n_min_trials >= 1` (Optuna's defaults: 5, 0, 1, 1).
    pub fn new(
        percentile: f64,
        n_startup_trials: i64,
        n_warmup_steps: i64,
        interval_steps: i64,
        n_min_trials: i64,
    ) -> Result<Self, OptimizerError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(OptimizerError::arg(
                "percentile",
                percentile,
                "must be between 0 and 100 inclusive",
            ));
        }
        check_at_least(
            "n_startup_trials",
            n_startup_trials,
            0,
            "the number of startup trials",
        )?;
        check_at_least(
            "n_warmup_steps",
            n_warmup_steps,
            0,
            "the number of warmup steps",
        )?;
        check_at_least("interval_steps", interval_steps, 1, "the pruning interval")?;
        check_at_least(
            "n_min_trials",
            n_min_trials,
            1,
            "the minimum number of trials reporting at a step",
        )?;
        Ok(PercentilePruner {
            percentile,
            n_startup_trials,
            n_warmup_steps,
            interval_steps,
            n_min_trials,
        })
    }

    /// The percentile this pruner keeps.
    pub fn percentile(&self) -> f64 {
        self.percentile
    }
}

impl Pruner for PercentilePruner {
    fn prune(&self, history: &History, trial: u64) -> bool {
        let Some((t, direction)) = target(history, trial) else {
            return false;
        };
        let completed = || {
            history
                .trials()
                .iter()
                .filter(|c| c.state == TrialState::Complete)
        };
        let n_completed = completed().count();
        if n_completed == 0 || (n_completed as u64) < self.n_startup_trials as u64 {
            return false;
        }
        let Some((step, _)) = t.last_step() else {
            return false;
        };
        if step < self.n_warmup_steps {
            return false;
        }
        if !is_first_in_interval_step(step, t, self.n_warmup_steps, self.interval_steps) {
            return false;
        }
        let Some(best) = best_over_steps(t.intermediate_values.values().copied(), direction) else {
            return true; // every reported value is NaN
        };
        let at_step: Vec<f64> = completed()
            .filter_map(|c| c.intermediate_values.get(&step).copied())
            .collect();
        if (at_step.len() as u64) < self.n_min_trials as u64 {
            return false;
        }
        let q = match direction {
            StudyDirection::Minimize => self.percentile,
            StudyDirection::Maximize => 100.0 - self.percentile,
        };
        let p = nan_percentile(at_step, q);
        if p.is_nan() {
            return false;
        }
        match direction {
            StudyDirection::Minimize => best > p,
            StudyDirection::Maximize => best < p,
        }
    }
}

/// Prunes a trial whose best intermediate value is worse than the median of the COMPLETE trials'
/// values at the same step: [`PercentilePruner`] at 50 (Optuna's `MedianPruner`).
#[derive(Debug, Clone, PartialEq)]
pub struct MedianPruner(PercentilePruner);

impl MedianPruner {
    /// Same arguments and rules as [`PercentilePruner::new`] without the percentile
    /// (Optuna's defaults: `n_startup_trials=5, n_warmup_steps=0, interval_steps=1, n_min_trials=1`).
    pub fn new(
        n_startup_trials: i64,
        n_warmup_steps: i64,
        interval_steps: i64,
        n_min_trials: i64,
    ) -> Result<Self, OptimizerError> {
        PercentilePruner::new(
            50.0,
            n_startup_trials,
            n_warmup_steps,
            interval_steps,
            n_min_trials,
        )
        .map(MedianPruner)
    }
}

impl Pruner for MedianPruner {
    fn prune(&self, history: &History, trial: u64) -> bool {
        self.0.prune(history, trial)
    }
}

/// Best (NaN-ignoring) value over steps, None when all are NaN or there are none.
fn best_over_steps(values: impl Iterator<Item = f64>, direction: StudyDirection) -> Option<f64> {
    values
        .filter(|v| !v.is_nan())
        .reduce(|a, b| if direction.better(b, a) { b } else { a })
}

/// `numpy.nanpercentile(values, q)` with the default linear method: NaN when no value is left
/// after dropping NaNs.
fn nan_percentile(mut values: Vec<f64>, q: f64) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return values[n - 1];
    }
    let prev = virtual_index.floor();
    let gamma = virtual_index - prev;
    let i = prev as usize;
    let (a, b) = (values[i], values[i + 1]);
    // NumPy's _lerp: the formula switches end at gamma 0.5 for accuracy.
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{add, check_scenarios};
    use super::*;
    use crate::trial::TrialState::{Complete, Pruned, Running};

    #[test]
    fn matches_optuna_on_scripted_studies() {
        check_scenarios("median");
        check_scenarios("percentile");
    }

    #[test]
    fn nan_percentile_matches_numpy() {
        // numpy 2.4: np.nanpercentile([3, nan, 1, 2, 10], q) for q in (0, 25, 50, 90, 100)
        let v = vec![3.0, f64::NAN, 1.0, 2.0, 10.0];
        let got: Vec<f64> = [0.0, 25.0, 50.0, 90.0, 100.0]
            .iter()
            .map(|&q| nan_percentile(v.clone(), q))
            .collect();
        assert_eq!(got, vec![1.0, 1.75, 2.5, 7.900000000000001, 10.0]);
        assert!(nan_percentile(vec![f64::NAN], 50.0).is_nan());
    }

    // Expected values below: Optuna 5.0 `MedianPruner(...).prune(study, trial)` on the same
    // histories built with `study.add_trial(create_trial(...))` (see tests/data/pruners_optuna.py
    // for the scripted variant of these cases).
    #[test]
    fn median_hand_built_histories() {
        // Five COMPLETE trials at 1..5 on steps 0 and 1, a PRUNED one, then the probe (trial 6).
        let specs = |dir: StudyDirection, extra: &[(i64, f64)]| {
            let mut h = History::new(vec![dir]);
            for v in [1.0, 2.0, 3.0, 4.0, 5.0] {
                add(&mut h, Complete, Some(v), &[(0, v), (1, v)]);
            }
            add(&mut h, Pruned, None, &[(0, 0.0)]);
            add(&mut h, Running, None, extra);
            h
        };
        let p = MedianPruner::new(5, 0, 1, 1).unwrap();
        // The median at step 1 is 3; the trial's best value over its steps is compared with it
        // (so 9.0 then 2.5 is kept when maximizing); all-NaN is pruned, NaN is skipped.
        for (iv, minimize, maximize) in [
            (vec![(0, 9.0), (1, 3.5)], true, false),
            (vec![(0, 9.0), (1, 2.5)], false, false),
            (vec![(0, 2.0), (1, 3.5)], false, false),
            (vec![(0, f64::NAN), (1, f64::NAN)], true, true),
            (vec![(0, f64::NAN), (1, 3.5)], true, false),
        ] {
            for (dir, expect) in [
                (StudyDirection::Minimize, minimize),
                (StudyDirection::Maximize, maximize),
            ] {
                let h = specs(dir, &iv);
                assert_eq!(p.prune(&h, 6), expect, "{iv:?} {dir:?}");
            }
        }
        // Startup: 5 COMPLETE trials needed, the PRUNED one does not count.
        let p6 = MedianPruner::new(6, 0, 1, 1).unwrap();
        let h = specs(StudyDirection::Minimize, &[(0, 9.0), (1, 9.0)]);
        assert!(!p6.prune(&h, 6));
        // n_min_trials above the number of reports at step 1.
        let p_min = MedianPruner::new(0, 0, 1, 6).unwrap();
        assert!(!p_min.prune(&h, 6));
        assert!(!p.prune(&h, 42), "unknown trial");
    }

    #[test]
    fn validation_names_the_argument() {
        let e = PercentilePruner::new(101.0, 5, 0, 1, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("percentile=101"), "{e}");
        assert!(PercentilePruner::new(f64::NAN, 5, 0, 1, 1).is_err());
        assert!(PercentilePruner::new(-0.5, 5, 0, 1, 1).is_err());
        for (args, name) in [
            ((-1, 0, 1, 1), "n_startup_trials=-1"),
            ((5, -1, 1, 1), "n_warmup_steps=-1"),
            ((5, 0, 0, 1), "interval_steps=0"),
            ((5, 0, 1, 0), "n_min_trials=0"),
        ] {
            let e = MedianPruner::new(args.0, args.1, args.2, args.3)
                .unwrap_err()
                .to_string();
            assert!(e.contains(name), "{e}");
        }
        assert!(PercentilePruner::new(0.0, 0, 0, 1, 1).is_ok());
        assert!(PercentilePruner::new(100.0, 0, 0, 1, 1).is_ok());
    }
}
