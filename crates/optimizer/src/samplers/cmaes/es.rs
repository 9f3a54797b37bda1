//! The evolution strategy itself: one run of CMA-ES (Hansen's tutorial, 2016 edition, with
//! active covariance updates from negative weights), its separable variant (Ros & Hansen, 2008:
//! a diagonal covariance learnt faster) and the margin of CMA-ES with Margin (Hamano et al.,
//! 2022) that keeps integer coordinates from freezing on one value. Coordinates are in the
//! unit cube; the sampler maps them to parameters.

use std::collections::VecDeque;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::rngs::SmallRng;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::rng::standard_normal;

/// Samples drawn before a solution outside the unit cube is clipped into it.
const MAX_RESAMPLING: usize = 100;
/// Floor of the covariance's eigenvalues.
const EPS: f64 = 1e-8;
/// Ceiling of the step size.
const SIGMA_MAX: f64 = 1e32;

/// The thresholds between the values of a discrete coordinate around a point: the nearest
/// below and above (None past the first or last value).
pub(crate) type Thresholds = (Option<f64>, Option<f64>);

/// One run of the strategy: its distribution N(mean, sigma² · A C A) and evolution paths.
#[derive(Debug, Clone)]
pub(crate) struct Strategy {
    n: usize,
    popsize: usize,
    separable: bool,
    /// Recombination weights by rank, best first (negative ones for the worse half, active
    /// CMA; zero there in the separable variant).
    weights: Vec<f64>,
    mu_eff: f64,
    c_sigma: f64,
    d_sigma: f64,
    c_c: f64,
    c1: f64,
    c_mu: f64,
    chi_n: f64,
    pub mean: DVector<f64>,
    pub sigma: f64,
    sigma0: f64,
    c: DMatrix<f64>,
    /// Eigenvectors (columns) and square roots of the eigenvalues of `c`.
    b: DMatrix<f64>,
    d: DVector<f64>,
    p_sigma: DVector<f64>,
    p_c: DVector<f64>,
    /// Per-coordinate scaling of the samples, the margin's (1 where there is none).
    a: DVector<f64>,
    pub generation: usize,
    /// Best and worst loss of the recent generations (the flat-fitness stopping rule).
    fun_hist: VecDeque<f64>,
    /// Learning-rate adaptation's state, when it is on.
    lr: Option<LrAdapt>,
}

/// Learning-rate adaptation (Nomura, Akimoto and Ono, 2023): the learning rates of the mean
/// and of the covariance follow the signal-to-noise ratio of their updates, estimated by
/// moving averages of the updates in the distribution's local coordinates.
#[derive(Debug, Clone)]
struct LrAdapt {
    e_mean: DVector<f64>,
    e_cov: DVector<f64>,
    v_mean: f64,
    v_cov: f64,
    eta_mean: f64,
    eta_cov: f64,
}

/// The adaptation's constants: the target SNR, the moving averages' rates and the cap on
/// how fast a rate changes.
const LR_ALPHA: f64 = 1.4;
const LR_BETA_MEAN: f64 = 0.1;
const LR_BETA_COV: f64 = 0.03;
const LR_GAMMA: f64 = 0.1;

