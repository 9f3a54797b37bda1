//! Gaussian-process regression with a Matérn-5/2 kernel and automatic relevance determination
//! (one lengthscale per parameter), on parameters normalised to [0, 1]; categorical parameters
//! contribute their Hamming distance. The kernel's hyperparameters maximise the marginal
//! likelihood plus Optuna's priors (a penalty on extreme inverse squared lengthscales,
//! Gamma(2, 1) on the kernel scale, Gamma(1.1, 30) on the noise variance), found by L-BFGS on
//! their logarithms with analytic gradients.

use super::lbfgs;
use super::linalg::{
    axpy, cholesky, dot, inverse_from_inverse_t, inverse_t, mul_upper, mul_upper_t, solve_cholesky,
};
use rayon::prelude::*;

/// The noise variance's floor (all of it for a deterministic objective).
pub(crate) const MIN_NOISE: f64 = 1e-6;

/// The kernel's hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KernelParams {
    /// Inverse squared lengthscale of each parameter.
    pub ils: Vec<f64>,
    /// The kernel's variance.
    pub scale: f64,
    /// The observation noise's variance.
    pub noise: f64,
}

impl KernelParams {
    /// Where a fit starts without a previous one: every hyperparameter 1.
    pub fn initial(d: usize) -> Self {
        KernelParams {
            ils: vec![1.0; d],
            scale: 1.0,
            noise: 1.0,
        }
    }
}

/// Training inputs: `n` points of `d` normalised parameters, row-major.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    pub x: Vec<f64>,
    pub n: usize,
    pub d: usize,
    pub is_cat: Vec<bool>,
}

impl Inputs {
    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

/// The Matérn-5/2 correlation at squared distance `d2`, and its derivative in `d2`.
#[inline]
fn matern52(d2: f64) -> (f64, f64) {
    let r = (5.0 * d2).sqrt();
    let e = (-r).exp();
    (e * (5.0 / 3.0 * d2 + r + 1.0), -5.0 / 6.0 * (r + 1.0) * e)
}

/// One parameter's contribution to the squared distance (before its lengthscale).
#[inline]
fn sq(a: f64, b: f64, cat: bool) -> f64 {
    if cat {
        f64::from(u8::from(a != b))
    } else {
        (a - b) * (a - b)
    }
}

/// A fitted process: the posterior given the training data and hyperparameters.
#[derive(Debug, Clone)]
pub(crate) struct Gp {
    inputs: Inputs,
    pub params: KernelParams,
    /// `K⁻¹ y`.
    alpha: Vec<f64>,
    /// `L⁻ᵀ`, L the Cholesky factor of K (K with the noise on its diagonal): `K⁻¹ = L⁻ᵀL⁻¹`.
    linv_t: Vec<f64>,
    /// The inputs by parameter (`d × n`), continuous ones scaled by `√ils`: the kernel vector
    /// is then a loop over the training points per parameter, which vectorises.
    columns: Vec<f64>,
}

impl Gp {
    /// The posterior for these hyperparameters; None when the kernel matrix is not positive
    /// definite.
    pub fn new(inputs: Inputs, y: &[f64], params: KernelParams) -> Option<Gp> {
        let n = inputs.n;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            k[i * n + i] = params.scale + params.noise;
            for j in 0..i {
                let d2: f64 = (0..inputs.d)
                    .map(|p| {
                        params.ils[p] * sq(inputs.row(i)[p], inputs.row(j)[p], inputs.is_cat[p])
                    })
                    .sum();
                let v = params.scale * matern52(d2).0;
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
        }
        let l = cholesky(&k, n)?;
        let mut alpha = y.to_vec();
        solve_cholesky(&l, n, &mut alpha);
        let linv_t = inverse_t(&l, n);
        let columns = (0..inputs.d)
            .flat_map(|p| {
                let scale = if inputs.is_cat[p] {
                    1.0
                } else {
                    params.ils[p].sqrt()
                };
                let (x, d) = (&inputs.x, inputs.d);
                (0..n).map(move |i| scale * x[i * d + p])
            })
            .collect();
        Some(Gp {
            inputs,
            params,
            alpha,
            linv_t,
            columns,
        })
    }

