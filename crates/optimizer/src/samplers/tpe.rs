//! Tree-structured Parzen Estimator (work in progress: options are final, sampling is random
//! until the estimator lands).
use crate::distributions::Distribution;
use crate::error::OptimizerError;
use crate::history::History;
use crate::samplers::{RandomSampler, Sampler};

/// TPE options, with Optuna 5.0's defaults.
#[derive(Debug, Clone)]
pub struct TpeOptions {
    /// Trials sampled at random before TPE starts (COMPLETE + PRUNED count). Default 10.
    pub n_startup_trials: usize,
    /// Candidates drawn from l(x) per sample. Default 24.
    pub n_ei_candidates: usize,
    /// Joint sampling of the relative search space. None: on for one objective, off for several.
    pub multivariate: Option<bool>,
    /// Decompose the search space into groups that always co-occur (needs multivariate).
    pub group: bool,
    /// Count RUNNING trials as bad ones, so concurrent trials spread out. Default true.
    pub constant_liar: bool,
    pub seed: Option<u64>,
    /// Weight of the prior kernel. Default 1.0.
    pub prior_weight: f64,
    pub consider_magic_clip: bool,
    pub consider_endpoints: bool,
}

impl Default for TpeOptions {
    fn default() -> Self {
        TpeOptions {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            multivariate: None,
            group: false,
            constant_liar: true,
            seed: None,
            prior_weight: 1.0,
            consider_magic_clip: true,
            consider_endpoints: false,
        }
    }
}

#[derive(Debug)]
pub struct TpeSampler {
    random: RandomSampler,
}

impl TpeSampler {
    pub fn new(options: TpeOptions) -> Result<Self, OptimizerError> {
        Ok(TpeSampler { random: RandomSampler::new(options.seed) })
    }
}

impl Sampler for TpeSampler {
    fn sample_independent(&self, h: &History, t: u64, n: &str, d: &Distribution) -> f64 {
        self.random.sample_independent(h, t, n, d)
    }
}
