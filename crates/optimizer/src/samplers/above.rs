//! The "above" estimator of TPE kept from one sample to the next.
//!
//! Past a few hundred trials the above set (every learnable trial but the best few) changes by a
//! handful of trials between two samples: the trial that just finished joins it, and now and
//! then a trial leaves it for the below set (or one below is pushed out into it). Fitting it from
//! scratch costs O(trials x dimensions) per sample; keeping its kernels and adding or removing the
//! few that changed costs a binary search and a move per change and dimension, and refits only
//! the changed kernels' neighbours, whose bandwidths depend on them.
//!
//! The kept kernels are exactly the ones a fresh fit would build (same centres, bandwidths and
//! normalising constants), in another order: a fresh fit lays them out oldest first, the kept
//! estimator in the order they joined. The weights follow each kernel's age either way, so the
//! estimator is the same mixture; only the order of the sums over its kernels differs, which
//! changes a log density by about 1e-15.
//!
//! Only continuous dimensions are kept (no step, no categorical); the kernels are dropped and
//! fitted afresh when the history's values change (`History::values_version`), when another
//! history or search space asks, when the magic clip changes with the number of observations
//! (below about 100), or when more than a few trials changed.
//!
//! With one continuous dimension a sample does not even visit the kept kernels: their ramp
//! window (`parzen::RampWindow`) sums them for the sample's weights.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::distributions::Distribution;
use crate::history::History;
use crate::samplers::parzen::{
    default_weights, Dim, DimObservations, ParzenEstimator, ParzenParams, RampWindow,
};

/// Observations from which kernels are kept (fewer are cheap to fit afresh).
const MIN_KEPT: usize = 256;
/// Changed trials from which fitting afresh is cheaper than moving kernels one by one.
const MAX_CHANGES: usize = 32;
/// Search spaces kept per sampler (one per parameter when sampling independently).
const MAX_ENTRIES: usize = 64;

/// The above estimators a TPE sampler keeps, one per search space (shared by its clones).
#[derive(Clone, Default)]
pub(crate) struct AboveCache {
    entries: Arc<Mutex<HashMap<Vec<String>, Entry>>>,
}

impl fmt::Debug for AboveCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().len();
        write!(f, "AboveCache({n} search spaces)")
    }
}

/// Kept kernels of one search space.
struct Entry {
    version: (u64, u64),
    dists: Vec<Distribution>,
    params: ParzenParams,
    /// The trial number of each kernel slot (the prior kernel, last, has none).
    numbers: Vec<u64>,
    /// The slot of each trial number (u32::MAX: none).
    slot_of: Vec<u32>,
    /// The kernels' trial numbers, ascending (oldest first: the weights' order).
    kept: Vec<u64>,
    dims: Arc<Vec<Dim>>,
    /// One continuous dimension: its ramp kernels, summed without a pass over them (None until
    /// the next sample when out of date).
    ramp: Option<RampWindow>,
}

/// How the above estimator of one sample is built.
pub(crate) enum AboveInput {
    /// From scratch; `store` when its kernels are to be kept.
    Fresh {
        obs: Vec<DimObservations>,
        kept: Vec<u64>,
        store: Option<StoreKey>,
    },
    /// From the kept kernels: the slot of each observation, oldest first.
    Kept {
        dims: Arc<Vec<Dim>>,
        rank_slots: Vec<u32>,
    },
    /// Built from the kept kernels' ramp window (for scoring only).
    Built(ParzenEstimator),
}

/// Where a fresh fit's kernels are kept.
pub(crate) struct StoreKey {
    names: Vec<String>,
    version: (u64, u64),
    dists: Vec<Distribution>,
}

impl AboveCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<String>, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The above estimator's input for the trials `numbers` (ascending) over `dists`: the kept
    /// kernels brought up to date when they can be, else the observations for a fresh fit
    /// (`fresh` reads them from the history).
    pub fn observe(
        &self,
        history: &History,
        numbers: &[u64],
        dists: &[(&String, &Distribution)],
        params: ParzenParams,
        fresh: impl FnOnce() -> (Vec<DimObservations>, Vec<u64>),
    ) -> AboveInput {
        let continuous = dists
            .iter()
            .all(|(_, d)| matches!(d, Distribution::Float(f) if f.step.is_none()));
        let columns: Option<Vec<&[f64]>> = dists
            .iter()
            .map(|(n, d)| history.consistent_column(n, d).map(|(c, _)| c))
            .collect();
        let (Some(columns), true) = (columns, continuous && numbers.len() >= MIN_KEPT) else {
            let (obs, kept) = fresh();
            return AboveInput::Fresh {
                obs,
                kept,
                store: None,
            };
        };
        let names: Vec<String> = dists.iter().map(|(n, _)| (*n).clone()).collect();
        let key = StoreKey {
            names,
            version: history.values_version(),
            dists: dists.iter().map(|(_, d)| (*d).clone()).collect(),
        };
        {
            let mut entries = self.lock();
            if let Some(entry) = entries.get_mut(&key.names) {
                let same = entry.version == key.version
                    && entry.dists == key.dists
                    && entry.params == params;
                if same && entry.update(numbers, &columns) {
                    if let Some(est) = entry.ramp_estimator(params) {
                        return AboveInput::Built(est);
                    }
                    return AboveInput::Kept {
                        dims: Arc::clone(&entry.dims),
                        rank_slots: entry.rank_slots(),
                    };
                }
                entries.remove(&key.names);
            }
        }
        let (obs, kept) = fresh();
        AboveInput::Fresh {
            obs,
            kept,
            store: Some(key),
        }
    }

    /// The estimator for `input`; a fresh fit's kernels are kept when `input` says so.
    pub fn estimator(&self, input: AboveInput, params: ParzenParams) -> ParzenEstimator {
        match input {
            AboveInput::Built(est) => est,
            AboveInput::Kept { dims, rank_slots } => {
                let weights = default_weights(rank_slots.len());
                ParzenEstimator::from_slots(dims, &rank_slots, &weights, params)
            }
            AboveInput::Fresh { obs, kept, store } => {
                let est = ParzenEstimator::new(obs, &default_weights(kept.len()), params);
                if let Some(key) = store {
                    self.store(key, kept, Arc::clone(est.dims()), params);
                }
                est
            }
        }
    }

    fn store(&self, key: StoreKey, kept: Vec<u64>, dims: Arc<Vec<Dim>>, params: ParzenParams) {
        let mut slot_of = vec![u32::MAX; kept.last().map_or(0, |&t| t as usize + 1)];
        for (slot, &t) in kept.iter().enumerate() {
            slot_of[t as usize] = slot as u32;
        }
        let entry = Entry {
            version: key.version,
            dists: key.dists,
            params,
            numbers: kept.clone(),
            slot_of,
            kept,
            dims,
            ramp: None,
        };
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key.names) {
            entries.clear();
        }
        entries.insert(key.names, entry);
    }
}

