//! NSGA-II and NSGA-III, with the semantics of Optuna 5.0's `NSGAIISampler` and
//! `NSGAIIISampler`.
//!
//! Trials are split into generations in number order: a generation ends with the trial that
//! makes `population_size` of its trials COMPLETE. The parents of a generation are the elite of
//! the previous generation's COMPLETE trials together with that generation's parents (fronts
//! of non-dominated trials, feasible ones first; the front that does not fit is cut by crowding
//! distance or by reference-point niches). A trial of a generation with parents is a child: two
//! or three parents picked by binary tournament, crossed over with probability
//! `crossover_prob` (else one parent copied), then each parameter mutated with probability
//! `mutation_prob` (re-drawn by the independent random sampler, or moved by polynomial
//! mutation). The first generation is sampled at random.
//!
//! The generations are a function of the history alone, so a resumed or remote study goes on
//! with the same parents, and the sampler keeps nothing the history does not determine: the
//! walk through the trials is cached up to the first trial still running, so a sample costs
//! the trials since. A trial that finishes after later ones started can move the generation
//! boundary behind it (its generation fills sooner); the children already drawn keep their
//! parameters.

mod crossover;
mod select;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::RngExt;

use crate::distributions::Distribution;
use crate::error::OptimizerError;
use crate::history::{History, SearchSpace};
use crate::rng::{fresh_seed, trial_rng};
use crate::samplers::unit::UnitParam;
use crate::samplers::{RandomSampler, Sampler};
use crate::trial::{StudyDirection, TrialState};

pub use crossover::Crossover;
pub use select::default_reference_points;
use select::{elite, Individual, Niching};

/// How the front that does not fit the next parents whole is cut.
#[derive(Debug, Clone, PartialEq)]
pub enum EliteSelection {
    /// NSGA-II: by crowding distance.
    Crowding,
    /// NSGA-III: by niches around reference directions.
    ReferencePoints {
        /// One row of weights per direction, a weight per objective (None: Das and Dennis's).
        points: Option<Vec<Vec<f64>>>,
        /// Divisions of each objective for Das and Dennis's points.
        dividing_parameter: usize,
    },
}

/// NSGA-II/III options, with Optuna 5.0's defaults.
#[derive(Debug, Clone)]
pub struct NsgaOptions {
    /// Trials per generation; >= 2 and >= the crossover's parents. Default 50.
    pub population_size: usize,
    /// Polynomial mutation with this distribution index (None: a mutated parameter is drawn
    /// again by the random sampler).
    pub mutation_eta: Option<f64>,
    /// Probability that a parameter of a child is mutated (None: 1 / its parameters).
    pub mutation_prob: Option<f64>,
    /// How a child's numeric parameters are made. Default uniform.
    pub crossover: Crossover,
    /// Probability that a child is a crossover (else a copy of one parent). Default 0.9.
    pub crossover_prob: f64,
    /// Probability that a categorical parameter (and, by default, a parameter of the uniform
    /// crossover) comes from the first parent. Default 0.5.
    pub swapping_prob: f64,
    /// Seed of the random stream (None: a fresh random seed).
    pub seed: Option<u64>,
    /// NSGA-II (crowding) or NSGA-III (reference points).
    pub selection: EliteSelection,
}

impl Default for NsgaOptions {
    fn default() -> Self {
        NsgaOptions {
            population_size: 50,
            mutation_eta: None,
            mutation_prob: None,
            crossover: Crossover::Uniform {
                swapping_prob: None,
            },
            crossover_prob: 0.9,
            swapping_prob: 0.5,
            seed: None,
            selection: EliteSelection::Crowding,
        }
    }
}

/// How far the generations were walked through the history.
#[derive(Debug, Clone)]
struct Walk {
    /// The first trial not walked yet.
    next: u64,
    generation: u64,
    /// The current generation's COMPLETE trials.
    members: Vec<Individual>,
    /// The current generation's parents.
    parents: Vec<Individual>,
}

#[derive(Debug)]
struct Cache {
    version: (u64, u64),
    /// The walk up to the first unfinished trial: what no later finish can change.
    walk: Walk,
    /// The walk past unfinished trials up to the last sample, if one went past any.
    ahead: Option<Ahead>,
}

