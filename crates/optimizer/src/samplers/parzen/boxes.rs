//! Sums of many Gaussian kernels that share one bandwidth, without visiting every kernel for
//! every point: a truncated Taylor expansion per box of kernels (a one-dimensional fast Gauss
//! transform).
//!
//! The kernels are grouped in boxes one bandwidth `h` wide. For a kernel at `mu` in the box
//! centred at `a`, with `t = (x - a) / h` and `s = (mu - a) / h` (so `|s| <= 1/2`),
//!
//! ```text
//! exp(-(x - mu)^2 / 2h^2) = exp(-t^2 / 2) * exp(-s^2 / 2) * exp(t s)
//! ```
//!
//! and `exp(t s)` is expanded in powers of `t s`. A box then sums its kernels at any `x` from
//! [`TERMS`] moments (one polynomial in `t`), whatever its number of kernels.
//!
//! Error: cutting the series of `exp(y)` after `P` terms leaves at most `|y|^P / P! e^|y|`; with
//! `|y| <= |t| / 2` and the Gaussian factor, a box's error is at most
//! `max_t exp(-t^2/2 + |t|/2) (|t|/2)^P / P!` = 2.7e-19 (P = 24) times its kernels' summed peak
//! weight, at every `x`. That is below the PRUNE_NATS cut of the direct sum (4e-18 of the
//! largest kernel), and below the rounding of either sum.

use super::Lse;
use crate::fastmath::{self, madd};

/// Terms of each box's expansion (see the module's error bound); a multiple of 4.
pub(super) const TERMS: usize = 24;

/// Kernels `exp(w_k - (x - mu_k)^2 / 2h^2)` summed box by box.
#[derive(Debug, Clone)]
pub(super) struct Boxes {
    inv_h: f64,
    /// Centres of the non-empty boxes, ascending.
    anchors: Vec<f64>,
    /// The largest log weight in each box, the scale of its moments.
    scales: Vec<f64>,
    /// Each box's polynomial in `t`: coefficient `p` is `sum_k exp(w_k - scale - s_k^2/2) s_k^p / p!`.
    moments: Vec<[f64; TERMS]>,
}

impl Boxes {
    /// The kernels centred at `mus` (ascending) with log weights `log_w`, bandwidth `h`.
    #[inline(always)]
    pub fn new<const FMA: bool>(mus: &[f64], log_w: &[f64], h: f64) -> Self {
        let inv_h = 1.0 / h;
        let mut out = Boxes {
            inv_h,
            anchors: Vec::new(),
            scales: Vec::new(),
            moments: Vec::new(),
        };
        let Some(&first) = mus.first() else {
            return out;
        };
        let mut factorial_inv = [1.0; TERMS];
        for p in 1..TERMS {
            factorial_inv[p] = factorial_inv[p - 1] / p as f64;
        }
        // Reused per box: each kernel's offset and its current power term.
        let (mut s, mut c) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < mus.len() {
            let b = ((mus[start] - first) * inv_h).floor();
            let anchor = first + (b + 0.5) * h;
            let upper = first + (b + 1.0) * h;
            // The box's kernels (a scan: they are visited below anyway).
            let mut end = start + 1;
            while end < mus.len() && mus[end] < upper {
                end += 1;
            }
            let ws = &log_w[start..end];
            let scale = ws.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // Each kernel's offset and weight in the box, padded with zero weights to a
            // multiple of 8 (plain indexed loops, which vectorise).
            let len = end - start;
            let padded = len.next_multiple_of(8);
            s.clear();
            s.resize(padded, 0.0);
            c.clear();
            c.resize(padded, 0.0);
            let box_mus = &mus[start..end];
            for i in 0..len {
                s[i] = (box_mus[i] - anchor) * inv_h;
            }
            for i in 0..len {
                c[i] = fastmath::exp::<FMA>(madd::<FMA>(-0.5 * s[i], s[i], ws[i] - scale));
            }
            // Power sums four powers per pass over the box's kernels, eight kernels at a time
            // (two independent chains of four lanes); each pass leaves every kernel's next
            // power in `c`.
            let mut moment = [0.0; TERMS];
            for (p0, f) in (0..TERMS).step_by(4).zip(factorial_inv.chunks_exact(4)) {
                let mut acc = [[0.0; 4]; 8];
                for (c8, s8) in c.chunks_exact_mut(8).zip(s.chunks_exact(8)) {
                    let (s_lo, s_hi) = (lanes4(&s8[..4]), lanes4(&s8[4..]));
                    let (mut u, mut v) = (lanes4(&c8[..4]), lanes4(&c8[4..]));
                    for q in 0..4 {
                        acc[q] = add4(acc[q], u);
                        acc[4 + q] = add4(acc[4 + q], v);
                        u = mul4(u, s_lo);
                        v = mul4(v, s_hi);
                    }
                    c8[..4].copy_from_slice(&u);
                    c8[4..].copy_from_slice(&v);
                }
                for q in 0..4 {
                    let sum = add4(acc[q], acc[4 + q]);
                    moment[p0 + q] = (sum[0] + sum[1] + sum[2] + sum[3]) * f[q];
                }
            }
            out.anchors.push(anchor);
            out.scales.push(scale);
            out.moments.push(moment);
            start = end;
        }
        out
    }

