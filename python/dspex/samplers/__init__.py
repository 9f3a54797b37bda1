"""Samplers: how trial parameters are chosen. The built-in ones run in the Rust engine; a
subclass of :class:`BaseSampler` written in Python (Optuna's interface) runs in the process
that evaluates the trial."""

from __future__ import annotations

import math
import random
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from dspex import _native
from dspex._component import EngineComponent
from dspex.samplers import nsgaii


def _check_seed(seed: Any) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


class BaseSampler(EngineComponent):
    """Base class of the samplers. The built-in ones run in the engine. A subclass written in
    Python implements Optuna's interface and is called by the evaluating process:
    ``before_trial(study, trial)`` and, when ``infer_relative_search_space(study, trial)`` is
    not empty, ``sample_relative(study, trial, search_space)`` as a trial starts;
    ``sample_independent(study, trial, name, distribution)`` for each other parameter the
    objective suggests; ``after_trial(study, trial, state, values)`` before the outcome is
    stored. ``trial`` is a :class:`~dspex.trial.FrozenTrial` of the trial so far. Enqueued
    values come first, as in Optuna."""

    @staticmethod
    def _engine_factory() -> Callable[[str, str], Any]:
        return _native.sampler

    #: ``constraints_func(frozen_trial) -> constraint values``, run by the evaluator of each
    #: trial that completes or is pruned (see TPESampler).
    _constraints_func: Optional[Callable[[Any], Sequence[float]]] = None

    def _set_constraints_func(self, constraints_func: Any) -> None:
        """Keeps ``constraints_func`` for the evaluators (deprecated in Optuna 5, as there)."""
        if constraints_func is None:
            return
        if not callable(constraints_func):
            raise TypeError(f"{type(self).__name__}(constraints_func={constraints_func!r}): must be a callable (frozen_trial) -> constraint values")
        warnings.warn("constraints_func has been deprecated in Optuna v5.0.0 and will be removed in v7.0.0; use trial.set_constraint instead.", FutureWarning, stacklevel=3)
        self._constraints_func = constraints_func

    # Optuna's sampler interface: what a subclass written in Python implements. A built-in
    # sampler answers these calls too (for samplers written in Python that delegate to one),
    # from the engine, on the study's trials read at the call: O(trials) a call, so a fallback
    # rather than a main loop.
    def infer_relative_search_space(self, study: Any, trial: Any) -> Dict[str, Any]:
        native = self._engine_study_sampler(study)
        if native is None:
            return {}
        from dspex.distributions import json_to_distribution

        return {k: json_to_distribution(d) for k, d in native.infer_relative_space(study._native, trial.number)}

    def sample_relative(self, study: Any, trial: Any, search_space: Dict[str, Any]) -> Dict[str, Any]:
        native = self._engine_study_sampler(study)
        if native is None or not search_space:
            return {}
        from dspex.distributions import distribution_to_json

        got = dict(native.sample_relative_params(study._native, trial.number, [(k, distribution_to_json(d)) for k, d in search_space.items()]))
        return {k: search_space[k].to_external_repr(v) for k, v in got.items()}

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        native = self._engine_study_sampler(study)
        if native is None:
            raise NotImplementedError(f"{type(self).__name__}.sample_independent: a sampler written in Python implements it")
        from dspex.distributions import distribution_to_json

        internal = native.sample_independent_param(study._native, trial.number, param_name, distribution_to_json(param_distribution))
        return param_distribution.to_external_repr(internal)

    def _engine_study_sampler(self, study: Any) -> Any:
        """This sampler's engine sampler, when it has one and ``study`` is a dspex study."""
        native = getattr(self, "_native", None)
        if native is None:
            return None
        if not isinstance(getattr(study, "_native", None), _native.Study):
            raise TypeError(f"{type(self).__name__} samples a dspex study, got {study!r}")
        return native

    def before_trial(self, study: Any, trial: Any) -> None:
        pass

    def after_trial(self, study: Any, trial: Any, state: Any, values: Optional[Sequence[float]]) -> None:
        pass

    def reseed_rng(self) -> None:
        pass