impl Strategy {
    /// A run with `popsize` solutions per generation, starting at `mean` with step `sigma` and
    /// covariance `cov` (identity when None).
    pub fn new(
        mean: DVector<f64>,
        sigma: f64,
        cov: Option<DMatrix<f64>>,
        popsize: usize,
        separable: bool,
    ) -> Strategy {
        let n = mean.len();
        let nf = n as f64;
        let lambda = popsize.max(2);
        let mu = lambda / 2;
        let raw: Vec<f64> = (1..=lambda)
            .map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - (i as f64).ln())
            .collect();
        let (pos, neg) = raw.split_at(mu);
        let sum_pos: f64 = pos.iter().sum();
        let mu_eff = sum_pos * sum_pos / pos.iter().map(|w| w * w).sum::<f64>();
        let c_sigma = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let d_sigma = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + c_sigma;
        let (weights, c_c, c1, c_mu);
        if separable {
            weights = raw
                .iter()
                .enumerate()
                .map(|(i, w)| if i < mu { w / sum_pos } else { 0.0 })
                .collect();
            c_c = 4.0 / (nf + 4.0);
            // One learning rate for both terms, scaled up by (n + 2) / 3 for a diagonal model.
            let c_cov = (1.0 / mu_eff) * 2.0 / (nf + 2f64.sqrt()).powi(2)
                + (1.0 - 1.0 / mu_eff)
                    * ((2.0 * mu_eff - 1.0) / ((nf + 2.0).powi(2) + mu_eff)).min(1.0);
            let c_cov = (c_cov * (nf + 2.0) / 3.0).min(1.0);
            c1 = c_cov / mu_eff;
            c_mu = c_cov * (1.0 - 1.0 / mu_eff);
        } else {
            let alpha_cov = 2.0;
            c1 = alpha_cov / ((nf + 1.3).powi(2) + mu_eff);
            c_mu = (alpha_cov * (mu_eff - 2.0 + 1.0 / mu_eff)
                / ((nf + 2.0).powi(2) + alpha_cov * mu_eff / 2.0))
                .min(1.0 - c1);
            c_c = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
            let sum_neg: f64 = neg.iter().map(|w| w.abs()).sum();
            let mu_eff_neg = if sum_neg > 0.0 {
                sum_neg * sum_neg / neg.iter().map(|w| w * w).sum::<f64>()
            } else {
                0.0
            };
            let scale_neg = (1.0 + c1 / c_mu)
                .min(1.0 + 2.0 * mu_eff_neg / (mu_eff + 2.0))
                .min((1.0 - c1 - c_mu) / (nf * c_mu));
            weights = raw
                .iter()
                .map(|&w| {
                    if w >= 0.0 {
                        w / sum_pos
                    } else {
                        scale_neg * w / sum_neg
                    }
                })
                .collect();
        }
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        let c = cov.unwrap_or_else(|| DMatrix::identity(n, n));
        let mut s = Strategy {
            n,
            popsize: lambda,
            separable,
            weights,
            mu_eff,
            c_sigma,
            d_sigma,
            c_c,
            c1,
            c_mu,
            chi_n,
            mean,
            sigma,
            sigma0: sigma,
            b: DMatrix::identity(n, n),
            d: DVector::from_element(n, 1.0),
            c,
            p_sigma: DVector::zeros(n),
            p_c: DVector::zeros(n),
            a: DVector::from_element(n, 1.0),
            generation: 0,
            fun_hist: VecDeque::new(),
            lr: None,
        };
        s.decompose();
        s
    }

    /// Turns learning-rate adaptation on (full covariance only).
    pub fn with_lr_adapt(mut self) -> Strategy {
        let n = self.n;
        self.lr = Some(LrAdapt {
            e_mean: DVector::zeros(n),
            e_cov: DVector::zeros(n * n),
            v_mean: 0.0,
            v_cov: 0.0,
            eta_mean: 1.0,
            eta_cov: 1.0,
        });
        self
    }

    /// Solutions per generation.
    pub fn popsize(&self) -> usize {
        self.popsize
    }

    /// Refreshes `b` and `d` from `c` (and makes `c` exactly what they represent).
    fn decompose(&mut self) {
        if self.separable {
            for i in 0..self.n {
                let v = self.c[(i, i)].max(EPS);
                self.c[(i, i)] = v;
                self.d[i] = v.sqrt();
            }
            return;
        }
        let sym = (&self.c + self.c.transpose()) / 2.0;
        let eig = SymmetricEigen::new(sym);
        self.b = eig.eigenvectors;
        self.d = eig.eigenvalues.map(|v| v.max(EPS).sqrt());
        let d2 = DMatrix::from_diagonal(&self.d.map(|v| v * v));
        self.c = &self.b * d2 * self.b.transpose();
    }

    /// `B D z` (`D z` in the separable variant).
    fn shape(&self, z: &DVector<f64>) -> DVector<f64> {
        let dz = z.component_mul(&self.d);
        if self.separable {
            dz
        } else {
            &self.b * dz
        }
    }

    /// A solution: the mean moved by a draw of the distribution, drawn again while outside
    /// the unit cube (then clipped into it).
    pub fn ask(&self, rng: &mut SmallRng) -> DVector<f64> {
        let mut x = DVector::zeros(self.n);
        for _ in 0..MAX_RESAMPLING {
            let z = DVector::from_fn(self.n, |_, _| standard_normal(rng));
            let y = self.shape(&z);
            x = &self.mean + (y.component_mul(&self.a)) * self.sigma;
            if x.iter().all(|v| (0.0..=1.0).contains(v)) {
                return x;
            }
        }
        x.map(|v| v.clamp(0.0, 1.0))
    }

    /// Ends a generation: `solved` holds `popsize` (point, loss) pairs, lower loss better.
    #[cfg(test)]
    pub fn tell(&mut self, solved: Vec<(DVector<f64>, f64)>) {
        self.tell_injected(solved.into_iter().map(|(x, l)| (x, l, false)).collect());
    }

    /// [`Strategy::tell`] where some points may be injected: drawn from another distribution
    /// (an earlier generation's, when trials run concurrently). An injected point's step is
    /// shortened to at most `sqrt(n) + 2n/(n+2)` in the whitened space, so it can steer the
    /// update without blowing up the step size or the covariance (Hansen, 2011, "Injecting
    /// external solutions into CMA-ES").
    pub fn tell_injected(&mut self, mut solved: Vec<(DVector<f64>, f64, bool)>) {
        let n = self.n as f64;
        // What the learning-rate adaptation compares the update with: the old mean, step,
        // covariance sigma² C and C^(-1/2).
        let before = self.lr.is_some().then(|| {
            let inv_sqrt_c =
                &self.b * DMatrix::from_diagonal(&self.d.map(|v| 1.0 / v)) * self.b.transpose();
            (
                self.mean.clone(),
                self.sigma,
                &self.c * (self.sigma * self.sigma),
                inv_sqrt_c,
            )
        });
        solved.sort_by(|a, b| a.1.total_cmp(&b.1));
        self.generation += 1;
        self.record_losses(solved[0].1, solved[solved.len() - 1].1);
        // Steps in the unscaled distribution's units: x = m + sigma * A * y.
        // C^(-1/2) y: whitened steps.
        let whiten = |y: &DVector<f64>| -> DVector<f64> {
            if self.separable {
                y.component_div(&self.d)
            } else {
                &self.b * (self.b.transpose() * y).component_div(&self.d)
            }
        };
        let max_injected = n.sqrt() + 2.0 * n / (n + 2.0);
        let ys: Vec<DVector<f64>> = solved
            .iter()
            .map(|(x, _, injected)| {
                let y = (x - &self.mean).component_div(&self.a) / self.sigma;
                let norm = whiten(&y).norm();
                if *injected && norm > max_injected {
                    y * (max_injected / norm)
                } else {
                    y
                }
            })
            .collect();
        let mut y_w = DVector::zeros(self.n);
        for (w, y) in self.weights.iter().zip(&ys) {
            if *w > 0.0 {
                y_w += y * *w;
            }
        }
        self.mean += y_w.component_mul(&self.a) * self.sigma;

        let cs = self.c_sigma;
        self.p_sigma =
            &self.p_sigma * (1.0 - cs) + whiten(&y_w) * (cs * (2.0 - cs) * self.mu_eff).sqrt();
        let norm_ps = self.p_sigma.norm();
        self.sigma *= ((cs / self.d_sigma) * (norm_ps / self.chi_n - 1.0)).exp();
        self.sigma = self.sigma.min(SIGMA_MAX);

        let g = self.generation as f64;
        let h_sigma = norm_ps / (1.0 - (1.0 - cs).powf(2.0 * (g + 1.0))).sqrt()
            < (1.4 + 2.0 / (n + 1.0)) * self.chi_n;
        let h = if h_sigma { 1.0 } else { 0.0 };
        let cc = self.c_c;
        self.p_c = &self.p_c * (1.0 - cc) + &y_w * (h * (cc * (2.0 - cc) * self.mu_eff).sqrt());
        let lost = (1.0 - h) * cc * (2.0 - cc);
        let sum_w: f64 = self.weights.iter().sum();
        let decay = 1.0 + self.c1 * lost - self.c1 - self.c_mu * sum_w;
        if self.separable {
            for i in 0..self.n {
                let rank_mu: f64 = self
                    .weights
                    .iter()
                    .zip(&ys)
                    .map(|(w, y)| w * y[i] * y[i])
                    .sum();
                self.c[(i, i)] = decay * self.c[(i, i)]
                    + self.c1 * self.p_c[i] * self.p_c[i]
                    + self.c_mu * rank_mu;
            }
        } else {
            let mut rank_mu = DMatrix::zeros(self.n, self.n);
            for (w, y) in self.weights.iter().zip(&ys) {
                // A negative weight is rescaled so the step it removes has length sqrt(n) in
                // the whitened space (active CMA).
                let w = if *w >= 0.0 {
                    *w
                } else {
                    w * n / (whiten(y).norm_squared() + EPS)
                };
                rank_mu.ger(w, y, y, 1.0);
            }
            self.c =
                &self.c * decay + &self.p_c * self.p_c.transpose() * self.c1 + rank_mu * self.c_mu;
        }
        if let Some((mean, sigma, cov, inv_sqrt_c)) = before {
            self.adapt_learning_rates(mean, sigma, cov, inv_sqrt_c);
        }
        self.decompose();
    }

    /// Scales this generation's updates of the mean and of sigma² C by the adapted learning
    /// rates, then splits the covariance back into a step size and a C of determinant one
    /// (the step corrected for the mean's rate change).
    fn adapt_learning_rates(
        &mut self,
        old_mean: DVector<f64>,
        old_sigma: f64,
        old_cov: DMatrix<f64>,
        old_inv_sqrt_c: DMatrix<f64>,
    ) {
        let Some(lr) = self.lr.as_mut() else {
            return;
        };
        let n = self.n;
        let d_mean = &self.mean - &old_mean;
        let d_cov = &self.c * (self.sigma * self.sigma) - &old_cov;
        let inv_sqrt = old_inv_sqrt_c / old_sigma;
        let local_mean = &inv_sqrt * &d_mean;
        let local_cov = (&inv_sqrt * &d_cov * &inv_sqrt) / std::f64::consts::SQRT_2;
        let local_cov = DVector::from_column_slice(local_cov.as_slice());
        let (bm, bc) = (LR_BETA_MEAN, LR_BETA_COV);
        lr.e_mean = &lr.e_mean * (1.0 - bm) + &local_mean * bm;
        lr.e_cov = &lr.e_cov * (1.0 - bc) + &local_cov * bc;
        lr.v_mean = (1.0 - bm) * lr.v_mean + bm * local_mean.norm_squared();
        lr.v_cov = (1.0 - bc) * lr.v_cov + bc * local_cov.norm_squared();
        let snr = |e: &DVector<f64>, v: f64, beta: f64| {
            let e2 = e.norm_squared();
            (e2 - beta / (2.0 - beta) * v) / (v - e2)
        };
        let snr_mean = snr(&lr.e_mean, lr.v_mean, bm);
        let snr_cov = snr(&lr.e_cov, lr.v_cov, bc);
        let step = |eta: f64, snr: f64, beta: f64| {
            let relative = (snr / LR_ALPHA / eta - 1.0).clamp(-1.0, 1.0);
            let next = eta * ((LR_GAMMA * eta).min(beta) * relative).exp();
            // NaN (no signal yet) keeps the rate.
            if next.is_finite() {
                next.min(1.0)
            } else {
                eta
            }
        };
        let eta_mean_before = lr.eta_mean;
        lr.eta_mean = step(lr.eta_mean, snr_mean, bm);
        lr.eta_cov = step(lr.eta_cov, snr_cov, bc);
        self.mean = &old_mean + d_mean * lr.eta_mean;
        let cov = old_cov + d_cov * lr.eta_cov;
        let cov = (&cov + cov.transpose()) / 2.0;
        let log_det: f64 = SymmetricEigen::new(cov.clone())
            .eigenvalues
            .iter()
            .map(|e| e.max(EPS * EPS).ln())
            .sum();
        let sigma = (log_det / (2.0 * n as f64)).exp().min(SIGMA_MAX);
        if !(sigma.is_finite() && sigma > 0.0) {
            return;
        }
        self.c = cov / (sigma * sigma);
        self.sigma = sigma * eta_mean_before / lr.eta_mean;
    }

    fn record_losses(&mut self, best: f64, worst: f64) {
        let keep = 2 * self.fun_hist_term();
        self.fun_hist.push_back(best);
        self.fun_hist.push_back(worst);
        while self.fun_hist.len() > keep {
            self.fun_hist.pop_front();
        }
    }

    fn fun_hist_term(&self) -> usize {
        10 + (30.0 * self.n as f64 / self.popsize as f64).ceil() as usize
    }

    /// True when this run has converged or degenerated, and a restart would do better.
    pub fn should_stop(&self) -> bool {
        let finite = self.sigma.is_finite()
            && self.mean.iter().all(|v| v.is_finite())
            && self.d.iter().all(|v| v.is_finite());
        if !finite {
            return true;
        }
        // The losses of the recent generations are all the same.
        if self.generation > self.fun_hist_term() {
            let (lo, hi) = self
                .fun_hist
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            if hi - lo < 1e-12 {
                return true;
            }
        }
        let sd = |i: usize| self.sigma * self.c[(i, i)].sqrt();
        // Every coordinate's spread (and the evolution path) is below 1e-12 of the start's.
        let tol_x = 1e-12 * self.sigma0;
        if (0..self.n).all(|i| sd(i) < tol_x && self.sigma * self.p_c[i].abs() < tol_x) {
            return true;
        }
        // The distribution grew far past the cube.
        let d_max = self.d.max();
        if self.sigma * d_max > 1e4 {
            return true;
        }
        // A step along one principal axis no longer changes the mean (cycling through axes).
        let i = self.generation % self.n;
        let axis = self.b.column(i) * (0.1 * self.sigma * self.d[i]);
        if self.mean.iter().zip(axis.iter()).all(|(m, s)| m + s == *m) {
            return true;
        }
        // A step along some coordinate no longer changes it.
        if (0..self.n).any(|i| self.mean[i] + 0.2 * sd(i) == self.mean[i]) {
            return true;
        }
        // The covariance is too ill-conditioned.
        let d_min = self.d.min();
        (d_max / d_min).powi(2) > 1e14
    }

    /// The margin of CMA-ES with Margin: after a generation, for each discrete coordinate
    /// (`thresholds` gives the thresholds between its values around a point, None for a
    /// continuous coordinate), moves the mean and rescales the coordinate (`a`) so that the
    /// probability of sampling a value other than the mean's is at least `alpha` (on each side
    /// of an inner value, `alpha / 2`).
    pub fn apply_margin(
        &mut self,
        alpha: f64,
        thresholds: impl Fn(usize, f64) -> Option<Thresholds>,
    ) {
        let normal = Normal::standard();
        let upper_q = |p: f64| normal.inverse_cdf(1.0 - p);
        for j in 0..self.n {
            let m = self.mean[j];
            let Some((lo, hi)) = thresholds(j, m) else {
                continue;
            };
            let spread = self.sigma * self.c[(j, j)].sqrt();
            let s = spread * self.a[j];
            if s.is_nan() || s <= 0.0 {
                continue;
            }
            match (lo, hi) {
                (Some(lo), Some(hi)) => {
                    // An inner value: both tails at least alpha / 2; the mass they gain comes
                    // from the tails above alpha / 2, in proportion.
                    let p_lo = normal.cdf((lo - m) / s);
                    let p_hi = 1.0 - normal.cdf((hi - m) / s);
                    let half = alpha / 2.0;
                    if p_lo >= half && p_hi >= half {
                        continue;
                    }
                    let (c_lo, c_hi) = (p_lo.max(half), p_hi.max(half));
                    let p_mid = 1.0 - p_lo - p_hi;
                    let excess = c_lo + c_hi + p_mid - 1.0;
                    let free = c_lo + c_hi + p_mid - 3.0 * half;
                    let adjust =
                        |c: f64| (c - excess * (c - half) / free).clamp(1e-10, 0.5 - 1e-10);
                    let (q_lo, q_hi) = (upper_q(adjust(c_lo)), upper_q(adjust(c_hi)));
                    // m - q_lo s' = lo and m + q_hi s' = hi.
                    let s_new = (hi - lo) / (q_lo + q_hi);
                    self.mean[j] = lo + q_lo * s_new;
                    self.a[j] = s_new / spread;
                }
                (Some(edge), None) | (None, Some(edge)) => {
                    // An end value: the tail past its one threshold is at least alpha.
                    let q = upper_q(alpha);
                    if (m - edge).abs() > q * s {
                        self.mean[j] = edge + (m - edge).signum() * q * s;
                    }
                }
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn learning_rates_fall_on_noise_and_stay_up_on_signal() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut noise = SmallRng::seed_from_u64(4);
        let sphere = |x: &DVector<f64>| x.iter().map(|v| (v - 0.3).powi(2)).sum::<f64>();
        let mut noisy =
            Strategy::new(DVector::from_element(4, 0.5), 0.2, None, 8, false).with_lr_adapt();
        let mut clean = noisy.clone();
        for _ in 0..120 {
            let solved: Vec<_> = (0..8)
                .map(|_| {
                    let x = noisy.ask(&mut rng);
                    (x, noise.random::<f64>())
                })
                .collect();
            noisy.tell(solved);
            let solved: Vec<_> = (0..8)
                .map(|_| {
                    let x = clean.ask(&mut rng);
                    let v = sphere(&x);
                    (x, v)
                })
                .collect();
            clean.tell(solved);
        }
        let lr = |s: &Strategy| s.lr.as_ref().map(|l| (l.eta_mean, l.eta_cov)).unwrap();
        // Losses that are pure noise: no signal in the updates, the rates fall.
        assert!(lr(&noisy).0 < 0.5 && lr(&noisy).1 < 0.5, "{:?}", lr(&noisy));
        // A sphere: the run converges with the adaptation on.
        assert!(sphere(&clean.mean) < 1e-6, "{}", sphere(&clean.mean));
        assert!(clean.d.iter().all(|v| v.is_finite()) && clean.sigma.is_finite());
    }

    fn run(f: impl Fn(&DVector<f64>) -> f64, n: usize, separable: bool, gens: usize) -> f64 {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut es = Strategy::new(
            DVector::from_element(n, 0.8),
            0.2,
            None,
            4 + 3 * n,
            separable,
        );
        let mut best = f64::INFINITY;
        for _ in 0..gens {
            let solved: Vec<_> = (0..es.popsize())
                .map(|_| {
                    let x = es.ask(&mut rng);
                    let v = f(&x);
                    best = best.min(v);
                    (x, v)
                })
                .collect();
            es.tell(solved);
        }
        best
    }

    fn shifted_ellipsoid(x: &DVector<f64>) -> f64 {
        let n = x.len();
        x.iter()
            .enumerate()
            .map(|(i, v)| 10f64.powf(3.0 * i as f64 / (n - 1) as f64) * (v - 0.3).powi(2))
            .sum()
    }

    #[test]
    fn converges_on_an_ill_conditioned_ellipsoid() {
        assert!(run(shifted_ellipsoid, 6, false, 150) < 1e-10);
        assert!(run(shifted_ellipsoid, 6, true, 150) < 1e-10);
    }

    #[test]
    fn learns_a_rotated_valley_the_separable_variant_cannot() {
        let rotated = |x: &DVector<f64>| {
            let (u, v) = (x[0] - 0.5 + x[1] - 0.5, x[0] - x[1]);
            u * u + 1e4 * v * v
        };
        let full = run(rotated, 2, false, 80);
        assert!(full < 1e-12, "{full}");
    }

    #[test]
    fn stops_when_the_losses_are_flat() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut es = Strategy::new(DVector::from_element(3, 0.5), 0.2, None, 6, false);
        let mut gens = 0;
        while !es.should_stop() && gens < 1000 {
            let solved = (0..6).map(|_| (es.ask(&mut rng), 1.0)).collect();
            es.tell(solved);
            gens += 1;
        }
        assert!(
            gens < 100,
            "flat losses did not stop the run ({gens} generations)"
        );
    }

    #[test]
    fn margin_keeps_a_discrete_coordinate_from_freezing() {
        // One binary coordinate (threshold 0.5) with the mean deep on one side and a tiny
        // spread: the margin pulls the mean back so the other value keeps probability alpha.
        let mut es = Strategy::new(DVector::from_vec(vec![0.1, 0.5]), 1e-3, None, 6, false);
        es.apply_margin(0.05, |j, _| (j == 0).then_some((None, Some(0.5))));
        let s = es.sigma * es.c[(0, 0)].sqrt() * es.a[0];
        let p_other = 1.0 - Normal::standard().cdf((0.5 - es.mean[0]) / s);
        assert!((p_other - 0.05).abs() < 1e-9, "{p_other}");
        assert_eq!(es.mean[1], 0.5);
        // An inner value of a three-valued coordinate: both tails get alpha / 2.
        let mut es = Strategy::new(DVector::from_vec(vec![0.5, 0.5]), 1e-3, None, 6, false);
        es.apply_margin(0.1, |j, _| {
            (j == 0).then_some((Some(1.0 / 3.0), Some(2.0 / 3.0)))
        });
        let s = es.sigma * es.c[(0, 0)].sqrt() * es.a[0];
        let normal = Normal::standard();
        let p_lo = normal.cdf((1.0 / 3.0 - es.mean[0]) / s);
        let p_hi = 1.0 - normal.cdf((2.0 / 3.0 - es.mean[0]) / s);
        assert!(
            (p_lo - 0.05).abs() < 1e-6 && (p_hi - 0.05).abs() < 1e-6,
            "{p_lo} {p_hi}"
        );
    }
}
