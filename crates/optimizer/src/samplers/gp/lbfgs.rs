//! A projected limited-memory BFGS minimiser for smooth functions on a box: the quasi-Newton
//! direction is computed over the variables not held at a bound, and a backtracking line search
//! along the projected path keeps every iterate inside the box.

/// Stopping rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Iterations at most.
    pub max_iters: usize,
    /// Converged when the projected gradient's largest component is below this.
    pub pgtol: f64,
    /// Converged when an iteration lowers f by less than this, relative to |f| (or 1).
    pub ftol: f64,
}

/// Where the minimiser stopped.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub x: Vec<f64>,
    pub f: f64,
    /// Accepted steps.
    pub iterations: usize,
}

const MEMORY: usize = 10;

/// Minimises `fg` (which returns f(x) and writes ∇f(x) into its second argument) over the box
/// `[lo, hi]`, starting at `x0` (clamped into the box). A non-finite f is treated as outside
/// the function's domain: the line search steps back from it.
pub(crate) fn minimize(
    mut fg: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    opts: Options,
) -> Outcome {
    let n = x0.len();
    let mut x: Vec<f64> = (0..n).map(|i| x0[i].clamp(lo[i], hi[i])).collect();
    let mut g = vec![0.0; n];
    let mut f = fg(&x, &mut g);
    if !f.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return Outcome {
            x,
            f,
            iterations: 0,
        };
    }
    let mut hist: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::with_capacity(MEMORY);
    let (mut xn, mut gn) = (vec![0.0; n], vec![0.0; n]);
    let mut iterations = 0;
    for _ in 0..opts.max_iters {
        // Variables held at a bound by a gradient that points out of the box stay fixed.
        let free: Vec<bool> = (0..n)
            .map(|i| !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0)))
            .collect();
        let pg = (0..n)
            .map(|i| ((x[i] - g[i]).clamp(lo[i], hi[i]) - x[i]).abs())
            .fold(0.0, f64::max);
        if pg <= opts.pgtol {
            break;
        }
        let mut d: Vec<f64> = (0..n).map(|i| if free[i] { -g[i] } else { 0.0 }).collect();
        two_loop(&mut d, &hist, &free);
        let slope: f64 = d.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope >= 0.0 || !slope.is_finite() {
            // Not a descent direction: forget the curvature pairs, follow the gradient.
            hist.clear();
            d = (0..n).map(|i| if free[i] { -g[i] } else { 0.0 }).collect();
        }
        let mut t = if hist.is_empty() {
            // First step: at most a unit move in the largest coordinate.
            1.0 / d.iter().fold(1.0f64, |m, v| m.max(v.abs()))
        } else {
            1.0
        };
        let mut fnew = f64::INFINITY;
        let mut accepted = false;
        for _ in 0..40 {
            for i in 0..n {
                xn[i] = (x[i] + t * d[i]).clamp(lo[i], hi[i]);
            }
            fnew = fg(&xn, &mut gn);
            let decrease: f64 = (0..n).map(|i| g[i] * (xn[i] - x[i])).sum();
            if fnew.is_finite() && gn.iter().all(|v| v.is_finite()) && fnew <= f + 1e-4 * decrease {
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            break;
        }
        iterations += 1;
        let s: Vec<f64> = (0..n).map(|i| xn[i] - x[i]).collect();
        let y: Vec<f64> = (0..n).map(|i| gn[i] - g[i]).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let yy: f64 = y.iter().map(|v| v * v).sum();
        if sy > 1e-12 * yy.max(1e-300) && sy.is_finite() {
            if hist.len() == MEMORY {
                hist.remove(0);
            }
            hist.push((s, y, 1.0 / sy));
        }
        let fold = f;
        std::mem::swap(&mut x, &mut xn);
        std::mem::swap(&mut g, &mut gn);
        f = fnew;
        if fold - f <= opts.ftol * fold.abs().max(f.abs()).max(1.0) {
            break;
        }
    }
    Outcome { x, f, iterations }
}

