//! Patience: prune only a trial that stopped improving.

use super::{target, Pruner};
use crate::error::OptimizerError;
use crate::history::History;
use crate::trial::StudyDirection;

/// Optuna's `PatientPruner`: a trial "lost patience" when the best of its last `patience + 1`
/// intermediate values is not better, by more than `min_delta`, than the best of the values
/// before them (NaN values ignored; nothing is decided with `patience + 1` values or fewer, or
/// when either side is all NaN). Then the wrapped pruner decides, or the trial is pruned when
/// there is none. Otherwise the trial is kept.
#[derive(Debug)]
pub struct PatientPruner {
    wrapped: Option<Box<dyn Pruner>>,
    patience: i64,
    min_delta: f64,
}

impl PatientPruner {
    /// `wrapped`: the pruner asked once patience is lost (None: prune then); `patience >= 0`;
    /// `min_delta >= 0`, not NaN (Optuna's default 0.0).
    pub fn new(
        wrapped: Option<Box<dyn Pruner>>,
        patience: i64,
        min_delta: f64,
    ) -> Result<Self, OptimizerError> {
        if patience < 0 {
            return Err(OptimizerError::arg(
                "patience",
                patience,
                "cannot be negative",
            ));
        }
        if min_delta.is_nan() || min_delta < 0.0 {
            return Err(OptimizerError::arg(
                "min_delta",
                min_delta,
                "must be a non-negative number",
            ));
        }
        Ok(PatientPruner {
            wrapped,
            patience,
            min_delta,
        })
    }
}

impl Pruner for PatientPruner {
    fn prune(&self, history: &History, trial: u64) -> bool {
        let Some((t, direction)) = target(history, trial) else {
            return false;
        };
        let values: Vec<f64> = t.intermediate_values.values().copied().collect();
        let window = usize::try_from(self.patience)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if values.len() <= window {
            return false;
        }
        let (before, after) = values.split_at(values.len() - window);
        let best = |vs: &[f64]| {
            vs.iter().copied().filter(|v| !v.is_nan()).reduce(|a, b| {
                if direction.better(b, a) {
                    b
                } else {
                    a
                }
            })
        };
        let (Some(b), Some(a)) = (best(before), best(after)) else {
            return false;
        };
        let lost_patience = match direction {
            StudyDirection::Minimize => b + self.min_delta < a,
            StudyDirection::Maximize => b - self.min_delta > a,
        };
        if !lost_patience {
            return false;
        }
        match &self.wrapped {
            Some(p) => p.prune(history, trial),
            None => true,
        }
    }

    fn for_study(&self, study_name: &str) -> Option<Box<dyn Pruner>> {
        let wrapped = self.wrapped.as_ref()?.for_study(study_name)?;
        Some(Box::new(PatientPruner {
            wrapped: Some(wrapped),
            patience: self.patience,
            min_delta: self.min_delta,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_scenarios, history, Spec};
    use super::super::{MedianPruner, NopPruner};
    use super::*;
    use crate::trial::TrialState::{Complete, Running};

    #[test]
    fn matches_optuna_on_scripted_studies() {
        check_scenarios("patient");
    }

    #[test]
    fn a_wrapped_hyperband_is_bound_to_the_study_name() {
        use super::super::HyperbandPruner;
        let hb = HyperbandPruner::new(1, Some(9), 3, 0).unwrap();
        let patient = PatientPruner::new(Some(Box::new(hb)), 1, 0.0).unwrap();
        assert!(patient.for_study("s").is_some());
        let median = MedianPruner::new(5, 0, 1, 1).unwrap();
        let median = PatientPruner::new(Some(Box::new(median)), 1, 0.0).unwrap();
        assert!(median.for_study("s").is_none());
    }

    #[test]
    fn patience_window_and_inner_pruner() {
        // Optuna 5.0 PatientPruner(None, patience=2, min_delta=...) on the same values.
        let h = |dir, iv: &[(i64, f64)]| history(dir, &[(Running, None, iv)]);
        let stalled = [(0, 1.0), (1, 2.0), (2, 1.5), (3, 1.2)];
        let p = PatientPruner::new(None, 2, 0.0).unwrap();
        assert!(p.prune(&h(StudyDirection::Minimize, &stalled), 0));
        assert!(
            !p.prune(&h(StudyDirection::Minimize, &stalled[..3]), 0),
            "needs patience + 2 values"
        );
        assert!(
            !p.prune(&h(StudyDirection::Maximize, &stalled), 0),
            "2.0 improved on 1.0"
        );
        assert!(!PatientPruner::new(None, 2, 0.5)
            .unwrap()
            .prune(&h(StudyDirection::Minimize, &stalled), 0));
        let nan_before = [(0, f64::NAN), (1, 2.0), (2, 1.5), (3, 1.2)];
        assert!(
            !p.prune(&h(StudyDirection::Minimize, &nan_before), 0),
            "all-NaN side decides nothing"
        );
        // With an inner pruner, its decision is final once patience is lost.
        let nop = PatientPruner::new(Some(Box::new(NopPruner)), 2, 0.0).unwrap();
        assert!(!nop.prune(&h(StudyDirection::Minimize, &stalled), 0));
        let median = PatientPruner::new(
            Some(Box::new(MedianPruner::new(1, 0, 1, 1).unwrap())),
            2,
            0.0,
        )
        .unwrap();
        let good: Vec<(i64, f64)> = (0..4).map(|s| (s, 0.0)).collect();
        let mut specs: Vec<Spec<'_>> = vec![(Complete, Some(0.0), &good)];
        specs.push((Running, None, &stalled));
        assert!(median.prune(&history(StudyDirection::Minimize, &specs), 1));
        specs[0] = (Complete, Some(9.0), &[(3, 9.0)]);
        assert!(!median.prune(&history(StudyDirection::Minimize, &specs), 1));
    }

    #[test]
    fn validation_names_the_argument() {
        let e = PatientPruner::new(None, -1, 0.0).unwrap_err().to_string();
        assert!(e.contains("patience=-1"), "{e}");
        let e = PatientPruner::new(None, 1, -0.1).unwrap_err().to_string();
        assert!(e.contains("min_delta=-0.1"), "{e}");
        assert!(PatientPruner::new(None, 1, f64::NAN).is_err());
        assert!(PatientPruner::new(None, 0, 0.0).is_ok());
    }
}
