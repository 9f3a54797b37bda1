//! Samplers and pruners from a specification (the `[sampler]` / `[pruner]` tables of
//! study.toml, the `Component` of the wire protocol), and the study.toml file itself.
//!
//! Every error names what is wrong; errors about study.toml name the file, the line and the
//! field (`study.toml:7: search_space.x: low 5 > high 1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dspex_optimizer::pruners::{
    HyperbandPruner, MedianPruner, MinResource, NopPruner, PatientPruner, PercentilePruner,
    SuccessiveHalvingPruner, ThresholdPruner, WilcoxonPruner,
};
use dspex_optimizer::samplers::{
    BruteForceSampler, CmaEsSampler, CmaOptions, Crossover, EliteSelection, GpOptions, GpSampler,
    GridSampler, NsgaOptions, NsgaSampler, PartialFixedSampler, QmcKind, QmcSampler, RandomSampler,
    RestartStrategy, SourceTrial, TpeOptions, TpeSampler,
};
use dspex_optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue, Pruner,
    Sampler, StudyDirection,
};
use serde::Deserialize;

use crate::error::{EngineError, Result};

fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}
fn d_four() -> f64 {
    4.0
}
fn d_10() -> i64 {
    10
}
fn d_sobol() -> String {
    "sobol".to_string()
}
fn d_24() -> i64 {
    24
}
fn d_2() -> i64 {
    2
}
fn d_50() -> i64 {
    50
}
fn d_half() -> f64 {
    0.5
}
fn d_0_9() -> f64 {
    0.9
}
fn d_3() -> i64 {
    3
}
fn d_5() -> i64 {
    5
}
fn d_1() -> i64 {
    1
}

/// A categorical choice or grid value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Choice {
    /// A boolean (`true` / `false`).
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (NaN allowed, and equal to itself as a choice).
    Float(f64),
    /// A string.
    Str(String),
    /// Python's `None` (JSON `null` on the wire; TOML has no null).
    None(()),
}

impl Choice {
    /// The parameter value this choice stands for.
    pub fn to_param(&self) -> ParamValue {
        match self {
            Choice::Bool(b) => ParamValue::Bool(*b),
            Choice::Int(i) => ParamValue::Int(*i),
            Choice::Float(f) => ParamValue::Float(*f),
            Choice::Str(s) => ParamValue::Str(s.clone()),
            Choice::None(()) => ParamValue::None,
        }
    }
}

/// A sampler: `kind` and the keyword arguments of the Python constructor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerSpec {
    /// Uniform random sampling (Optuna's `RandomSampler`).
    Random {
        /// Seed of the random stream (default: a fresh random seed).
        seed: Option<u64>,
    },
    /// The Tree-structured Parzen Estimator (Optuna's `TPESampler`).
    Tpe {
        /// Trials sampled at random before TPE starts (COMPLETE and PRUNED count); default 10.
        #[serde(default = "d_10")]
        n_startup_trials: i64,
        /// Candidates drawn from the good trials' estimator l(x) per sample, the one maximizing
        /// l(x)/g(x) wins; >= 1, default 24.
        #[serde(default = "d_24")]
        n_ei_candidates: i64,
        /// Sample the parameters of the relative search space jointly (default: on for one
        /// objective, off for several).
        multivariate: Option<bool>,
        /// Split the search space into groups of parameters that always occur together, sampled
        /// jointly per group (needs multivariate); default false.
        #[serde(default)]
        group: bool,
        /// Count RUNNING trials as bad ones, so concurrent trials spread out; default true.
        #[serde(default = "d_true")]
        constant_liar: bool,
        /// Seed of the random stream (default: a fresh random seed).
        seed: Option<u64>,
        /// Weight of the prior kernel in both estimators; > 0, default 1.0.
        #[serde(default = "d_one")]
        prior_weight: f64,
        /// Bound kernel bandwidths below by the "magic clip" (range over the number of
        /// observations, see `below_clip_factor`); default true.
        #[serde(default = "d_true")]
        consider_magic_clip: bool,
        /// Let the outermost kernels' bandwidths reach the range's ends; default false.
        #[serde(default)]
        consider_endpoints: bool,
        /// Kernels per observation the magic clip counts for the good trials' estimator (1.0 is
        /// Optuna's rule); finite and >= 1, default 4.0.
        #[serde(default = "d_four")]
        below_clip_factor: f64,
    },
    /// Every point of a Cartesian grid once (Optuna's `GridSampler`).
    Grid {
        /// The values of each parameter; the grid is their Cartesian product.
        search_space: BTreeMap<String, Vec<Choice>>,
        /// Seed of the random order the grid points are visited in (default: a fresh random seed).
        seed: Option<u64>,
    },
    /// Gaussian-process Bayesian optimisation (Optuna's `GPSampler`).
    Gp {
        /// Seed of the random stream (default: a fresh random seed).
        seed: Option<u64>,
        /// COMPLETE trials sampled by the independent sampler before the GP starts; default 10.
        #[serde(default = "d_10")]
        n_startup_trials: i64,
        /// The objective has no noise (the GP's noise is fixed at its floor); default false.
        #[serde(default)]
        deterministic_objective: bool,
        /// Samples the parameters outside the GP's search space, and every parameter during
        /// startup (default: random with the same seed).
        independent_sampler: Option<Box<SamplerSpec>>,
    },
    /// Quasi-Monte Carlo points over the first completed trial's search space (Optuna's
    /// `QMCSampler`).
    Qmc {
        /// `"sobol"` (default) or `"halton"`.
        #[serde(default = "d_sobol")]
        qmc_type: String,
        /// Randomise the sequence (a linear matrix scramble and digital shift for Sobol,
        /// digit permutations for Halton); default false.
        #[serde(default)]
        scramble: bool,
        /// Seed of the scramble and of the default independent sampler (default: fresh).
        seed: Option<u64>,
        /// Samples the trials before the first completed one, and parameters outside its
        /// search space (default: random with the same seed).
        independent_sampler: Option<Box<SamplerSpec>>,
    },
    /// CMA-ES over the numeric parameters every finished trial has (Optuna's `CmaEsSampler`).
    Cmaes {
        /// The first mean, by parameter name (default: the middle of each range).
        x0: Option<BTreeMap<String, Choice>>,
        /// The first step size, in units of each parameter's range; > 0, default 1/6.
        sigma0: Option<f64>,
        /// COMPLETE trials sampled by the independent sampler before CMA-ES starts; default 1.
        #[serde(default = "d_1")]
        n_startup_trials: i64,
        /// Samples the parameters CMA-ES does not (categorical ones, a single one), and every
        /// parameter during startup (default: random with the same seed).
        independent_sampler: Option<Box<SamplerSpec>>,
        /// Seed of the random stream (default: a fresh random seed).
        seed: Option<u64>,
        /// PRUNED trials count, valued at their last intermediate value; default false.
        #[serde(default)]
        consider_pruned_trials: bool,
        /// `"ipop"` or `"bipop"`: restart a converged run (default: none).
        restart_strategy: Option<String>,
        /// Solutions per generation; >= 2 (default: 4 + floor(3 ln n) for n parameters).
        popsize: Option<i64>,
        /// Population growth per restart; >= 1, default 2.
        #[serde(default = "d_2")]
        inc_popsize: i64,
        /// A diagonal covariance (sep-CMA-ES); default false.
        #[serde(default)]
        use_separable_cma: bool,
        /// CMA-ES with Margin for integer and stepped parameters; default false.
        #[serde(default)]
        with_margin: bool,
        /// Learning-rate adaptation (LRA-CMA-ES); not with use_separable_cma or with_margin;
        /// default false.
        #[serde(default)]
        lr_adapt: bool,
        /// Finished trials of a similar study to fit the first distribution to (warm start).
        #[serde(default)]
        source_trials: Vec<SourceTrialSpec>,
    },
    /// NSGA-II, the genetic algorithm for several objectives (Optuna's `NSGAIISampler`).
    Nsgaii {
        /// The genetic options.
        #[serde(flatten)]
        ga: GaSpec,
    },
    /// NSGA-III: NSGA-II whose last front is cut by niches around reference directions, for
    /// three objectives and more (Optuna's `NSGAIIISampler`).
    Nsgaiii {
        /// The genetic options.
        #[serde(flatten)]
        ga: GaSpec,
        /// The reference directions, one row of weights per point, one weight per objective
        /// (default: Das and Dennis's points with `dividing_parameter` divisions).
        reference_points: Option<Vec<Vec<f64>>>,
        /// Divisions of each objective for the default reference points; >= 1, default 3.
        #[serde(default = "d_3")]
        dividing_parameter: i64,
    },
    /// Every combination of a discrete search space once (Optuna's `BruteForceSampler`).
    BruteForce {
        /// Seed of the random order (default: a fresh random seed).
        seed: Option<u64>,
        /// Count only finished trials (not running ones) towards the end of the study;
        /// default false.
        #[serde(default)]
        avoid_premature_stop: bool,
    },
    /// Some parameters fixed, the others sampled by a base sampler (Optuna's
    /// `PartialFixedSampler`).
    PartialFixed {
        /// The fixed parameters and their values.
        fixed_params: BTreeMap<String, Choice>,
        /// Samples the parameters not fixed.
        base_sampler: Box<SamplerSpec>,
    },
}

