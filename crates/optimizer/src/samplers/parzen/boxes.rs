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

/// `1 / p!` for each term.
const FACTORIAL_INV: [f64; TERMS] = {
    let mut f = [1.0; TERMS];
    let mut p = 1;
    while p < TERMS {
        f[p] = f[p - 1] / p as f64;
        p += 1;
    }
    f
};

/// Kernels `exp(w_k - (x - mu_k)^2 / 2h^2)` summed box by box.
#[derive(Debug, Clone)]
pub(super) struct Boxes {
    inv_h: f64,
    /// Centres of the non-empty boxes, ascending.
    anchors: Vec<f64>,
    /// A kernel's log weight in each box (the largest, when built by [`Boxes::new`]): the
    /// scale of its moments.
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
            for (p0, f) in (0..TERMS).step_by(4).zip(FACTORIAL_INV.chunks_exact(4)) {
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

    /// A lower bound of the largest kernel's log term at `x`: the kernel of each of the two
    /// boxes around `x` whose log weight is the box's scale lies within half a box of its
    /// centre (-inf without boxes).
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

/// Kernels of one bandwidth `h` summed box by box, like [`Boxes`], for a mixture whose weights
/// are affine in each kernel's rank, `alpha + beta * rank`, with `alpha` and `beta` known only
/// when it is scored (TPE's above estimator: the weights ramp up with a trial's age and are
/// normalised by the number of trials, so every weight changes with every new trial).
///
/// Each box keeps two weight-free moment sets, `sum c_k s_k^p / p!` and `sum rank_k c_k s_k^p /
/// p!` with `c_k = exp(-norm_k - s_k^2 / 2)` (`norm_k` the constant part of the kernel's log
/// density), so adding a kernel costs [`TERMS`] terms, and [`RampBoxes::weighted`] gives the
/// [`Boxes`] of any `alpha` and `beta` from the moments alone, without visiting a kernel. A
/// kernel cannot be removed (sums that subtract lose precision): its owner starts afresh.
///
/// The boxes lie on a fixed grid from `origin`, so a kernel's box never depends on the others.
#[derive(Debug, Clone)]
pub(super) struct RampBoxes {
    origin: f64,
    h: f64,
    cells: Vec<RampCell>,
}

/// One box of [`RampBoxes`].
#[derive(Debug, Clone, Default)]
struct RampCell {
    count: u32,
    plain: [f64; TERMS],
    ranked: [f64; TERMS],
    /// The highest rank in the box (the largest weight) and that kernel's `norm`.
    top_rank: f64,
    top_norm: f64,
    /// The smallest `norm` in the box.
    min_norm: f64,
}

impl RampBoxes {
    /// Empty boxes `h` wide covering `[low, high]`; None when that takes more than `max_boxes`.
    pub fn new(low: f64, high: f64, h: f64, max_boxes: usize) -> Option<Self> {
        let n = ((high - low) / h).floor() + 1.0;
        (h > 0.0 && n.is_finite() && n <= max_boxes as f64).then(|| RampBoxes {
            origin: low,
            h,
            cells: vec![RampCell::default(); n as usize],
        })
    }

    /// Adds the kernel centred at `mu` (within the covered range), with constant log density
    /// part `norm` and rank `rank`.
    pub fn add(&mut self, mu: f64, norm: f64, rank: f64) {
        let last = self.cells.len() - 1;
        let b = (((mu - self.origin) / self.h).floor().max(0.0) as usize).min(last);
        let anchor = self.origin + (b as f64 + 0.5) * self.h;
        let s = (mu - anchor) / self.h;
        let cell = &mut self.cells[b];
        // The powers c s^p four at a time (four independent products, which vectorise).
        let c = (-norm - 0.5 * s * s).exp();
        let s2 = s * s;
        let s4 = s2 * s2;
        let mut term = [c, c * s, c * s2, c * s2 * s];
        for p0 in (0..TERMS).step_by(4) {
            for q in 0..4 {
                let v = term[q] * FACTORIAL_INV[p0 + q];
                cell.plain[p0 + q] += v;
                cell.ranked[p0 + q] += rank * v;
                term[q] *= s4;
            }
        }
        if cell.count == 0 || rank > cell.top_rank {
            cell.top_rank = rank;
            cell.top_norm = norm;
        }
        cell.min_norm = if cell.count == 0 {
            norm
        } else {
            cell.min_norm.min(norm)
        };
        cell.count += 1;
    }

    /// The kernels with weights `alpha + beta * rank` (both positive) as [`Boxes`], and an upper
    /// bound of their log weights less `norm` (-inf without kernels).
    pub fn weighted(&self, alpha: f64, beta: f64) -> (Boxes, f64) {
        let mut out = Boxes {
            inv_h: 1.0 / self.h,
            anchors: Vec::new(),
            scales: Vec::new(),
            moments: Vec::new(),
        };
        let mut upper = f64::NEG_INFINITY;
        for (b, cell) in self.cells.iter().enumerate().filter(|(_, c)| c.count > 0) {
            let log_top = (alpha + beta * cell.top_rank).ln();
            // The log weight of the kernel of the highest rank: the box's scale (about the
            // largest: the kernels' `norm`s differ by their truncation only).
            let scale = log_top - cell.top_norm;
            upper = upper.max(log_top - cell.min_norm);
            let k = (-scale).exp();
            let mut moment = [0.0; TERMS];
            for (m, (a, r)) in moment.iter_mut().zip(cell.plain.iter().zip(&cell.ranked)) {
                *m = k * (alpha * a + beta * r);
            }
            out.anchors.push(self.origin + (b as f64 + 0.5) * self.h);
            out.scales.push(scale);
            out.moments.push(moment);
        }
        (out, upper)
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
    fn ramp_boxes_match_the_direct_sum_of_any_weights() {
        let mut rng = SmallRng::seed_from_u64(11);
        let (low, high, h) = (-3.0, 5.0, 0.08);
        let mut ramp = RampBoxes::new(low, high, h, 1000).unwrap();
        let (mut mus, mut norms, mut ranks) = (Vec::new(), Vec::new(), Vec::new());
        for rank in 0..2000 {
            // Dense around 1, a few spread over the range and on its ends.
            let mu = match rank % 10 {
                0 => rng.random_range(low..=high),
                1 if rank % 100 == 1 => [low, high][(rank / 100) % 2],
                _ => 1.0 + rng.random_range(-0.3..0.3),
            };
            let norm = h.ln() + rng.random_range(-0.7..0.0);
            ramp.add(mu, norm, rank as f64);
            mus.push(mu);
            norms.push(norm);
            ranks.push(rank as f64);
        }
        for (alpha, beta) in [(1e-4, 1e-6), (0.5, 0.0), (2e-7, 3e-3)] {
            let (b, upper) = ramp.weighted(alpha, beta);
            let log_w: Vec<f64> = norms
                .iter()
                .zip(&ranks)
                .map(|(n, r)| (alpha + beta * r).ln() - n)
                .collect();
            let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert!(upper >= top && upper < top + 0.71, "{upper} vs {top}");
            for i in 0..300 {
                let x = if i % 2 == 0 {
                    rng.random_range(low - 1.0..high + 1.0)
                } else {
                    1.0 + rng.random_range(-0.4..0.4)
                };
                let got = b.lse::<false>(x, f64::NEG_INFINITY, f64::INFINITY).value();
                let want = brute(&mus, &log_w, h, x);
                // As for `Boxes::new`: within 1e-13 of the summed peak weight (the sums of
                // 2,000 terms round by more than the cut series), and 1e-10 of the density
                // near a kernel.
                let peak: f64 = log_w.iter().map(|w| (w - top).exp()).sum();
                let err = ((got - top).exp() - (want - top).exp()).abs();
                assert!(err <= 1e-13 * peak, "x={x}: {got} vs {want}");
                if mus.iter().any(|m| (x - m).abs() < 3.0 * h) {
                    assert!((got - want).abs() < 1e-10, "x={x}: {got} vs {want}");
                }
                // The nearest boxes bound the largest kernel from below.
                let largest = mus
                    .iter()
                    .zip(&log_w)
                    .map(|(m, w)| w - 0.5 * ((x - m) / h).powi(2))
                    .fold(f64::NEG_INFINITY, f64::max);
                assert!(b.nearest_bound::<false>(x) <= largest + 1e-12);
            }
        }
        assert!(RampBoxes::new(0.0, 1.0, 1e-9, 1000).is_none());
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
