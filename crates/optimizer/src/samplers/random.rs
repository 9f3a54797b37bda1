//! Uniform random sampling (log-uniform for log parameters).

use rand::rngs::SmallRng;
use rand::RngExt;

use crate::distributions::Distribution;
use crate::history::History;
use crate::rng::{fresh_seed, trial_rng};
use crate::samplers::Sampler;

/// Samples every parameter independently and uniformly.
#[derive(Debug, Clone)]
pub struct RandomSampler {
    seed: u64,
}

impl RandomSampler {
    pub fn new(seed: Option<u64>) -> Self {
        RandomSampler {
            seed: seed.unwrap_or_else(fresh_seed),
        }
    }
}

/// One uniform draw from `dist` in internal representation.
pub(crate) fn sample_uniform(rng: &mut SmallRng, dist: &Distribution) -> f64 {
    match dist {
        Distribution::Float(d) => {
            if d.low == d.high {
                return d.low;
            }
            if d.log {
                let v = rng.random_range(d.low.ln()..d.high.ln()).exp();
                v.clamp(d.low, d.high)
            } else if let Some(step) = d.step {
                let n = ((d.high - d.low) / step).round() as u64;
                let k = rng.random_range(0..=n);
                (d.low + k as f64 * step).min(d.high)
            } else {
                rng.random_range(d.low..d.high)
            }
        }
        Distribution::Int(d) => {
            if d.log {
                // Uniform in log space over [low - 0.5, high + 0.5], rounded (Optuna's way).
                let lo = (d.low as f64 - 0.5).ln();
                let hi = (d.high as f64 + 0.5).ln();
                let v = rng.random_range(lo..hi).exp().round();
                v.clamp(d.low as f64, d.high as f64)
            } else {
                let n = (d.high - d.low) / d.step;
                let k = rng.random_range(0..=n);
                (d.low + k * d.step) as f64
            }
        }
        Distribution::Categorical(d) => rng.random_range(0..d.choices.len()) as f64,
    }
}

impl Sampler for RandomSampler {
    fn sample_independent(
        &self,
        _history: &History,
        trial: u64,
        name: &str,
        dist: &Distribution,
    ) -> f64 {
        sample_uniform(&mut trial_rng(self.seed, trial, name), dist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::*;
    use crate::trial::StudyDirection;

    #[test]
    fn random_values_are_in_range_and_deterministic() {
        let h = History::new(vec![StudyDirection::Minimize]);
        let s = RandomSampler::new(Some(3));
        let dists = [
            Distribution::Float(FloatDistribution::new(-2.0, 3.0, false, None).unwrap()),
            Distribution::Float(FloatDistribution::new(1e-5, 1.0, true, None).unwrap()),
            Distribution::Float(FloatDistribution::new(0.0, 1.0, false, Some(0.25)).unwrap()),
            Distribution::Int(IntDistribution::new(1, 1000, true, 1).unwrap()),
            Distribution::Int(IntDistribution::new(-3, 9, false, 3).unwrap()),
            Distribution::Categorical(
                CategoricalDistribution::new(vec![ParamValue::None, ParamValue::Int(1)]).unwrap(),
            ),
        ];
        for d in &dists {
            let mut seen = std::collections::BTreeSet::new();
            for t in 0..200 {
                let v = s.sample_independent(&h, t, "p", d);
                assert!(d.contains(v), "{v} not in {d:?}");
                assert_eq!(v, s.sample_independent(&h, t, "p", d));
                seen.insert(v.to_bits());
            }
            assert!(seen.len() > 1);
        }
    }
}
