//! TPE's one-dimensional above estimator, scored without visiting its kernels.
//!
//! The above estimator weights its observations by age (Optuna's default weights): the newest
//! [`FLAT`] get weight 1, the `m` older ones a ramp, `1/n + (1 - 1/n) rank / (m - 1)` for the
//! `rank`-th oldest, and every weight is divided by their total. Each new trial changes `n`,
//! so every weight changes from one sample to the next, and building the estimator's boxes
//! ([`super::boxes`]) from scratch costs a pass over every kernel per sample.
//!
//! But the ramp is affine in rank, `alpha + beta * rank`, and a trial's rank does not change
//! while no older trial joins or leaves the above set. [`RampWindow`] keeps the ramp kernels
//! whose bandwidth is the magic clip in [`RampBoxes`], which sum them for any `alpha` and
//! `beta`; a sample adds the kernels that joined the ramp (one or two per trial) and scores
//! the others (the newest [`FLAT`], the wider ramp kernels and the prior) one by one. Its cost
//! no longer grows with the number of trials, but for the boxes' count.
//!
//! The owner starts a new window when an older trial joins or leaves the above set, or a boxed
//! kernel's bandwidth changes (its neighbours changed): those move kernels inside the ramp.

use std::sync::Arc;

use super::boxes::RampBoxes;
use super::{Dim, NumericDim, ParzenEstimator, ParzenParams, Window, WINDOW_WIDE};

/// The newest observations, weighted 1 by Optuna's default weights.
pub(crate) const FLAT: usize = 25;
/// Boxes from which a window is not worth it (the magic clip keeps about 100).
const MAX_BOXES: usize = 4096;

/// The ramp kernels of a one-dimensional above estimator, kept from one sample to the next.
#[derive(Debug, Clone)]
pub(crate) struct RampWindow {
    boxes: RampBoxes,
    /// The ramp's length at the last sample: the oldest `len` trials are accounted for.
    len: usize,
    /// The trial number of rank `len - 1`.
    last: u64,
    /// The ramp kernels wider than the clip, scored one by one: trial number and rank.
    direct: Vec<(u64, f64)>,
    /// Whether each trial number's kernel is in `boxes`.
    boxed: Vec<bool>,
}

impl RampWindow {
    /// An empty window for the kernels of `dim`; None when it cannot have one (not a single
    /// continuous dimension with the magic clip).
    pub fn new(dims: &[Dim], params: ParzenParams) -> Option<Self> {
        let [Dim::Numeric(nd)] = dims else {
            return None;
        };
        if !nd.is_continuous() || !params.consider_magic_clip {
            return None;
        }
        Some(RampWindow {
            boxes: RampBoxes::new(nd.t_low, nd.t_high, nd.min_sigma, MAX_BOXES)?,
            len: 0,
            last: 0,
            direct: Vec::new(),
            boxed: Vec::new(),
        })
    }

    /// Whether trial `t` joining or leaving the above set moves a kernel the window accounts
    /// for (then it is out of date).
    pub fn moved_by(&self, t: u64) -> bool {
        self.len > 0 && t <= self.last
    }

    /// Whether trial `t`'s kernel is in the boxes (then a change of its bandwidth puts the
    /// window out of date).
    pub fn is_boxed(&self, t: u64) -> bool {
        self.boxed.get(t as usize).copied().unwrap_or(false)
    }

    /// The estimator of the observations `kept` (trial numbers, oldest first, in slots
    /// `slot_of[t]` of `dims`), for scoring only; None when the window is out of date (fewer
    /// ramp kernels than it accounts for, or too few observations for a ramp).
    pub fn estimator(
        &mut self,
        dims: &[Dim],
        kept: &[u64],
        slot_of: &[u32],
        params: ParzenParams,
    ) -> Option<ParzenEstimator> {
        let [Dim::Numeric(nd)] = dims else {
            return None;
        };
        let n = kept.len();
        let m = n.checked_sub(FLAT).filter(|&m| m >= 2 && m >= self.len)?;
        let slot = |t: u64| slot_of[t as usize] as usize;
        for (rank, &t) in kept.iter().enumerate().take(m).skip(self.len) {
            let k = slot(t);
            if nd.sigmas[k] == nd.min_sigma {
                self.boxes.add(nd.mus[k], nd.log_norm[k], rank as f64);
                if self.boxed.len() <= t as usize {
                    self.boxed.resize(t as usize + 1, false);
                }
                self.boxed[t as usize] = true;
            } else {
                self.direct.push((t, rank as f64));
            }
        }
        self.len = m;
        self.last = kept[m - 1];
        // The weights as `default_weights` gives them, normalised with the prior's.
        let start = 1.0 / n as f64;
        let total = m as f64 * (1.0 + start) / 2.0 + FLAT as f64 + params.prior_weight;
        let alpha = start / total;
        let beta = (1.0 - start) / ((m - 1) as f64 * total);
        let (boxes, boxes_max) = self.boxes.weighted(alpha, beta);
        let kernel = |k: usize, log_w: f64| [nd.mus[k], nd.sigmas[k], log_w - nd.log_norm[k]];
        let log_flat = -total.ln();
        let prior = nd.mus.len() - 1;
        let mut direct: Vec<[f64; 3]> = self
            .direct
            .iter()
            .map(|&(t, rank)| kernel(slot(t), (alpha + beta * rank).ln()))
            .chain(kept[m..].iter().map(|&t| kernel(slot(t), log_flat)))
            .chain([kernel(prior, (params.prior_weight / total).ln())])
            .collect();
        direct.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let mut sigmas: Vec<f64> = direct.iter().map(|k| k[1]).collect();
        let i = ((1.0 - WINDOW_WIDE) * (sigmas.len() - 1) as f64) as usize;
        let cap = *sigmas.select_nth_unstable_by(i, f64::total_cmp).1;
        let window = Window::assemble(&direct, cap, boxes, nd.min_sigma, boxes_max);
        Some(ParzenEstimator {
            n_kernels: n + 1,
            weights: Vec::new(),
            base: Vec::new(),
            dims: Arc::new(vec![Dim::Numeric(nd.header())]),
            window: Some(window),
        })
    }
}

impl NumericDim {
    /// The dimension without its kernels: what scoring a window needs.
    fn header(&self) -> NumericDim {
        NumericDim {
            log: self.log,
            step: self.step,
            int: self.int.clone(),
            low: self.low,
            high: self.high,
            t_low: self.t_low,
            t_high: self.t_high,
            min_sigma: self.min_sigma,
            mus: Vec::new(),
            sigmas: Vec::new(),
            inv_sigmas: Vec::new(),
            log_mass: Vec::new(),
            log_norm: Vec::new(),
            order: Vec::new(),
            unique_of: Vec::new(),
            unique: Vec::new(),
        }
    }
}