/// The options NSGA-II and NSGA-III share (Optuna's constructor arguments).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GaSpec {
    /// Trials per generation; >= 2, default 50.
    #[serde(default = "d_50")]
    pub population_size: i64,
    /// How mutated parameters change (default: drawn again at random).
    pub mutation: Option<MutationSpec>,
    /// Probability that a child's parameter mutates (default: 1 / its parameters).
    pub mutation_prob: Option<f64>,
    /// How a child's numeric parameters are made from its parents' (default: uniform).
    pub crossover: Option<CrossoverSpec>,
    /// Probability that a child is a crossover of its parents (else a copy of one); default 0.9.
    #[serde(default = "d_0_9")]
    pub crossover_prob: f64,
    /// Probability that a categorical parameter comes from the first parent; default 0.5.
    #[serde(default = "d_half")]
    pub swapping_prob: f64,
    /// Seed of the random stream (default: a fresh random seed).
    pub seed: Option<u64>,
}

/// A crossover: `kind` and the keyword arguments of Optuna's class.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CrossoverSpec {
    /// `UniformCrossover(swapping_prob=0.5)`.
    Uniform {
        /// Probability that a parameter comes from the first parent (default: the sampler's).
        swapping_prob: Option<f64>,
    },
    /// `BLXAlphaCrossover(alpha=0.5)`.
    BlxAlpha {
        /// Widening of the parents' interval on each side, in its widths; default 0.5.
        #[serde(default = "d_half")]
        alpha: f64,
    },
    /// `SBXCrossover(eta=None, uniform_crossover_prob=0.5, use_child_gene_prob=0.5)`.
    Sbx {
        /// Distribution index (default: 2 for one objective, 20 for several).
        eta: Option<f64>,
        /// Probability that a gene pair is swapped; default 0.5.
        #[serde(default = "d_half")]
        uniform_crossover_prob: f64,
        /// Probability that a gene is the crossover's (else the parents'); default 0.5.
        #[serde(default = "d_half")]
        use_child_gene_prob: f64,
    },
    /// `VSBXCrossover(eta=None, uniform_crossover_prob=0.5, use_child_gene_prob=0.5)`.
    Vsbx {
        /// Distribution index (default: 2 for one objective, 20 for several).
        eta: Option<f64>,
        /// Probability that a gene pair is swapped; default 0.5.
        #[serde(default = "d_half")]
        uniform_crossover_prob: f64,
        /// Probability that a gene is the crossover's (else the parents'); default 0.5.
        #[serde(default = "d_half")]
        use_child_gene_prob: f64,
    },
    /// `UNDXCrossover(sigma_xi=0.5, sigma_eta=None)`.
    Undx {
        /// Spread along the first two parents' difference; default 0.5.
        #[serde(default = "d_half")]
        sigma_xi: f64,
        /// Spread across it (default: 0.35 / sqrt(parameters)).
        sigma_eta: Option<f64>,
    },
    /// `SPXCrossover(epsilon=None)`.
    Spx {
        /// Expansion of the parents' simplex (default: sqrt(parameters + 2)).
        epsilon: Option<f64>,
    },
}

/// A mutation: `kind` and the keyword arguments of Optuna's class.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MutationSpec {
    /// `PolynomialMutation(eta=20.0)`.
    Polynomial {
        /// Distribution index: larger keeps a mutated value nearer; >= 0, default 20.
        #[serde(default = "d_20f")]
        eta: f64,
    },
}

fn d_20f() -> f64 {
    20.0
}

