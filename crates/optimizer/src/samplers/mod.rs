//! Samplers: how the next trial's parameters are chosen.
//!
//! The interface follows Optuna's: a sampler infers a *relative* search space from the history,
//! samples it jointly when a trial starts, and samples any other parameter on its own
//! (*independent* sampling) when the objective asks for it. Values are internal representations.

use std::collections::BTreeMap;
use std::fmt;

use crate::distributions::{Distribution, ParamValue};
use crate::error::OptimizerError;
use crate::history::{History, SearchSpace};
use crate::trial::StudyDirection;

mod above;
mod brute_force;
mod cmaes;
pub mod gp;
mod grid;
mod nsga;
mod partial_fixed;
mod parzen;
mod qmc;
mod random;
#[cfg(test)]
mod testing;
pub mod tpe;
mod unit;

pub use brute_force::BruteForceSampler;
pub use cmaes::{CmaEsSampler, CmaOptions, RestartStrategy, SourceTrial};
pub use gp::{GpOptions, GpRegressor, GpSampler};
pub use grid::GridSampler;
pub use nsga::{default_reference_points, Crossover, EliteSelection, NsgaOptions, NsgaSampler};
pub use partial_fixed::PartialFixedSampler;
pub use qmc::{QmcKind, QmcSampler};
pub use random::RandomSampler;
pub use tpe::{TpeOptions, TpeSampler};

/// The history-free part of a relative sample (see [`Sampler::prepare_relative`]).
pub type RelativeWork = Box<dyn FnOnce() -> BTreeMap<String, f64> + Send>;

/// The history-free part of an independent sample (see [`Sampler::prepare_independent`]).
pub type IndependentWork = Box<dyn FnOnce() -> f64 + Send>;

/// A sampling strategy. Implementations are pure functions of the history and their seed.
pub trait Sampler: Send + Sync + fmt::Debug {
    /// The parameters to sample jointly when trial `trial` starts.
    fn infer_relative_search_space(&self, _history: &History, _trial: u64) -> SearchSpace {
        SearchSpace::new()
    }

    /// Samples `space` jointly for trial `trial`; may return fewer params (or none).
    fn sample_relative(
        &self,
        _history: &History,
        _trial: u64,
        _space: &SearchSpace,
    ) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }

    /// [`Sampler::sample_relative`] in two steps: this call reads what it needs from the
    /// history, the returned work computes the sample without it, so a storage can release its
    /// lock on the history in between (concurrent trials then record their results while a
    /// sample is computed). The default does all the work here.
    fn prepare_relative(&self, history: &History, trial: u64, space: &SearchSpace) -> RelativeWork {
        let params = self.sample_relative(history, trial, space);
        Box::new(move || params)
    }

    /// The sampler this one leaves its independent parameters to, if any: the default
    /// [`Sampler::sample_independent`] and [`Sampler::prepare_independent`] delegate to it.
    fn independent_sampler(&self) -> Option<&dyn Sampler> {
        None
    }

    /// Samples one parameter on its own, returning its internal value. The default delegates
    /// to [`Sampler::independent_sampler`], else runs [`Sampler::prepare_independent`]'s work:
    /// a sampler implements one of the three.
    fn sample_independent(
        &self,
        history: &History,
        trial: u64,
        name: &str,
        dist: &Distribution,
    ) -> f64 {
        match self.independent_sampler() {
            Some(s) => s.sample_independent(history, trial, name, dist),
            None => self.prepare_independent(history, trial, name, dist)(),
        }
    }

    /// [`Sampler::sample_independent`] in two steps, like [`Sampler::prepare_relative`]. The
    /// default delegates to [`Sampler::independent_sampler`], else does all the work here.
    fn prepare_independent(
        &self,
        history: &History,
        trial: u64,
        name: &str,
        dist: &Distribution,
    ) -> IndependentWork {
        if let Some(s) = self.independent_sampler() {
            return s.prepare_independent(history, trial, name, dist);
        }
        let value = self.sample_independent(history, trial, name, dist);
        Box::new(move || value)
    }

    /// Params fixed for trial `trial` before any sampling (the grid sampler's grid point), as
    /// external values; the engine treats them like an enqueued trial's params.
    fn fixed_params(
        &self,
        _history: &History,
        _trial: u64,
    ) -> Option<BTreeMap<String, ParamValue>> {
        None
    }

    /// Refuses a study this sampler cannot drive (checked when the sampler is bound to it).
    fn check_study(&self, _directions: &[StudyDirection]) -> Result<(), OptimizerError> {
        Ok(())
    }

    /// True when the sampler has nothing left to propose (the study should stop).
    fn is_exhausted(&self, _history: &History) -> bool {
        false
    }
}
