//! The acquisition function (log expected improvement, computed stably far below the incumbent)
//! and its maximisation over a mixed space: random preliminary points, then local searches
//! from the best of them, the incumbent and a roulette pick of the rest, alternating L-BFGS on
//! the continuous parameters (in lengthscale units) with a search over each discrete one.

use rand::rngs::SmallRng;
use rand::RngExt;
use rayon::prelude::*;
use statrs::function::erf::erfc;

use super::ehvi::Ehvi;
use super::lbfgs;
use super::model::Gp;

/// A dimension of the normalised search space.
#[derive(Debug, Clone)]
pub(crate) enum Dim {
    /// Any value in [0, 1].
    Continuous,
    /// One of these values in [0, 1], ascending (a stepped or integer parameter).
    Grid(Vec<f64>),
    /// A choice index in 0..n (a categorical parameter; distances are Hamming).
    Categorical(usize),
}

const SQRT_HALF: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
const LOG_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// `ln E[max(0, Z + z)]` for a standard normal Z, and its derivative in z. Below z = -25 an
/// asymptotic series replaces `z Φ(z) + φ(z)`, which loses all precision there.
fn log_h(z: f64) -> (f64, f64) {
    if z >= -25.0 {
        let cdf = 0.5 * erfc(-z * SQRT_HALF);
        let pdf = (-0.5 * z * z).exp() * INV_SQRT_2PI;
        let h = z * cdf + pdf;
        (h.ln(), cdf / h)
    } else {
        // z Φ(z) + φ(z) = φ(z) (w - 3w² + 15w³ - 105w⁴ + ...), w = 1/z².
        let w = 1.0 / (z * z);
        let p = w * (1.0 - 3.0 * w * (1.0 - 5.0 * w * (1.0 - 7.0 * w)));
        let dp_dw = 1.0 - 6.0 * w + 45.0 * w * w - 420.0 * w * w * w;
        let dp = dp_dw * (-2.0 * w / z);
        (-0.5 * z * z - LOG_SQRT_2PI + p.ln(), -z + dp / p)
    }
}

/// `ln Φ(z)` for the standard normal CDF Φ, and its derivative in z; below z = -25 the
/// asymptotic series `φ(z)/(-z) (1 - 1/z² + 3/z⁴ - ...)` replaces Φ, which underflows there.
fn log_cdf(z: f64) -> (f64, f64) {
    if z >= -25.0 {
        let cdf = 0.5 * erfc(-z * SQRT_HALF);
        let pdf = (-0.5 * z * z).exp() * INV_SQRT_2PI;
        (cdf.ln(), pdf / cdf)
    } else {
        let w = 1.0 / (z * z);
        let s = 1.0 - w * (1.0 - 3.0 * w * (1.0 - 5.0 * w));
        (-0.5 * z * z - LOG_SQRT_2PI - (-z).ln() + s.ln(), -z / s)
    }
}

/// Log expected improvement over `f0` (the process models a function to maximise), plus the
/// log probability that each constraint's process is at least its threshold (the constraints
/// are modelled as functions to maximise, feasible above the threshold). Without `f0` (no
/// feasible trial yet) only the probability of feasibility counts.
///
/// With several objectives, `ehvi` replaces the improvement: the log expected hypervolume
/// improvement over the feasible trials (`gp` and `f0` then play no part in the value).
pub(crate) struct LogEi<'a> {
    pub gp: &'a Gp,
    pub f0: Option<f64>,
    pub ehvi: Option<Ehvi<'a>>,
    pub constraints: Vec<(&'a Gp, f64)>,
}

/// Added to the variance so that a point on an observation still has a finite log EI.
const STABILIZING_NOISE: f64 = 1e-12;

