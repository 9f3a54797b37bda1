//! Gaussian-process Bayesian optimisation, with the semantics of Optuna 5.0's `GPSampler`.
//!
//! Once `n_startup_trials` trials are COMPLETE, the parameters of the intersection search
//! space are normalised to [0, 1] (log scale for log parameters; a step or integer range is
//! widened by half a step at each end; a categorical parameter is its choice index, compared by
//! equality), the objective values are standardised, and a Gaussian process with a Matérn-5/2
//! ARD kernel is fitted (see `model`). The next point maximises the log expected improvement
//! over the best value (see `acqf`). Other parameters, and every parameter before the startup
//! trials are done, come from the independent sampler (random by default).
//!
//! Running trials enter the model as observations of the posterior mean at their parameters
//! (the "kriging believer"), so concurrent trials are not sent to the same point; with no
//! running trials (trials one after another) a fixed seed gives a fixed sequence. Each fit
//! starts from the previous fit's hyperparameters, as Optuna's does.
//!
//! Constraints (when a finished trial has constraint values): each constraint is modelled by
//! its own process, on the trials that have it, and the acquisition adds the log probability
//! that every constraint is satisfied; the improvement is over the best feasible trial (only
//! the probability of feasibility counts while there is none), as Optuna's.
//!
//! Several objectives: one process per objective, and the acquisition is the log expected
//! hypervolume improvement over the feasible trials (see `ehvi`), as Optuna's `LogEHVI`.

mod acqf;
mod ehvi;
mod lbfgs;
mod linalg;
mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::distributions::Distribution;
use crate::error::OptimizerError;
use crate::history::{History, SearchSpace};
use crate::rng::{fresh_seed, trial_rng};
use crate::samplers::unit::UnitParam;
use crate::samplers::{RandomSampler, RelativeWork, Sampler};
use crate::trial::{StudyDirection, TrialState};

use acqf::{Dim, LogEi, Search};
use ehvi::Ehvi;
use model::{Inputs, KernelParams};

/// The sampler's Gaussian process on its own, for callers outside the sampler (Optuna's
/// terminator evaluators): fitted to normalised parameters (continuous ones in [0, 1],
/// categorical ones as choice indices) and standardised values, with Optuna's priors.
#[derive(Debug, Clone)]
pub struct GpRegressor {
    gp: model::Gp,
}

impl GpRegressor {
    /// Fits the kernel to `x` (one row of `is_categorical.len()` coordinates per observation)
    /// and `y`, starting from `start`'s hyperparameters when given (Optuna's `gpr_cache`).
    pub fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        is_categorical: &[bool],
        deterministic: bool,
        start: Option<&GpRegressor>,
    ) -> Result<GpRegressor, OptimizerError> {
        let d = is_categorical.len();
        if x.is_empty() || x.len() != y.len() {
            return Err(OptimizerError::arg(
                "x",
                format!("{} rows", x.len()),
                format!("{} values need one row each (at least one)", y.len()),
            ));
        }
        if let Some(bad) = x.iter().position(|row| row.len() != d) {
            return Err(OptimizerError::arg(
                "x",
                format!("row {bad}"),
                format!("has {} coordinates, not {d}", x[bad].len()),
            ));
        }
        if x.iter().flatten().chain(y).any(|v| !v.is_finite()) {
            return Err(OptimizerError::arg(
                "x",
                "a coordinate or value",
                "coordinates and values must be finite",
            ));
        }
        let inputs = Inputs {
            x: x.concat(),
            n: x.len(),
            d,
            is_cat: is_categorical.to_vec(),
        };
        let gp = model::fit(inputs, y, deterministic, start.map(|s| &s.gp.params));
        Ok(GpRegressor { gp })
    }

    /// Posterior mean and variance of the latent function at each point.
    pub fn posterior(&self, xs: &[Vec<f64>]) -> Vec<(f64, f64)> {
        self.gp.posterior_many(xs)
    }

    /// Posterior covariance between two points.
    pub fn covariance(&self, a: &[f64], b: &[f64]) -> f64 {
        self.gp.covariance(a, b)
    }
}