impl GaSpec {
    fn options(&self, selection: EliteSelection) -> Result<NsgaOptions> {
        let crossover = match self.crossover.clone() {
            None => Crossover::Uniform {
                swapping_prob: None,
            },
            Some(CrossoverSpec::Uniform { swapping_prob }) => Crossover::Uniform { swapping_prob },
            Some(CrossoverSpec::BlxAlpha { alpha }) => Crossover::BlxAlpha { alpha },
            Some(CrossoverSpec::Sbx {
                eta,
                uniform_crossover_prob,
                use_child_gene_prob,
            }) => Crossover::Sbx {
                eta,
                uniform_crossover_prob,
                use_child_gene_prob,
            },
            Some(CrossoverSpec::Vsbx {
                eta,
                uniform_crossover_prob,
                use_child_gene_prob,
            }) => Crossover::Vsbx {
                eta,
                uniform_crossover_prob,
                use_child_gene_prob,
            },
            Some(CrossoverSpec::Undx {
                sigma_xi,
                sigma_eta,
            }) => Crossover::Undx {
                sigma_xi,
                sigma_eta,
            },
            Some(CrossoverSpec::Spx { epsilon }) => Crossover::Spx { epsilon },
        };
        Ok(NsgaOptions {
            population_size: count("population_size", self.population_size)?,
            mutation_eta: self
                .mutation
                .as_ref()
                .map(|MutationSpec::Polynomial { eta }| *eta),
            mutation_prob: self.mutation_prob,
            crossover,
            crossover_prob: self.crossover_prob,
            swapping_prob: self.swapping_prob,
            seed: self.seed,
            selection,
        })
    }
}

/// A finished trial of another study, for `CmaEsSampler`'s warm start.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceTrialSpec {
    /// Its numeric parameters by name.
    pub params: BTreeMap<String, Choice>,
    /// Its objective value.
    pub value: f64,
}

/// A number given as a choice (an int or a float), for options keyed by parameter name.
fn number(name: &'static str, key: &str, v: &Choice) -> Result<f64> {
    match v {
        Choice::Int(i) => Ok(*i as f64),
        Choice::Float(f) if f.is_finite() => Ok(*f),
        other => Err(EngineError::from(dspex_optimizer::OptimizerError::arg(
            name,
            format!("{key}={:?}", other.to_param().to_string()),
            "must be a finite number",
        ))),
    }
}

/// A pruner: `kind` and the keyword arguments of the Python constructor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PrunerSpec {
    /// Never prunes (Optuna's `NopPruner`).
    Nop {},
    /// Prunes a trial worse than the median of the COMPLETE trials at the same step (Optuna's
    /// `MedianPruner`).
    Median {
        /// No pruning until this many trials are COMPLETE; default 5.
        #[serde(default = "d_5")]
        n_startup_trials: i64,
        /// No pruning before this step of a trial; default 0.
        #[serde(default)]
        n_warmup_steps: i64,
        /// Steps between two pruning checks, from `n_warmup_steps` on; >= 1, default 1.
        #[serde(default = "d_1")]
        interval_steps: i64,
        /// Keep a trial when fewer COMPLETE trials reported a value at its step; >= 1, default 1.
        #[serde(default = "d_1")]
        n_min_trials: i64,
    },
    /// Prunes a trial outside the best `percentile` percent of the COMPLETE trials at the same
    /// step (Optuna's `PercentilePruner`).
    Percentile {
        /// The kept top share, in percent, in [0, 100]; required.
        percentile: f64,
        /// No pruning until this many trials are COMPLETE; default 5.
        #[serde(default = "d_5")]
        n_startup_trials: i64,
        /// No pruning before this step of a trial; default 0.
        #[serde(default)]
        n_warmup_steps: i64,
        /// Steps between two pruning checks, from `n_warmup_steps` on; >= 1, default 1.
        #[serde(default = "d_1")]
        interval_steps: i64,
        /// Keep a trial when fewer COMPLETE trials reported a value at its step; >= 1, default 1.
        #[serde(default = "d_1")]
        n_min_trials: i64,
    },
    /// Asynchronous successive halving (Optuna's `SuccessiveHalvingPruner`).
    SuccessiveHalving {
        /// None: "auto".
        min_resource: Option<i64>,
        /// A trial is promoted from a rung when in the top `1 / reduction_factor` there; >= 2,
        /// default 4.
        reduction_factor: Option<i64>,
        /// Rungs skipped before the first one (the first rung is at step
        /// `min_resource * reduction_factor ^ min_early_stopping_rate`); default 0.
        #[serde(default)]
        min_early_stopping_rate: i64,
        /// Trials that must reach a rung before any is promoted from it; default 0 (and 0 with
        /// "auto" `min_resource`).
        #[serde(default)]
        bootstrap_count: i64,
    },
    /// Hyperband: several successive-halving brackets, a trial's bracket fixed by a hash
    /// (Optuna's `HyperbandPruner`).
    Hyperband {
        /// Steps of the first rung of the most aggressive bracket; >= 1, default 1.
        #[serde(default = "d_1")]
        min_resource: i64,
        /// None: "auto".
        max_resource: Option<i64>,
        /// Promotion share `1 / reduction_factor` at each rung; also sets the number of
        /// brackets. >= 2, default 3.
        reduction_factor: Option<i64>,
        /// Trials that must reach a rung before any is promoted from it; default 0 (and 0 with
        /// "auto" `max_resource`).
        #[serde(default)]
        bootstrap_count: i64,
        /// Key hashed with the trial number to pick its bracket (default: the study's name, which
        /// gives Optuna's brackets).
        bracket_key: Option<String>,
    },
    /// Prunes a trial whose latest intermediate value leaves `[lower, upper]` or is NaN
    /// (Optuna's `ThresholdPruner`).
    Threshold {
        /// Lower bound (default: unbounded); at least one of `lower` / `upper` is required.
        lower: Option<f64>,
        /// Upper bound (default: unbounded); `lower <= upper`.
        upper: Option<f64>,
        /// No pruning before this step of a trial; default 0.
        #[serde(default)]
        n_warmup_steps: i64,
        /// Steps between two pruning checks, from `n_warmup_steps` on; >= 1, default 1.
        #[serde(default = "d_1")]
        interval_steps: i64,
    },
    /// Prunes when a Wilcoxon signed-rank test says the trial is worse than the best trial at
    /// the same steps (Optuna's `WilcoxonPruner`).
    Wilcoxon {
        /// Prune when the test's p-value is below this, in [0, 1]; default 0.1.
        p_threshold: Option<f64>,
        /// No pruning before `max(2, n_startup_steps)` steps in common with the best trial;
        /// >= 0, default 2.
        n_startup_steps: Option<i64>,
    },
    /// Prunes only a trial that stopped improving for `patience` steps (Optuna's
    /// `PatientPruner`).
    Patient {
        /// The pruner asked once patience is lost (default: none, prune then).
        wrapped: Option<Box<PrunerSpec>>,
        /// Steps without improvement tolerated; >= 0, required.
        patience: i64,
        /// Smallest change that counts as an improvement; >= 0, default 0.0.
        #[serde(default)]
        min_delta: f64,
    },
}

