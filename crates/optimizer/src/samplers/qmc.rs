//! Optuna's `QMCSampler`: quasi-Monte Carlo points (Sobol or Halton) over the search space of
//! the first completed trial, for space-filling starts and baselines.
//!
//! Trial `t` takes point `t - f - 1` of the sequence, `f` the number of the first COMPLETE
//! trial (the trials before it, and parameters outside its search space, come from the
//! independent sampler): a trial's point depends only on its number, so concurrent trials
//! never share one. Each parameter is one dimension of the unit cube (a categorical one is
//! its choice index; Optuna gives it one dimension per choice).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::RngExt;

use super::{RandomSampler, Sampler};
use crate::distributions::Distribution;
use crate::error::OptimizerError;
use crate::history::{History, SearchSpace};
use crate::rng::{fresh_seed, trial_rng};
use crate::trial::TrialState;

/// The low-discrepancy sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QmcKind {
    /// Sobol's sequence (Joe and Kuo's direction numbers, up to 1,000 dimensions).
    Sobol,
    /// Halton's sequence (one prime base per dimension).
    Halton,
}

/// Bits of a point's coordinates (an f64's significand).
const BITS: usize = 53;

/// Joe and Kuo's direction numbers, unpacked once.
fn sobol_params() -> &'static sobol::params::JoeKuoD6 {
    static PARAMS: OnceLock<sobol::params::JoeKuoD6> = OnceLock::new();
    PARAMS.get_or_init(sobol::params::JoeKuoD6::standard)
}

/// A sequence for `d` dimensions, scrambled or not: computes its `k`-th point directly.
#[derive(Debug)]
enum Sequence {
    /// Per dimension, the direction numbers (top bits of a u64) and the digital shift.
    Sobol(Vec<(Vec<u64>, u64)>),
    /// Per dimension, the base and one permutation of the digits per digit position (empty
    /// when not scrambled).
    Halton(Vec<(u64, Vec<Vec<u64>>)>),
}

impl Sequence {
    fn new(kind: QmcKind, d: usize, scramble: bool, rng: &mut SmallRng) -> Option<Sequence> {
        match kind {
            QmcKind::Sobol => {
                if d > sobol_params().max_dims {
                    return None;
                }
                let dirs = sobol::Sobol::<f64>::init_direction_vals::<u32>(d, BITS, sobol_params());
                Some(Sequence::Sobol(
                    dirs.into_iter()
                        .map(|v| {
                            if !scramble {
                                return (v, 0);
                            }
                            // Linear matrix scramble (a random lower-triangular binary matrix
                            // with a unit diagonal, row r a mask of bits 0..=r from the top)
                            // and a random digital shift.
                            let rows: Vec<u64> = (0..BITS)
                                .map(|r| {
                                    let below = if r == 0 {
                                        0
                                    } else {
                                        rng.random::<u64>() & !(u64::MAX >> r)
                                    };
                                    below | (1u64 << (63 - r))
                                })
                                .collect();
                            let scrambled = v
                                .iter()
                                .map(|&dir| {
                                    rows.iter().enumerate().fold(0u64, |acc, (r, row)| {
                                        acc | (u64::from((row & dir).count_ones() & 1) << (63 - r))
                                    })
                                })
                                .collect();
                            (scrambled, rng.random::<u64>() & !(u64::MAX >> BITS))
                        })
                        .collect(),
                ))
            }
            QmcKind::Halton => Some(Sequence::Halton(
                primes(d)
                    .into_iter()
                    .map(|p| {
                        let digits = (BITS as f64 / (p as f64).log2()).floor() as usize;
                        let perms = if scramble {
                            (0..digits)
                                .map(|_| {
                                    let mut perm: Vec<u64> = (0..p).collect();
                                    perm.shuffle(rng);
                                    perm
                                })
                                .collect()
                        } else {
                            Vec::new()
                        };
                        (p, perms)
                    })
                    .collect(),
            )),
        }
    }