def _is_python_sampler(sampler: Any) -> bool:
    """Whether ``sampler`` samples in Python: a subclass without an engine sampler, or an
    object with Optuna's interface (a sampler written against the real Optuna)."""
    return getattr(sampler, "_native", None) is None and callable(getattr(sampler, "sample_independent", None))


class RandomSampler(BaseSampler):
    """Samples every parameter independently and uniformly (log-uniformly for ``log=True``)."""

    def __init__(self, seed: int | None = None) -> None:
        self._build("random", {"seed": _check_seed(seed)})
        self._rng = random.Random(seed)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        """A uniform sample of ``param_distribution`` drawn in Python (for samplers written in
        Python that fall back to random sampling, as Optuna's do)."""
        from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        d, rng = param_distribution, self._rng
        if isinstance(d, CategoricalDistribution):
            return d.choices[rng.randrange(len(d.choices))]
        if isinstance(d, IntDistribution):
            if d.log:
                v = int(math.floor(math.exp(rng.uniform(math.log(d.low), math.log(d.high + 1)))))
                return min(max(v, d.low), d.high)
            return d.low + d.step * rng.randrange((d.high - d.low) // d.step + 1)
        if isinstance(d, FloatDistribution):
            if d.log:
                return min(max(math.exp(rng.uniform(math.log(d.low), math.log(d.high))), d.low), d.high)
            if d.step is not None:
                return min(d.low + d.step * rng.randrange(int(round((d.high - d.low) / d.step)) + 1), d.high)
            return rng.uniform(d.low, d.high)
        raise TypeError(f"unknown distribution {d!r}")

    def reseed_rng(self) -> None:
        self._rng = random.Random()


class TPESampler(BaseSampler):
    """Tree-structured Parzen Estimator, with Optuna 5.0's keyword names and defaults.

    ``gamma``, ``weights`` and ``categorical_distance_func`` (Python callables) are not
    supported by the engine and must be left to None.

    Constraints, as Optuna: a trial is feasible when all its constraint values are <= 0. They
    come from ``trial.set_constraint(key, value)`` in the objective, or from
    ``constraints_func(frozen_trial)`` (deprecated in Optuna 5, still supported), which the
    evaluator calls after each trial that completes or is pruned (a ``constraints_func`` that
    raises fails the trial). TPE learns from feasible trials first, infeasible ones by least
    violation; ``best_trial`` and ``best_trials`` consider feasible trials only.

    One dspex keyword: ``below_clip_factor`` (default 4.0). The magic clip of the good trials'
    estimator counts that many kernels per observation, so their bandwidths may narrow as in a
    study four times as large: on dspex's benchmark suite the median result is better or equal
    on every problem (multimodal ones included), significantly better on half.
    ``below_clip_factor=1.0`` is Optuna 5.0's rule.
    """

    def __init__(
        self,
        *,
        consider_prior: bool | None = None,
        prior_weight: float | None = None,
        consider_magic_clip: bool | None = None,
        consider_endpoints: bool | None = None,
        n_startup_trials: int = 10,
        n_ei_candidates: int = 24,
        gamma: Any = None,
        weights: Any = None,
        seed: int | None = None,
        multivariate: bool | None = None,
        group: bool = False,
        warn_independent_sampling: bool | None = None,
        constant_liar: bool = True,
        constraints_func: Any = None,
        categorical_distance_func: Any = None,
        below_clip_factor: float = 4.0,
    ) -> None:
        for name, value in (
            ("gamma", gamma),
            ("weights", weights),
            ("categorical_distance_func", categorical_distance_func),
        ):
            if value is not None:
                raise ValueError(f"TPESampler({name}={value!r}): custom {name} is not supported by dspex")
        self._set_constraints_func(constraints_func)
        if consider_prior is False:
            raise ValueError("TPESampler(consider_prior=False) is not supported (Optuna 5 always uses the prior)")
        self._build(
            "tpe",
            dict(
                n_startup_trials=_int("n_startup_trials", n_startup_trials),
                n_ei_candidates=_int("n_ei_candidates", n_ei_candidates),
                multivariate=multivariate,
                group=bool(group),
                constant_liar=bool(constant_liar),
                seed=_check_seed(seed),
                prior_weight=1.0 if prior_weight is None else _num("prior_weight", prior_weight),
                consider_magic_clip=True if consider_magic_clip is None else bool(consider_magic_clip),
                consider_endpoints=False if consider_endpoints is None else bool(consider_endpoints),
                below_clip_factor=_num("below_clip_factor", below_clip_factor),
            ),
        )


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name}={v!r}: must be an int")
    return v


