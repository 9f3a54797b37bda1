//! dspex-optimizer: the pure computational core of dspex.
//!
//! Distributions, a read-only study history for samplers and pruners, samplers (random, grid,
//! TPE with MOTPE) and pruners. No I/O, no async runtime, no Python: every sampler and pruner is
//! a function of the [`History`] plus its seed.

pub mod distributions;
pub mod error;
mod fastmath;
pub mod history;
pub mod importance;
pub mod multi_objective;
pub mod pruners;
pub mod rng;
pub mod samplers;
pub mod trial;

pub use distributions::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
};
pub use error::{DistributionError, OptimizerError};
pub use history::{History, SearchSpace};
pub use pruners::Pruner;
pub use samplers::Sampler;
pub use trial::{FrozenTrial, StudyDirection, TrialState};