/// A count option that must not be negative.
fn count(name: &'static str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| {
        EngineError::from(dspex_optimizer::OptimizerError::arg(
            name,
            v,
            "must be an int >= 0",
        ))
    })
}

impl SamplerSpec {
    /// Builds the sampler; every option is validated here (Python, study.toml and the wire
    /// all build samplers through this).
    pub fn build(&self) -> Result<Arc<dyn Sampler>> {
        Ok(match self {
            SamplerSpec::Random { seed } => Arc::new(RandomSampler::new(*seed)),
            SamplerSpec::Tpe {
                n_startup_trials,
                n_ei_candidates,
                multivariate,
                group,
                constant_liar,
                seed,
                prior_weight,
                consider_magic_clip,
                consider_endpoints,
                below_clip_factor,
            } => Arc::new(TpeSampler::new(TpeOptions {
                n_startup_trials: count("n_startup_trials", *n_startup_trials)?,
                n_ei_candidates: count("n_ei_candidates", *n_ei_candidates)?,
                multivariate: *multivariate,
                group: *group,
                constant_liar: *constant_liar,
                seed: *seed,
                prior_weight: *prior_weight,
                consider_magic_clip: *consider_magic_clip,
                consider_endpoints: *consider_endpoints,
                below_clip_factor: *below_clip_factor,
            })?),
            SamplerSpec::Grid { search_space, seed } => {
                let space = search_space
                    .iter()
                    .map(|(k, v)| (k.clone(), v.iter().map(Choice::to_param).collect()))
                    .collect();
                Arc::new(GridSampler::new(space, *seed)?)
            }
            SamplerSpec::Gp {
                seed,
                n_startup_trials,
                deterministic_objective,
                independent_sampler,
            } => Arc::new(GpSampler::new(GpOptions {
                seed: *seed,
                n_startup_trials: count("n_startup_trials", *n_startup_trials)?,
                deterministic_objective: *deterministic_objective,
                independent_sampler: independent_sampler
                    .as_ref()
                    .map(|s| s.build())
                    .transpose()?,
                ..GpOptions::default()
            })?),
            SamplerSpec::Qmc {
                qmc_type,
                scramble,
                seed,
                independent_sampler,
            } => {
                let kind = match qmc_type.as_str() {
                    "sobol" => QmcKind::Sobol,
                    "halton" => QmcKind::Halton,
                    other => {
                        return Err(EngineError::from(dspex_optimizer::OptimizerError::arg(
                            "qmc_type",
                            other,
                            "must be \"sobol\" or \"halton\"",
                        )))
                    }
                };
                Arc::new(QmcSampler::new(
                    kind,
                    *scramble,
                    *seed,
                    independent_sampler
                        .as_ref()
                        .map(|s| s.build())
                        .transpose()?,
                )?)
            }
            SamplerSpec::BruteForce {
                seed,
                avoid_premature_stop,
            } => Arc::new(BruteForceSampler::new(*seed, *avoid_premature_stop)),
            SamplerSpec::Cmaes {
                x0,
                sigma0,
                n_startup_trials,
                independent_sampler,
                seed,
                consider_pruned_trials,
                restart_strategy,
                popsize,
                inc_popsize,
                use_separable_cma,
                with_margin,
                lr_adapt,
                source_trials,
            } => {
                let arg = |name: &'static str, v: String, why: &str| {
                    EngineError::from(dspex_optimizer::OptimizerError::arg(name, v, why))
                };
                let restart_strategy = match restart_strategy.as_deref() {
                    None => None,
                    Some("ipop") => Some(RestartStrategy::Ipop),
                    Some("bipop") => Some(RestartStrategy::Bipop),
                    Some(other) => {
                        return Err(arg(
                            "restart_strategy",
                            other.into(),
                            "must be \"ipop\" or \"bipop\"",
                        ))
                    }
                };
                let numbers = |name: &'static str, m: &BTreeMap<String, Choice>| {
                    m.iter()
                        .map(|(k, v)| Ok((k.clone(), number(name, k, v)?)))
                        .collect::<Result<BTreeMap<String, f64>>>()
                };
                Arc::new(CmaEsSampler::new(CmaOptions {
                    x0: x0.as_ref().map(|m| numbers("x0", m)).transpose()?,
                    sigma0: *sigma0,
                    n_startup_trials: count("n_startup_trials", *n_startup_trials)?,
                    independent_sampler: independent_sampler
                        .as_ref()
                        .map(|s| s.build())
                        .transpose()?,
                    seed: *seed,
                    consider_pruned_trials: *consider_pruned_trials,
                    restart_strategy,
                    popsize: popsize.map(|p| count("popsize", p)).transpose()?,
                    inc_popsize: count("inc_popsize", *inc_popsize)?,
                    use_separable_cma: *use_separable_cma,
                    with_margin: *with_margin,
                    lr_adapt: *lr_adapt,
                    source_trials: source_trials
                        .iter()
                        .map(|t| {
                            Ok(SourceTrial {
                                params: numbers("source_trials", &t.params)?,
                                value: t.value,
                            })
                        })
                        .collect::<Result<_>>()?,
                })?)
            }
            SamplerSpec::Nsgaii { ga } => {
                Arc::new(NsgaSampler::new(ga.options(EliteSelection::Crowding)?)?)
            }
            SamplerSpec::Nsgaiii {
                ga,
                reference_points,
                dividing_parameter,
            } => Arc::new(NsgaSampler::new(ga.options(
                EliteSelection::ReferencePoints {
                    points: reference_points.clone(),
                    dividing_parameter: count("dividing_parameter", *dividing_parameter)?,
                },
            )?)?),
            SamplerSpec::PartialFixed {
                fixed_params,
                base_sampler,
            } => Arc::new(PartialFixedSampler::new(
                fixed_params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_param()))
                    .collect(),
                base_sampler.build()?,
            )),
        })
    }
}

impl PrunerSpec {
    /// Builds the pruner; every option is validated here (Python, study.toml and the wire all
    /// build pruners through this).
    pub fn build(&self) -> Result<Arc<dyn Pruner>> {
        Ok(match self {
            PrunerSpec::Nop {} => Arc::new(NopPruner),
            other => Arc::from(other.build_boxed()?),
        })
    }