impl LogEi<'_> {
    pub fn eval(&self, x: &[f64]) -> f64 {
        let ei = match (&self.ehvi, self.f0) {
            (Some(ehvi), _) => ehvi.eval_many(&[x.to_vec()])[0],
            (None, Some(f0)) => ei_value(self.gp.posterior(x), f0),
            (None, None) => 0.0,
        };
        ei + self
            .constraints
            .iter()
            .map(|(gp, thr)| pof_value(gp.posterior(x), *thr))
            .sum::<f64>()
    }

    /// [`LogEi::eval`] at each of `xs`.
    pub fn eval_many(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        let mut out: Vec<f64> = match (&self.ehvi, self.f0) {
            (Some(ehvi), _) => ehvi.eval_many(xs),
            (None, Some(f0)) => {
                let posteriors = self.gp.posterior_many(xs);
                posteriors.into_iter().map(|p| ei_value(p, f0)).collect()
            }
            (None, None) => vec![0.0; xs.len()],
        };
        for (gp, thr) in &self.constraints {
            for (o, p) in out.iter_mut().zip(gp.posterior_many(xs)) {
                *o += pof_value(p, *thr);
            }
        }
        out
    }

    /// The value at `x` and its gradient (zero for categorical dimensions).
    pub fn eval_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let mut gmean = vec![0.0; x.len()];
        let mut gvar = vec![0.0; x.len()];
        grad.fill(0.0);
        let mut total = 0.0;
        if let Some(ehvi) = &self.ehvi {
            total += ehvi.eval_grad(x, grad);
        } else if let Some(f0) = self.f0 {
            let (mean, var) = self.gp.posterior_grad(x, &mut gmean, &mut gvar);
            let sigma = (var + STABILIZING_NOISE).sqrt();
            let z = (mean - f0) / sigma;
            let (v, dv) = log_h(z);
            for ((g, dm), dvar) in grad.iter_mut().zip(&gmean).zip(&gvar) {
                let dsigma = dvar / (2.0 * sigma);
                *g += dv * (dm - z * dsigma) / sigma + dsigma / sigma;
            }
            total += v + sigma.ln();
        }
        for (gp, thr) in &self.constraints {
            let (mean, var) = gp.posterior_grad(x, &mut gmean, &mut gvar);
            let sigma = (var + STABILIZING_NOISE).sqrt();
            let z = (mean - thr) / sigma;
            let (v, dv) = log_cdf(z);
            for ((g, dm), dvar) in grad.iter_mut().zip(&gmean).zip(&gvar) {
                let dsigma = dvar / (2.0 * sigma);
                *g += dv * (dm - z * dsigma) / sigma;
            }
            total += v;
        }
        total
    }

    /// The lengthscales the local search measures steps in (with several objectives, each
    /// parameter's shortest among their processes).
    pub fn lengthscales(&self) -> Vec<f64> {
        self.ehvi
            .as_ref()
            .map_or_else(|| self.gp.lengthscales(), Ehvi::lengthscales)
    }
}

fn ei_value((mean, var): (f64, f64), f0: f64) -> f64 {
    let sigma = (var + STABILIZING_NOISE).sqrt();
    log_h((mean - f0) / sigma).0 + sigma.ln()
}

fn pof_value((mean, var): (f64, f64), threshold: f64) -> f64 {
    let sigma = (var + STABILIZING_NOISE).sqrt();
    log_cdf((mean - threshold) / sigma).0
}

/// How the maximisation searches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Search {
    pub n_preliminary_samples: usize,
    pub n_local_search: usize,
    pub tol: f64,
}