    /// The posterior covariance of the latent function between `a` and `b`:
    /// `k(a, b) − (L⁻¹kₐ)·(L⁻¹k_b)`.
    pub fn covariance(&self, a: &[f64], b: &[f64]) -> f64 {
        let n = self.inputs.n;
        let d2: f64 = (0..self.inputs.d)
            .map(|p| self.params.ils[p] * sq(a[p], b[p], self.inputs.is_cat[p]))
            .sum();
        let va = mul_upper_t(&self.linv_t, n, &self.kvec(a, None));
        let vb = mul_upper_t(&self.linv_t, n, &self.kvec(b, None));
        self.params.scale * matern52(d2).0 - dot(&va, &vb)
    }

    /// Each parameter's lengthscale.
    pub fn lengthscales(&self) -> Vec<f64> {
        self.params.ils.iter().map(|v| 1.0 / v.sqrt()).collect()
    }

    /// Posterior mean and variance of the latent function at `x`.
    pub fn posterior(&self, x: &[f64]) -> (f64, f64) {
        let k = self.kvec(x, None);
        self.mean_var(&k, false).0
    }

    /// [`Gp::posterior`] at each of `xs`: in blocks, so that each row of `L⁻ᵀ` is read once
    /// per block rather than once per point (the rows stay in the cache), blocks in parallel.
    pub fn posterior_many(&self, xs: &[Vec<f64>]) -> Vec<(f64, f64)> {
        const BLOCK: usize = 8;
        let n = self.inputs.n;
        xs.par_chunks(BLOCK)
            .flat_map_iter(|block| {
                let ks: Vec<Vec<f64>> = block.iter().map(|x| self.kvec(x, None)).collect();
                let mut vs = vec![vec![0.0; n]; block.len()];
                for r in 0..n {
                    let row = &self.linv_t[r * n + r..(r + 1) * n];
                    for (k, v) in ks.iter().zip(vs.iter_mut()) {
                        axpy(&mut v[r..], k[r], row);
                    }
                }
                ks.into_iter().zip(vs).map(|(k, v)| {
                    let var = (self.params.scale - dot(&v, &v)).max(0.0);
                    (dot(&k, &self.alpha), var)
                })
            })
            .collect()
    }

    /// Posterior mean and variance at `x`, with their gradients in `x` written into `gmean`
    /// and `gvar` (zero for categorical parameters).
    pub fn posterior_grad(&self, x: &[f64], gmean: &mut [f64], gvar: &mut [f64]) -> (f64, f64) {
        let n = self.inputs.n;
        let mut dk = vec![0.0; n];
        let k = self.kvec(x, Some(&mut dk));
        let ((mean, var), w) = self.mean_var(&k, true);
        let w = w.unwrap_or_default();
        gmean.fill(0.0);
        gvar.fill(0.0);
        for i in 0..n {
            let row = self.inputs.row(i);
            let (a, b) = (self.alpha[i] * dk[i], -2.0 * w[i] * dk[i]);
            for p in 0..self.inputs.d {
                if self.inputs.is_cat[p] {
                    continue;
                }
                // d k_i / d x_p = s m'(d2) 2 ils_p (x_p - X_ip)
                let dd2 = 2.0 * self.params.ils[p] * (x[p] - row[p]);
                gmean[p] += a * dd2;
                gvar[p] += b * dd2;
            }
        }
        if var <= 0.0 {
            gvar.fill(0.0);
        }
        (mean, var)
    }