    fn build_boxed(&self) -> Result<Box<dyn Pruner>> {
        Ok(match self {
            PrunerSpec::Nop {} => Box::new(NopPruner),
            PrunerSpec::Median {
                n_startup_trials,
                n_warmup_steps,
                interval_steps,
                n_min_trials,
            } => Box::new(MedianPruner::new(
                *n_startup_trials,
                *n_warmup_steps,
                *interval_steps,
                *n_min_trials,
            )?),
            PrunerSpec::Percentile {
                percentile,
                n_startup_trials,
                n_warmup_steps,
                interval_steps,
                n_min_trials,
            } => Box::new(PercentilePruner::new(
                *percentile,
                *n_startup_trials,
                *n_warmup_steps,
                *interval_steps,
                *n_min_trials,
            )?),
            PrunerSpec::SuccessiveHalving {
                min_resource,
                reduction_factor,
                min_early_stopping_rate,
                bootstrap_count,
            } => Box::new(SuccessiveHalvingPruner::new(
                min_resource.map_or(MinResource::Auto, MinResource::Fixed),
                reduction_factor.unwrap_or(4),
                *min_early_stopping_rate,
                *bootstrap_count,
            )?),
            PrunerSpec::Hyperband {
                min_resource,
                max_resource,
                reduction_factor,
                bootstrap_count,
                bracket_key,
            } => {
                let p = HyperbandPruner::new(
                    *min_resource,
                    *max_resource,
                    reduction_factor.unwrap_or(3),
                    *bootstrap_count,
                )?;
                Box::new(match bracket_key {
                    Some(k) => p.with_bracket_key(k.as_str()),
                    None => p,
                })
            }
            PrunerSpec::Threshold {
                lower,
                upper,
                n_warmup_steps,
                interval_steps,
            } => Box::new(ThresholdPruner::new(
                *lower,
                *upper,
                *n_warmup_steps,
                *interval_steps,
            )?),
            PrunerSpec::Wilcoxon {
                p_threshold,
                n_startup_steps,
            } => Box::new(WilcoxonPruner::new(
                p_threshold.unwrap_or(0.1),
                n_startup_steps.unwrap_or(2),
            )?),
            PrunerSpec::Patient {
                wrapped,
                patience,
                min_delta,
            } => {
                let inner = wrapped.as_ref().map(|w| w.build_boxed()).transpose()?;
                Box::new(PatientPruner::new(inner, *patience, *min_delta)?)
            }
        })
    }
}

/// `{"kind": kind, ...options}` from the wire.
fn component_json(kind: &str, options_json: &str) -> Result<serde_json::Value> {
    let mut v: serde_json::Value = if options_json.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_str(options_json).map_err(|e| {
            EngineError::InvalidArgument(format!("{kind} options must be a JSON object: {e}"))
        })?
    };
    let obj = v.as_object_mut().ok_or_else(|| {
        EngineError::InvalidArgument(format!("{kind} options must be a JSON object"))
    })?;
    // Python's None means "not given" for every option.
    obj.retain(|_, x| !x.is_null());
    obj.insert("kind".into(), serde_json::Value::String(kind.to_string()));
    Ok(v)
}

/// A sampler from its kind and options (a JSON object of the Python constructor's keywords;
/// null means not given): the wire's `Component`, and Python's samplers.
pub fn sampler_from_component(kind: &str, options_json: &str) -> Result<Arc<dyn Sampler>> {
    let spec: SamplerSpec = serde_json::from_value(component_json(kind, options_json)?)
        .map_err(|e| EngineError::InvalidArgument(format!("sampler {kind:?}: {e}")))?;
    spec.build()
}

/// A pruner from its kind and options (see [`sampler_from_component`]).
pub fn pruner_from_component(kind: &str, options_json: &str) -> Result<Arc<dyn Pruner>> {
    let spec: PrunerSpec = serde_json::from_value(component_json(kind, options_json)?)
        .map_err(|e| EngineError::InvalidArgument(format!("pruner {kind:?}: {e}")))?;
    spec.build()
}

// ------------------------------------------------------------------ study.toml

/// One declared parameter of `[search_space]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ParamSpec {
    /// `type = "float"`: a float in `[low, high]` (Optuna's `FloatDistribution`).
    Float {
        /// Lowest value (inclusive; > 0 with `log`).
        low: f64,
        /// Highest value (inclusive; moved down onto the step grid when `step` does not divide
        /// the range).
        high: f64,
        /// Sample on a log scale; default false.
        #[serde(default)]
        log: bool,
        /// Discretization step (default: continuous); not with `log`.
        step: Option<f64>,
    },
    /// `type = "int"`: an integer in `[low, high]` (Optuna's `IntDistribution`).
    Int {
        /// Lowest value (inclusive; >= 1 with `log`).
        low: i64,
        /// Highest value (inclusive; moved down onto the step grid when `step` does not divide
        /// the range).
        high: i64,
        /// Sample on a log scale (needs `step = 1`); default false.
        #[serde(default)]
        log: bool,
        /// Spacing of the values from `low`; >= 1, default 1.
        #[serde(default = "d_1")]
        step: i64,
    },
    /// `type = "categorical"`: one of a list of choices (Optuna's `CategoricalDistribution`).
    Categorical {
        /// The choices (non-empty, no duplicates); mixed types allowed.
        choices: Vec<Choice>,
    },
}

impl ParamSpec {
    /// Validates the declaration and builds its distribution.
    pub fn build(&self) -> Result<Distribution> {
        Ok(match self {
            ParamSpec::Float {
                low,
                high,
                log,
                step,
            } => Distribution::Float(FloatDistribution::new(*low, *high, *log, *step)?),
            ParamSpec::Int {
                low,
                high,
                log,
                step,
            } => Distribution::Int(IntDistribution::new(*low, *high, *log, *step)?),
            ParamSpec::Categorical { choices } => Distribution::Categorical(
                CategoricalDistribution::new(choices.iter().map(Choice::to_param).collect())?,
            ),
        })
    }
}

fn d_processes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn d_heartbeat() -> u64 {
    1000
}