/// GP sampler options, with Optuna 5.0's defaults.
#[derive(Debug, Clone)]
pub struct GpOptions {
    /// COMPLETE trials sampled by the independent sampler before the GP starts. Default 10.
    pub n_startup_trials: usize,
    /// Fix the noise variance at its floor (the objective has no noise). Default false.
    pub deterministic_objective: bool,
    /// Seed of the random stream (None: a fresh random seed).
    pub seed: Option<u64>,
    /// Samples parameters outside the GP's search space, and all of them during startup
    /// (None: a random sampler with the same seed).
    pub independent_sampler: Option<Arc<dyn Sampler>>,
    /// Random points the acquisition is evaluated at before the local searches. Default 2048.
    pub n_preliminary_samples: usize,
    /// Local searches of the acquisition per sample. Default 10.
    pub n_local_search: usize,
}

impl Default for GpOptions {
    fn default() -> Self {
        GpOptions {
            n_startup_trials: 10,
            deterministic_objective: false,
            seed: None,
            independent_sampler: None,
            n_preliminary_samples: 2048,
            n_local_search: 10,
        }
    }
}

/// The last fit of each process (the objective, then each constraint): the parameter names it
/// belongs to, its hyperparameters and the number of trials it was fitted to.
type LastFit = Vec<Option<(Vec<String>, KernelParams, usize)>>;

/// The hyperparameters are refitted when the trials grew by this fraction since the last fit
/// (every trial up to 40 trials; every 15th around 300). In between, the posterior is
/// updated with the last fit's hyperparameters, one Cholesky factorisation instead of the
/// ~20 an L-BFGS fit costs: the marginal likelihood moves little when a few trials are added
/// to many.
const REFIT_GROWTH: usize = 20;

/// Gaussian-process sampler (Optuna's `GPSampler`).
#[derive(Debug, Clone)]
pub struct GpSampler {
    opts: GpOptions,
    seed: u64,
    independent: Arc<dyn Sampler>,
    /// The last fit's hyperparameters, for the parameters named, where the next fit starts.
    last_fit: Arc<Mutex<LastFit>>,
}

impl GpSampler {
    /// Validates the options and builds the sampler.
    pub fn new(opts: GpOptions) -> Result<Self, OptimizerError> {
        if opts.n_local_search < 2 {
            return Err(OptimizerError::arg(
                "n_local_search",
                opts.n_local_search,
                "must be >= 2",
            ));
        }
        let seed = opts.seed.unwrap_or_else(fresh_seed);
        let independent = opts
            .independent_sampler
            .clone()
            .unwrap_or_else(|| Arc::new(RandomSampler::new(Some(seed))));
        Ok(GpSampler {
            opts,
            seed,
            independent,
            last_fit: Arc::default(),
        })
    }
}

/// Grids larger than this are searched as continuous and rounded.
const MAX_GRID: u64 = 4096;

impl UnitParam {
    fn dim(&self) -> Dim {
        let steps = match &self.dist {
            Distribution::Float(d) => d.step.map(|s| ((d.high - d.low) / s).round() as u64),
            Distribution::Int(d) => Some(d.n_steps()),
            Distribution::Categorical(d) => return Dim::Categorical(d.choices.len()),
        };
        match steps {
            Some(n) if n < MAX_GRID => Dim::Grid(
                (0..=n)
                    .map(|k| {
                        let v = match &self.dist {
                            Distribution::Float(d) => {
                                (d.low + k as f64 * d.step.unwrap_or(0.0)).min(d.high)
                            }
                            Distribution::Int(d) => d.value_at(k) as f64,
                            Distribution::Categorical(_) => unreachable!("returned above"),
                        };
                        self.normalize(v)
                    })
                    .collect(),
            ),
            _ => Dim::Continuous,
        }
    }
}

/// A constraint as its process sees it: the trials that have it, their standardised negated
/// values (to maximise) and the threshold feasibility starts at.
struct ConstraintData {
    inputs: Inputs,
    y: Vec<f64>,
    threshold: f64,
}

/// What a sample reads from the history.
struct Extracted {
    params: Vec<UnitParam>,
    inputs: Inputs,
    /// Standardised values, to maximise: one list per objective.
    ys: Vec<Vec<f64>>,
    /// Whether each trial of `y` satisfies its constraints (all true without constraints).
    feasible: Vec<bool>,
    constraints: Vec<ConstraintData>,
    /// Normalised params of running trials.
    running: Vec<Vec<f64>>,
    trial: u64,
}