    /// The sum at `x` of the kernels in the boxes centred in `[lo, hi]`, as an [`Lse`].
    #[inline(always)]
    pub fn lse<const FMA: bool>(&self, x: f64, lo: f64, hi: f64) -> Lse {
        let b0 = self.anchors.partition_point(|&a| a < lo);
        let b1 = self.anchors.partition_point(|&a| a <= hi);
        let anchors = &self.anchors[b0..b1];
        let scales = &self.scales[b0..b1];
        let log_gauss = |a: f64, scale: f64| {
            let t = (x - a) * self.inv_h;
            madd::<FMA>(-0.5 * t, t, scale)
        };
        let m = anchors
            .iter()
            .zip(scales)
            .map(|(&a, &scale)| log_gauss(a, scale))
            .fold(f64::NEG_INFINITY, f64::max);
        if !m.is_finite() {
            return Lse::EMPTY;
        }
        let mut s = 0.0;
        for ((&a, &scale), moment) in anchors.iter().zip(scales).zip(&self.moments[b0..b1]) {
            let t = (x - a) * self.inv_h;
            let poly = moment
                .iter()
                .rev()
                .fold(0.0, |acc, &coef| madd::<FMA>(acc, t, coef));
            // Positive in exact arithmetic; rounding cannot make it negative by more than
            // its error bound, but it must not subtract.
            s += fastmath::exp::<FMA>(log_gauss(a, scale) - m) * poly.max(0.0);
        }
        Lse { m, s }
    }

    /// A lower bound of the largest kernel's log term at `x`: the heaviest kernel of each of
    /// the two boxes around `x` lies within half a box of its centre (-inf without boxes).
    #[inline(always)]
    pub fn nearest_bound<const FMA: bool>(&self, x: f64) -> f64 {
        let b = self.anchors.partition_point(|&a| a < x);
        [b.checked_sub(1), (b < self.anchors.len()).then_some(b)]
            .iter()
            .flatten()
            .map(|&i| {
                let t = madd::<FMA>((x - self.anchors[i]).abs(), self.inv_h, 0.5);
                madd::<FMA>(-0.5 * t, t, self.scales[i])
            })
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The number of boxes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.anchors.len()
    }
}

#[inline(always)]
fn lanes4(v: &[f64]) -> [f64; 4] {
    [v[0], v[1], v[2], v[3]]
}

#[inline(always)]
fn add4(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
}

#[inline(always)]
fn mul4(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2], a[3] * b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    fn brute(mus: &[f64], log_w: &[f64], h: f64, x: f64) -> f64 {
        let terms: Vec<f64> = mus
            .iter()
            .zip(log_w)
            .map(|(m, w)| w - 0.5 * ((x - m) / h).powi(2))
            .collect();
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        top + terms.iter().map(|v| (v - top).exp()).sum::<f64>().ln()
    }

    #[test]
    fn box_sums_match_the_direct_sum() {
        let mut rng = SmallRng::seed_from_u64(7);
        for (n, h) in [(1, 0.3), (40, 0.05), (3000, 0.2), (3000, 0.01)] {
            // A dense cluster and a sparse spread, weights over a few orders of magnitude.
            let mut mus: Vec<f64> = (0..n)
                .map(|i| {
                    if i % 3 == 0 {
                        rng.random_range(-10.0..10.0)
                    } else {
                        rng.random_range(-0.5..0.7)
                    }
                })
                .collect();
            mus.sort_by(f64::total_cmp);
            let log_w: Vec<f64> = (0..n).map(|_| rng.random_range(-12.0..-3.0)).collect();
            let b = Boxes::new::<false>(&mus, &log_w, h);
            assert!(b.len() <= n);
            for i in 0..200 {
                let x = if i % 2 == 0 {
                    rng.random_range(-12.0..12.0)
                } else {
                    rng.random_range(-0.6..0.8)
                };
                let got = b.lse::<false>(x, f64::NEG_INFINITY, f64::INFINITY).value();
                let want = brute(&mus, &log_w, h, x);
                // The bound: an error below 1e-15 of the kernels' summed peak weight...
                let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let peak: f64 = log_w.iter().map(|w| (w - top).exp()).sum();
                let err = ((got - top).exp() - (want - top).exp()).abs();
                assert!(err <= 1e-15 * peak, "n={n} h={h} x={x}: {got} vs {want}");
                // ...well within 1e-10 of the density where a kernel is a few bandwidths away.
                let near = mus.iter().any(|m| (x - m).abs() < 3.0 * h);
                if near {
                    assert!(
                        (got - want).abs() < 1e-10,
                        "n={n} h={h} x={x}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_the_boxes_in_range_count() {
        let mus = [0.0, 0.05, 5.0];
        let log_w = [0.0, 0.0, 0.0];
        let b = Boxes::new::<false>(&mus, &log_w, 0.1);
        assert_eq!(b.len(), 2);
        let near = b.lse::<false>(0.0, -1.0, 1.0).value();
        assert!((near - brute(&mus[..2], &log_w[..2], 0.1, 0.0)).abs() < 1e-14);
        assert_eq!(b.lse::<false>(0.0, 1.0, 2.0).value(), f64::NEG_INFINITY);
    }
}