/// `[workers]`: the supervised pool of `dspex optimize`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkersSpec {
    /// Worker processes (default: one per CPU).
    #[serde(default = "d_processes")]
    pub processes: usize,
    /// Evaluations in flight per worker (threads in the worker).
    #[serde(default = "d_one_usize")]
    pub concurrency: usize,
    /// A trial lost with its worker (crash, silence) is re-run this many times.
    #[serde(default = "d_2u32")]
    pub max_retries: u32,
    /// Workers heartbeat this often; one silent for 3 periods is declared dead.
    #[serde(default = "d_heartbeat")]
    pub heartbeat_ms: u64,
    /// The Python interpreter that runs the workers (default: `python3`, or the interpreter
    /// of the `dspex` console script).
    pub python: Option<String>,
    /// A worker that crashed more than this many times in a row is not restarted.
    #[serde(default = "d_restarts")]
    pub max_restarts: u32,
    /// Where the workers run: `local` processes, or `ray` actors (`processes` of them).
    #[serde(default)]
    pub launcher: LauncherKind,
    /// Ray: the cluster's address (`auto`: the one this machine belongs to, else a local one).
    #[serde(default = "d_ray_address")]
    pub address: String,
    /// Ray: CPUs each actor takes.
    #[serde(default = "d_one_f64")]
    pub num_cpus_per_worker: f64,
    /// Ray: GPUs each actor takes.
    #[serde(default)]
    pub num_gpus_per_worker: f64,
    /// Ray: custom resources each actor takes.
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, f64>,
}

/// Where `dspex optimize` runs its workers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// A supervised pool of `python -m dspex.worker` processes on this machine.
    #[default]
    Local,
    /// Actors of a Ray cluster, started by one supervised `python -m dspex.launchers ray`.
    Ray,
}

fn d_ray_address() -> String {
    "auto".into()
}
fn d_one_f64() -> f64 {
    1.0
}

fn d_one_usize() -> usize {
    1
}
fn d_2u32() -> u32 {
    2
}
fn d_restarts() -> u32 {
    10
}