def _num(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name}={v!r}: must be a number")
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        # JSON has no NaN or infinity: the engine would not see the value.
        raise ValueError(f"invalid argument {name}={v}: must be a finite number")
    return v


class GridSampler(BaseSampler):
    """Visits every point of the Cartesian product of ``search_space`` once, in random order.

    When every point has been evaluated, ``optimize`` stops.
    """

    def __init__(self, search_space: Mapping[str, Sequence[Any]], seed: int | None = None) -> None:
        if not isinstance(search_space, Mapping):
            raise TypeError(f"search_space must be a mapping of name -> values, got {search_space!r}")
        self._search_space = {k: list(v) for k, v in search_space.items()}
        for name, values in self._search_space.items():
            for v in values:
                if v is not None and not isinstance(v, (bool, int, float, str)):
                    raise TypeError(f"GridSampler: search_space[{name!r}] values must be None, bool, int, float or str, got {v!r}")
        self._build("grid", {"search_space": self._search_space, "seed": _check_seed(seed)})


class GPSampler(BaseSampler):
    """Gaussian-process Bayesian optimisation, with Optuna 5.0's keyword names and defaults.

    After ``n_startup_trials`` COMPLETE trials (sampled by ``independent_sampler``), the
    parameters every completed trial has are modelled by a Gaussian process (Matérn-5/2
    kernel with a lengthscale per parameter, fitted by maximising the marginal likelihood
    under Optuna's priors), and the next point maximises the log expected improvement. Other
    parameters come from ``independent_sampler`` (default: ``RandomSampler(seed)``), which
    must be a dspex built-in sampler. ``deterministic_objective=True`` fixes the model's
    noise at its floor, for objectives without noise.

    Constraints, as Optuna's: when trials have constraint values (``trial.set_constraint`` in
    the objective, or ``constraints_func`` (deprecated in Optuna 5) run after each trial), each
    constraint is modelled by its own Gaussian process and the acquisition adds the log
    probability that all are satisfied (<= 0); the improvement is over the best feasible
    trial, and until there is one only the probability of feasibility counts.

    Differences from Optuna's: trials still running count as observed at the model's mean
    there (the "kriging believer"; Optuna uses a batch acquisition), so concurrent trials go
    to different points (two trials that start at the same moment do not see each other and
    can coincide). The kernel's hyperparameters are refitted at every trial up to 40
    trials, then each time the trials grew by a twentieth since the last fit (every 15th
    trial around 300); in between the model takes the new trials in with the last fit's
    hyperparameters. Runs in the engine, without torch or scipy.
    ``warn_independent_sampling`` is accepted and has no effect.

    Several objectives, as Optuna's: one Gaussian process per objective, and the next point
    maximises the log expected hypervolume improvement over the feasible trials (the
    reference point 10% beyond the worst trial, the expectation averaged over 128 draws of
    the posteriors; Optuna draws them quasi-randomly).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        n_startup_trials: int = 10,
        deterministic_objective: bool = False,
        constraints_func: Any = None,
        warn_independent_sampling: bool = True,
    ) -> None:
        self._set_constraints_func(constraints_func)
        self._build(
            "gp",
            dict(
                seed=_check_seed(seed),
                n_startup_trials=_int("n_startup_trials", n_startup_trials),
                deterministic_objective=bool(deterministic_objective),
                independent_sampler=None if independent_sampler is None else _nested("GPSampler", "independent_sampler", independent_sampler),
            ),
        )


class CmaEsSampler(BaseSampler):
    """CMA-ES, with Optuna 5.0's arguments and defaults: for continuous (and integer)
    problems with budgets of hundreds to thousands of trials.

    The numeric parameters every finished trial has are searched jointly in the unit cube
    (log scale for log parameters); categorical parameters, studies with several objectives and every parameter of the first ``n_startup_trials``
    COMPLETE trials go to ``independent_sampler`` (default ``RandomSampler(seed)``, a dspex
    built-in sampler). ``x0`` (a mapping of parameter name to value) is the first mean, by
    default the middle of each range; ``sigma0`` the first step size in units of each
    parameter's range (default 1/6). ``popsize`` solutions make a generation (default
    ``4 + floor(3 ln n)``). ``restart_strategy="ipop"`` restarts a converged run from a random
    point with ``inc_popsize`` times the population; ``"bipop"`` alternates such restarts
    with small-population ones (Optuna 5.0 accepts and ignores both, deprecated since 4.4;
    dspex runs them). ``use_separable_cma=True`` learns a diagonal covariance (for
    many parameters); ``with_margin=True`` keeps integer and stepped parameters from freezing
    on one value (CMA-ES with Margin). ``source_trials`` (COMPLETE trials of a similar study)
    fit the first distribution to their best tenth (warm start). ``consider_pruned_trials``
    counts PRUNED trials at their last reported value.

    With concurrency: each trial is a draw of the current generation; a generation ends when
    its ``popsize`` lowest-numbered draws have finished, so the strategy waits for the
    oldest running trial of the generation. Draws that finish after their generation ended
    join the next one as injected points (their step shortened, as Hansen's injection
    rule does; up to ``popsize - 1`` per generation), where Optuna drops them: with 4 trials in
    flight and a population of 6, 400 trials make 65 generations where one at a time makes
    66 (dropping them: 43). Keep ``popsize`` at or above the number of trials in flight. The
    strategy is replayed from the trials, and which trials make a generation does not depend
    on the order they finished in, so a resumed or remote study continues the same
    strategy; for a fixed seed and trials one after another the sequence is fixed.
    ``lr_adapt=True`` adapts the learning rates of the mean and the covariance to the
    signal-to-noise ratio of their updates (LRA-CMA-ES, for multimodal and noisy problems; not
    with ``use_separable_cma`` or ``with_margin``, as in Optuna). A study with several objectives is
    sampled by ``independent_sampler`` (Optuna raises). ``warn_independent_sampling`` is
    accepted and has no effect."""

    def __init__(
        self,
        *,
        x0: Mapping[str, Any] | None = None,
        sigma0: float | None = None,
        n_startup_trials: int = 1,
        independent_sampler: BaseSampler | None = None,
        warn_independent_sampling: bool = True,
        seed: int | None = None,
        consider_pruned_trials: bool = False,
        restart_strategy: str | None = None,
        popsize: int | None = None,
        inc_popsize: int = 2,
        use_separable_cma: bool = False,
        with_margin: bool = False,
        lr_adapt: bool = False,
        source_trials: Sequence[Any] | None = None,
    ) -> None:
        if x0 is not None:
            if not isinstance(x0, Mapping):
                raise TypeError(f"CmaEsSampler(x0={x0!r}): must be a mapping of parameter name -> value")
            x0 = {str(k): _num(f"x0[{k!r}]", v) for k, v in x0.items()}
        self._build(
            "cmaes",
            dict(
                x0=x0,
                sigma0=None if sigma0 is None else _num("sigma0", sigma0),
                n_startup_trials=_int("n_startup_trials", n_startup_trials),
                independent_sampler=None if independent_sampler is None else _nested("CmaEsSampler", "independent_sampler", independent_sampler),
                seed=_check_seed(seed),
                consider_pruned_trials=bool(consider_pruned_trials),
                restart_strategy=restart_strategy,
                popsize=None if popsize is None else _int("popsize", popsize),
                inc_popsize=_int("inc_popsize", inc_popsize),
                use_separable_cma=bool(use_separable_cma),
                with_margin=bool(with_margin),
                lr_adapt=bool(lr_adapt),
                source_trials=None if source_trials is None else _source_trials(source_trials),
            ),
        )


class NSGAIISampler(BaseSampler):
    """NSGA-II, the genetic algorithm for studies with several objectives (one works too),
    with Optuna 5.0's keyword names and defaults.

    Trials are split into generations in trial-number order; a generation ends with the
    trial that makes ``population_size`` of its trials COMPLETE. The first generation is
    sampled at random (:class:`RandomSampler` with ``seed``). The parents of each later
    generation are the elite of the previous generation's COMPLETE trials and its parents:
    whole fronts of non-dominated trials (feasible ones first, infeasible ones by least total
    violation), the last front that does not fit cut by crowding distance. A child has two
    (three for UNDX and SPX) parents picked by binary tournament; with probability
    ``crossover_prob`` its parameters are their ``crossover`` (default
    :class:`~dspex.samplers.nsgaii.UniformCrossover` with ``swapping_prob``; categorical
    parameters come from the first parent with probability ``swapping_prob``), else one
    parent's. Each parameter then mutates with probability ``mutation_prob`` (default 1 / the
    number of parameters): drawn again at random, or moved by ``mutation`` (e.g.
    :class:`~dspex.samplers.nsgaii.PolynomialMutation`). Parameters outside the intersection
    of the finished trials' search spaces are sampled at random.

    Constraints: ``trial.set_constraint(key, value)`` in the objective or ``constraints_func``
    (deprecated in Optuna 5), as for :class:`TPESampler`.

    With concurrency: a trial is a child of the generation current when it starts. A trial
    that finishes after later ones started joins its generation late, so the generations
    are re-read from the trials each time (a resumed or remote study goes on with the same
    parents; a seeded study run one trial at a time repeats). A crossover child outside a
    range is clipped into it (Optuna draws again when a float falls below its low end).
    ``elite_population_selection_strategy``, ``child_generation_strategy`` and
    ``after_trial_strategy`` (Python callables) are not supported."""

    def __init__(
        self,
        *,
        population_size: int = 50,
        mutation: Any = None,
        mutation_prob: float | None = None,
        crossover: Any = None,
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
        seed: int | None = None,
        constraints_func: Any = None,
        elite_population_selection_strategy: Any = None,
        child_generation_strategy: Any = None,
        after_trial_strategy: Any = None,
    ) -> None:
        self._build("nsgaii", _genetic(self, locals()))


def _genetic(sampler: BaseSampler, args: Dict[str, Any]) -> Dict[str, Any]:
    """The engine options NSGA-II and NSGA-III share, from the constructor's arguments."""
    owner = type(sampler).__name__
    for name in ("elite_population_selection_strategy", "child_generation_strategy", "after_trial_strategy"):
        if args[name] is not None:
            raise ValueError(f"{owner}({name}={args[name]!r}): custom strategies written in Python are not supported by dspex")
    crossover, mutation, mutation_prob = args["crossover"], args["mutation"], args["mutation_prob"]
    if crossover is not None and (not isinstance(crossover, nsgaii.BaseCrossover) or not crossover._kind):
        kinds = ", ".join(n for n in nsgaii.__all__ if n.endswith("Crossover") and n != "BaseCrossover")
        raise ValueError(f"{owner}(crossover={crossover!r}): must be one of dspex.samplers.nsgaii's crossovers ({kinds})")
    if mutation is not None and (not isinstance(mutation, nsgaii.BaseMutation) or not mutation._kind):
        raise ValueError(f"{owner}(mutation={mutation!r}): must be dspex.samplers.nsgaii.PolynomialMutation")
    sampler._set_constraints_func(args["constraints_func"])
    return dict(
        population_size=_int("population_size", args["population_size"]),
        mutation=None if mutation is None else mutation._spec(),
        mutation_prob=None if mutation_prob is None else _num("mutation_prob", mutation_prob),
        crossover=None if crossover is None else crossover._spec(),
        crossover_prob=_num("crossover_prob", args["crossover_prob"]),
        swapping_prob=_num("swapping_prob", args["swapping_prob"]),
        seed=_check_seed(args["seed"]),
    )


