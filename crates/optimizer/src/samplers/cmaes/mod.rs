//! CMA-ES, with the semantics of Optuna 5.0's `CmaEsSampler`.
//!
//! The numeric parameters every finished trial has (categorical ones and those with a single
//! value are left to the independent sampler) are coordinates of the unit cube: log scale for
//! log parameters; without the margin a grid's range is widened by half a step at each end.
//! Once `n_startup_trials` trials are COMPLETE, each trial is a draw of the strategy's current
//! generation (see `es`); a generation ends when `popsize` of its draws have finished COMPLETE
//! (PRUNED with `consider_pruned_trials`, valued at their last report).
//!
//! The sampler keeps no state of its own that the history does not determine: the strategy is
//! replayed from the trials in number order, and a trial belongs to the generation whose draw
//! for its number is exactly its parameters (the draw of a trial depends only on the seed, its
//! number and the generation). The replay stops at the first trial still running, so a
//! generation ends with its lowest-numbered draws; draws from a generation that ended before
//! they finished, enqueued trials and the startup trials are left out, as in Optuna. Where the
//! replay got to is kept between samples while no recorded value changes, so a sample costs
//! the trials finished since the last one. A resumed study (another process, the storage)
//! replays to the same strategy.

mod es;

use std::collections::BTreeMap;
use std::sync::Arc;

use nalgebra::{DMatrix, DVector};
use parking_lot::Mutex;
use rand::RngExt;

use crate::distributions::Distribution;
use crate::error::OptimizerError;
use crate::history::{History, SearchSpace};
use crate::rng::{fresh_seed, trial_rng};
use crate::samplers::unit::UnitParam;
use crate::samplers::{RandomSampler, RelativeWork, Sampler};
use crate::trial::{StudyDirection, TrialState};

use es::{Strategy, Thresholds};

/// How a converged run starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartStrategy {
    /// IPOP: each restart multiplies the population by `inc_popsize`.
    Ipop,
    /// BIPOP: alternates IPOP restarts with small-population restarts from a random smaller
    /// step, giving each regime about the same number of evaluations.
    Bipop,
}

/// A finished trial of another study, to start from where it found good points (warm start).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTrial {
    /// Its numeric parameters by name (internal values).
    pub params: BTreeMap<String, f64>,
    /// Its objective value, in this study's direction.
    pub value: f64,
}

/// CMA-ES options, with Optuna 5.0's defaults.
#[derive(Debug, Clone)]
pub struct CmaOptions {
    /// The first mean, by parameter name (internal values; default: the middle of each range).
    pub x0: Option<BTreeMap<String, f64>>,
    /// The first step size, in the unit cube's units (default: 1/6).
    pub sigma0: Option<f64>,
    /// COMPLETE trials sampled by the independent sampler before CMA-ES starts. Default 1.
    pub n_startup_trials: usize,
    /// Samples the parameters CMA-ES does not, and all of them during startup (None: a random
    /// sampler with the same seed).
    pub independent_sampler: Option<Arc<dyn Sampler>>,
    /// Seed of the random stream (None: a fresh random seed).
    pub seed: Option<u64>,
    /// PRUNED trials count, valued at their last intermediate value. Default false.
    pub consider_pruned_trials: bool,
    /// Restart a converged run (default: none, it goes on).
    pub restart_strategy: Option<RestartStrategy>,
    /// Solutions per generation (default: 4 + ⌊3 ln n⌋ for n parameters).
    pub popsize: Option<usize>,
    /// Population growth per (large) restart. Default 2.
    pub inc_popsize: usize,
    /// A diagonal covariance (sep-CMA-ES), for many parameters. Default false.
    pub use_separable_cma: bool,
    /// CMA-ES with Margin for integer and stepped parameters. Default false.
    pub with_margin: bool,
    /// Learning-rate adaptation (LRA-CMA-ES), for multimodal and noisy problems; not with
    /// `use_separable_cma` or `with_margin`. Default false.
    pub lr_adapt: bool,
    /// Trials of a similar study the first distribution is fitted to (WS-CMA-ES).
    pub source_trials: Vec<SourceTrial>,
}