impl GpSampler {
    fn extract(&self, history: &History, trial: u64, space: &SearchSpace) -> Option<Extracted> {
        let params: Vec<UnitParam> = space
            .iter()
            .map(|(n, d)| UnitParam::new(n, d, true))
            .collect();
        let d = params.len();
        let row = |t: u64| -> Option<Vec<f64>> {
            params
                .iter()
                .map(|p| history.param(t, &p.name, &p.dist).map(|v| p.normalize(v)))
                .collect()
        };
        let signs: Vec<f64> = history
            .directions()
            .iter()
            .map(|d| match d {
                StudyDirection::Minimize => -1.0,
                StudyDirection::Maximize => 1.0,
            })
            .collect();
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); signs.len()];
        let (mut x, mut running) = (Vec::new(), Vec::new());
        let (mut feasible, mut constraint_rows) = (Vec::new(), Vec::new());
        let trials = history.trials();
        for (number, state) in history.states().iter().enumerate() {
            let t = number as u64;
            match state {
                TrialState::Complete => {
                    let Some(v) = trials[number].values.as_ref() else {
                        continue;
                    };
                    if let Some(r) = row(t) {
                        feasible.push(!trials[number].infeasible());
                        if let Some(c) = &trials[number].constraints {
                            constraint_rows.push((r.clone(), c.clone()));
                        }
                        x.extend(r);
                        for ((list, sign), v) in values.iter_mut().zip(&signs).zip(v) {
                            list.push(sign * v);
                        }
                    }
                }
                TrialState::Running if t != trial => running.extend(row(t)),
                _ => {}
            }
        }
        let n = values[0].len();
        if n == 0 {
            return None;
        }
        let ys = values.iter().map(|v| standardize(v)).collect();
        let is_cat: Vec<bool> = params
            .iter()
            .map(|p| matches!(p.dist, Distribution::Categorical(_)))
            .collect();
        let n_constraints = constraint_rows
            .iter()
            .map(|(_, c)| c.len())
            .max()
            .unwrap_or(0);
        let constraints = (0..n_constraints)
            .map(|k| {
                let rows: Vec<&(Vec<f64>, Vec<f64>)> = constraint_rows
                    .iter()
                    .filter(|(_, c)| c.len() > k)
                    .collect();
                let negated: Vec<f64> = rows.iter().map(|(_, c)| -c[k]).collect();
                let (y, mean, sd) = standardize_with(&negated);
                ConstraintData {
                    inputs: Inputs {
                        x: rows.iter().flat_map(|(r, _)| r.iter().copied()).collect(),
                        n: rows.len(),
                        d,
                        is_cat: is_cat.clone(),
                    },
                    y,
                    threshold: -mean / sd,
                }
            })
            .collect();
        Some(Extracted {
            inputs: Inputs { x, n, d, is_cat },
            params,
            ys,
            feasible,
            constraints,
            running,
            trial,
        })
    }

    /// The process of slot `slot` (0: the objective, then the constraints) fitted to
    /// `(inputs, y)`: the last fit's hyperparameters while the trials grew by less than a
    /// twentieth, else refitted from them.
    fn process(&self, slot: usize, names: &[String], inputs: &Inputs, y: &[f64]) -> model::Gp {
        let n = y.len();
        let last = self
            .last_fit
            .lock()
            .get(slot)
            .cloned()
            .flatten()
            .filter(|(names_fitted, ..)| names_fitted == names)
            .map(|(_, p, n_fitted)| (p, n_fitted));
        let kept = last
            .as_ref()
            .filter(|(_, n_fitted)| {
                (*n_fitted..n_fitted + (n_fitted / REFIT_GROWTH).max(1)).contains(&n)
            })
            .and_then(|(p, _)| model::Gp::new(inputs.clone(), y, p.clone()));
        if let Some(gp) = kept {
            return gp;
        }
        let gp = model::fit(
            inputs.clone(),
            y,
            self.opts.deterministic_objective,
            last.as_ref().map(|(p, _)| p),
        );
        let mut fits = self.last_fit.lock();
        if fits.len() <= slot {
            fits.resize(slot + 1, None);
        }
        fits[slot] = Some((names.to_vec(), gp.params.clone(), n));
        gp
    }

    fn compute(&self, ex: Extracted) -> BTreeMap<String, f64> {
        let names: Vec<String> = ex.params.iter().map(|p| p.name.clone()).collect();
        let n_objectives = ex.ys.len();
        let gps: Vec<model::Gp> = ex
            .ys
            .iter()
            .enumerate()
            .map(|(k, y)| self.process(k, &names, &ex.inputs, y))
            .collect();
        let constraint_gps: Vec<(model::Gp, f64)> = ex
            .constraints
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let gp = self.process(n_objectives + k, &names, &c.inputs, &c.y);
                (gp, c.threshold)
            })
            .collect();
        let d = ex.inputs.d;
        let feasible: Vec<usize> = (0..ex.feasible.len()).filter(|&i| ex.feasible[i]).collect();
        // Running trials: believed to come out at the posterior mean.
        let believers: Vec<Option<model::Gp>> = gps
            .iter()
            .zip(&ex.ys)
            .map(|(gp, y)| {
                (!ex.running.is_empty())
                    .then(|| {
                        let mut inputs = ex.inputs.clone();
                        let mut y = y.clone();
                        for r in &ex.running {
                            y.push(gp.posterior(r).0);
                            inputs.x.extend(r);
                            inputs.n += 1;
                        }
                        model::Gp::new(inputs, &y, gp.params.clone())
                    })
                    .flatten()
            })
            .collect();
        let models: Vec<&model::Gp> = gps
            .iter()
            .zip(&believers)
            .map(|(gp, b)| b.as_ref().unwrap_or(gp))
            .collect();
        let mut rng = trial_rng(self.seed, ex.trial, "gp");
        // The improvement's reference (the best feasible trial, or with several objectives
        // the feasible trials' front) and where the local searches start besides.
        let (f0, ehvi, starts) = if n_objectives == 1 {
            let best = feasible
                .iter()
                .copied()
                .max_by(|&a, &b| ex.ys[0][a].total_cmp(&ex.ys[0][b]).then(b.cmp(&a)));
            (best.map(|i| ex.ys[0][i]), None, best.into_iter().collect())
        } else {
            let points: Vec<Vec<f64>> = feasible
                .iter()
                .map(|&i| ex.ys.iter().map(|y| -y[i]).collect())
                .collect();
            let front: Vec<usize> = crate::multi_objective::pareto_front(&points)
                .into_iter()
                .map(|k| feasible[k])
                .take(self.opts.n_local_search / 2)
                .collect();
            let values: Vec<Vec<f64>> = feasible
                .iter()
                .map(|&i| ex.ys.iter().map(|y| y[i]).collect())
                .collect();
            let ehvi = Ehvi::new(models.clone(), &values, &mut rng);
            (None, ehvi, front)
        };
        let warm: Vec<Vec<f64>> = starts
            .iter()
            .map(|&i: &usize| ex.inputs.x[i * d..(i + 1) * d].to_vec())
            .collect();
        let acq = LogEi {
            gp: models[0],
            f0,
            ehvi,
            constraints: constraint_gps.iter().map(|(g, t)| (g, *t)).collect(),
        };
        let dims: Vec<Dim> = ex.params.iter().map(UnitParam::dim).collect();
        let x = acqf::maximize(
            &acq,
            &dims,
            &warm,
            &mut rng,
            Search {
                n_preliminary_samples: self.opts.n_preliminary_samples,
                n_local_search: self.opts.n_local_search,
                tol: 1e-4,
            },
        );
        ex.params
            .iter()
            .zip(&x)
            .map(|(p, v)| (p.name.clone(), p.denormalize(*v)))
            .collect()
    }
}

