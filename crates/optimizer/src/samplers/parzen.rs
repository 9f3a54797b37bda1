//! The Parzen estimator of TPE: a mixture of products of truncated normal (numeric) and
//! categorical kernels, one kernel per observation plus a prior kernel.
//!
//! Numeric parameters live in a transformed space: log space for log parameters, and the range
//! widened by half a step on each side for stepped parameters, whose density is the kernel's mass
//! over the value's step cell. Bandwidths are the larger gap to the neighbouring observations
//! (the range ends count as neighbours, except for the two outermost observations), clipped to
//! `[range / min(100, n_kernels + 1), range]` (the caller may count more kernels for the floor:
//! `ParzenParams::clip_count`); the prior kernel sits at the centre with the whole range as
//! bandwidth. These are Optuna 5.0's rules.
//!
//! Layout: every per-kernel quantity is a contiguous `Vec<f64>` per dimension, and the constant
//! part of each kernel's log density is folded into one `base` vector, so evaluating a candidate
//! is one tight, vectorisable pass per dimension over the kernels.

use std::collections::HashMap;
use std::f64::consts::FRAC_1_SQRT_2;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::RngExt;
use rayon::prelude::*;
use statrs::function::erf::erfc;

use crate::distributions::{Distribution, IntDistribution};
use crate::fastmath::{self, madd};

mod boxes;
mod ramp;
use boxes::Boxes;
pub(crate) use ramp::RampWindow;
use ramp::FLAT;

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
/// Standard deviations beyond which a normal tail (< 4e-11) is ignored in kernel masses.
const TAIL_CUT: f64 = 6.5;
/// Work (kernels x dimensions x candidates) above which candidates are scored in parallel.
/// Waking the pool costs tens of microseconds, more when the other cores are busy: below about
/// 1,000 kernels x 10 dimensions x 24 candidates one thread is as fast.
const PARALLEL_WORK: usize = 1 << 18;
/// Kernels x dimensions above which the dimensions are fitted in parallel.
const PARALLEL_FIT: usize = 1 << 15;
/// One-dimensional estimators with at least this many kernels score a candidate against the
/// kernels near it only (found by binary search in the sorted centres).
const WINDOW_MIN_KERNELS: usize = 128;
/// The share of a windowed dimension's kernels, the widest, that are always evaluated; the
/// others only inside the window, whose width scales with their largest bandwidth.
const WINDOW_WIDE: f64 = 0.05;
/// About the kernel evaluations of a windowed candidate besides the wide kernels: about 20
/// boxes of 24 terms (or the narrow kernels within about 10 bandwidths each way).
const WINDOW_REACH_WORK: usize = 512;
/// Kernels this far (in nats) below the best one contribute less than 1e-17 of the density.
const PRUNE_NATS: f64 = 40.0;

/// Estimator options shared by every parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ParzenParams {
    pub prior_weight: f64,
    pub consider_magic_clip: bool,
    pub consider_endpoints: bool,
    /// The number of observations the magic clip counts (None: the estimator's own).
    pub clip_count: Option<usize>,
}

/// Standard normal CDF.
#[inline]
fn ndtr(x: f64) -> f64 {
    0.5 * erfc(-x * FRAC_1_SQRT_2)
}

/// log of the standard normal CDF, accurate in both tails.
fn log_ndtr(x: f64) -> f64 {
    if x > 6.0 {
        (-ndtr(-x)).ln_1p()
    } else if x > -20.0 {
        ndtr(x).ln()
    } else {
        // Asymptotic series of the Mills ratio.
        let x2 = x * x;
        -0.5 * x2 - (-x).ln() - LN_SQRT_2PI
            + (-1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)).ln_1p()
    }
}

/// Intervals of the [`log_ndtr_table`] on [0, TAIL_CUT].
const TABLE_INTERVALS: usize = 2048;

/// ln Phi(y) and its derivative at TABLE_INTERVALS + 1 evenly spaced y in [0, TAIL_CUT].
fn log_ndtr_table() -> &'static [[f64; 2]] {
    static TABLE: std::sync::OnceLock<Vec<[f64; 2]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=TABLE_INTERVALS)
            .map(|i| {
                let y = TAIL_CUT * i as f64 / TABLE_INTERVALS as f64;
                let q = ndtr(-y);
                let pdf = (-0.5 * y * y - LN_SQRT_2PI).exp();
                [(-q).ln_1p(), pdf / (1.0 - q)]
            })
            .collect()
    })
}

/// ln Phi(y) for 0 <= y <= TAIL_CUT: cubic Hermite interpolation of the table (interpolation
/// error below 1e-12, under statrs' erfc error of ~1e-10), several times cheaper than erfc. A
/// kernel close to one bound of the range has log mass ln Phi(distance to the bound in
/// bandwidths).
#[inline(always)]
fn log_ndtr_pos(table: &[[f64; 2]], y: f64) -> f64 {
    let h = TAIL_CUT / TABLE_INTERVALS as f64;
    let u = (y / h).clamp(0.0, TABLE_INTERVALS as f64);
    let i = (u as usize).min(TABLE_INTERVALS - 1);
    let t = u - i as f64;
    let ([f0, d0], [f1, d1]) = (table[i], table[i + 1]);
    let (t2, t3) = (t * t, t * t * t);
    (2.0 * t3 - 3.0 * t2 + 1.0) * f0
        + (t3 - 2.0 * t2 + t) * h * d0
        + (3.0 * t2 - 2.0 * t3) * f1
        + (t3 - t2) * h * d1
}

/// log of the standard normal mass on [a, b] for a <= 0 <= b (a kernel's mass on the range, in
/// its own units). Far from both bounds (the common case) it is 0 to double precision; close to
/// one bound it is one normal tail.
#[inline(always)]
fn kernel_log_mass(table: &[[f64; 2]], a: f64, b: f64) -> f64 {
    match (a < -TAIL_CUT, b > TAIL_CUT) {
        (true, true) => 0.0,
        (false, true) if a <= 0.0 => log_ndtr_pos(table, -a),
        (true, false) if b >= 0.0 => log_ndtr_pos(table, b),
        _ => log_gauss_mass(a, b),
    }
}

/// log(exp(hi) - exp(lo)) for lo <= hi.
#[inline]
fn log_diff_exp(hi: f64, lo: f64) -> f64 {
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (-(lo - hi).exp_m1()).ln()
}

/// log of the standard normal mass on [a, b].
pub(crate) fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        log_diff_exp(log_ndtr(b), log_ndtr(a))
    } else if a >= 0.0 {
        log_diff_exp(log_ndtr(-a), log_ndtr(-b))
    } else {
        // Both tails are small: 1 - P(X < a) - P(X > b). Beyond TAIL_CUT sd a tail changes the
        // log mass by less than 1e-10: treat it as zero.
        let left = if a < -TAIL_CUT { 0.0 } else { ndtr(a) };
        let right = if b > TAIL_CUT { 0.0 } else { ndtr(-b) };
        let t = left + right;
        if t < 1e-5 {
            // ln(1 - t) to better than 1e-15 without a logarithm (the common case).
            return -t - 0.5 * t * t;
        }
        (-t).ln_1p()
    }
}

/// The standard normal quantile for 0 < p < 1, by Acklam's rational approximations (relative
/// error below 1.2e-9: plenty for drawing candidates, and no erfc or series evaluation).
fn ndtri(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (-p).ln_1p()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// One draw of a standard normal truncated to [a, b] (inverse-CDF method).
fn truncnorm_draw(rng: &mut SmallRng, a: f64, b: f64) -> f64 {
    // Work in the tail where the CDF has resolution.
    let (a, b, flip) = if a >= 0.0 {
        (-b, -a, true)
    } else {
        (a, b, false)
    };
    // Bounds beyond TAIL_CUT cut off less than 4e-11 of the mass: skip their erfc.
    let pa = if a < -TAIL_CUT { 0.0 } else { ndtr(a) };
    let pb = if b > TAIL_CUT { 1.0 } else { ndtr(b) };
    let u: f64 = rng.random();
    let p = pa + (pb - pa) * u;
    let z = if p <= 0.0 {
        a
    } else if p >= 1.0 {
        b
    } else {
        ndtri(p)
    };
    let z = z.clamp(a, b);
    if flip {
        -z
    } else {
        z
    }
}

/// Defines `fn $name` that runs its body compiled for AVX2+FMA when the CPU has them (the hot
/// loops vectorise four lanes wide), and as plain x86-64 otherwise. Inside the body the const
/// `FMA` says which: fused multiply-adds ([`madd`]) only where it is true.
macro_rules! with_avx2 {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            #[allow(unused)]
            fn imp<const FMA: bool>($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    imp::<true>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp::<false>($($arg),*)
        }
    };
}