impl Default for CmaOptions {
    fn default() -> Self {
        CmaOptions {
            x0: None,
            sigma0: None,
            n_startup_trials: 1,
            independent_sampler: None,
            seed: None,
            consider_pruned_trials: false,
            restart_strategy: None,
            popsize: None,
            inc_popsize: 2,
            use_separable_cma: false,
            with_margin: false,
            lr_adapt: false,
            source_trials: Vec::new(),
        }
    }
}

/// Default step size in the unit cube (a sixth of every range).
const SIGMA0: f64 = 1.0 / 6.0;
/// Share of the source trials the warm start fits to, and the spread added to their covariance.
const WARM_START_TOP: f64 = 0.1;
const WARM_START_PRIOR: f64 = 0.1;

/// One run of the strategy with the restart bookkeeping.
#[derive(Debug, Clone)]
struct Run {
    es: Strategy,
    restarts: u64,
    /// BIPOP: evaluations spent in small- and large-population runs, the large restarts so
    /// far, and whether the current run is a small one.
    small_evals: usize,
    large_evals: usize,
    large_restarts: i32,
    small: bool,
}

/// How far the strategy was replayed through the history.
#[derive(Debug, Clone)]
struct Replay {
    version: (u64, u64),
    space: SearchSpace,
    run: Run,
    /// The current generation's finished draws: (point, loss, drawn from the generation
    /// before).
    solved: Vec<(DVector<f64>, f64, bool)>,
    /// The strategy the generation before was drawn from (its draws that finish late join the
    /// current one as injected points); None after a restart.
    previous: Option<Strategy>,
    /// The first trial not replayed yet.
    next: u64,
}

/// CMA-ES sampler (Optuna's `CmaEsSampler`).
#[derive(Debug, Clone)]
pub struct CmaEsSampler {
    opts: CmaOptions,
    seed: u64,
    independent: Arc<dyn Sampler>,
    replay: Arc<Mutex<Option<Replay>>>,
}

impl CmaEsSampler {
    /// Validates the options (the combinations Optuna refuses are refused) and builds the
    /// sampler.
    pub fn new(opts: CmaOptions) -> Result<Self, OptimizerError> {
        let warm = !opts.source_trials.is_empty();
        let refuse =
            |name: &'static str, value: &str, why: &str| Err(OptimizerError::arg(name, value, why));
        if let Some(s) = opts.sigma0 {
            if !(s.is_finite() && s > 0.0) {
                return refuse("sigma0", &s.to_string(), "must be a finite number > 0");
            }
        }
        if opts.popsize.is_some_and(|p| p < 2) {
            return refuse("popsize", &format!("{:?}", opts.popsize), "must be >= 2");
        }
        if opts.inc_popsize < 1 {
            return refuse("inc_popsize", "0", "must be >= 1");
        }
        if opts.lr_adapt && (opts.use_separable_cma || opts.with_margin) {
            return refuse(
                "lr_adapt",
                "true",
                "cannot be combined with use_separable_cma=True or with_margin=True",
            );
        }
        if opts.use_separable_cma && opts.with_margin {
            return refuse(
                "with_margin",
                "true",
                "cannot be combined with use_separable_cma=True",
            );
        }
        if warm {
            let other = if opts.restart_strategy.is_some() {
                Some("restart_strategy")
            } else if opts.use_separable_cma {
                Some("use_separable_cma")
            } else if opts.x0.is_some() {
                Some("x0")
            } else if opts.sigma0.is_some() {
                Some("sigma0")
            } else {
                None
            };
            if let Some(other) = other {
                return refuse(
                    "source_trials",
                    &format!("{} trials", opts.source_trials.len()),
                    &format!("cannot be combined with {other} (the warm start sets the first distribution)"),
                );
            }
            if let Some(t) = opts.source_trials.iter().find(|t| !t.value.is_finite()) {
                return refuse(
                    "source_trials",
                    &t.value.to_string(),
                    "values must be finite",
                );
            }
        }
        let seed = opts.seed.unwrap_or_else(fresh_seed);
        let independent = opts
            .independent_sampler
            .clone()
            .unwrap_or_else(|| Arc::new(RandomSampler::new(Some(seed))));
        Ok(CmaEsSampler {
            opts,
            seed,
            independent,
            replay: Arc::default(),
        })
    }