    /// The kernel between `x` and every training point; with `dk`, also `s m'(d2)` for each.
    fn kvec(&self, x: &[f64], mut dk: Option<&mut [f64]>) -> Vec<f64> {
        let (n, ils) = (self.inputs.n, &self.params.ils);
        let mut d2 = vec![0.0; n];
        for (p, column) in self.columns.chunks_exact(n.max(1)).enumerate() {
            if self.inputs.is_cat[p] {
                for (acc, c) in d2.iter_mut().zip(column) {
                    *acc += ils[p] * f64::from(u8::from(x[p] != *c));
                }
            } else {
                let xp = x[p] * ils[p].sqrt();
                for (acc, c) in d2.iter_mut().zip(column) {
                    *acc += (xp - c) * (xp - c);
                }
            }
        }
        d2.iter()
            .enumerate()
            .map(|(i, &d2)| {
                let (m, dm) = matern52(d2);
                if let Some(dk) = dk.as_deref_mut() {
                    dk[i] = self.params.scale * dm;
                }
                self.params.scale * m
            })
            .collect()
    }

    /// ((mean, variance clamped at 0), K⁻¹k if `want_w`) for the kernel vector `k`. The
    /// variance's `kᵀK⁻¹k` is `‖L⁻¹k‖²`: half the work of a product with `K⁻¹`.
    fn mean_var(&self, k: &[f64], want_w: bool) -> ((f64, f64), Option<Vec<f64>>) {
        let n = self.inputs.n;
        let mean = dot(k, &self.alpha);
        let v = mul_upper_t(&self.linv_t, n, k);
        let var = (self.params.scale - dot(&v, &v)).max(0.0);
        ((mean, var), want_w.then(|| mul_upper(&self.linv_t, n, &v)))
    }
}

/// Fits the hyperparameters to `(inputs, y)` (y standardised) and returns the posterior.
/// The fit starts from `start` (the previous fit's result) and, if that fails, from the
/// initial hyperparameters; if both fail, the initial hyperparameters are used unfitted.
pub(crate) fn fit(
    inputs: Inputs,
    y: &[f64],
    deterministic: bool,
    start: Option<&KernelParams>,
) -> Gp {
    let d = inputs.d;
    let initial = KernelParams::initial(d);
    let pairs = Pairs::new(&inputs);
    let starts = start
        .filter(|s| s.ils.len() == d)
        .into_iter()
        .chain(std::iter::once(&initial));
    for s in starts {
        let raw0: Vec<f64> = s
            .ils
            .iter()
            .map(|v| v.ln())
            .chain([s.scale.ln(), (s.noise - 0.99 * MIN_NOISE).max(1e-12).ln()])
            .collect();
        let (lo, hi) = (vec![-25.0; d + 2], vec![25.0; d + 2]);
        let out = lbfgs::minimize(
            |raw, grad| pairs.loss(raw, y, deterministic, grad),
            &raw0,
            &lo,
            &hi,
            lbfgs::Options {
                max_iters: 500,
                pgtol: 1e-2,
                ftol: 2.2e-9,
            },
        );
        if out.f.is_finite() {
            if let Some(gp) = Gp::new(inputs.clone(), y, from_raw(&out.x, deterministic)) {
                return gp;
            }
        }
    }
    tracing::warn!("fitting the GP's kernel parameters failed; using the initial ones");
    let mut params = initial;
    if deterministic {
        params.noise = MIN_NOISE;
    }
    loop {
        // A kernel matrix that is not positive definite even so gets more noise until it is.
        if let Some(gp) = Gp::new(inputs.clone(), y, params.clone()) {
            return gp;
        }
        params.noise *= 10.0;
    }
}

fn from_raw(raw: &[f64], deterministic: bool) -> KernelParams {
    let d = raw.len() - 2;
    KernelParams {
        ils: raw[..d].iter().map(|v| v.exp()).collect(),
        scale: raw[d].exp(),
        noise: if deterministic {
            MIN_NOISE
        } else {
            raw[d + 1].exp() + MIN_NOISE
        },
    }
}

/// The per-parameter squared differences of every pair of training points (i > j), computed
/// once per fit.
struct Pairs<'a> {
    inputs: &'a Inputs,
    sq: Vec<f64>,
}