#[derive(Debug, Clone)]
pub(crate) struct NumericDim {
    log: bool,
    /// Step in the original space; 0 for continuous.
    step: f64,
    /// The distribution of an int dimension, whose draws are rounded onto its grid exactly.
    int: Option<Box<IntDistribution>>,
    /// Bounds in the original space.
    low: f64,
    high: f64,
    /// Bounds in the transformed space (log, widened by half a step).
    t_low: f64,
    t_high: f64,
    /// The magic clip: the smallest bandwidth (transformed space).
    min_sigma: f64,
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    inv_sigmas: Vec<f64>,
    /// log of each kernel's mass on [t_low, t_high].
    log_mass: Vec<f64>,
    /// Continuous dims: the constant part of each kernel's log density,
    /// `ln(sigma) + ln(sqrt(2 pi)) + log_mass` (empty for stepped dims).
    log_norm: Vec<f64>,
    /// The observations' kernels ascending by centre (the prior kernel, last, is not in it).
    order: Vec<u32>,
    /// For stepped dims: index of each kernel's (mu, sigma) among the unique pairs.
    unique_of: Vec<u32>,
    unique: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub(crate) struct CategoricalDim {
    n_choices: usize,
    /// Row-major kernels x choices.
    probs: Vec<f64>,
    log_probs: Vec<f64>,
}

#[derive(Debug, Clone)]
pub(crate) enum Dim {
    Numeric(NumericDim),
    Categorical(CategoricalDim),
}

/// Observations of one dimension: values (internal representation) and, optionally, their
/// ascending order (indices into `values`) when the caller already knows it.
pub(crate) struct DimObservations {
    pub values: Vec<f64>,
    pub order: Option<Vec<u32>>,
    pub dist: Distribution,
}

/// Per-thread buffers reused across candidates.
#[derive(Default)]
struct Scratch {
    acc: Vec<f64>,
}

/// A fitted mixture over a search space.
#[derive(Debug, Clone)]
pub(crate) struct ParzenEstimator {
    n_kernels: usize,
    /// Normalised mixture weights (sum to 1).
    weights: Vec<f64>,
    /// log weight plus the constant part of every continuous dimension's log density.
    base: Vec<f64>,
    /// Shared with the sampler's cache of above estimators (see `samplers::above`).
    dims: Arc<Vec<Dim>>,
    /// For a single continuous dimension with many kernels: its kernels by centre.
    window: Option<Window>,
}

/// The kernels of a one-dimensional estimator sorted by centre, for scoring a candidate against
/// the kernels within reach only. A kernel's log density is `base - z^2 / 2`, so one more than
/// `w = cap * sqrt(2 (max base - f))` away from the candidate (bandwidth <= cap) is below `f`.
/// Most kernels have the magic clip as bandwidth (where observations are dense): where that
/// pays ([`boxes_pay`]) those are summed box by box ([`Boxes`]), the others one by one.
#[derive(Debug, Clone)]
struct Window {
    /// Centre (ascending), inverse bandwidth and `base` of the kernels with bandwidth <= `cap`
    /// not in `boxes`, contiguous so a candidate's densities over a run of them vectorise.
    mus: Vec<f64>,
    inv_sigmas: Vec<f64>,
    bases: Vec<f64>,
    /// The kernels whose bandwidth is the clip, `box_width`, when boxes pay (else none).
    boxes: Boxes,
    box_width: f64,
    /// Centre, inverse bandwidth and `base` of the kernels wider than `cap` (few: isolated
    /// observations and the prior): always evaluated.
    wide: Vec<[f64; 3]>,
    cap: f64,
    /// At least the largest `base` of the narrow and the boxed kernels.
    base_max: f64,
}

impl Window {
    fn new(nd: &NumericDim, base: &[f64]) -> Self {
        let i = ((1.0 - WINDOW_WIDE) * (nd.sigmas.len() - 1) as f64) as usize;
        let at_clip = nd.sigmas.iter().filter(|&&s| s == nd.min_sigma).count();
        // The clip is the smallest bandwidth: when it is the i-th too, no selection is needed.
        let cap = if at_clip > i {
            nd.min_sigma
        } else {
            let mut sorted = nd.sigmas.clone();
            *sorted.select_nth_unstable_by(i, f64::total_cmp).1
        };
        let n = nd.order.len();
        let clip_centres = nd
            .order
            .iter()
            .map(|&k| k as usize)
            .filter(|&k| nd.sigmas[k] == nd.min_sigma)
            .map(|k| nd.mus[k]);
        let use_boxes = boxes_pay(clip_centres, nd.min_sigma, n);
        let (mut clip_mus, mut clip_bases) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut direct = Vec::with_capacity(n);
        for &k in &nd.order {
            let k = k as usize;
            let (s, b) = (nd.sigmas[k], base[k]);
            if s == nd.min_sigma && use_boxes {
                clip_mus.push(nd.mus[k]);
                clip_bases.push(b);
            } else {
                direct.push([nd.mus[k], s, b]);
            }
        }
        let prior = nd.mus.len() - 1;
        let boxes_max = clip_bases.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let boxes = build_boxes(&clip_mus, &clip_bases, nd.min_sigma);
        let mut win = Window::assemble(&direct, cap, boxes, nd.min_sigma, boxes_max);
        win.wide
            .push([nd.mus[prior], nd.inv_sigmas[prior], base[prior]]);
        win
    }

    /// The window over the kernels `boxes` (of bandwidth `box_width`, whose bases are at most
    /// `boxes_max`) and the kernels `direct` (centre, bandwidth and base, ascending by centre),
    /// those wider than `cap` always evaluated.
    fn assemble(
        direct: &[[f64; 3]],
        cap: f64,
        boxes: Boxes,
        box_width: f64,
        boxes_max: f64,
    ) -> Self {
        let n = direct.len();
        let (mut mus, mut inv_sigmas, mut bases) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut wide = Vec::new();
        // A local maximum (a field would be stored and reloaded at every kernel).
        let mut base_max = boxes_max;
        for &[mu, s, b] in direct {
            if s <= cap {
                mus.push(mu);
                inv_sigmas.push(1.0 / s);
                bases.push(b);
                if b > base_max {
                    base_max = b;
                }
            } else {
                wide.push([mu, 1.0 / s, b]);
            }
        }
        Window {
            mus,
            inv_sigmas,
            bases,
            boxes,
            box_width,
            wide,
            cap,
            base_max,
        }
    }

