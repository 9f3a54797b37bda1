//! Expected hypervolume improvement for several objectives (Optuna's `LogEHVI`): one process
//! per objective, each modelling a standardised objective to maximise; the improvement a point
//! brings is the volume it adds to what the finished trials dominate, up to a reference point
//! beyond the worst trial, averaged over fixed draws of the processes' independent posteriors.
//! The region the trials leave is cut into disjoint boxes once per sample, so a draw's
//! improvement is a sum of box volumes it covers and its gradient follows from the posteriors'.

use rand::rngs::SmallRng;
use rayon::prelude::*;

use super::model::Gp;
use crate::multi_objective::{non_dominated_boxes, reference_point};
use crate::rng::standard_normal;

/// Draws of the posteriors the expectation is averaged over (Optuna: 128).
const N_SAMPLES: usize = 128;
/// Added to each variance, as for log EI.
const STABILIZING_NOISE: f64 = 1e-12;
/// The log value where no draw improves on the trials (a finite floor the search can compare).
const NO_IMPROVEMENT: f64 = -1e4;

/// The acquisition's data: the processes, the boxes and the draws.
pub(crate) struct Ehvi<'a> {
    pub gps: Vec<&'a Gp>,
    /// Lower corner and width of each box, per objective (in the processes' units, larger is
    /// better; a width may be infinite).
    boxes: Vec<(Vec<f64>, Vec<f64>)>,
    /// `N_SAMPLES` standard normal draws per objective.
    z: Vec<Vec<f64>>,
}

impl<'a> Ehvi<'a> {
    /// `front` holds the feasible trials' standardised values (larger is better, one per
    /// process); None without any.
    pub fn new(gps: Vec<&'a Gp>, front: &[Vec<f64>], rng: &mut SmallRng) -> Option<Self> {
        if front.is_empty() {
            return None;
        }
        let losses: Vec<Vec<f64>> = front
            .iter()
            .map(|y| y.iter().map(|v| -v).collect())
            .collect();
        let reference = reference_point(&losses);
        let boxes = non_dominated_boxes(&losses, &reference)
            .into_iter()
            .map(|(lo, hi)| {
                let lower: Vec<f64> = hi.iter().map(|v| -v).collect();
                let width = lo.iter().zip(&lower).map(|(l, low)| -l - low).collect();
                (lower, width)
            })
            .collect();
        let m = front[0].len();
        let z = (0..N_SAMPLES)
            .map(|_| (0..m).map(|_| standard_normal(rng)).collect())
            .collect();
        Some(Ehvi { gps, boxes, z })
    }

    /// The mean improvement over the draws for posteriors `(mean, sd)` per objective, and, with
    /// `grad`, its derivative in each objective's mean and sd.
    fn expected(&self, post: &[(f64, f64)], mut grad: Option<&mut [(f64, f64)]>) -> f64 {
        let m = post.len();
        let mut total = 0.0;
        let mut y = vec![0.0; m];
        let mut c = vec![0.0; m];
        let mut dy = vec![0.0; m];
        for z in &self.z {
            for j in 0..m {
                y[j] = post[j].0 + post[j].1 * z[j];
            }
            dy.fill(0.0);
            for (lower, width) in &self.boxes {
                let mut volume = 1.0;
                for j in 0..m {
                    c[j] = (y[j] - lower[j]).clamp(0.0, width[j]);
                    volume *= c[j];
                }
                if volume == 0.0 && grad.is_none() {
                    continue;
                }
                total += volume;
                if grad.is_some() {
                    for j in 0..m {
                        if c[j] > 0.0 && c[j] < width[j] {
                            dy[j] += (0..m).filter(|&k| k != j).map(|k| c[k]).product::<f64>();
                        }
                    }
                }
            }
            if let Some(g) = grad.as_deref_mut() {
                for j in 0..m {
                    g[j].0 += dy[j];
                    g[j].1 += dy[j] * z[j];
                }
            }
        }
        let n = self.z.len() as f64;
        if let Some(g) = grad {
            for gj in g.iter_mut() {
                gj.0 /= n;
                gj.1 /= n;
            }
        }
        total / n
    }

    fn log(ehvi: f64) -> f64 {
        if ehvi > 0.0 {
            ehvi.ln()
        } else {
            NO_IMPROVEMENT
        }
    }

    /// Log expected hypervolume improvement at each of `xs`.
    pub fn eval_many(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        let posteriors: Vec<Vec<(f64, f64)>> =
            self.gps.iter().map(|gp| gp.posterior_many(xs)).collect();
        (0..xs.len())
            .into_par_iter()
            .map(|i| {
                let post: Vec<(f64, f64)> = posteriors
                    .iter()
                    .map(|p| (p[i].0, (p[i].1 + STABILIZING_NOISE).sqrt()))
                    .collect();
                Self::log(self.expected(&post, None))
            })
            .collect()
    }

    /// Log expected hypervolume improvement at `x`; its gradient is added to `grad`.
    pub fn eval_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let d = x.len();
        let mut gmeans = vec![vec![0.0; d]; self.gps.len()];
        let mut gsds = vec![vec![0.0; d]; self.gps.len()];
        let mut post = Vec::with_capacity(self.gps.len());
        for (j, gp) in self.gps.iter().enumerate() {
            let (mean, var) = gp.posterior_grad(x, &mut gmeans[j], &mut gsds[j]);
            let sd = (var + STABILIZING_NOISE).sqrt();
            for g in gsds[j].iter_mut() {
                *g /= 2.0 * sd;
            }
            post.push((mean, sd));
        }
        let mut dpost = vec![(0.0, 0.0); self.gps.len()];
        let ehvi = self.expected(&post, Some(&mut dpost));
        if ehvi > 0.0 {
            for (j, (dmean, dsd)) in dpost.iter().enumerate() {
                for p in 0..d {
                    grad[p] += (dmean * gmeans[j][p] + dsd * gsds[j][p]) / ehvi;
                }
            }
        }
        Self::log(ehvi)
    }

    /// Each parameter's shortest lengthscale among the processes.
    pub fn lengthscales(&self) -> Vec<f64> {
        let mut out = self.gps[0].lengthscales();
        for gp in &self.gps[1..] {
            for (o, l) in out.iter_mut().zip(gp.lengthscales()) {
                *o = o.min(l);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multi_objective::hypervolume;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn a_certain_points_improvement_is_the_hypervolume_it_adds() {
        let mut rng = SmallRng::seed_from_u64(2);
        for m in [2usize, 3] {
            let front: Vec<Vec<f64>> = (0..9)
                .map(|_| (0..m).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            let ehvi = Ehvi::new(Vec::new(), &front, &mut rng).unwrap();
            let losses: Vec<Vec<f64>> = front
                .iter()
                .map(|y| y.iter().map(|v| -v).collect())
                .collect();
            let reference = reference_point(&losses);
            for _ in 0..50 {
                let y: Vec<f64> = (0..m).map(|_| rng.random_range(-1.5..1.5)).collect();
                let post: Vec<(f64, f64)> = y.iter().map(|v| (*v, 0.0)).collect();
                let mut with = losses.clone();
                with.push(y.iter().map(|v| -v).collect());
                let added = hypervolume(&with, &reference) - hypervolume(&losses, &reference);
                let got = ehvi.expected(&post, None);
                assert!(
                    (got - added).abs() < 1e-9,
                    "m={m} y={y:?}: {got} vs {added}"
                );
            }
        }
    }
}