impl Entry {
    /// Brings the kernels to the trials `numbers` (ascending) that have a value in every
    /// column; false when fitting afresh is the better (or the only) way.
    fn update(&mut self, numbers: &[u64], columns: &[&[f64]]) -> bool {
        let values = |t: u64| -> Option<Vec<f64>> {
            columns
                .iter()
                .map(|c| c.get(t as usize).copied().filter(|v| !v.is_nan()))
                .collect()
        };
        // Merge the two ascending lists: kept trials no longer asked for leave, asked-for trials
        // not kept join when they have every value.
        let (mut leave, mut join) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < numbers.len() || j < self.kept.len() {
            let (a, b) = (numbers.get(i), self.kept.get(j));
            match (a, b) {
                (Some(&a), Some(&b)) if a == b => {
                    i += 1;
                    j += 1;
                }
                (Some(&a), Some(&b)) if b < a => {
                    leave.push(b);
                    j += 1;
                }
                (None, Some(&b)) => {
                    leave.push(b);
                    j += 1;
                }
                (Some(&a), _) => {
                    if let Some(v) = values(a) {
                        join.push((a, v));
                    }
                    i += 1;
                }
                (None, None) => break,
            }
            if leave.len() + join.len() > MAX_CHANGES {
                return false;
            }
        }
        let n = self.kept.len() - leave.len() + join.len();
        let dims = self.dims.as_ref();
        let clip_holds = dims
            .iter()
            .all(|d| matches!(d, Dim::Numeric(nd) if nd.clip_holds(n, self.params)));
        if n < MIN_KEPT || !clip_holds {
            return false;
        }
        if let Some(ramp) = &self.ramp {
            if leave
                .iter()
                .chain(join.iter().map(|j| &j.0))
                .any(|&t| ramp.moved_by(t))
            {
                self.ramp = None;
            }
        }
        let mut changed = Vec::new();
        let endpoints = self.params.consider_endpoints;
        let dims = Arc::make_mut(&mut self.dims);
        for t in leave {
            let slot = self.slot_of[t as usize] as usize;
            for d in dims.iter_mut() {
                if let Dim::Numeric(nd) = d {
                    nd.remove(slot, &self.numbers, endpoints, &mut changed);
                }
            }
            let last = self.numbers.len() - 1;
            let moved = self.numbers[last];
            self.numbers[slot] = moved;
            self.slot_of[moved as usize] = slot as u32;
            self.numbers.pop();
            self.slot_of[t as usize] = u32::MAX;
            if let Ok(k) = self.kept.binary_search(&t) {
                self.kept.remove(k);
            }
            out_of_date(&mut self.ramp, &self.numbers, &mut changed);
        }
        for (t, values) in join {
            let slot = self.numbers.len();
            self.numbers.push(t);
            if self.slot_of.len() <= t as usize {
                self.slot_of.resize(t as usize + 1, u32::MAX);
            }
            self.slot_of[t as usize] = slot as u32;
            for (d, v) in dims.iter_mut().zip(values) {
                if let Dim::Numeric(nd) = d {
                    nd.insert(slot, v, &self.numbers, endpoints, &mut changed);
                }
            }
            let k = self.kept.partition_point(|&x| x < t);
            self.kept.insert(k, t);
            out_of_date(&mut self.ramp, &self.numbers, &mut changed);
        }
        true
    }

    /// The slot of each kept observation, oldest first.
    fn rank_slots(&self) -> Vec<u32> {
        self.kept
            .iter()
            .map(|&t| self.slot_of[t as usize])
            .collect()
    }

    /// The estimator from the ramp window (started afresh when out of date), when the kernels
    /// have one.
    fn ramp_estimator(&mut self, params: ParzenParams) -> Option<ParzenEstimator> {
        for _ in 0..2 {
            let ramp = match &mut self.ramp {
                Some(ramp) => ramp,
                empty => empty.insert(RampWindow::new(&self.dims, params)?),
            };
            if let Some(est) = ramp.estimator(&self.dims, &self.kept, &self.slot_of, params) {
                return Some(est);
            }
            self.ramp = None;
        }
        None
    }
}

/// Puts the ramp window out of date when one of its boxed kernels is among the slots `changed`
/// (emptied; `numbers` gives each slot's trial number).
fn out_of_date(ramp: &mut Option<RampWindow>, numbers: &[u64], changed: &mut Vec<u32>) {
    if ramp
        .as_ref()
        .is_some_and(|r| changed.iter().any(|&k| r.is_boxed(numbers[k as usize])))
    {
        *ramp = None;
    }
    changed.clear();
}