/// The point of `dims` with the largest acquisition value found. `warm` are extra start
/// points (the incumbent), at most `n_local_search - 1` of them.
pub(crate) fn maximize(
    acq: &LogEi<'_>,
    dims: &[Dim],
    warm: &[Vec<f64>],
    rng: &mut SmallRng,
    search: Search,
) -> Vec<f64> {
    let samples: Vec<Vec<f64>> = (0..search.n_preliminary_samples.max(1))
        .map(|_| dims.iter().map(|d| random_value(d, rng)).collect())
        .collect();
    let values = acq.eval_many(&samples);
    let best = argmax(&values);
    // Roulette over the rest, weighted by exp(value - best value), without replacement.
    let mut weights: Vec<f64> = values
        .iter()
        .map(|v| {
            let w = (v - values[best]).exp();
            if w.is_finite() {
                w
            } else {
                0.0
            }
        })
        .collect();
    weights[best] = 0.0;
    let n_extra = search
        .n_local_search
        .saturating_sub(warm.len() + 1)
        .min(weights.iter().filter(|w| **w > 0.0).count());
    let mut starts = vec![samples[best].clone()];
    for _ in 0..n_extra {
        let total: f64 = weights.iter().sum();
        let mut r = rng.random_range(0.0..1.0) * total;
        let mut pick = weights.iter().rposition(|w| *w > 0.0).unwrap_or(0);
        for (i, w) in weights.iter().enumerate() {
            if *w > 0.0 && r < *w {
                pick = i;
                break;
            }
            r -= w;
        }
        weights[pick] = 0.0;
        starts.push(samples[pick].clone());
    }
    starts.extend(warm.iter().cloned());
    let lengthscales = acq.lengthscales();
    let results: Vec<(Vec<f64>, f64)> = starts
        .into_par_iter()
        .map(|x0| local_search(acq, dims, x0, &lengthscales, search.tol))
        .collect();
    let fs: Vec<f64> = results.iter().map(|r| r.1).collect();
    results
        .into_iter()
        .nth(argmax(&fs))
        .map(|r| r.0)
        .unwrap_or_default()
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

fn random_value(dim: &Dim, rng: &mut SmallRng) -> f64 {
    match dim {
        Dim::Continuous => rng.random_range(0.0..1.0),
        Dim::Grid(grid) => grid[nearest(grid, rng.random_range(0.0..1.0))],
        Dim::Categorical(n) => rng.random_range(0..*n) as f64,
    }
}

/// Index of the grid value nearest to `x`.
fn nearest(grid: &[f64], x: f64) -> usize {
    let i = grid.partition_point(|g| *g < x);
    if i == 0 {
        0
    } else if i == grid.len() || x - grid[i - 1] <= grid[i] - x {
        i - 1
    } else {
        i
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Changed {
    Continuous,
    Discrete(usize),
}

/// Alternates gradient ascent on the continuous dimensions with a search of each discrete
/// one, until a whole round changes nothing.
fn local_search(
    acq: &LogEi<'_>,
    dims: &[Dim],
    mut x: Vec<f64>,
    lengthscales: &[f64],
    tol: f64,
) -> (Vec<f64>, f64) {
    let cont: Vec<usize> = (0..dims.len())
        .filter(|i| matches!(dims[*i], Dim::Continuous))
        .collect();
    let mut f = acq.eval(&x);
    let mut last = Changed::Continuous;
    for _ in 0..100 {
        if !cont.is_empty() {
            if let Some((xn, fnew)) = gradient_ascent(acq, &x, &cont, lengthscales, tol) {
                if fnew > f {
                    x = xn;
                    f = fnew;
                    last = Changed::Continuous;
                }
            }
        }
        for (i, dim) in dims.iter().enumerate() {
            if matches!(dim, Dim::Continuous) {
                continue;
            }
            if last == Changed::Discrete(i) {
                return (x, f);
            }
            if let Some((v, fv)) = search_discrete(acq, &x, f, i, dim) {
                x[i] = v;
                f = fv;
                last = Changed::Discrete(i);
            }
        }
        if last == Changed::Continuous {
            return (x, f);
        }
    }
    (x, f)
}

/// L-BFGS on the continuous dimensions `cont`, in units of their lengthscales (which evens
/// out the curvature); None when it took no step.
fn gradient_ascent(
    acq: &LogEi<'_>,
    x0: &[f64],
    cont: &[usize],
    lengthscales: &[f64],
    tol: f64,
) -> Option<(Vec<f64>, f64)> {
    let ls: Vec<f64> = cont.iter().map(|&i| lengthscales[i]).collect();
    let z0: Vec<f64> = cont.iter().zip(&ls).map(|(&i, l)| x0[i] / l).collect();
    let hi: Vec<f64> = ls.iter().map(|l| 1.0 / l).collect();
    let mut x = x0.to_vec();
    let mut gx = vec![0.0; x0.len()];
    let out = lbfgs::minimize(
        |z, g| {
            for ((&i, zi), l) in cont.iter().zip(z).zip(&ls) {
                x[i] = zi * l;
            }
            let v = acq.eval_grad(&x, &mut gx);
            for (k, (&i, l)) in cont.iter().zip(&ls).enumerate() {
                g[k] = -gx[i] * l;
            }
            -v
        },
        &z0,
        &vec![0.0; cont.len()],
        &hi,
        lbfgs::Options {
            max_iters: 200,
            pgtol: tol.sqrt(),
            ftol: 2.2e-9,
        },
    );
    if out.iterations == 0 {
        return None;
    }
    let mut xn = x0.to_vec();
    for ((&i, zi), l) in cont.iter().zip(&out.x).zip(&ls) {
        xn[i] = (zi * l).clamp(0.0, 1.0);
    }
    Some((xn, -out.f))
}

/// Grids up to this size are searched exhaustively, larger ones around the current value.
const EXHAUSTIVE: usize = 16;

/// A better value of discrete dimension `i` and the acquisition value there, if any.
fn search_discrete(acq: &LogEi<'_>, x: &[f64], f: f64, i: usize, dim: &Dim) -> Option<(f64, f64)> {
    let mut y = x.to_vec();
    let mut eval = |v: f64| {
        y[i] = v;
        acq.eval(&y)
    };
    let mut best = (x[i], f);
    let mut consider = |v: f64, eval: &mut dyn FnMut(f64) -> f64| {
        if v != x[i] {
            let fv = eval(v);
            if fv > best.1 {
                best = (v, fv);
            }
        }
    };
    match dim {
        Dim::Continuous => return None,
        Dim::Categorical(n) => {
            for c in 0..*n {
                consider(c as f64, &mut eval);
            }
        }
        Dim::Grid(grid) if grid.len() <= EXHAUSTIVE => {
            for &v in grid {
                consider(v, &mut eval);
            }
        }
        Dim::Grid(grid) => {
            // Evenly spread probes plus the neighbours, then climb from the best.
            let cur = nearest(grid, x[i]);
            let last = grid.len() - 1;
            let probes = (0..EXHAUSTIVE).map(|k| k * last / (EXHAUSTIVE - 1));
            let near = [
                cur.saturating_sub(2),
                cur.saturating_sub(1),
                cur + 1,
                cur + 2,
            ];
            for k in probes.chain(near.into_iter().filter(|k| *k <= last)) {
                consider(grid[k], &mut eval);
            }
            let mut at = nearest(grid, best.0);
            'climb: loop {
                for next in [at.wrapping_sub(1), at + 1] {
                    if next <= last && grid[next] != x[i] {
                        let fv = eval(grid[next]);
                        if fv > best.1 {
                            best = (grid[next], fv);
                            at = next;
                            continue 'climb;
                        }
                    }
                }
                break;
            }
        }
    }
    (best.0 != x[i]).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_h_is_continuous_and_its_derivative_right() {
        // Both branches agree at the switch, and each derivative matches finite differences.
        let (a, _) = log_h(-25.0 + 1e-12);
        let (b, _) = log_h(-25.0 - 1e-12);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        for z in [-60.0, -30.0, -24.0, -5.0, -0.3, 0.0, 2.0, 9.0] {
            let h = 1e-6;
            let fd = (log_h(z + h).0 - log_h(z - h).0) / (2.0 * h);
            let (_, d) = log_h(z);
            assert!(
                (fd - d).abs() < 1e-4 * d.abs().max(1.0),
                "z={z}: {fd} vs {d}"
            );
        }
        // E[max(0, Z)] = φ(0).
        assert!((log_h(0.0).0 - INV_SQRT_2PI.ln()).abs() < 1e-12);
        assert!(log_h(-1000.0).0.is_finite());
    }

    #[test]
    fn log_cdf_is_continuous_and_its_derivative_right() {
        let (a, _) = log_cdf(-25.0 + 1e-12);
        let (b, _) = log_cdf(-25.0 - 1e-12);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        for z in [-60.0, -30.0, -24.0, -5.0, -0.3, 0.0, 2.0, 9.0] {
            let h = 1e-6;
            let fd = (log_cdf(z + h).0 - log_cdf(z - h).0) / (2.0 * h);
            let (_, d) = log_cdf(z);
            assert!(
                (fd - d).abs() < 1e-4 * d.abs().max(1.0),
                "z={z}: {fd} vs {d}"
            );
        }
        assert!((log_cdf(0.0).0 - 0.5f64.ln()).abs() < 1e-12);
        assert!(log_cdf(40.0).0.abs() < 1e-12 && log_cdf(-1000.0).0.is_finite());
    }

    #[test]
    fn nearest_grid_value() {
        let g = [0.0, 0.25, 0.5, 1.0];
        assert_eq!(nearest(&g, -1.0), 0);
        assert_eq!(nearest(&g, 0.1), 0);
        assert_eq!(nearest(&g, 0.2), 1);
        assert_eq!(nearest(&g, 0.8), 3);
        assert_eq!(nearest(&g, 7.0), 3);
    }
}