/// A walk that passed unfinished trials, with the walk as it was just before each: when one of
/// them finishes, the walk goes back to there (not to the first unfinished trial, so a trial
/// left RUNNING for good does not make every sample walk the trials after it again).
#[derive(Debug, Clone)]
struct Ahead {
    walk: Walk,
    passed: Vec<(u64, Walk)>,
}

/// The genetic samplers (Optuna's `NSGAIISampler` and `NSGAIIISampler`).
#[derive(Debug, Clone)]
pub struct NsgaSampler {
    opts: NsgaOptions,
    seed: u64,
    random: RandomSampler,
    cache: Arc<Mutex<Option<Cache>>>,
}

impl NsgaSampler {
    /// Validates the options as Optuna does and builds the sampler.
    pub fn new(opts: NsgaOptions) -> Result<Self, OptimizerError> {
        let refuse = |name: &'static str, value: String, why: &str| {
            Err(OptimizerError::arg(name, value, why))
        };
        if opts.population_size < 2 {
            return refuse(
                "population_size",
                opts.population_size.to_string(),
                "must be >= 2",
            );
        }
        if opts.population_size < opts.crossover.n_parents() {
            return refuse(
                "population_size",
                opts.population_size.to_string(),
                &format!(
                    "must be >= {} with {:?} (its parents per child)",
                    opts.crossover.n_parents(),
                    opts.crossover
                ),
            );
        }
        for (name, p) in [
            ("crossover_prob", Some(opts.crossover_prob)),
            ("swapping_prob", Some(opts.swapping_prob)),
            ("mutation_prob", opts.mutation_prob),
        ] {
            if let Some(p) = p.filter(|p| !(0.0..=1.0).contains(p)) {
                return refuse(name, p.to_string(), "must be within [0, 1]");
            }
        }
        if let Some(eta) = opts.mutation_eta.filter(|e| !(*e >= 0.0 && e.is_finite())) {
            return refuse(
                "mutation",
                format!("PolynomialMutation(eta={eta})"),
                "eta must be a finite number >= 0",
            );
        }
        if let Err((name, value, why)) = opts.crossover.validate() {
            return refuse(name, value, why);
        }
        if let EliteSelection::ReferencePoints {
            points,
            dividing_parameter,
        } = &opts.selection
        {
            match points {
                Some(p) => {
                    let d = p.first().map_or(0, Vec::len);
                    if d == 0
                        || p.iter().any(|r| {
                            r.len() != d
                                || r.iter().any(|v| !v.is_finite() || *v < 0.0)
                                || r.iter().all(|v| *v == 0.0)
                        })
                    {
                        return refuse(
                            "reference_points",
                            format!("{p:?}"),
                            "must be a non-empty list of rows of one length, each with finite weights >= 0 and one > 0",
                        );
                    }
                }
                None if *dividing_parameter < 1 => {
                    return refuse(
                        "dividing_parameter",
                        dividing_parameter.to_string(),
                        "must be >= 1",
                    );
                }
                None => {}
            }
        }
        let seed = opts.seed.unwrap_or_else(fresh_seed);
        Ok(NsgaSampler {
            opts,
            seed,
            random: RandomSampler::new(Some(seed)),
            cache: Arc::default(),
        })
    }

    fn niching(&self, n_obj: usize) -> Niching {
        match &self.opts.selection {
            EliteSelection::Crowding => Niching::Crowding,
            EliteSelection::ReferencePoints {
                points,
                dividing_parameter,
            } => Niching::ReferencePoints(
                points
                    .clone()
                    .unwrap_or_else(|| default_reference_points(n_obj, *dividing_parameter)),
            ),
        }
    }

    /// Trial `t` as the selection sees it, when it is COMPLETE with a value per objective.
    fn individual(history: &History, t: u64) -> Option<Individual> {
        let trial = &history.trials()[t as usize];
        if trial.state != TrialState::Complete {
            return None;
        }
        let values = trial.values.as_ref()?;
        let directions = history.directions();
        if values.len() != directions.len() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        Some(Individual {
            number: t,
            loss: values
                .iter()
                .zip(directions)
                .map(|(v, d)| d.loss(*v))
                .collect(),
            penalty: trial.violation.unwrap_or(0.0).max(0.0),
        })
    }

    /// Walks trial `t` (finished): a COMPLETE one joins its generation, and the generation's
    /// last member makes the next parents.
    fn step(&self, walk: &mut Walk, history: &History, t: u64) {
        walk.next = t + 1;
        let Some(ind) = Self::individual(history, t) else {
            return;
        };
        walk.members.push(ind);
        if walk.members.len() < self.opts.population_size {
            return;
        }
        let mut pool = std::mem::take(&mut walk.members);
        pool.append(&mut walk.parents);
        let constrained = pool
            .iter()
            .any(|i| history.trials()[i.number as usize].violation.is_some());
        let niching = self.niching(history.directions().len());
        let mut rng = trial_rng(self.seed, walk.generation, "nsga selection");
        let keep = elite(
            &pool,
            self.opts.population_size,
            &niching,
            constrained,
            &mut rng,
        );
        walk.parents = keep.into_iter().map(|i| pool[i].clone()).collect();
        walk.parents.sort_by_key(|i| i.number);
        walk.generation += 1;
    }

    /// The parents of the generation trial `trial` starts in (empty in the first).
    fn parents(&self, history: &History, trial: u64) -> Vec<Individual> {
        let version = history.values_version();
        let mut cached = self.cache.lock();
        if cached.as_ref().is_none_or(|c| c.version != version) {
            *cached = Some(Cache {
                version,
                walk: Walk {
                    next: 0,
                    generation: 0,
                    members: Vec::new(),
                    parents: Vec::new(),
                },
                ahead: None,
            });
        }
        let cache = cached.as_mut().expect("set above");
        let walk = &mut cache.walk;
        let trials = history.trials();
        let end = (trial as usize).min(trials.len()) as u64;
        // Finished trials up to the first unfinished one are walked for good...
        while walk.next < end && trials[walk.next as usize].state.is_finished() {
            self.step(walk, history, walk.next);
        }
        if walk.next >= end {
            return walk.parents.clone();
        }
        // ...the rest past the unfinished ones (which may still join their generation), from
        // where the last sample's walk was still right.
        let mut ahead = cache.ahead.take().unwrap_or_else(|| Ahead {
            walk: walk.clone(),
            passed: Vec::new(),
        });
        if let Some(i) = ahead
            .passed
            .iter()
            .position(|(t, _)| trials[*t as usize].state.is_finished())
        {
            ahead.walk = ahead.passed[i].1.clone();
            ahead.passed.truncate(i);
        }
        if ahead.walk.next <= walk.next {
            ahead = Ahead {
                walk: walk.clone(),
                passed: Vec::new(),
            };
        }
        if ahead.walk.next > end {
            // A sample for a trial before the last one sampled: walked for it alone.
            let mut alone = walk.clone();
            for t in walk.next..end {
                if trials[t as usize].state.is_finished() {
                    self.step(&mut alone, history, t);
                }
            }
            cache.ahead = Some(ahead);
            return alone.parents;
        }
        for t in ahead.walk.next..end {
            if trials[t as usize].state.is_finished() {
                self.step(&mut ahead.walk, history, t);
            } else {
                ahead.passed.push((t, ahead.walk.clone()));
                ahead.walk.next = t + 1;
            }
        }
        let parents = ahead.walk.parents.clone();
        cache.ahead = Some(ahead);
        parents
    }

    /// Binary tournament: the better of two random parents (the second unless the first
    /// dominates it), not one already picked.
    fn tournament(
        &self,
        parents: &[Individual],
        picked: &[usize],
        constrained: bool,
        rng: &mut SmallRng,
    ) -> usize {
        let open: Vec<usize> = (0..parents.len()).filter(|i| !picked.contains(i)).collect();
        let a = open[rng.random_range(0..open.len())];
        let b = open[rng.random_range(0..open.len())];
        if parents[a].dominates(&parents[b], constrained) {
            a
        } else {
            b
        }
    }

    /// A child of `parents` for trial `trial` over `space` (internal values; mutated
    /// parameters without polynomial mutation are left out for the random sampler).
    fn child(
        &self,
        history: &History,
        trial: u64,
        space: &SearchSpace,
        parents: &[Individual],
    ) -> BTreeMap<String, f64> {
        let mut rng = trial_rng(self.seed, trial, "nsga");
        let params: Vec<UnitParam> = space
            .iter()
            .map(|(n, d)| UnitParam::new(n, d, true))
            .collect();
        let value = |p: usize, param: &UnitParam| {
            history.param(parents[p].number, &param.name, &param.dist)
        };
        let constrained = parents
            .iter()
            .any(|i| history.trials()[i.number as usize].violation.is_some());
        let mut child: Vec<Option<f64>> = if rng.random::<f64>() < self.opts.crossover_prob {
            let mut picked: Vec<usize> = Vec::new();
            for _ in 0..self.opts.crossover.n_parents() {
                let p = self.tournament(parents, &picked, constrained, &mut rng);
                picked.push(p);
            }
            let last = *picked.last().expect("two or three parents");
            let mut out: Vec<Option<f64>> = vec![None; params.len()];
            // Categorical parameters: from the first or the last parent.
            for (i, param) in params.iter().enumerate() {
                if let Distribution::Categorical(_) = param.dist {
                    let from = if rng.random::<f64>() >= self.opts.swapping_prob {
                        last
                    } else {
                        picked[0]
                    };
                    out[i] = value(from, param);
                }
            }
            let numeric: Vec<usize> = (0..params.len())
                .filter(|&i| !matches!(params[i].dist, Distribution::Categorical(_)))
                .collect();
            let points: Option<Vec<Vec<f64>>> = picked
                .iter()
                .map(|&p| {
                    numeric
                        .iter()
                        .map(|&i| value(p, &params[i]).map(|v| params[i].transform(v)))
                        .collect()
                })
                .collect();
            if let (Some(points), false) = (points, numeric.is_empty()) {
                let bounds: Vec<(f64, f64)> = numeric.iter().map(|&i| params[i].bounds()).collect();
                let x = self.opts.crossover.child(
                    &points,
                    &bounds,
                    self.opts.swapping_prob,
                    history.is_multi_objective(),
                    &mut rng,
                );
                for (k, &i) in numeric.iter().enumerate() {
                    out[i] = Some(params[i].untransform(x[k]));
                }
            }
            out
        } else {
            let p = rng.random_range(0..parents.len());
            params.iter().map(|param| value(p, param)).collect()
        };
        let mutation_prob = self
            .opts
            .mutation_prob
            .unwrap_or(1.0 / (params.len() as f64).max(1.0));
        for (i, param) in params.iter().enumerate() {
            if rng.random::<f64>() >= mutation_prob {
                continue;
            }
            child[i] = match (self.opts.mutation_eta, &param.dist, child[i]) {
                (Some(eta), Distribution::Float(_) | Distribution::Int(_), Some(v)) => {
                    Some(param.untransform(crossover::polynomial_mutation(
                        param.transform(v),
                        param.bounds(),
                        eta,
                        &mut rng,
                    )))
                }
                _ => None,
            };
        }
        params
            .iter()
            .zip(child)
            .filter_map(|(p, v)| Some((p.name.clone(), v?)))
            .collect()
    }
}

impl Sampler for NsgaSampler {
    fn infer_relative_search_space(&self, history: &History, _trial: u64) -> SearchSpace {
        let mut space = history.intersection_search_space();
        space.retain(|_, d| !d.single());
        space
    }

    fn sample_relative(
        &self,
        history: &History,
        trial: u64,
        space: &SearchSpace,
    ) -> BTreeMap<String, f64> {
        let parents = self.parents(history, trial);
        if parents.is_empty() {
            return BTreeMap::new();
        }
        self.child(history, trial, space, &parents)
    }

    fn independent_sampler(&self) -> Option<&dyn Sampler> {
        Some(&self.random)
    }

    fn check_study(&self, directions: &[StudyDirection]) -> Result<(), OptimizerError> {
        if let EliteSelection::ReferencePoints {
            points: Some(p), ..
        } = &self.opts.selection
        {
            if p[0].len() != directions.len() {
                return Err(OptimizerError::arg(
                    "reference_points",
                    format!("rows of {} weights", p[0].len()),
                    format!(
                        "must have one weight per objective ({} in this study)",
                        directions.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