    fn params(&self, space: &SearchSpace) -> Vec<UnitParam> {
        space
            .iter()
            .map(|(n, d)| UnitParam::new(n, d, !self.opts.with_margin))
            .collect()
    }

    /// A run of the strategy with this sampler's variant (separable, learning-rate adaptation).
    fn strategy(
        &self,
        mean: DVector<f64>,
        sigma: f64,
        cov: Option<DMatrix<f64>>,
        popsize: usize,
    ) -> Strategy {
        let es = Strategy::new(mean, sigma, cov, popsize, self.opts.use_separable_cma);
        if self.opts.lr_adapt {
            es.with_lr_adapt()
        } else {
            es
        }
    }

    fn default_popsize(n: usize) -> usize {
        4 + (3.0 * (n as f64).ln()).floor() as usize
    }

    /// The first run: from `x0` or the middle, or fitted to the source trials.
    fn first_run(&self, params: &[UnitParam], direction: StudyDirection) -> Run {
        let n = params.len();
        let popsize = self
            .opts
            .popsize
            .unwrap_or_else(|| Self::default_popsize(n));
        let warm = self.warm_start(params, direction);
        let (mean, sigma, cov) = match warm {
            Some((mean, sigma, cov)) => (mean, sigma, Some(cov)),
            None => {
                let mean = DVector::from_fn(n, |i, _| {
                    let p = &params[i];
                    self.opts
                        .x0
                        .as_ref()
                        .and_then(|x0| x0.get(&p.name))
                        .map_or(0.5, |&v| p.normalize(v).clamp(0.0, 1.0))
                });
                (mean, self.opts.sigma0.unwrap_or(SIGMA0), None)
            }
        };
        Run {
            es: self.strategy(mean, sigma, cov, popsize),
            restarts: 0,
            small_evals: 0,
            large_evals: 0,
            large_restarts: 0,
            small: false,
        }
    }

    /// WS-CMA-ES: the mean and covariance of the best tenth of the source trials (plus a
    /// small isotropic spread), as a step size and a covariance of determinant one.
    fn warm_start(
        &self,
        params: &[UnitParam],
        direction: StudyDirection,
    ) -> Option<(DVector<f64>, f64, DMatrix<f64>)> {
        let n = params.len();
        let mut points: Vec<(DVector<f64>, f64)> = self
            .opts
            .source_trials
            .iter()
            .filter_map(|t| {
                let x: Option<Vec<f64>> = params
                    .iter()
                    .map(|p| t.params.get(&p.name).map(|&v| p.normalize(v)))
                    .collect();
                Some((DVector::from_vec(x?), direction.loss(t.value)))
            })
            .collect();
        if points.is_empty() {
            if !self.opts.source_trials.is_empty() {
                tracing::warn!("CmaEsSampler: no source trial has every parameter of the search space; starting without the warm start");
            }
            return None;
        }
        points.sort_by(|a, b| a.1.total_cmp(&b.1));
        let top = ((points.len() as f64 * WARM_START_TOP) as usize).max(1);
        let top = &points[..top];
        let mean = top.iter().fold(DVector::zeros(n), |acc, (x, _)| acc + x) / top.len() as f64;
        let mut cov = DMatrix::identity(n, n) * WARM_START_PRIOR.powi(2);
        for (x, _) in top {
            let d = x - &mean;
            cov += &d * d.transpose() / top.len() as f64;
        }
        let sigma = cov.determinant().powf(1.0 / (2.0 * n as f64));
        if !(sigma.is_finite() && sigma > 0.0) {
            return None;
        }
        let cov = cov / (sigma * sigma);
        Some((mean, sigma, cov))
    }