    /// log density of the `j`-th narrow kernel (ascending by centre) at `x`.
    #[inline(always)]
    fn density<const FMA: bool>(&self, j: usize, x: f64) -> f64 {
        gauss_log_density::<FMA>(x, self.mus[j], self.inv_sigmas[j], self.bases[j])
    }
}

/// log density of `x` for a windowed one-dimensional estimator: the kernels within reach
/// of `x` and the wide ones (the others are more than PRUNE_NATS below the nearest kernel).
#[inline(always)]
fn score_window<const FMA: bool>(win: &Window, x: f64, scratch: &mut Scratch) -> f64 {
    let vals = &mut scratch.acc;
    vals.clear();
    vals.extend(
        win.wide
            .iter()
            .map(|&[mu, inv, base]| gauss_log_density::<FMA>(x, mu, inv, base)),
    );
    // A lower bound of the largest kernel: the wide ones, the nearest narrow ones and the
    // nearest boxes' (see `Boxes::nearest_bound`).
    let p = win.mus.partition_point(|&m| m < x);
    let near = [p.checked_sub(1), (p < win.mus.len()).then_some(p)];
    let f = near
        .iter()
        .flatten()
        .map(|&j| win.density::<FMA>(j, x))
        .chain(vals.iter().copied())
        .fold(win.boxes.nearest_bound::<FMA>(x), f64::max)
        - PRUNE_NATS;
    // Kernels of bandwidth h more than h * reach from `x` are below `f`.
    let reach = if f.is_finite() {
        (2.0 * (win.base_max - f)).max(0.0).sqrt()
    } else {
        f64::INFINITY
    };
    let w = win.cap * reach;
    let lo = win.mus.partition_point(|&m| m < x - w);
    let hi = win.mus.partition_point(|&m| m <= x + w);
    let run = win.mus[lo..hi]
        .iter()
        .zip(&win.inv_sigmas[lo..hi])
        .zip(&win.bases[lo..hi]);
    vals.extend(run.map(|((&mu, &inv), &base)| gauss_log_density::<FMA>(x, mu, inv, base)));
    // The boxes' kernels have the clip as bandwidth and lie within half a box of its centre.
    let w = win.box_width * (reach + 0.5);
    let boxed = win.boxes.lse::<FMA>(x, x - w, x + w);
    block_lse::<FMA>(vals, f64::NEG_INFINITY)
        .merge(boxed)
        .value()
}

/// Whether summing the kernels at the clip `h` (centres `clip_mus`, ascending) box by box is
/// cheaper than one by one, for 24 candidates and `n` kernels in all. A candidate's direct
/// sum visits about 20 boxes' kernels (the window reaches about 10 bandwidths each way), about
/// 20 times the occupancy (how many kernels a kernel shares its box with, on average); its
/// boxed sum costs about 20 x 25 kernel evaluations, plus its share of building the boxes,
/// about n / 3 (8 evaluations a kernel over 24 candidates). So boxes pay where observations
/// concentrate (a converging study), not over a spread-out history, where they are as fast
/// at best (`cargo bench -p dspex-optimizer --bench tpe`, `tpe_sample_independent`).
fn boxes_pay(clip_mus: impl Iterator<Item = f64>, h: f64, n: usize) -> bool {
    let (mut first, mut box_end) = (f64::NAN, f64::NEG_INFINITY);
    let (mut run, mut sum_sq, mut count) = (0.0, 0.0, 0.0);
    for mu in clip_mus {
        if first.is_nan() {
            first = mu;
        }
        if mu >= box_end {
            sum_sq += run * run;
            run = 0.0;
            box_end = first + (((mu - first) / h).floor() + 1.0) * h;
        }
        run += 1.0;
        count += 1.0;
    }
    sum_sq += run * run;
    count > 0.0 && 20.0 * sum_sq / count > 500.0 + n as f64 / 3.0
}

with_avx2! {
    /// [`Boxes::new`], compiled for AVX2+FMA where the CPU has them.
    fn build_boxes(mus: &[f64], log_w: &[f64], h: f64) -> Boxes {
        Boxes::new::<FMA>(mus, log_w, h)
    }
}

/// `base - ((x - mu) * inv_sigma)^2 / 2`: a kernel's log density with its constant in `base`.
#[inline(always)]
fn gauss_log_density<const FMA: bool>(x: f64, mu: f64, inv_sigma: f64, base: f64) -> f64 {
    let z = (x - mu) * inv_sigma;
    madd::<FMA>(-0.5 * z, z, base)
}

/// Optuna's default trial weights: flat for the newest 25, a linear ramp for older ones.
pub(crate) fn default_weights(n: usize) -> Vec<f64> {
    if n < FLAT {
        return vec![1.0; n];
    }
    let m = n - FLAT;
    let mut w: Vec<f64> = if m == 1 {
        vec![1.0 / n as f64]
    } else {
        let start = 1.0 / n as f64;
        (0..m)
            .map(|i| start + (1.0 - start) * i as f64 / (m - 1) as f64)
            .collect()
    };
    w.extend(std::iter::repeat_n(1.0, FLAT));
    w
}

impl ParzenEstimator {
    /// Fits the estimator. `obs_weights` has one weight per observation (all dims have the same
    /// number of observations).
    pub fn new(dims: Vec<DimObservations>, obs_weights: &[f64], params: ParzenParams) -> Self {
        let n_obs = obs_weights.len();
        let n_kernels = n_obs + 1;
        let mut weights: Vec<f64> = if n_obs == 0 {
            vec![1.0]
        } else {
            obs_weights
                .iter()
                .copied()
                .chain([params.prior_weight])
                .collect()
        };
        let total: f64 = weights.iter().sum();
        let total = if total > 0.0 { total } else { 1.0 };
        weights.iter_mut().for_each(|w| *w /= total);
        let fit = |d: DimObservations| -> Dim {
            debug_assert_eq!(d.values.len(), n_obs);
            let numeric = match &d.dist {
                Distribution::Categorical(c) => {
                    return Dim::Categorical(categorical_dim(
                        &d.values,
                        c.choices.len(),
                        params.prior_weight,
                    ))
                }
                Distribution::Float(f) => (f.low, f.high, f.step.unwrap_or(0.0), f.log),
                Distribution::Int(i) => (i.low as f64, i.high as f64, i.step as f64, i.log),
            };
            let (low, high, step, log) = numeric;
            Dim::Numeric(numeric_dim(d, low, high, step, log, params))
        };
        let dims: Vec<Dim> = if n_kernels * dims.len() >= PARALLEL_FIT {
            dims.into_par_iter().map(fit).collect()
        } else {
            dims.into_iter().map(fit).collect()
        };
        Self::assemble(weights, Arc::new(dims), params)
    }

    /// The estimator over fitted kernels `dims` (the prior last), the observation in slot
    /// `rank_slots[r]` being the `r`-th oldest: weighted as [`ParzenEstimator::new`] weights
    /// observations given oldest first.
    pub fn from_slots(
        dims: Arc<Vec<Dim>>,
        rank_slots: &[u32],
        obs_weights: &[f64],
        params: ParzenParams,
    ) -> Self {
        let n_obs = rank_slots.len();
        // Summed in the order `new` sums them, so the weights are the same to the last bit.
        let total: f64 = obs_weights.iter().chain([&params.prior_weight]).sum();
        let total = if total > 0.0 { total } else { 1.0 };
        let mut weights = vec![0.0; n_obs + 1];
        for (&slot, &w) in rank_slots.iter().zip(obs_weights) {
            weights[slot as usize] = w / total;
        }
        weights[n_obs] = params.prior_weight / total;
        Self::assemble(weights, dims, params)
    }

    fn assemble(weights: Vec<f64>, dims: Arc<Vec<Dim>>, params: ParzenParams) -> Self {
        let n_kernels = weights.len();
        let base = base_log_density(&weights, &dims);
        let window = match dims.as_slice() {
            [Dim::Numeric(nd)]
                if nd.step == 0.0
                    && params.consider_magic_clip
                    && n_kernels >= WINDOW_MIN_KERNELS =>
            {
                Some(Window::new(nd, &base))
            }
            _ => None,
        };
        ParzenEstimator {
            n_kernels,
            weights,
            base,
            dims,
            window,
        }
    }

    /// The fitted kernels, to keep for the next sample (`samplers::above`).
    pub fn dims(&self) -> &Arc<Vec<Dim>> {
        &self.dims
    }