impl Default for WorkersSpec {
    fn default() -> Self {
        WorkersSpec {
            processes: d_processes(),
            concurrency: 1,
            max_retries: 2,
            heartbeat_ms: d_heartbeat(),
            python: None,
            max_restarts: d_restarts(),
            launcher: LauncherKind::Local,
            address: d_ray_address(),
            num_cpus_per_worker: 1.0,
            num_gpus_per_worker: 0.0,
            resources: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStudyFile {
    name: Option<String>,
    objective: String,
    direction: Option<String>,
    directions: Option<Vec<String>>,
    n_trials: Option<u64>,
    timeout: Option<f64>,
    /// `concurrency` is the name this key had before workers' capacities added up.
    #[serde(alias = "concurrency")]
    max_concurrency: Option<usize>,
    trial_timeout: Option<f64>,
    storage: Option<String>,
    #[serde(default)]
    workers: Option<WorkersSpec>,
    sampler: Option<SamplerSpec>,
    pruner: Option<PrunerSpec>,
    #[serde(default)]
    search_space: BTreeMap<String, toml::Spanned<ParamSpec>>,
}

/// A checked study.toml.
#[derive(Debug, Clone)]
pub struct StudyFile {
    /// The file this was read from (named in errors; the objective's module is looked up
    /// next to it).
    pub path: PathBuf,
    /// `name`: the study's name; created, or loaded when it exists (default: a generated
    /// `no-name-...` name).
    pub name: Option<String>,
    /// `module:function` of the objective.
    pub objective: String,
    /// `direction = "..."` or `directions = [...]` (one per objective; not both); default
    /// `["minimize"]`.
    pub directions: Vec<StudyDirection>,
    /// `n_trials`: trials to start in this run (default: until `timeout`, a stop, or the
    /// sampler is exhausted). The `--n-trials` option overrides it.
    pub n_trials: Option<u64>,
    /// `timeout`: seconds after which no trial starts (running ones finish); default none.
    pub timeout: Option<f64>,
    /// Run-wide cap on the trials in flight; None: the sum of the workers' capacities.
    pub max_concurrency: Option<usize>,
    /// `trial_timeout`: seconds after which a running trial is failed and its slot freed;
    /// default none.
    pub trial_timeout: Option<f64>,
    /// `storage`: URL of the storage (`sqlite:///path.db`, `postgresql://...`; default: in
    /// memory, lost at exit).
    pub storage: Option<String>,
    /// The line of `storage = ...`, for errors when the storage cannot be opened.
    pub storage_line: Option<usize>,
    /// The `[workers]` table (defaults when absent).
    pub workers: WorkersSpec,
    /// The `[sampler]` table (default: TPE with its defaults).
    pub sampler: Option<SamplerSpec>,
    /// The `[pruner]` table (default: no pruning).
    pub pruner: Option<PrunerSpec>,
    /// `[search_space]`: parameters the engine suggests before each evaluation, by name
    /// (default: none; the objective may also suggest its own).
    pub search_space: BTreeMap<String, Distribution>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line where `key = ...` (or `[key]`) starts, if it can be found.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            (t.starts_with(key) && t[key.len()..].trim_start().starts_with('='))
                || t.trim_end() == format!("[{key}]")
        })
        .map(|i| i + 1)
}

impl StudyFile {
    /// Reads and checks the study.toml at `path` (see [`StudyFile::parse`]).
    pub fn load(path: &Path) -> Result<StudyFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EngineError::InvalidArgument(format!("{}: cannot read: {e}", path.display()))
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks study.toml `text` (read from `path`, named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<StudyFile> {
        let file = path.display().to_string();
        let err_at = |line: Option<usize>, field: &str, msg: &str| {
            let loc = line.map_or(file.clone(), |l| format!("{file}:{l}"));
            EngineError::InvalidArgument(format!("{loc}: {field}: {msg}"))
        };
        let raw: RawStudyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg = e.message().trim().to_string();
            // toml names the table path of the error in its message only sometimes: add it.
            let loc = line.map_or(file.clone(), |l| format!("{file}:{l}"));
            let field = e
                .span()
                .and_then(|s| text.get(s.clone()))
                .map(|s| s.lines().next().unwrap_or("").trim().to_string())
                .filter(|s| !s.is_empty() && s.len() < 80);
            match field {
                Some(f) => EngineError::InvalidArgument(format!("{loc}: at `{f}`: {msg}")),
                None => EngineError::InvalidArgument(format!("{loc}: {msg}")),
            }
        })?;
        let directions = match (&raw.direction, &raw.directions) {
            (Some(_), Some(_)) => {
                return Err(err_at(
                    line_of_key(text, "directions"),
                    "directions",
                    "give direction or directions, not both",
                ))
            }
            (Some(d), None) => vec![d.clone()],
            (None, Some(ds)) => ds.clone(),
            (None, None) => vec!["minimize".into()],
        };
        let directions = directions
            .iter()
            .map(|d| {
                StudyDirection::parse(d).ok_or_else(|| {
                    let key = if raw.direction.is_some() {
                        "direction"
                    } else {
                        "directions"
                    };
                    err_at(
                        line_of_key(text, key),
                        key,
                        &format!("must be \"minimize\" or \"maximize\", got {d:?}"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !raw.objective.contains(':') {
            return Err(err_at(
                line_of_key(text, "objective"),
                "objective",
                &format!("must be \"module:function\", got {:?}", raw.objective),
            ));
        }
        if raw.max_concurrency == Some(0) {
            let key = if line_of_key(text, "max_concurrency").is_some() {
                "max_concurrency"
            } else {
                "concurrency"
            };
            return Err(err_at(line_of_key(text, key), key, "must be >= 1"));
        }
        for (key, v) in [
            ("timeout", raw.timeout),
            ("trial_timeout", raw.trial_timeout),
        ] {
            if let Some(t) = v {
                if !(t >= 0.0 && t.is_finite()) {
                    return Err(err_at(
                        line_of_key(text, key),
                        key,
                        &format!("must be a number of seconds >= 0, got {t}"),
                    ));
                }
            }
        }
        let workers = raw.workers.unwrap_or_default();
        if workers.processes == 0 || workers.concurrency == 0 {
            return Err(err_at(
                line_of_key(text, "processes"),
                "workers",
                "processes and concurrency must be >= 1",
            ));
        }
        if let Some(s) = &raw.sampler {
            s.build()
                .map_err(|e| err_at(line_of_key(text, "sampler"), "sampler", &e.to_string()))?;
        }
        if let Some(p) = &raw.pruner {
            p.build()
                .map_err(|e| err_at(line_of_key(text, "pruner"), "pruner", &e.to_string()))?;
        }
        let mut search_space = BTreeMap::new();
        for (name, spec) in &raw.search_space {
            let d = spec.get_ref().build().map_err(|e| {
                err_at(
                    Some(line_of(text, spec.span().start)),
                    &format!("search_space.{name}"),
                    &e.to_string(),
                )
            })?;
            search_space.insert(name.clone(), d);
        }
        Ok(StudyFile {
            path: path.to_path_buf(),
            name: raw.name,
            objective: raw.objective,
            directions,
            n_trials: raw.n_trials,
            timeout: raw.timeout,
            max_concurrency: raw.max_concurrency,
            trial_timeout: raw.trial_timeout,
            storage_line: raw
                .storage
                .as_ref()
                .and_then(|_| line_of_key(text, "storage")),
            storage: raw.storage,
            workers,
            sampler: raw.sampler,
            pruner: raw.pruner,
            search_space,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StudyFile> {
        StudyFile::parse(text, Path::new("study.toml"))
    }

    #[test]
    fn the_ray_launcher_and_its_options() {
        let base = "objective = \"m:f\"\n[workers]\nprocesses = 3\n";
        let f = parse(&format!(
            "{base}launcher = \"ray\"\nnum_gpus_per_worker = 0.5\nresources = {{ tpu = 1.0 }}\n"
        ))
        .unwrap();
        assert_eq!(f.workers.launcher, LauncherKind::Ray);
        assert_eq!(f.workers.address, "auto");
        assert_eq!(f.workers.num_cpus_per_worker, 1.0);
        assert_eq!(f.workers.num_gpus_per_worker, 0.5);
        assert_eq!(f.workers.resources.get("tpu"), Some(&1.0));
        assert_eq!(parse(base).unwrap().workers.launcher, LauncherKind::Local);
        let e = parse(&format!("{base}launcher = \"slurm\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant") && e.contains("ray"), "{e}");
    }

    #[test]
    fn a_full_file() {
        let f = parse(
            r#"
name = "s"
objective = "examples.objectives:rosenbrock"
direction = "minimize"
n_trials = 20
concurrency = 3

[workers]
processes = 2
max_retries = 1

[sampler]
kind = "tpe"
seed = 0

[pruner]
kind = "median"
n_startup_trials = 2

[search_space]
x = { type = "float", low = -2.0, high = 2.0 }
n = { type = "int", low = 1, high = 4 }
c = { type = "categorical", choices = ["a", 1, true] }
"#,
        )
        .unwrap();
        assert_eq!(f.search_space.len(), 3);
        assert_eq!(f.workers.processes, 2);
        assert_eq!(f.max_concurrency, Some(3));
        let g = parse("objective = \"m:f\"\nmax_concurrency = 5\n").unwrap();
        assert_eq!(g.max_concurrency, Some(5));
        assert_eq!(
            parse("objective = \"m:f\"\n").unwrap().max_concurrency,
            None
        );
        let e = parse("objective = \"m:f\"\n\nmax_concurrency = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("study.toml:3") && e.contains("max_concurrency"),
            "{e}"
        );
        assert_eq!((f.storage.as_deref(), f.storage_line), (None, None));
        let g = parse("objective = \"m:f\"\n\nstorage = \"sqlite:///s.db\"\n").unwrap();
        assert_eq!(g.storage.as_deref(), Some("sqlite:///s.db"));
        assert_eq!(g.storage_line, Some(3));
        assert!(matches!(
            f.sampler,
            Some(SamplerSpec::Tpe { seed: Some(0), .. })
        ));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse("objective = \"m:f\"\nn_trials = 3\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("study.toml:3"), "{e}");
        assert!(e.contains("bogus"), "{e}");

        let e = parse("objective = \"m:f\"\n[sampler]\nkind = \"tpe\"\nseeed = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("study.toml:"), "{e}");
        assert!(e.contains("seeed"), "{e}");

        let e = parse(
            "objective = \"m:f\"\n\n[search_space]\nx = { type = \"float\", low = 1.0, high = 0.0 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("study.toml:4"), "{e}");
        assert!(e.contains("search_space.x"), "{e}");

        let e = parse("objective = \"m:f\"\nn_trials = [\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("study.toml:"), "{e}");

        let e = parse("objective = \"nocolon\"\n").unwrap_err().to_string();
        assert!(e.contains("study.toml:1: objective"), "{e}");

        let e = parse("objective = \"m:f\"\ndirection = \"up\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("study.toml:2: direction"), "{e}");
    }

    #[test]
    fn components_from_the_wire() {
        assert!(sampler_from_component("tpe", r#"{"seed": 1, "multivariate": null}"#).is_ok());
        assert!(sampler_from_component("random", "").is_ok());
        assert!(sampler_from_component("tpe", r#"{"sed": 1}"#).is_err());
        assert!(sampler_from_component("bogus", "").is_err());
        assert!(pruner_from_component("median", r#"{"n_startup_trials": 1}"#).is_ok());
        assert!(pruner_from_component("percentile", r#"{"percentile": 200.0}"#).is_err());
        assert!(pruner_from_component(
            "patient",
            r#"{"wrapped": {"kind": "median"}, "patience": 2}"#
        )
        .is_ok());
    }

    #[test]
    fn the_gp_sampler_and_its_independent_sampler() {
        let base = "objective = \"m:f\"\n[sampler]\nkind = \"gp\"\nseed = 1\n";
        let f = parse(&format!(
            "{base}[sampler.independent_sampler]\nkind = \"tpe\"\nseed = 2\n"
        ))
        .unwrap();
        let Some(SamplerSpec::Gp {
            n_startup_trials: 10,
            deterministic_objective: false,
            independent_sampler: Some(inner),
            ..
        }) = &f.sampler
        else {
            panic!("{:?}", f.sampler)
        };
        assert!(matches!(**inner, SamplerSpec::Tpe { seed: Some(2), .. }));
        assert!(f.sampler.unwrap().build().is_ok());
        let e = parse(&format!("{base}n_startup_trials = -1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("study.toml:2: sampler") && e.contains("n_startup_trials"),
            "{e}"
        );
        let e = sampler_from_component("gp", r#"{"independent_sampler": {"kind": "bogus"}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn the_partial_fixed_sampler_and_its_base() {
        let f = parse(
            "objective = \"m:f\"\n[sampler]\nkind = \"partial_fixed\"\n\
             fixed_params = { x = 1.5, c = \"b\" }\n\
             [sampler.base_sampler]\nkind = \"tpe\"\nseed = 2\n",
        )
        .unwrap();
        let Some(SamplerSpec::PartialFixed {
            fixed_params,
            base_sampler,
        }) = &f.sampler
        else {
            panic!("{:?}", f.sampler)
        };
        assert_eq!(fixed_params["x"], Choice::Float(1.5));
        assert!(matches!(
            **base_sampler,
            SamplerSpec::Tpe { seed: Some(2), .. }
        ));
        assert!(f.sampler.unwrap().build().is_ok());
        let e = sampler_from_component("partial_fixed", r#"{"fixed_params": {"x": 1}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("base_sampler"), "{e}");
    }

    #[test]
    fn the_genetic_samplers_and_what_they_refuse() {
        let f = parse(
            "objective = \"m:f\"\ndirections = [\"minimize\", \"minimize\"]\n[sampler]\n\
             kind = \"nsgaii\"\nseed = 1\npopulation_size = 20\n\
             crossover = { kind = \"sbx\", eta = 15.0 }\nmutation = { kind = \"polynomial\" }\n",
        )
        .unwrap();
        let Some(SamplerSpec::Nsgaii { ga }) = &f.sampler else {
            panic!("{:?}", f.sampler)
        };
        assert_eq!(ga.population_size, 20);
        assert_eq!(ga.crossover_prob, 0.9);
        assert_eq!(ga.mutation, Some(MutationSpec::Polynomial { eta: 20.0 }));
        assert!(f.sampler.unwrap().build().is_ok());
        for (kind, options) in [
            ("nsgaii", r#"{"crossover": {"kind": "undx"}}"#),
            (
                "nsgaii",
                r#"{"crossover": {"kind": "blx_alpha", "alpha": 0.3}}"#,
            ),
            (
                "nsgaiii",
                r#"{"reference_points": [[1, 0], [0, 1]], "crossover": {"kind": "spx"}}"#,
            ),
            ("nsgaiii", r#"{"dividing_parameter": 4}"#),
        ] {
            assert!(
                sampler_from_component(kind, options).is_ok(),
                "{kind} {options}"
            );
        }
        let err = |kind: &str, options: &str| {
            sampler_from_component(kind, options)
                .err()
                .unwrap()
                .to_string()
        };
        let e = err("nsgaii", r#"{"population_size": 1}"#);
        assert!(e.contains("population_size"), "{e}");
        let e = err("nsgaii", r#"{"reference_points": [[1, 0]]}"#);
        assert!(e.contains("reference_points"), "{e}");
        let e = err("nsgaii", r#"{"crossover": {"kind": "spx", "alpha": 1}}"#);
        assert!(e.contains("alpha"), "{e}");
        let e = err("nsgaii", r#"{"crossover": {"kind": "two_point"}}"#);
        assert!(e.contains("two_point"), "{e}");
        let e = err("nsgaiii", r#"{"dividing_parameter": 0}"#);
        assert!(e.contains("dividing_parameter"), "{e}");
        let e = err("nsgaii", r#"{"swapping_prob": 2}"#);
        assert!(e.contains("swapping_prob"), "{e}");
    }

    #[test]
    fn the_cmaes_sampler_and_what_it_refuses() {
        let f = parse(
            "objective = \"m:f\"\n[sampler]\nkind = \"cmaes\"\nseed = 1\n\
             x0 = { x = 1, y = 0.5 }\nsigma0 = 0.2\nrestart_strategy = \"bipop\"\n\
             popsize = 8\n",
        )
        .unwrap();
        let Some(SamplerSpec::Cmaes {
            x0: Some(x0),
            n_startup_trials: 1,
            inc_popsize: 2,
            popsize: Some(8),
            ..
        }) = &f.sampler
        else {
            panic!("{:?}", f.sampler)
        };
        assert_eq!(x0["x"], Choice::Int(1));
        assert!(f.sampler.unwrap().build().is_ok());
        let err = |options: &str| {
            sampler_from_component("cmaes", options)
                .err()
                .unwrap()
                .to_string()
        };
        let e = err(r#"{"lr_adapt": true, "use_separable_cma": true}"#);
        assert!(
            e.contains("lr_adapt") && e.contains("use_separable_cma"),
            "{e}"
        );
        assert!(sampler_from_component("cmaes", r#"{"lr_adapt": true}"#).is_ok());
        let e = err(r#"{"restart_strategy": "ipopp"}"#);
        assert!(e.contains("restart_strategy") && e.contains("ipopp"), "{e}");
        let e = err(r#"{"x0": {"x": "a"}}"#);
        assert!(e.contains("x0") && e.contains("x="), "{e}");
        let e = err(r#"{"popsize": -1}"#);
        assert!(e.contains("popsize"), "{e}");
        let e = err(r#"{"source_trials": [{"params": {"x": 1}, "value": 1.0}], "sigma0": 0.1}"#);
        assert!(e.contains("source_trials") && e.contains("sigma0"), "{e}");
        assert!(sampler_from_component(
            "cmaes",
            r#"{"source_trials": [{"params": {"x": 1, "y": 2.5}, "value": 1.0}]}"#
        )
        .is_ok());
    }
}