    /// A converged run starts again from a random point (IPOP: with a larger population;
    /// BIPOP: alternately so, or small with a random smaller step).
    fn restart(&self, run: &mut Run, strategy: RestartStrategy, n: usize) {
        let mut rng = trial_rng(self.seed, run.restarts, "cmaes restart");
        let popsize0 = self
            .opts
            .popsize
            .unwrap_or_else(|| Self::default_popsize(n));
        let sigma0 = self.opts.sigma0.unwrap_or(SIGMA0);
        let inc = self.opts.inc_popsize as f64;
        let evals = run.es.popsize() * run.es.generation;
        run.restarts += 1;
        let (popsize, sigma) = match strategy {
            RestartStrategy::Ipop => (run.es.popsize() * self.opts.inc_popsize, sigma0),
            RestartStrategy::Bipop => {
                if run.small {
                    run.small_evals += evals;
                } else {
                    run.large_evals += evals;
                }
                run.small = run.small_evals < run.large_evals;
                if run.small {
                    let u: f64 = rng.random();
                    let grow = inc.powf(run.restarts as f64 * u * u);
                    let popsize = (popsize0 as f64 * grow).floor() as usize;
                    (
                        popsize.max(2),
                        sigma0 * 10f64.powf(-2.0 * rng.random::<f64>()),
                    )
                } else {
                    run.large_restarts += 1;
                    (
                        popsize0 * self.opts.inc_popsize.pow(run.large_restarts as u32),
                        sigma0,
                    )
                }
            }
        };
        let mean = DVector::from_fn(n, |_, _| rng.random::<f64>());
        run.es = self.strategy(mean, sigma, None, popsize);
    }

    /// Trial `t`'s draw from `es` as internal values.
    fn draw(&self, es: &Strategy, params: &[UnitParam], t: u64) -> (DVector<f64>, Vec<f64>) {
        let x = es.ask(&mut trial_rng(self.seed, t, "cmaes"));
        let values = params
            .iter()
            .zip(x.iter())
            .map(|(p, &v)| p.denormalize(v))
            .collect();
        (x, values)
    }

    /// A finished trial's loss for the strategy, if it counts.
    fn loss(&self, history: &History, t: u64) -> Option<f64> {
        let trial = &history.trials()[t as usize];
        let value = match trial.state {
            TrialState::Complete => trial.value()?,
            TrialState::Pruned if self.opts.consider_pruned_trials => trial.last_step()?.1,
            _ => return None,
        };
        (!value.is_nan()).then(|| history.directions()[0].loss(value))
    }

    /// Replays the trials not replayed yet, in number order, up to the first running trial that
    /// may be a draw of the current generation or of the one before (one with a parameter
    /// neither gave can never count and is passed). A draw of the generation before (drawn
    /// while that one waited for its last trials) joins the current one as an injected point, so
    /// concurrent trials are not wasted; the generation takes the same trials however the
    /// finishes interleave, so a replay of the finished study reaches the same strategy.
    fn advance(&self, replay: &mut Replay, history: &History, params: &[UnitParam]) {
        let trials = history.trials();
        while let Some(trial) = trials.get(replay.next as usize) {
            let t = replay.next;
            let now = self.draw(&replay.run.es, params, t);
            let before = replay.previous.as_ref().map(|es| self.draw(es, params, t));
            // Per draw: Some(true) when every parameter is its, Some(false) when one is not,
            // None when some are not known yet (a running trial).
            let matches = |values: &[f64]| {
                let mut all = Some(true);
                for (p, v) in params.iter().zip(values) {
                    match history.param(t, &p.name, &p.dist) {
                        Some(k) if k != *v => return Some(false),
                        Some(_) => {}
                        None => all = None,
                    }
                }
                all
            };
            let m_now = matches(&now.1);
            let m_before = before.as_ref().map_or(Some(false), |b| matches(&b.1));
            match trial.state {
                TrialState::Running if m_now != Some(false) || m_before != Some(false) => return,
                TrialState::Running | TrialState::Waiting => {
                    replay.next += 1;
                    continue;
                }
                _ => {}
            }
            replay.next += 1;
            let Some(loss) = self.loss(history, t) else {
                continue;
            };
            let injected = replay.solved.iter().filter(|s| s.2).count();
            if m_now == Some(true) {
                replay.solved.push((now.0, loss, false));
            } else if m_before == Some(true) && injected < self.max_injected(&replay.run.es) {
                replay.solved.push((before.expect("matched").0, loss, true));
            } else {
                continue;
            }
            if replay.solved.len() == replay.run.es.popsize() {
                self.end_generation(replay, params);
            }
        }
    }