    /// Draws `n` points (internal representation, one Vec per dimension).
    pub fn sample(&self, rng: &mut SmallRng, n: usize) -> Vec<Vec<f64>> {
        assert!(
            !self.weights.is_empty(),
            "an estimator from a ramp window scores, it is not sampled"
        );
        let mut cumulative = Vec::with_capacity(self.n_kernels);
        let mut acc = 0.0;
        for w in &self.weights {
            acc += w;
            cumulative.push(acc);
        }
        let kernels: Vec<usize> = (0..n)
            .map(|_| {
                let u: f64 = rng.random::<f64>() * acc;
                cumulative
                    .partition_point(|c| *c <= u)
                    .min(self.n_kernels - 1)
            })
            .collect();
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Categorical(c) => kernels
                    .iter()
                    .map(|&k| {
                        let row = &c.probs[k * c.n_choices..(k + 1) * c.n_choices];
                        let u: f64 = rng.random();
                        let mut s = 0.0;
                        let mut pick = c.n_choices - 1;
                        for (i, p) in row.iter().enumerate() {
                            s += p;
                            if u < s {
                                pick = i;
                                break;
                            }
                        }
                        pick as f64
                    })
                    .collect(),
                Dim::Numeric(nd) => kernels
                    .iter()
                    .map(|&k| {
                        let (mu, sigma) = (nd.mus[k], nd.sigmas[k]);
                        let z =
                            truncnorm_draw(rng, (nd.t_low - mu) / sigma, (nd.t_high - mu) / sigma);
                        let mut x = mu + sigma * z;
                        if nd.log {
                            x = x.exp();
                        }
                        if let Some(int) = &nd.int {
                            return int.nearest(x) as f64;
                        }
                        if nd.step > 0.0 {
                            x = nd.low + ((x - nd.low) / nd.step).round() * nd.step;
                        }
                        x.clamp(nd.low, nd.high)
                    })
                    .collect(),
            })
            .collect()
    }

    /// `FMA`: fused multiply-adds (only where the function is compiled for them).
    #[inline(always)]
    fn score<const FMA: bool>(
        &self,
        points: &[&[f64]],
        cells: &[Option<Vec<f64>>],
        c: usize,
        scratch: &mut Scratch,
    ) -> f64 {
        if let Some(win) = &self.window {
            return score_window::<FMA>(win, points[0][c], scratch);
        }
        let acc = &mut scratch.acc;
        acc.clear();
        acc.extend_from_slice(&self.base);
        self.add_terms::<FMA>(points, cells, c, 0, acc);
        log_sum_exp::<FMA>(acc)
    }

    /// log density of each candidate (`points[dim][candidate]`).
    pub fn log_pdf(&self, points: &[Vec<f64>]) -> Vec<f64> {
        let n = points.first().map_or(0, Vec::len);
        // Stepped dims: kernel masses of each candidate's cell, per unique (mu, sigma) pair.
        let cells: Vec<Option<Vec<f64>>> = self
            .dims
            .iter()
            .zip(points)
            .map(|(d, xs)| match d {
                Dim::Numeric(nd) if nd.step > 0.0 => Some(cell_masses(nd, xs)),
                _ => None,
            })
            .collect();
        // Continuous log dims are scored in log space: take the logarithms once here (inside
        // the scoring loop the compiler evaluates `ln` even where it is not needed).
        let logs: Vec<Option<Vec<f64>>> = self
            .dims
            .iter()
            .zip(points)
            .map(|(d, xs)| match d {
                Dim::Numeric(nd) if nd.step == 0.0 && nd.log => {
                    Some(xs.iter().map(|x| x.ln()).collect())
                }
                _ => None,
            })
            .collect();
        let points: Vec<&[f64]> = points
            .iter()
            .zip(&logs)
            .map(|(xs, l)| l.as_deref().unwrap_or(xs))
            .collect();
        if self.window.is_none() && self.n_kernels >= BLOCKED_MIN_KERNELS {
            return self.log_pdf_blocked(&points, &cells, n);
        }
        let one = |scratch: &mut Scratch, c: usize| -> f64 {
            score_candidate(self, &points, &cells, c, scratch)
        };
        // A windowed candidate visits the wide kernels, and about WINDOW_REACH_WORK for the
        // others within its reach, whatever their number.
        let per_candidate = match &self.window {
            Some(win) => win.wide.len() + WINDOW_REACH_WORK,
            None => self.n_kernels * self.dims.len(),
        };
        if per_candidate * n >= PARALLEL_WORK {
            (0..n)
                .into_par_iter()
                .map_init(Scratch::default, one)
                .collect()
        } else {
            let mut scratch = Scratch::default();
            (0..n).map(|c| one(&mut scratch, c)).collect()
        }
    }
}

impl ParzenEstimator {
    /// [`ParzenEstimator::log_pdf`] for many kernels: every candidate visits the kernels one
    /// block at a time, so a block's parameters are read from memory once for all candidates
    /// (scoring candidate by candidate streams every kernel's parameters once per candidate,
    /// from L3 or memory at 10,000 kernels x 10 dimensions). With several threads, each takes a
    /// contiguous share of the blocks and the shares' sums are merged.
    fn log_pdf_blocked(&self, points: &[&[f64]], cells: &[Option<Vec<f64>>], n: usize) -> Vec<f64> {
        let n_blocks = self.n_kernels.div_ceil(BLOCK);
        let work = self.n_kernels * self.dims.len() * n;
        let shares = if work >= PARALLEL_WORK {
            rayon::current_num_threads().clamp(1, n_blocks)
        } else {
            1
        };
        let share = |i: usize| -> Vec<Lse> {
            let (b0, b1) = (i * n_blocks / shares, (i + 1) * n_blocks / shares);
            let (k0, k1) = (b0 * BLOCK, (b1 * BLOCK).min(self.n_kernels));
            score_blocks(self, points, cells, n, k0, k1)
        };
        // The calling thread takes the first share itself: the pool is woken for the others only.
        let mut parts: Vec<Vec<Lse>> = vec![Vec::new(); shares];
        rayon::in_place_scope(|scope| {
            let (first, rest) = parts.split_at_mut(1);
            for (i, part) in rest.iter_mut().enumerate() {
                let share = &share;
                scope.spawn(move |_| *part = share(i + 1));
            }
            first[0] = share(0);
        });
        let mut parts = parts.into_iter();
        let first = parts.next().unwrap_or_default();
        let sums = parts.fold(first, |a, b| {
            a.iter().zip(&b).map(|(x, y)| x.merge(*y)).collect()
        });
        sums.into_iter().map(Lse::value).collect()
    }

    /// Adds every dimension's term of candidate `c` to the kernels `k0..k0 + acc.len()`:
    /// continuous dimensions two per pass (half the loads and stores of the sums), the others
    /// one by one.
    #[inline(always)]
    fn add_terms<const FMA: bool>(
        &self,
        points: &[&[f64]],
        cells: &[Option<Vec<f64>>],
        c: usize,
        k0: usize,
        acc: &mut [f64],
    ) {
        let mut pending: Option<(f64, &Dim)> = None;
        for ((d, xs), cell) in self.dims.iter().zip(points).zip(cells) {
            match d {
                Dim::Numeric(nd) if nd.step == 0.0 => match pending.take() {
                    Some((x0, Dim::Numeric(d0))) => {
                        add_two_terms::<FMA>(acc, k0, (x0, d0), (xs[c], nd))
                    }
                    _ => pending = Some((xs[c], d)),
                },
                _ => self.add_term_range(d, xs[c], c, cell.as_deref(), k0, acc),
            }
        }
        if let Some((x0, d0)) = pending {
            self.add_term_range(d0, x0, c, None, k0, acc);
        }
    }

    /// Adds dimension `d`'s term of candidate `c` (value `x`) to the kernels `k0..k0 +
    /// acc.len()`.
    #[inline(always)]
    fn add_term_range(
        &self,
        d: &Dim,
        x: f64,
        c: usize,
        cell: Option<&[f64]>,
        k0: usize,
        acc: &mut [f64],
    ) {
        let ks = k0..k0 + acc.len();
        match d {
            Dim::Numeric(nd) if nd.step == 0.0 => {
                for ((a, mu), inv) in acc
                    .iter_mut()
                    .zip(&nd.mus[ks.clone()])
                    .zip(&nd.inv_sigmas[ks])
                {
                    let z = (x - mu) * inv;
                    *a -= 0.5 * z * z;
                }
            }
            Dim::Numeric(nd) => {
                let cell = cell.unwrap_or(&[]);
                let row = &cell[c * nd.unique.len()..(c + 1) * nd.unique.len()];
                let kernels = nd.unique_of[ks.clone()].iter().zip(&nd.log_mass[ks]);
                for (a, (u, lm)) in acc.iter_mut().zip(kernels) {
                    *a += row[*u as usize] - lm;
                }
            }
            Dim::Categorical(cd) => {
                let j = x as usize;
                for (a, k) in acc.iter_mut().zip(ks) {
                    *a += cd.log_probs[k * cd.n_choices + j];
                }
            }
        }
    }
}

