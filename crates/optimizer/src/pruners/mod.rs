//! Pruners: whether a running trial should stop early, from its intermediate values and the
//! study history. Each pruner is a pure function of the [`History`] and the trial number.

use std::fmt;

use crate::history::History;

/// A pruning rule.
pub trait Pruner: Send + Sync + fmt::Debug {
    /// True when trial `trial` (RUNNING, with its intermediate values in `history`) should be
    /// pruned now.
    fn prune(&self, history: &History, trial: u64) -> bool;
}

/// Never prunes.
#[derive(Debug, Clone, Default)]
pub struct NopPruner;

impl Pruner for NopPruner {
    fn prune(&self, _history: &History, _trial: u64) -> bool {
        false
    }
}