    /// Injected points a generation takes at most: all but one of its points.
    fn max_injected(&self, es: &Strategy) -> usize {
        es.popsize() - 1
    }

    fn end_generation(&self, replay: &mut Replay, params: &[UnitParam]) {
        let run = &mut replay.run;
        replay.previous = Some(run.es.clone());
        run.es.tell_injected(std::mem::take(&mut replay.solved));
        if self.opts.with_margin {
            let alpha = 1.0 / (params.len() * run.es.popsize()) as f64;
            run.es.apply_margin(alpha, |j, m| thresholds(&params[j], m));
        }
        if let Some(strategy) = self.opts.restart_strategy {
            if run.es.should_stop() {
                tracing::debug!(
                    restarts = run.restarts + 1,
                    "CmaEsSampler: restarting a converged run"
                );
                self.restart(run, strategy, params.len());
                replay.previous = None;
            }
        }
    }
}

/// The thresholds between the values of a discrete parameter around coordinate `m` (where
/// rounding switches to the neighbouring value); None for a continuous parameter.
fn thresholds(p: &UnitParam, m: f64) -> Option<Thresholds> {
    let (low, high, step) = match &p.dist {
        Distribution::Int(d) => (d.low as f64, d.high as f64, d.step as f64),
        Distribution::Float(d) => (d.low, d.high, d.step?),
        Distribution::Categorical(_) => return None,
    };
    let v = p.denormalize(m);
    let slack = step * 1e-9;
    let below = (v - step >= low - slack).then(|| p.normalize(v - step / 2.0));
    let above = (v + step <= high + slack).then(|| p.normalize(v + step / 2.0));
    Some((below, above))
}

impl Sampler for CmaEsSampler {
    fn infer_relative_search_space(&self, history: &History, _trial: u64) -> SearchSpace {
        let mut space = history.intersection_search_space();
        space.retain(|_, d| !d.single() && !matches!(d, Distribution::Categorical(_)));
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
        if space.is_empty()
            || history.is_multi_objective()
            || history.n_complete() < self.opts.n_startup_trials
        {
            return Box::new(BTreeMap::new);
        }
        let params = self.params(space);
        let mut cached = self.replay.lock();
        let version = history.values_version();
        let stale = cached
            .as_ref()
            .is_none_or(|r| r.version != version || r.space != *space);
        if stale {
            *cached = Some(Replay {
                version,
                space: space.clone(),
                run: self.first_run(&params, history.directions()[0]),
                solved: Vec::new(),
                previous: None,
                next: 0,
            });
        }
        let replay = cached.as_mut().expect("set above");
        self.advance(replay, history, &params);
        let (_, values) = self.draw(&replay.run.es, &params, trial);
        let out: BTreeMap<String, f64> = params
            .iter()
            .zip(values)
            .map(|(p, v)| (p.name.clone(), v))
            .collect();
        Box::new(move || out)
    }

    fn independent_sampler(&self) -> Option<&dyn Sampler> {
        Some(self.independent.as_ref())
    }
}

#[cfg(test)]
mod tests;