class NSGAIIISampler(BaseSampler):
    """NSGA-III: :class:`NSGAIISampler` whose last front that does not fit is cut by niches
    around reference directions instead of crowding distance, which keeps the parents spread
    over the front with three objectives and more. Optuna 5.0's keyword names and defaults.

    ``reference_points`` is a sequence of rows of weights, one weight per objective (default:
    Das and Dennis's points, every objective divided ``dividing_parameter`` times). The
    objectives are translated to their minima and scaled by the intercepts of the hyperplane
    through the extreme points; each trial of the elite and of the last front is associated
    with the reference direction closest to it; the niche with the fewest elite members
    (ties at random) takes its closest candidate when empty, a random one otherwise."""

    def __init__(
        self,
        *,
        population_size: int = 50,
        mutation: Any = None,
        mutation_prob: float | None = None,
        crossover: Any = None,
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
        seed: int | None = None,
        constraints_func: Any = None,
        reference_points: Any = None,
        dividing_parameter: int = 3,
        elite_population_selection_strategy: Any = None,
        child_generation_strategy: Any = None,
        after_trial_strategy: Any = None,
    ) -> None:
        points = None
        if reference_points is not None:
            try:
                points = [[_num("reference_points", v) for v in row] for row in reference_points]
            except TypeError:
                raise TypeError(f"NSGAIIISampler(reference_points={reference_points!r}): must be rows of numbers, one weight per objective") from None
        options = _genetic(self, locals())
        self._build("nsgaiii", dict(options, reference_points=points, dividing_parameter=_int("dividing_parameter", dividing_parameter)))


