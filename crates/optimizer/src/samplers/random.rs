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
    /// A random sampler with this seed (None: a fresh random seed); draws are reproducible
    /// per trial for a given seed.
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
            // Uniform in log space over [low - 0.5, high + 0.5], rounded (Optuna's way). Near
            // 2^63 a short range can be empty in log space: it is then sampled uniformly, which
            // is what log-uniform is on so narrow a range.
            let log_range = d
                .log
                .then(|| ((d.low as f64 - 0.5).ln(), (d.high as f64 + 0.5).ln()))
                .filter(|(lo, hi)| lo < hi);
            if let Some((lo, hi)) = log_range {
                let v = rng.random_range(lo..hi).exp();
                d.nearest(v) as f64
            } else {
                let k = rng.random_range(0..=d.n_steps());
                d.value_at(k) as f64
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
pub(crate) mod tests {
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

    /// Ranges at the ends of i64, where `high - low` overflows i64.
    pub(crate) fn extreme_int_dists() -> Vec<IntDistribution> {
        vec![
            IntDistribution::new(i64::MIN, i64::MAX, false, 1).unwrap(),
            IntDistribution::new(i64::MIN, i64::MAX, false, 1 << 62).unwrap(),
            IntDistribution::new(i64::MIN, i64::MAX, false, i64::MAX).unwrap(),
            IntDistribution::new(i64::MAX - 1, i64::MAX, false, 1).unwrap(),
            IntDistribution::new(i64::MIN, i64::MIN + 1, false, 1).unwrap(),
            IntDistribution::new(1, i64::MAX, true, 1).unwrap(),
            IntDistribution::new(i64::MAX - 1000, i64::MAX, true, 1).unwrap(),
            IntDistribution::new((1 << 60) + 1, (1 << 60) + 9, false, 2).unwrap(),
        ]
    }

    /// The external value of `internal`, checked to lie in `d` and on its step grid.
    pub(crate) fn external_on_grid(d: &IntDistribution, internal: f64) -> i64 {
        let dist = Distribution::Int(d.clone());
        assert!(dist.contains(internal), "{internal} not in {d:?}");
        let ParamValue::Int(x) = dist.to_external(internal) else {
            panic!("not an int")
        };
        assert!(d.low <= x && x <= d.high, "{x} outside {d:?}");
        assert_eq!(
            (i128::from(x) - i128::from(d.low)) % i128::from(d.step),
            0,
            "{x} off {d:?}"
        );
        x
    }

    #[test]
    fn random_ints_at_the_ends_of_i64_are_in_range_and_on_the_grid() {
        let h = History::new(vec![StudyDirection::Minimize]);
        let s = RandomSampler::new(Some(11));
        for d in extreme_int_dists() {
            let dist = Distribution::Int(d.clone());
            let mut seen = std::collections::BTreeSet::new();
            for t in 0..300 {
                let v = s.sample_independent(&h, t, "p", &dist);
                seen.insert(external_on_grid(&d, v));
            }
            // Ints near 2^63 that share one f64 (internal value) come back as one of them.
            if d.low as f64 != d.high as f64 {
                assert!(seen.len() > 1, "{d:?}: {seen:?}");
            }
        }
        // Every value of a coarse full-width grid comes up.
        let d = IntDistribution::new(i64::MIN, i64::MAX, false, 1 << 62).unwrap();
        let dist = Distribution::Int(d.clone());
        let seen: std::collections::BTreeSet<i64> = (0..200)
            .map(|t| external_on_grid(&d, s.sample_independent(&h, t, "p", &dist)))
            .collect();
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![i64::MIN, -(1 << 62), 0, 1 << 62]
        );
    }
}