/// Applies the L-BFGS inverse-Hessian estimate to `d` (the negative gradient), over the free
/// variables only.
fn two_loop(d: &mut [f64], hist: &[(Vec<f64>, Vec<f64>, f64)], free: &[bool]) {
    if hist.is_empty() {
        return;
    }
    let dot = |a: &[f64], b: &[f64]| -> f64 {
        a.iter()
            .zip(b)
            .zip(free)
            .filter(|(_, f)| **f)
            .map(|((x, y), _)| x * y)
            .sum()
    };
    let mut alpha = vec![0.0; hist.len()];
    for (k, (s, y, rho)) in hist.iter().enumerate().rev() {
        alpha[k] = rho * dot(s, d);
        for i in 0..d.len() {
            if free[i] {
                d[i] -= alpha[k] * y[i];
            }
        }
    }
    let (s, y, _) = hist.last().expect("not empty");
    let yy = dot(y, y);
    let gamma = if yy > 0.0 { dot(s, y) / yy } else { 1.0 };
    let gamma = if gamma.is_finite() && gamma > 0.0 {
        gamma
    } else {
        1.0
    };
    for v in d.iter_mut() {
        *v *= gamma;
    }
    for (k, (s, y, rho)) in hist.iter().enumerate() {
        let beta = rho * dot(y, d);
        for i in 0..d.len() {
            if free[i] {
                d[i] += (alpha[k] - beta) * s[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: Options = Options {
        max_iters: 500,
        pgtol: 1e-8,
        ftol: 0.0,
    };

    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let (a, b) = (x[0], x[1]);
        g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
        g[1] = 200.0 * (b - a * a);
        (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
    }

    #[test]
    fn finds_the_unconstrained_minimum_of_rosenbrock() {
        let inf = f64::INFINITY;
        let out = minimize(rosenbrock, &[-1.2, 1.0], &[-inf; 2], &[inf; 2], OPTS);
        assert!(
            (out.x[0] - 1.0).abs() < 1e-5 && (out.x[1] - 1.0).abs() < 1e-5,
            "{out:?}"
        );
        assert!(out.iterations < 200);
    }

    #[test]
    fn stops_on_the_bound_when_the_minimum_is_outside() {
        // min of (x-3)² + (y+2)² on [0,1]²: (1, 0), both at a bound.
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2.0 * (x[0] - 3.0);
            g[1] = 2.0 * (x[1] + 2.0);
            (x[0] - 3.0).powi(2) + (x[1] + 2.0).powi(2)
        };
        let out = minimize(f, &[0.5, 0.5], &[0.0; 2], &[1.0; 2], OPTS);
        assert_eq!(out.x, vec![1.0, 0.0]);
        // One bound active, the other coordinate free: min at (1, 0.25) of (x-3)² + (y-0.25)².
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2.0 * (x[0] - 3.0);
            g[1] = 2.0 * (x[1] - 0.25);
            (x[0] - 3.0).powi(2) + (x[1] - 0.25).powi(2)
        };
        let out = minimize(f, &[0.1, 0.9], &[0.0; 2], &[1.0; 2], OPTS);
        assert_eq!(out.x[0], 1.0);
        assert!((out.x[1] - 0.25).abs() < 1e-7, "{out:?}");
    }

    #[test]
    fn steps_back_from_where_the_function_is_undefined() {
        // f = x - ln(x) has its minimum at 1 and is undefined (NaN) for x <= 0.
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 1.0 - 1.0 / x[0];
            if x[0] > 0.0 {
                x[0] - x[0].ln()
            } else {
                f64::NAN
            }
        };
        let out = minimize(f, &[5.0], &[-10.0], &[10.0], OPTS);
        assert!((out.x[0] - 1.0).abs() < 1e-6, "{out:?}");
    }
}