/// Kernels per block of the blocked scoring: a block's parameters over ten continuous
/// dimensions (40 KiB) stay in cache while every candidate visits them.
const BLOCK: usize = 256;
/// Kernels from which candidates are scored block by block.
const BLOCKED_MIN_KERNELS: usize = 1024;

/// A log-sum-exp in progress: `m + ln(s)`, with `m` the largest term so far.
#[derive(Debug, Clone, Copy)]
struct Lse {
    m: f64,
    s: f64,
}

impl Lse {
    const EMPTY: Lse = Lse {
        m: f64::NEG_INFINITY,
        s: 0.0,
    };

    /// Adds terms whose largest is `m` and whose sum of `exp(term - m)` is `s`.
    #[inline(always)]
    fn merge(self, other: Lse) -> Lse {
        let (hi, lo) = if other.m > self.m {
            (other, self)
        } else {
            (self, other)
        };
        if lo.m == f64::NEG_INFINITY {
            return hi;
        }
        Lse {
            m: hi.m,
            s: hi.s + lo.s * (lo.m - hi.m).exp(),
        }
    }

    fn value(self) -> f64 {
        if self.m.is_finite() {
            self.m + self.s.ln()
        } else {
            self.m
        }
    }
}

with_avx2! {
    /// The log-sum-exp of every candidate over the kernels `k0..k1`, block by block.
    fn score_blocks(
        est: &ParzenEstimator,
        points: &[&[f64]],
        cells: &[Option<Vec<f64>>],
        n: usize,
        k0: usize,
        k1: usize,
    ) -> Vec<Lse> {
        let mut sums = vec![Lse::EMPTY; n];
        let mut acc = [0.0; BLOCK];
        let mut start = k0;
        while start < k1 {
            let end = (start + BLOCK).min(k1);
            let acc = &mut acc[..end - start];
            for (c, sum) in sums.iter_mut().enumerate() {
                acc.copy_from_slice(&est.base[start..end]);
                est.add_terms::<FMA>(points, cells, c, start, acc);
                *sum = sum.merge(block_lse::<FMA>(acc, sum.m));
            }
            start = end;
        }
        sums
    }
}

/// The block's terms as an [`Lse`] relative to the larger of their maximum and `floor` (the
/// maximum so far): terms more than PRUNE_NATS below it are skipped four at a time.
#[inline(always)]
fn block_lse<const FMA: bool>(v: &[f64], floor: f64) -> Lse {
    let m = max_lanes(v).max(floor);
    if !m.is_finite() {
        return Lse { m, s: 0.0 };
    }
    // Terms more than PRUNE_NATS below the maximum change nothing in double precision: a group
    // of four with none above the cut is skipped (most of them when a candidate is far from
    // most kernels), the others are exponentiated whole.
    let cut = m - PRUNE_NATS;
    let chunks = v.chunks_exact(4);
    let mut s4 = [0.0; 4];
    for c in chunks.clone() {
        // Non-short-circuiting, so it compiles to one vector compare.
        if (c[0] > cut) | (c[1] > cut) | (c[2] > cut) | (c[3] > cut) {
            for (s, &x) in s4.iter_mut().zip(c) {
                *s += fastmath::exp::<FMA>(x - m);
            }
        }
    }
    let s = s4.iter().sum::<f64>()
        + chunks
            .remainder()
            .iter()
            .map(|&x| fastmath::exp::<FMA>(x - m))
            .sum::<f64>();
    Lse { m, s }
}

/// Adds two continuous dimensions' terms `-0.5 * ((x - mu) / sigma)^2` to the sums of the
/// kernels `k0..k0 + acc.len()`.
#[inline(always)]
fn add_two_terms<const FMA: bool>(
    acc: &mut [f64],
    k0: usize,
    (x0, d0): (f64, &NumericDim),
    (x1, d1): (f64, &NumericDim),
) {
    let ks = k0..k0 + acc.len();
    let (m0, i0, m1, i1) = (
        &d0.mus[ks.clone()],
        &d0.inv_sigmas[ks.clone()],
        &d1.mus[ks.clone()],
        &d1.inv_sigmas[ks],
    );
    for k in 0..acc.len() {
        let z0 = (x0 - m0[k]) * i0[k];
        let z1 = (x1 - m1[k]) * i1[k];
        acc[k] = madd::<FMA>(-0.5, madd::<FMA>(z0, z0, z1 * z1), acc[k]);
    }
}

with_avx2! {
    /// log density of candidate `c` under `est`.
    fn score_candidate(
        est: &ParzenEstimator,
        points: &[&[f64]],
        cells: &[Option<Vec<f64>>],
        c: usize,
        scratch: &mut Scratch,
    ) -> f64 {
        est.score::<FMA>(points, cells, c, scratch)
    }
}

with_avx2! {
    /// Each kernel's log weight plus the constant part of its continuous dimensions' log density.
    fn base_log_density(weights: &[f64], dims: &[Dim]) -> Vec<f64> {
        // Logarithms first, without a branch (so they vectorise); zero weights after.
        let mut base: Vec<f64> = weights.iter().map(|&w| fastmath::ln(w)).collect();
        for (b, w) in base.iter_mut().zip(weights) {
            if *w <= 0.0 {
                *b = f64::NEG_INFINITY;
            }
        }
        for d in dims {
            if let Dim::Numeric(nd) = d {
                for (b, n) in base.iter_mut().zip(&nd.log_norm) {
                    *b -= n;
                }
            }
        }
        base
    }
}