    /// The `k`-th point, in [0, 1)^d.
    fn point(&self, k: u64) -> Vec<f64> {
        match self {
            Sequence::Sobol(dims) => {
                let gray = k ^ (k >> 1);
                dims.iter()
                    .map(|(dirs, shift)| {
                        let v = dirs
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| gray >> i & 1 == 1)
                            .fold(*shift, |acc, (_, d)| acc ^ d);
                        (v >> (64 - BITS)) as f64 / (1u64 << BITS) as f64
                    })
                    .collect()
            }
            Sequence::Halton(dims) => dims
                .iter()
                .map(|(p, perms)| {
                    let (mut n, mut scale, mut u) = (k, 1.0 / *p as f64, 0.0);
                    if perms.is_empty() {
                        while n > 0 {
                            u += (n % p) as f64 * scale;
                            n /= p;
                            scale /= *p as f64;
                        }
                    } else {
                        // Every digit position is permuted, the leading zeros too.
                        for perm in perms {
                            u += perm[(n % p) as usize] as f64 * scale;
                            n /= p;
                            scale /= *p as f64;
                        }
                    }
                    u.min(1.0 - f64::EPSILON)
                })
                .collect(),
        }
    }
}

/// The first `d` primes.
fn primes(d: usize) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::with_capacity(d);
    let mut n = 2u64;
    while out.len() < d {
        if out.iter().take_while(|p| *p * *p <= n).all(|p| n % p != 0) {
            out.push(n);
        }
        n += 1;
    }
    out
}

/// `u` in [0, 1) as an internal value of `dist` (a log range uniformly in log space, a grid
/// in equal shares per value, a categorical parameter as its choice index).
fn from_unit(u: f64, dist: &Distribution) -> f64 {
    let share = |n: u64| ((u * (n as f64 + 1.0)).floor() as u64).min(n);
    match dist {
        Distribution::Categorical(c) => share(c.choices.len().saturating_sub(1) as u64) as f64,
        Distribution::Int(d) if d.log => {
            let (lo, hi) = ((d.low as f64 - 0.5).ln(), (d.high as f64 + 0.5).ln());
            d.nearest((lo + u * (hi - lo)).exp()) as f64
        }
        Distribution::Int(d) => d.value_at(share(d.n_steps())) as f64,
        Distribution::Float(d) => match d.step {
            Some(step) => {
                let n = ((d.high - d.low) / step).round().max(0.0) as u64;
                (d.low + share(n) as f64 * step).min(d.high)
            }
            None if d.log => (d.low.ln() + u * (d.high.ln() - d.low.ln()))
                .exp()
                .clamp(d.low, d.high),
            None => (d.low + u * (d.high - d.low)).clamp(d.low, d.high),
        },
    }
}

/// Quasi-Monte Carlo sampling (Optuna's `QMCSampler`).
#[derive(Debug, Clone)]
pub struct QmcSampler {
    kind: QmcKind,
    scramble: bool,
    seed: u64,
    independent: Arc<dyn Sampler>,
    /// The first completed trial's number and search space, once there is one.
    initial: Arc<Mutex<Option<(u64, SearchSpace)>>>,
    /// The sequence for the initial search space's dimension.
    sequence: Arc<OnceLock<Option<Sequence>>>,
}

impl QmcSampler {
    /// The sampler; `independent` samples what the sequence does not (default: random with
    /// the same seed).
    pub fn new(
        kind: QmcKind,
        scramble: bool,
        seed: Option<u64>,
        independent: Option<Arc<dyn Sampler>>,
    ) -> Result<Self, OptimizerError> {
        let seed = seed.unwrap_or_else(fresh_seed);
        Ok(QmcSampler {
            kind,
            scramble,
            seed,
            independent: independent.unwrap_or_else(|| Arc::new(RandomSampler::new(Some(seed)))),
            initial: Arc::default(),
            sequence: Arc::default(),
        })
    }