/// Infinite values clipped to the finite range, then standardised (Optuna's way).
fn standardize(values: &[f64]) -> Vec<f64> {
    standardize_with(values).0
}

/// [`standardize`], with the mean and the standard deviation (floored) it used.
fn standardize_with(values: &[f64]) -> (Vec<f64>, f64, f64) {
    let finite = values.iter().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, |a, b| a.min(*b));
    let hi = finite.fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let clipped: Vec<f64> = values.iter().map(|v| v.clamp(lo, hi)).collect();
    let n = clipped.len() as f64;
    let mean = clipped.iter().sum::<f64>() / n;
    let sd = (clipped.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
        .sqrt()
        .max(1e-10);
    (clipped.iter().map(|v| (v - mean) / sd).collect(), mean, sd)
}

impl Sampler for GpSampler {
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
        self.prepare_relative(history, trial, space)()
    }

    fn prepare_relative(&self, history: &History, trial: u64, space: &SearchSpace) -> RelativeWork {
        if space.is_empty() || history.n_complete() < self.opts.n_startup_trials {
            return Box::new(BTreeMap::new);
        }
        let Some(ex) = self.extract(history, trial, space) else {
            return Box::new(BTreeMap::new);
        };
        let sampler = self.clone();
        Box::new(move || sampler.compute(ex))
    }

    fn independent_sampler(&self) -> Option<&dyn Sampler> {
        Some(self.independent.as_ref())
    }
}

#[cfg(test)]
mod tests;