impl<'a> Pairs<'a> {
    fn new(inputs: &'a Inputs) -> Self {
        let (n, d) = (inputs.n, inputs.d);
        let mut sqs = Vec::with_capacity(n * n.saturating_sub(1) / 2 * d);
        for i in 0..n {
            for j in 0..i {
                for p in 0..d {
                    sqs.push(sq(inputs.row(i)[p], inputs.row(j)[p], inputs.is_cat[p]));
                }
            }
        }
        Pairs { inputs, sq: sqs }
    }

    /// The negative log marginal likelihood plus negative log prior at raw (log)
    /// hyperparameters, with its gradient written into `grad`; NaN where the kernel matrix is
    /// not positive definite.
    fn loss(&self, raw: &[f64], y: &[f64], deterministic: bool, grad: &mut [f64]) -> f64 {
        let (n, d) = (self.inputs.n, self.inputs.d);
        let p = from_raw(raw, deterministic);
        let npairs = self.sq.len() / d.max(1);
        let (mut m, mut dm) = (vec![0.0; npairs], vec![0.0; npairs]);
        let mut k = vec![0.0; n * n];
        let mut idx = 0;
        for i in 0..n {
            k[i * n + i] = p.scale + p.noise;
            for j in 0..i {
                let s = &self.sq[idx * d..(idx + 1) * d];
                let d2: f64 = s.iter().zip(&p.ils).map(|(a, b)| a * b).sum();
                (m[idx], dm[idx]) = matern52(d2);
                let v = p.scale * m[idx];
                k[i * n + j] = v;
                k[j * n + i] = v;
                idx += 1;
            }
        }
        let Some(l) = cholesky(&k, n) else {
            grad.fill(0.0);
            return f64::NAN;
        };
        let mut alpha = y.to_vec();
        solve_cholesky(&l, n, &mut alpha);
        let logdet_half: f64 = (0..n).map(|i| l[i * n + i].ln()).sum();
        let quad: f64 = y.iter().zip(&alpha).map(|(a, b)| a * b).sum();
        let mll = -logdet_half - 0.5 * quad;
        let kinv = inverse_from_inverse_t(&inverse_t(&l, n), n);
        // d mll / dθ = ½ Σ_ij W_ij dK_ij/dθ with W = ααᵀ - K⁻¹ (symmetric: pairs count twice).
        let w = |i: usize, j: usize| alpha[i] * alpha[j] - kinv[i * n + j];
        let mut g_ils = vec![0.0; d];
        let mut g_scale = 0.0;
        let mut trace_w = 0.0;
        idx = 0;
        for i in 0..n {
            trace_w += w(i, i);
            for j in 0..i {
                let wij = w(i, j);
                g_scale += wij * m[idx];
                let c = wij * dm[idx];
                let s = &self.sq[idx * d..(idx + 1) * d];
                for (g, v) in g_ils.iter_mut().zip(s) {
                    *g += c * v;
                }
                idx += 1;
            }
        }
        let mut prior = 0.0;
        for q in 0..d {
            let v = p.ils[q];
            prior -= 0.1 / v + 0.1 * v;
            // d/d ln(ils): s ils Σ W m' sq, and the prior's 0.1/ils - 0.1 ils.
            grad[q] = -(p.scale * v * g_ils[q] + 0.1 / v - 0.1 * v);
        }
        prior += p.scale.ln() - p.scale;
        grad[d] = -(p.scale * (g_scale + 0.5 * trace_w) + 1.0 - p.scale);
        prior += 0.1 * p.noise.ln() - 30.0 * p.noise;
        grad[d + 1] = if deterministic {
            0.0
        } else {
            -(0.5 * trace_w + 0.1 / p.noise - 30.0) * (p.noise - MIN_NOISE)
        };
        -(mll + prior)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    fn data(n: usize, d: usize, cat: bool, seed: u64) -> (Inputs, Vec<f64>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut is_cat = vec![false; d];
        if cat {
            is_cat[d - 1] = true;
        }
        let x: Vec<f64> = (0..n * d)
            .map(|i| {
                if is_cat[i % d] {
                    rng.random_range(0..3) as f64
                } else {
                    rng.random_range(0.0..1.0)
                }
            })
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|i| {
                let r = &x[i * d..(i + 1) * d];
                (6.0 * r[0]).sin() + r[1] * r[1] + if cat { r[d - 1] * 0.3 } else { 0.0 }
            })
            .collect();
        (Inputs { x, n, d, is_cat }, y)
    }