def _source_trials(trials: Sequence[Any]) -> list:
    """The COMPLETE trials of ``trials`` as the engine reads them (numeric params, value)."""
    out = []
    for t in trials:
        state = getattr(getattr(t, "state", None), "name", None)
        if state != "COMPLETE":
            continue
        values = getattr(t, "values", None)
        if not values or len(values) != 1:
            raise ValueError(f"CmaEsSampler(source_trials=...): trial {getattr(t, 'number', '?')} has {0 if not values else len(values)} values; source trials must have one objective")
        params = {k: float(v) for k, v in t.params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out.append({"params": params, "value": _num("source_trials value", values[0])})
    if not out:
        raise ValueError("CmaEsSampler(source_trials=...): no COMPLETE trial among the source trials")
    return out


class QMCSampler(BaseSampler):
    """Quasi-Monte Carlo sampling, with Optuna 5.0's keyword names and defaults: points of a
    low-discrepancy sequence (``qmc_type="sobol"`` or ``"halton"``) cover the search space
    more evenly than random ones, for space-filling starts and baselines.

    The search space is the first COMPLETE trial's; the trials before it and any parameter
    outside that space come from ``independent_sampler`` (default ``RandomSampler(seed)``, a
    dspex built-in sampler). Trial ``t`` takes point ``t - f - 1`` of the sequence (``f`` the
    first completed trial's number), so concurrent trials never share a point and a seeded
    study repeats. ``scramble=True`` randomises the sequence with ``seed`` (Sobol: a random
    linear matrix scramble and digital shift; Halton: random digit permutations); unscrambled,
    the first Sobol point is every parameter's low end, as in Optuna. Each parameter is one
    dimension (a categorical one its choice index; Optuna's has one per choice); Sobol goes
    up to 1,000 dimensions. ``warn_asynchronous_seeding`` and ``warn_independent_sampling``
    are accepted and have no effect."""

    def __init__(
        self,
        *,
        qmc_type: str = "sobol",
        scramble: bool = False,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        warn_asynchronous_seeding: bool = True,
        warn_independent_sampling: bool = True,
    ) -> None:
        if qmc_type not in ("sobol", "halton"):
            raise ValueError(f"QMCSampler(qmc_type={qmc_type!r}): must be 'sobol' or 'halton'")
        self._build(
            "qmc",
            dict(
                qmc_type=qmc_type,
                scramble=bool(scramble),
                seed=_check_seed(seed),
                independent_sampler=None if independent_sampler is None else _nested("QMCSampler", "independent_sampler", independent_sampler),
            ),
        )


class BruteForceSampler(BaseSampler):
    """Tries every combination of the parameters' values once, in random order, as Optuna's
    ``BruteForceSampler``; the study stops when all have been tried.

    Define-by-run: a parameter only some branches of the objective suggest is enumerated
    within those branches. Every parameter must be discrete (categorical, integer, or float
    with a ``step``); a continuous one is sampled at random with a warning (Optuna raises).
    A FAIL trial's combination is tried again. Running trials count as tried, so the study
    stops when the last combinations are running; ``avoid_premature_stop=True`` waits for
    them to finish (a combination whose trial then fails is tried again). Objectives should
    suggest the same parameters for the same values (the tree of combinations is read from
    the trials)."""

    def __init__(self, seed: int | None = None, avoid_premature_stop: bool = False) -> None:
        self._build("brute_force", {"seed": _check_seed(seed), "avoid_premature_stop": bool(avoid_premature_stop)})


class PartialFixedSampler(BaseSampler):
    """Fixes the parameters in ``fixed_params`` to their values and samples the others with
    ``base_sampler`` (a dspex built-in sampler), as Optuna's ``PartialFixedSampler``: the fixed
    parameters are left out of the base sampler's joint (relative) search space.

    A fixed value the objective's distribution does not contain (a float out of range, a
    categorical value not among the choices) is logged and sampled by ``base_sampler``
    instead (Optuna warns and returns the value anyway). Enqueued values come first. With a
    ``GridSampler`` base, fix parameters outside its grid: a grid point whose value was
    replaced by a fixed one is not recognised as visited."""

    def __init__(self, fixed_params: Mapping[str, Any], base_sampler: BaseSampler) -> None:
        if not isinstance(fixed_params, Mapping):
            raise TypeError(f"PartialFixedSampler: fixed_params must be a mapping of name -> value, got {fixed_params!r}")
        for name, v in fixed_params.items():
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise TypeError(f"PartialFixedSampler: fixed_params[{name!r}] must be None, bool, int, float or str, got {v!r}")
        # None is "not fixed", as in Optuna.
        self._fixed_params = {k: v for k, v in fixed_params.items() if v is not None}
        self._base_sampler = base_sampler
        self._build("partial_fixed", {"fixed_params": self._fixed_params, "base_sampler": _nested("PartialFixedSampler", "base_sampler", base_sampler)})


def _nested(owner: str, arg: str, sampler: Any) -> Dict[str, Any]:
    """The engine spec of a sampler given as another's argument (a dspex built-in one)."""
    if not isinstance(sampler, BaseSampler) or getattr(sampler, "_native", None) is None:
        raise TypeError(f"{owner}({arg}={sampler!r}): must be a dspex built-in sampler (" + ", ".join(n for n in __all__ if n.endswith("Sampler") and n != "BaseSampler") + ")")
    kind, options = sampler._spec
    return dict(kind=kind, **{k: v for k, v in options.items() if v is not None})


__all__ = [
    "BaseSampler",
    "BruteForceSampler",
    "CmaEsSampler",
    "GPSampler",
    "GridSampler",
    "NSGAIIISampler",
    "NSGAIISampler",
    "PartialFixedSampler",
    "QMCSampler",
    "RandomSampler",
    "TPESampler",
    "nsgaii",
]
