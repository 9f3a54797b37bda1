//! Optuna's `PartialFixedSampler`: some parameters fixed to given values, the others sampled
//! by a base sampler.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{IndependentWork, RelativeWork, Sampler};
use crate::distributions::{Distribution, ParamValue};
use crate::error::OptimizerError;
use crate::history::{History, SearchSpace};
use crate::trial::StudyDirection;

/// Fixes the parameters in `fixed` (external values) and leaves the rest to `base`: the fixed
/// ones are taken out of `base`'s relative search space, so it models only the free ones.
#[derive(Debug, Clone)]
pub struct PartialFixedSampler {
    fixed: BTreeMap<String, ParamValue>,
    base: Arc<dyn Sampler>,
}

impl PartialFixedSampler {
    /// The sampler fixing `fixed` on top of `base`.
    pub fn new(fixed: BTreeMap<String, ParamValue>, base: Arc<dyn Sampler>) -> Self {
        PartialFixedSampler { fixed, base }
    }

    /// The fixed value of `name` as an internal value of `dist`; None when `name` is free, or
    /// when its value is not one of `dist`'s (then logged, and `base` samples it).
    fn fixed_internal(&self, name: &str, dist: &Distribution) -> Option<f64> {
        let value = self.fixed.get(name)?;
        match dist.to_internal(value) {
            Ok(x) if dist.contains(x) => Some(x),
            Ok(_) => {
                tracing::warn!(
                    "fixed parameter {name:?} = {value} is outside {dist:?}; it is sampled instead"
                );
                None
            }
            Err(e) => {
                tracing::warn!("fixed parameter {name:?} = {value} does not fit {dist:?} ({e}); it is sampled instead");
                None
            }
        }
    }
}

impl Sampler for PartialFixedSampler {
    fn check_study(&self, directions: &[StudyDirection]) -> Result<(), OptimizerError> {
        self.base.check_study(directions)
    }

    fn infer_relative_search_space(&self, history: &History, trial: u64) -> SearchSpace {
        let mut space = self.base.infer_relative_search_space(history, trial);
        space.retain(|name, _| !self.fixed.contains_key(name));
        space
    }

    fn sample_relative(
        &self,
        history: &History,
        trial: u64,
        space: &SearchSpace,
    ) -> BTreeMap<String, f64> {
        self.base.sample_relative(history, trial, space)
    }

    fn prepare_relative(&self, history: &History, trial: u64, space: &SearchSpace) -> RelativeWork {
        self.base.prepare_relative(history, trial, space)
    }

    fn sample_independent(
        &self,
        history: &History,
        trial: u64,
        name: &str,
        dist: &Distribution,
    ) -> f64 {
        self.fixed_internal(name, dist)
            .unwrap_or_else(|| self.base.sample_independent(history, trial, name, dist))
    }

    fn prepare_independent(
        &self,
        history: &History,
        trial: u64,
        name: &str,
        dist: &Distribution,
    ) -> IndependentWork {
        match self.fixed_internal(name, dist) {
            Some(x) => Box::new(move || x),
            None => self.base.prepare_independent(history, trial, name, dist),
        }
    }

    fn fixed_params(&self, history: &History, trial: u64) -> Option<BTreeMap<String, ParamValue>> {
        // A base that fixes whole points (the grid) keeps them, except where this one fixes.
        let mut params = self.base.fixed_params(history, trial)?;
        params.retain(|name, _| !self.fixed.contains_key(name));
        Some(params)
    }

    fn is_exhausted(&self, history: &History) -> bool {
        self.base.is_exhausted(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::{CategoricalDistribution, FloatDistribution};
    use crate::samplers::{GridSampler, TpeOptions, TpeSampler};
    use crate::trial::{StudyDirection, TrialState};

    fn float(low: f64, high: f64) -> Distribution {
        Distribution::Float(FloatDistribution::new(low, high, false, None).unwrap())
    }

    #[test]
    fn fixed_parameters_keep_their_value_and_the_base_samples_the_rest() {
        let tpe = TpeSampler::new(TpeOptions {
            seed: Some(1),
            n_startup_trials: 3,
            ..TpeOptions::default()
        })
        .unwrap();
        let cat = Distribution::Categorical(
            CategoricalDistribution::new(vec![
                ParamValue::Str("a".into()),
                ParamValue::Str("b".into()),
            ])
            .unwrap(),
        );
        let sampler = PartialFixedSampler::new(
            [
                ("x".to_string(), ParamValue::Float(1.5)),
                ("c".to_string(), ParamValue::Str("b".into())),
                ("far".to_string(), ParamValue::Float(99.0)),
            ]
            .into(),
            Arc::new(tpe),
        );
        let mut h = History::new(vec![StudyDirection::Minimize]);
        let mut ys = Vec::new();
        for _ in 0..12 {
            let t = h.create_trial(TrialState::Running);
            let space = sampler.infer_relative_search_space(&h, t);
            assert!(!space.contains_key("x") && !space.contains_key("c"));
            let rel = sampler.sample_relative(&h, t, &space);
            h.set_relative_params(t, &rel, &space).unwrap();
            let mut y = 0.0;
            for (name, dist) in [
                ("x", float(-5.0, 5.0)),
                ("y", float(-5.0, 5.0)),
                ("c", cat.clone()),
                ("far", float(0.0, 1.0)),
            ] {
                let v = h
                    .pending_relative(t, name)
                    .unwrap_or_else(|| sampler.sample_independent(&h, t, name, &dist));
                assert!(dist.contains(v), "{name} = {v}");
                h.set_param(t, name, v, &dist).unwrap();
                y += v;
                if name == "x" {
                    assert_eq!(v, 1.5);
                }
                if name == "c" {
                    assert_eq!(v, 1.0); // index of "b"
                }
            }
            ys.push(h.trial(t).unwrap().params["y"]);
            h.finish(t, TrialState::Complete, Some(vec![y])).unwrap();
        }
        // "y" is sampled (not all equal), "far" out of range fell back to sampling.
        assert!(ys.iter().any(|v| *v != ys[0]));
    }

    #[test]
    fn a_grid_base_keeps_its_points_but_not_the_fixed_names() {
        let grid = GridSampler::new(
            [
                (
                    "a".to_string(),
                    vec![ParamValue::Int(1), ParamValue::Int(2)],
                ),
                ("b".to_string(), vec![ParamValue::Int(3)]),
            ]
            .into(),
            Some(0),
        )
        .unwrap();
        let sampler = PartialFixedSampler::new(
            [("b".to_string(), ParamValue::Int(7))].into(),
            Arc::new(grid),
        );
        let h = History::new(vec![StudyDirection::Minimize]);
        let fixed = sampler.fixed_params(&h, 0).unwrap();
        assert_eq!(fixed.keys().collect::<Vec<_>>(), ["a"]);
    }
}