    fn initial(&self, history: &History) -> Option<(u64, SearchSpace)> {
        let mut initial = self.initial.lock();
        if initial.is_none() {
            *initial = history
                .trials()
                .iter()
                .filter(|t| t.state == TrialState::Complete)
                .min_by_key(|t| t.number)
                .map(|t| {
                    let mut space: SearchSpace = (*t.distributions).clone();
                    space.retain(|_, d| !d.single());
                    (t.number, space)
                });
        }
        initial.clone()
    }
}

impl Sampler for QmcSampler {
    fn infer_relative_search_space(&self, history: &History, trial: u64) -> SearchSpace {
        match self.initial(history) {
            Some((first, space)) if trial > first => space,
            _ => SearchSpace::new(),
        }
    }

    fn sample_relative(
        &self,
        history: &History,
        trial: u64,
        space: &SearchSpace,
    ) -> BTreeMap<String, f64> {
        let Some((first, initial)) = self.initial(history) else {
            return BTreeMap::new();
        };
        if space.is_empty() || trial <= first {
            return BTreeMap::new();
        }
        let sequence = self.sequence.get_or_init(|| {
            let mut rng = trial_rng(self.seed, 0, "qmc");
            let seq = Sequence::new(self.kind, initial.len(), self.scramble, &mut rng);
            if seq.is_none() {
                tracing::warn!(
                    "QMCSampler: {} dimensions is more than the Sobol sequence supports; sampling independently",
                    initial.len()
                );
            }
            seq
        });
        let Some(sequence) = sequence else {
            return BTreeMap::new();
        };
        let point = sequence.point(trial - first - 1);
        initial
            .iter()
            .zip(point)
            .filter(|((name, _), _)| space.contains_key(*name))
            .map(|((name, dist), u)| (name.clone(), from_unit(u, dist)))
            .collect()
    }

    fn independent_sampler(&self) -> Option<&dyn Sampler> {
        Some(self.independent.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// In each dimension, the first 2^m points of a Sobol sequence (and a scrambled one) put
    /// exactly one point in each of the 2^m equal bins: the property that makes it
    /// space-filling.
    #[test]
    fn sobol_points_stratify_each_dimension() {
        for scramble in [false, true] {
            let mut rng = SmallRng::seed_from_u64(1);
            let seq = Sequence::new(QmcKind::Sobol, 5, scramble, &mut rng).unwrap();
            let points: Vec<Vec<f64>> = (0..64).map(|k| seq.point(k)).collect();
            for j in 0..5 {
                let mut bins = vec![0; 64];
                for p in &points {
                    assert!((0.0..1.0).contains(&p[j]));
                    bins[(p[j] * 64.0) as usize] += 1;
                }
                assert!(
                    bins.iter().all(|b| *b == 1),
                    "scramble={scramble} dim {j}: {bins:?}"
                );
            }
            if !scramble {
                assert_eq!(points[0], vec![0.0; 5]);
                assert_eq!(points[1], vec![0.5; 5]);
            }
        }
    }

    #[test]
    fn halton_points_are_radical_inverses() {
        let mut rng = SmallRng::seed_from_u64(1);
        let seq = Sequence::new(QmcKind::Halton, 3, false, &mut rng).unwrap();
        // 5 is 101 in base 2, 12 in base 3, 10 in base 5: digits mirrored after the point.
        for (k, want) in [(1, [0.5, 1.0 / 3.0, 0.2]), (5, [0.625, 7.0 / 9.0, 0.04])] {
            for (got, want) in seq.point(k).iter().zip(want) {
                assert!((got - want).abs() < 1e-12, "point {k}: {got} != {want}");
            }
        }
        // Scrambled: still one point per bin of width 1/3 in base 3 for the first 3^2 points.
        let scrambled = Sequence::new(QmcKind::Halton, 2, true, &mut rng).unwrap();
        let mut bins = vec![0; 9];
        for k in 0..9 {
            bins[(scrambled.point(k)[1] * 9.0) as usize] += 1;
        }
        assert!(bins.iter().all(|b| *b == 1), "{bins:?}");
        assert_eq!(primes(6), vec![2, 3, 5, 7, 11, 13]);
    }
}