/// The largest element (NEG_INFINITY when empty), in four lanes so it vectorises.
#[inline(always)]
fn max_lanes(v: &[f64]) -> f64 {
    let chunks = v.chunks_exact(4);
    let mut m4 = [f64::NEG_INFINITY; 4];
    for c in chunks.clone() {
        for (m, x) in m4.iter_mut().zip(c) {
            *m = if *x > *m { *x } else { *m };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&m4)
        .fold(f64::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// log(sum(exp(v))), in four independent lanes so it vectorises.
#[inline(always)]
fn log_sum_exp<const FMA: bool>(v: &[f64]) -> f64 {
    block_lse::<FMA>(v, f64::NEG_INFINITY).value()
}

/// log mass of every candidate's step cell under every unique (mu, sigma) kernel:
/// row-major candidates x unique pairs.
fn cell_masses(nd: &NumericDim, xs: &[f64]) -> Vec<f64> {
    /// Cells narrower than this many bandwidths lose their mass to rounding between the
    /// bounds' CDFs (about 1e-4 of it at this width, all of it below 1e-16).
    const NARROW: f64 = 1e-12;
    let mut out = Vec::with_capacity(xs.len() * nd.unique.len());
    for &x in xs {
        let (mut l, mut r) = (x - nd.step / 2.0, x + nd.step / 2.0);
        // The cell's width in the transformed space, without the cancellation of `r - l`.
        let width = if nd.log {
            l = l.ln();
            r = r.ln();
            (nd.step / (x - nd.step / 2.0)).ln_1p()
        } else {
            nd.step
        };
        // False when the bounds lost the width to rounding (ints beyond 2^53, log cells
        // narrower than the precision of the log).
        let bounds_hold = (r - l - width).abs() <= 1e-4 * width;
        let centre = if nd.log { x.ln() } else { x };
        for &(mu, sigma) in &nd.unique {
            let w = width / sigma;
            out.push(if bounds_hold && w >= NARROW {
                log_gauss_mass((l - mu) / sigma, (r - mu) / sigma)
            } else {
                narrow_log_mass((centre - mu) / sigma, w)
            });
        }
    }
    out
}

/// log of the standard normal mass on [c - w/2, c + w/2], accurate for any small width `w`.
fn narrow_log_mass(c: f64, w: f64) -> f64 {
    if w > 1e-3 {
        return log_gauss_mass(c - w / 2.0, c + w / 2.0);
    }
    // w * pdf(c) * (1 + w^2 (c^2 - 1) / 24), up to terms in w^4. The correction is only
    // meaningful for |w c| < 1; beyond, the density is below e^-500000 anyway.
    let wc = (w * c).clamp(-1.0, 1.0);
    w.ln() - 0.5 * c * c - LN_SQRT_2PI + ((wc * wc - w * w) / 24.0).ln_1p()
}

/// The smallest bandwidth on a transformed range of width `range` with `count` observations
/// counted: `range / min(100, count + 2)` (Optuna's magic clip).
fn magic_clip(range: f64, count: usize, params: ParzenParams) -> f64 {
    if params.consider_magic_clip {
        range / 100f64.min(1.0 + (count + 1) as f64)
    } else {
        1e-12
    }
}

/// A kernel's log mass on [t_low, t_high] and the constant part of its log density,
/// `ln(sigma) + ln(sqrt(2 pi)) + log mass`.
#[inline(always)]
fn kernel_norm(t_low: f64, t_high: f64, mu: f64, s: f64) -> (f64, f64) {
    let far = mu - t_low > TAIL_CUT * s && t_high - mu > TAIL_CUT * s;
    let lm = if far {
        0.0
    } else {
        kernel_log_mass(log_ndtr_table(), (t_low - mu) / s, (t_high - mu) / s)
    };
    (lm, fastmath::ln(s) + LN_SQRT_2PI + lm)
}

impl NumericDim {
    /// True for a continuous dimension, the only kind whose kernels can be added and removed.
    pub fn is_continuous(&self) -> bool {
        self.step == 0.0
    }

    /// The smallest bandwidth the magic clip allows with `n` observations (`clip_count` None):
    /// the kernels can be kept while it is the one they were fitted with.
    pub fn clip_holds(&self, n: usize, params: ParzenParams) -> bool {
        magic_clip(self.t_high - self.t_low, n, params) == self.min_sigma
    }

    /// The position in `order` of a kernel centred at `mu` from trial `number` (ties by trial
    /// number, as the history sorts its columns); `numbers` gives each slot's trial number.
    fn position(&self, mu: f64, number: u64, numbers: &[u64]) -> usize {
        self.order.partition_point(|&k| {
            self.mus[k as usize]
                .total_cmp(&mu)
                .then(numbers[k as usize].cmp(&number))
                .is_lt()
        })
    }

    /// Refits the bandwidth of the kernel at `order[pos]` from its neighbours, as `numeric_dim`
    /// does; its slot when that changed the kernel.
    fn refit(&mut self, pos: usize, consider_endpoints: bool) -> Option<u32> {
        let n = self.order.len();
        let v = |i: usize| self.mus[self.order[i] as usize];
        let mu = v(pos);
        let left = if pos == 0 { self.t_low } else { v(pos - 1) };
        let right = if pos + 1 == n {
            self.t_high
        } else {
            v(pos + 1)
        };
        let mut s = (mu - left).max(right - mu);
        if !consider_endpoints && n >= 2 {
            if pos == 0 {
                s = v(1) - v(0);
            } else if pos == n - 1 {
                s = v(n - 1) - v(n - 2);
            }
        }
        let s = s.clamp(self.min_sigma, self.t_high - self.t_low);
        let k = self.order[pos] as usize;
        let (lm, ln) = kernel_norm(self.t_low, self.t_high, mu, s);
        let changed = self.sigmas[k] != s || self.log_norm[k] != ln;
        self.sigmas[k] = s;
        self.inv_sigmas[k] = 1.0 / s;
        self.log_mass[k] = lm;
        self.log_norm[k] = ln;
        changed.then_some(k as u32)
    }

    /// Adds the observation `value` of trial `numbers[slot]` as kernel `slot`, the last before
    /// the prior, and refits its neighbours (continuous dimensions only); the slots of the other
    /// kernels that changed go to `changed`.
    pub fn insert(
        &mut self,
        slot: usize,
        value: f64,
        numbers: &[u64],
        consider_endpoints: bool,
        changed: &mut Vec<u32>,
    ) {
        debug_assert!(self.is_continuous() && slot + 1 == self.mus.len());
        let mu = if self.log { value.ln() } else { value };
        for v in [
            &mut self.mus,
            &mut self.sigmas,
            &mut self.inv_sigmas,
            &mut self.log_mass,
            &mut self.log_norm,
        ] {
            v.insert(slot, mu);
        }
        let pos = self.position(mu, numbers[slot], numbers);
        self.order.insert(pos, slot as u32);
        let last = self.order.len() - 1;
        for p in pos.saturating_sub(2)..=(pos + 2).min(last) {
            changed.extend(
                self.refit(p, consider_endpoints)
                    .filter(|&k| k as usize != slot),
            );
        }
    }

    /// Removes kernel `slot`: the last observation's kernel takes its slot (`numbers` is still
    /// the slots' trial numbers before the move), and its neighbours are refitted; the slots
    /// (after the move) of those that changed go to `changed`.
    pub fn remove(
        &mut self,
        slot: usize,
        numbers: &[u64],
        consider_endpoints: bool,
        changed: &mut Vec<u32>,
    ) {
        let last = self.mus.len() - 2;
        let pos = self.position(self.mus[slot], numbers[slot], numbers);
        self.order.remove(pos);
        if slot != last {
            let moved = self.position(self.mus[last], numbers[last], numbers);
            self.order[moved] = slot as u32;
        }
        for v in [
            &mut self.mus,
            &mut self.sigmas,
            &mut self.inv_sigmas,
            &mut self.log_mass,
            &mut self.log_norm,
        ] {
            v[slot] = v[last];
            v.remove(last);
        }
        let n = self.order.len();
        if n > 0 {
            for p in pos.saturating_sub(2)..=(pos + 1).min(n - 1) {
                changed.extend(self.refit(p, consider_endpoints));
            }
        }
    }
}

fn categorical_dim(values: &[f64], n_choices: usize, prior_weight: f64) -> CategoricalDim {
    let n_obs = values.len();
    let probs = if n_obs == 0 {
        vec![1.0 / n_choices as f64; n_choices]
    } else {
        let n_kernels = n_obs + 1;
        let mut w = vec![prior_weight / n_kernels as f64; n_kernels * n_choices];
        for (k, v) in values.iter().enumerate() {
            let j = (*v as usize).min(n_choices - 1);
            w[k * n_choices + j] += 1.0;
        }
        for row in w.chunks_mut(n_choices) {
            let s: f64 = row.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            row.iter_mut().for_each(|p| *p /= s);
        }
        w
    };
    let log_probs = probs.iter().map(|p| p.ln()).collect();
    CategoricalDim {
        n_choices,
        probs,
        log_probs,
    }
}

with_avx2! {
    /// One numeric dimension's kernels (compiled for AVX2+FMA too, picked at run time).
    fn numeric_dim(
        d: DimObservations,
        low: f64,
        high: f64,
        step: f64,
        log: bool,
        params: ParzenParams,
    ) -> NumericDim {
        let int = match &d.dist {
            Distribution::Int(i) => Some(Box::new(i.clone())),
            _ => None,
        };
        let (mut t_low, mut t_high) = (low - step / 2.0, high + step / 2.0);
        let mut mus = d.values;
        if log {
            t_low = t_low.ln();
            t_high = t_high.ln();
            mus.iter_mut().for_each(|m| *m = m.ln());
        }
        if t_high <= t_low {
            // Ints near 2^63 whose values all share one f64 (or one log): give the range a
            // width, so the kernels have one.
            t_high = t_low + t_low.abs().max(1.0) * f64::EPSILON;
        }
        let n = mus.len();
        let range = t_high - t_low;
        let order = d.order.unwrap_or_else(|| {
            let mut o: Vec<u32> = (0..n as u32).collect();
            o.sort_by(|&a, &b| mus[a as usize].total_cmp(&mus[b as usize]));
            o
        });
        // Bandwidth: the larger gap to a neighbour, range ends included, clipped. Work on the
        // sorted values laid out contiguously, [low, sorted..., high], where the passes vectorise
        // and kernels near a bound sit at the ends (a predictable branch), then scatter.
        let max_sigma = range;
        let min_sigma = magic_clip(range, params.clip_count.unwrap_or(n), params);
        let mut line = Vec::with_capacity(n + 2);
        line.push(t_low);
        line.extend(order.iter().map(|&o| mus[o as usize]));
        line.push(t_high);
        let mut sorted_sigmas: Vec<f64> = line
            .windows(3)
            .map(|w| (w[1] - w[0]).max(w[2] - w[1]))
            .collect();
        if !params.consider_endpoints && n >= 2 {
            sorted_sigmas[0] = line[2] - line[1];
            sorted_sigmas[n - 1] = line[n] - line[n - 1];
        }
        sorted_sigmas
            .iter_mut()
            .for_each(|s| *s = s.clamp(min_sigma, max_sigma));
        // Most kernels have the clip bound as bandwidth and lie far from both bounds (mass 1):
        // start every kernel so, then visit the others ("special") in groups of four, skipping
        // the groups without any (no scatter over all kernels, no division or logarithm each).
        let far = |mu: f64, s: f64| mu - t_low > TAIL_CUT * s && t_high - mu > TAIL_CUT * s;
        let continuous = step == 0.0;
        let mut sigmas = vec![min_sigma; n + 1];
        let mut inv_sigmas = vec![1.0 / min_sigma; n + 1];
        let mut log_mass = vec![0.0; n + 1];
        let norm_min = fastmath::ln(min_sigma) + LN_SQRT_2PI;
        let mut log_norm = vec![norm_min; if continuous { n + 1 } else { 0 }];
        let mut set = |k: usize, mu: f64, s: f64| {
            let (lm, ln) = kernel_norm(t_low, t_high, mu, s);
            sigmas[k] = s;
            inv_sigmas[k] = 1.0 / s;
            log_mass[k] = lm;
            if continuous {
                log_norm[k] = ln;
            }
        };
        let special = |i: usize| sorted_sigmas[i] != min_sigma || !far(line[i + 1], sorted_sigmas[i]);
        for start in (0..n).step_by(4) {
            let end = (start + 4).min(n);
            // Non-short-circuiting, so the common all-ordinary group is one test.
            if (start..end).fold(false, |any, i| any | special(i)) {
                for i in (start..end).filter(|&i| special(i)) {
                    set(order[i] as usize, line[i + 1], sorted_sigmas[i]);
                }
            }
        }
        mus.push(0.5 * (t_low + t_high));
        set(n, mus[n], range);
        let (mut unique, mut unique_of) = (Vec::new(), Vec::new());
        if !continuous {
            let mut index: HashMap<(u64, u64), u32> = HashMap::new();
            for (mu, s) in mus.iter().zip(&sigmas) {
                let next = unique.len() as u32;
                let id = *index.entry((mu.to_bits(), s.to_bits())).or_insert_with(|| {
                    unique.push((*mu, *s));
                    next
                });
                unique_of.push(id);
            }
        }
        NumericDim {
            log,
            step,
            int,
            low,
            high,
            t_low,
            t_high,
            min_sigma,
            mus,
            sigmas,
            inv_sigmas,
            log_mass,
            log_norm,
            order,
            unique_of,
            unique,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::{FloatDistribution, IntDistribution};
    use rand::SeedableRng;
    use statrs::function::erf::erfc_inv;
    use std::f64::consts::SQRT_2;

    /// Brute force: one kernel's log density at one candidate, for checking the fast paths.
    impl ParzenEstimator {
        /// Dimension `d`'s term of candidate `c` (value `x`) for kernel `k`.
        fn term(&self, d: &Dim, x: f64, c: usize, cell: Option<&[f64]>, k: usize) -> f64 {
            match d {
                Dim::Numeric(nd) if nd.step == 0.0 => {
                    let z = (x - nd.mus[k]) * nd.inv_sigmas[k];
                    -0.5 * z * z
                }
                Dim::Numeric(nd) => {
                    let cell = cell.unwrap_or(&[]);
                    cell[c * nd.unique.len() + nd.unique_of[k] as usize] - nd.log_mass[k]
                }
                Dim::Categorical(cd) => cd.log_probs[k * cd.n_choices + x as usize],
            }
        }

        fn full_log_density(
            &self,
            points: &[&[f64]],
            cells: &[Option<Vec<f64>>],
            c: usize,
            k: usize,
        ) -> f64 {
            let mut v = self.base[k];
            for ((d, xs), cell) in self.dims.iter().zip(points).zip(cells) {
                v += self.term(d, xs[c], c, cell.as_deref(), k);
            }
            v
        }
    }

    const P: ParzenParams = ParzenParams {
        prior_weight: 1.0,
        consider_magic_clip: true,
        consider_endpoints: false,
        clip_count: None,
    };

    #[test]
    fn gauss_mass_matches_known_values() {
        assert!((log_gauss_mass(-1.0, 1.0) - 0.682_689_492_137_085_9f64.ln()).abs() < 1e-8);
        assert!((log_gauss_mass(1.0, 2.0) - (0.135_905_121_983_278_3f64).ln()).abs() < 1e-8);
        assert!((log_gauss_mass(-2.0, -1.0) - (0.135_905_121_983_278_3f64).ln()).abs() < 1e-8);
        // Far tail stays finite.
        let far = log_gauss_mass(40.0, 41.0);
        assert!(far.is_finite() && far < -790.0, "{far}");
        assert_eq!(log_gauss_mass(-50.0, 50.0), 0.0);
    }

    #[test]
    fn tabulated_tail_matches_the_exact_log_mass() {
        let table = log_ndtr_table();
        for i in 0..=6500 {
            let y = i as f64 * 0.001 + if i % 2 == 1 { 0.000_37 } else { 0.0 };
            let y = y.min(TAIL_CUT);
            let exact = log_gauss_mass(-y, 50.0);
            let fast = log_ndtr_pos(table, y);
            // statrs' erfc itself is accurate to about 1e-10.
            assert!((fast - exact).abs() < 1e-9, "{y}: {fast} vs {exact}");
        }
    }

    #[test]
    fn normal_quantile_matches_erfc_inv() {
        for i in 1..100_000 {
            let p = i as f64 / 100_000.0;
            for p in [p, p * 1e-6, 1.0 - p * 1e-6] {
                let exact = -SQRT_2 * erfc_inv(2.0 * p);
                let fast = ndtri(p);
                assert!(
                    (fast - exact).abs() <= 2e-9 * exact.abs().max(1e-3),
                    "{p}: {fast} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn weights_match_optuna() {
        assert_eq!(default_weights(3), vec![1.0; 3]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15);
        assert!((w[4] - 1.0).abs() < 1e-15 && (w[29] - 1.0).abs() < 1e-15);
        assert!(w[1] > w[0] && w[2] > w[1]);
    }

    #[test]
    fn bandwidths_follow_neighbour_gaps() {
        let dist = Distribution::Float(FloatDistribution::new(0.0, 10.0, false, None).unwrap());
        let e = ParzenEstimator::new(
            vec![DimObservations {
                values: vec![5.0, 1.0, 2.0],
                order: None,
                dist: dist.clone(),
            }],
            &[1.0, 1.0, 1.0],
            P,
        );
        let Dim::Numeric(nd) = &e.dims[0] else {
            panic!()
        };
        // sorted [1, 2, 5]: 1 -> gap to right (1, endpoints ignored), 2 -> max(1, 3) = 3,
        // 5 -> gap to left (3); min sigma 10 / 5 = 2; prior sigma 10 at 5.
        assert_eq!(nd.sigmas, vec![3.0, 2.0, 3.0, 10.0]);
        assert_eq!(nd.mus, vec![5.0, 1.0, 2.0, 5.0]);
        assert!((e.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn densities_integrate_to_one() {
        let dist = Distribution::Float(FloatDistribution::new(-1.0, 2.0, false, None).unwrap());
        let e = ParzenEstimator::new(
            vec![DimObservations {
                values: vec![0.0, 1.9, -0.5],
                order: None,
                dist: dist.clone(),
            }],
            &[1.0, 0.5, 1.0],
            P,
        );
        let n = 20000;
        let xs: Vec<f64> = (0..n)
            .map(|i| -1.0 + 3.0 * (i as f64 + 0.5) / n as f64)
            .collect();
        let integral: f64 = e
            .log_pdf(&[xs])
            .iter()
            .map(|l| l.exp() * 3.0 / n as f64)
            .sum();
        assert!((integral - 1.0).abs() < 1e-6, "{integral}");

        let idist = Distribution::Int(IntDistribution::new(1, 64, true, 1).unwrap());
        let e = ParzenEstimator::new(
            vec![DimObservations {
                values: vec![2.0, 3.0, 50.0],
                order: None,
                dist: idist.clone(),
            }],
            &[1.0; 3],
            P,
        );
        let xs: Vec<f64> = (1..=64).map(f64::from).collect();
        let total: f64 = e.log_pdf(&[xs]).iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn samples_stay_in_range_and_on_the_grid() {
        let f = Distribution::Float(FloatDistribution::new(1e-4, 1.0, true, None).unwrap());
        let i = Distribution::Int(IntDistribution::new(0, 20, false, 5).unwrap());
        let e = ParzenEstimator::new(
            vec![
                DimObservations {
                    values: vec![0.5, 1e-4],
                    order: None,
                    dist: f.clone(),
                },
                DimObservations {
                    values: vec![20.0, 5.0],
                    order: None,
                    dist: i.clone(),
                },
            ],
            &[1.0, 1.0],
            P,
        );
        let mut rng = SmallRng::seed_from_u64(0);
        let s = e.sample(&mut rng, 500);
        assert!(s[0].iter().all(|x| f.contains(*x)));
        assert!(s[1].iter().all(|x| i.contains(*x)));
        assert!(e.log_pdf(&s).iter().all(|l| l.is_finite()));
    }

    #[test]
    fn windowed_one_dimensional_scoring_matches_brute_force() {
        for (n, log) in [(200, false), (3000, false), (3000, true)] {
            let f = if log {
                Distribution::Float(FloatDistribution::new(1e-3, 1e3, true, None).unwrap())
            } else {
                Distribution::Float(FloatDistribution::new(-5.0, 5.0, false, None).unwrap())
            };
            let mut rng = SmallRng::seed_from_u64(n as u64);
            // A dense cluster, a few isolated points (wide kernels) and points at the bounds.
            let values: Vec<f64> = (0..n)
                .map(|i| {
                    let u = match i % 50 {
                        0 => rng.random_range(0.0..1.0),
                        1 => 0.0,
                        2 => 1.0,
                        _ => 0.3 + 0.05 * rng.random_range(0.0..1.0),
                    };
                    if log {
                        (1e-3f64.ln() + u * (1e6f64).ln()).exp().clamp(1e-3, 1e3)
                    } else {
                        -5.0 + 10.0 * u
                    }
                })
                .collect();
            let dims = vec![DimObservations {
                values,
                order: None,
                dist: f.clone(),
            }];
            let e = ParzenEstimator::new(dims, &default_weights(n), P);
            // The dense cluster's kernels are summed box by box.
            assert!(e.window.as_ref().is_some_and(|w| w.boxes.len() > 0));
            let mut pts = e.sample(&mut rng, 24);
            pts[0].extend(if log {
                [1e-3, 1e3, 1.0]
            } else {
                [-5.0, 5.0, 0.0]
            });
            let fast = e.log_pdf(&pts);
            let t: Vec<f64> = pts[0]
                .iter()
                .map(|x| if log { x.ln() } else { *x })
                .collect();
            for (c, fast) in fast.iter().enumerate() {
                let all: Vec<f64> = (0..e.n_kernels)
                    .map(|k| e.full_log_density(&[&t], &[None], c, k))
                    .collect();
                let m = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let brute = m + all.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                assert!(
                    (fast - brute).abs() < 1e-9,
                    "{n} {log} {c}: {fast} vs {brute}"
                );
            }
        }
    }

    #[test]
    fn scoring_matches_brute_force() {
        // Both scoring paths: candidate by candidate, and block by block (from 1,024 kernels).
        check_against_brute_force(300);
        check_against_brute_force(3000);
    }

    fn check_against_brute_force(n: usize) {
        let f = Distribution::Float(FloatDistribution::new(-5.0, 5.0, false, None).unwrap());
        let i = Distribution::Int(IntDistribution::new(0, 50, false, 1).unwrap());
        let mut rng = SmallRng::seed_from_u64(3);
        let mut dims: Vec<DimObservations> = (0..5)
            .map(|_| DimObservations {
                values: (0..n).map(|_| rng.random_range(-5.0..5.0)).collect(),
                order: None,
                dist: f.clone(),
            })
            .collect();
        dims.push(DimObservations {
            values: (0..n).map(|_| rng.random_range(0..=50) as f64).collect(),
            order: None,
            dist: i.clone(),
        });
        let lg = Distribution::Float(FloatDistribution::new(0.01, 100.0, true, None).unwrap());
        dims.push(DimObservations {
            values: (0..n)
                .map(|_| rng.random_range(-2.0f64..2.0).exp())
                .collect(),
            order: None,
            dist: lg.clone(),
        });
        let e = ParzenEstimator::new(dims, &default_weights(n), P);
        let pts = e.sample(&mut rng, 24);
        let fast = e.log_pdf(&pts);
        // full_log_density takes continuous log dims in log space.
        let last = pts.len() - 1;
        let logs: Vec<f64> = pts[last].iter().map(|x| x.ln()).collect();
        let tpts: Vec<&[f64]> = (0..last)
            .map(|d| pts[d].as_slice())
            .chain([logs.as_slice()])
            .collect();
        let cells: Vec<Option<Vec<f64>>> = e
            .dims
            .iter()
            .zip(&pts)
            .map(|(d, xs)| match d {
                Dim::Numeric(nd) if nd.step > 0.0 => Some(cell_masses(nd, xs)),
                _ => None,
            })
            .collect();
        for (c, fast) in fast.iter().enumerate() {
            let all: Vec<f64> = (0..e.n_kernels)
                .map(|k| e.full_log_density(&tpts, &cells, c, k))
                .collect();
            let m = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let brute = m + all.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            assert!((fast - brute).abs() < 1e-9, "{c}: {fast} vs {brute}");
        }
    }

    #[test]
    fn int_cells_keep_their_mass_beyond_f64_integers() {
        // An int's cell mass is the continuous density over the same transformed range times
        // the cell's width: 1 for step 1, 1/x in log space for log ints.
        let cases = [
            (i64::MIN, i64::MAX, false, vec![-3e18, 1e18, 1.1e18, 4e18]),
            (1, i64::MAX, true, vec![3.0, 1e9, 2e15, 5e18]),
        ];
        for (low, high, log, obs) in cases {
            let int = Distribution::Int(IntDistribution::new(low, high, log, 1).unwrap());
            let float = Distribution::Float(
                FloatDistribution::new(low as f64 - 0.5, high as f64 + 0.5, log, None).unwrap(),
            );
            let fit = |dist: &Distribution| {
                ParzenEstimator::new(
                    vec![DimObservations {
                        values: obs.clone(),
                        order: None,
                        dist: dist.clone(),
                    }],
                    &vec![1.0; obs.len()],
                    P,
                )
            };
            let (ei, ef) = (fit(&int), fit(&float));
            let xs: Vec<f64> = if log {
                vec![1e3, 1e9, 3e12, 2e15, 1e17, 5e18, 2f64.powi(63)]
            } else {
                vec![
                    -(2f64.powi(63)),
                    -1e18,
                    0.0,
                    1e15,
                    1.05e18,
                    2e18,
                    2f64.powi(63),
                ]
            };
            let points = std::slice::from_ref(&xs);
            let (li, lf) = (ei.log_pdf(points), ef.log_pdf(points));
            for ((x, a), b) in xs.iter().zip(&li).zip(&lf) {
                assert!(a.is_finite(), "{x}: {a}");
                let expected = if log { b - x.ln() } else { *b };
                assert!(
                    (a - expected).abs() < 1e-3,
                    "log={log} x={x}: {a} vs {expected}"
                );
            }
            if !log {
                // Near the cluster of observations around 1e18 rather than at 0.
                assert!(li[4] > li[2], "{li:?}");
            }
        }
    }
}