    #[test]
    fn the_likelihood_gradient_matches_finite_differences() {
        for deterministic in [false, true] {
            let (inputs, y) = data(25, 3, true, 1);
            let pairs = Pairs::new(&inputs);
            let raw = [0.3, -0.7, 1.1, 0.2, -2.0];
            let mut g = vec![0.0; 5];
            pairs.loss(&raw, &y, deterministic, &mut g);
            for q in 0..5 {
                let h = 1e-6;
                let (mut a, mut b) = (raw, raw);
                a[q] += h;
                b[q] -= h;
                let mut tmp = vec![0.0; 5];
                let fd = (pairs.loss(&a, &y, deterministic, &mut tmp)
                    - pairs.loss(&b, &y, deterministic, &mut tmp))
                    / (2.0 * h);
                assert!(
                    (fd - g[q]).abs() < 1e-5 * fd.abs().max(1.0),
                    "q={q} fd={fd} g={}",
                    g[q]
                );
            }
        }
    }

    #[test]
    fn the_posterior_gradient_matches_finite_differences() {
        let (inputs, y) = data(30, 3, true, 2);
        let gp = fit(inputs, &y, false, None);
        let x = [0.41, 0.77, 1.0];
        let (mut gm, mut gv) = (vec![0.0; 3], vec![0.0; 3]);
        let (m0, v0) = gp.posterior_grad(&x, &mut gm, &mut gv);
        assert_eq!((m0, v0), gp.posterior(&x));
        for p in 0..2 {
            let h = 1e-6;
            let (mut a, mut b) = (x, x);
            a[p] += h;
            b[p] -= h;
            let ((ma, va), (mb, vb)) = (gp.posterior(&a), gp.posterior(&b));
            let (fm, fv) = ((ma - mb) / (2.0 * h), (va - vb) / (2.0 * h));
            assert!((fm - gm[p]).abs() < 1e-5 * fm.abs().max(1.0), "mean p={p}");
            assert!((fv - gv[p]).abs() < 1e-5 * fv.abs().max(1.0), "var p={p}");
        }
        assert_eq!(gm[2], 0.0);
    }

    #[test]
    fn a_fit_interpolates_and_learns_which_parameter_matters() {
        // y depends on x0 only: x1's lengthscale must come out much longer than x0's.
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 40;
        let x: Vec<f64> = (0..2 * n).map(|_| rng.random_range(0.0..1.0)).collect();
        let y: Vec<f64> = (0..n).map(|i| (5.0 * x[2 * i]).sin()).collect();
        let mean = y.iter().sum::<f64>() / n as f64;
        let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let ys: Vec<f64> = y.iter().map(|v| (v - mean) / sd).collect();
        let inputs = Inputs {
            x: x.clone(),
            n,
            d: 2,
            is_cat: vec![false; 2],
        };
        let gp = fit(inputs, &ys, true, None);
        let ls = gp.lengthscales();
        assert!(ls[1] > 5.0 * ls[0], "lengthscales {ls:?}");
        for i in 0..n {
            let (m, v) = gp.posterior(&x[2 * i..2 * i + 2]);
            assert!((m - ys[i]).abs() < 1e-2, "point {i}: {m} vs {}", ys[i]);
            assert!(v < 1e-3);
        }
        let (_, far) = gp.posterior(&[0.5, 5.0]);
        assert!(far < gp.params.scale * 1.0001);
    }
}
