"""Hyperparameter importance, with Optuna's interface (``optuna.importance``).

:func:`get_param_importances` asks an evaluator how much each parameter mattered to the
objective over a study's finished trials:

- :class:`PedAnovaImportanceEvaluator` (the default, as in Optuna 5.0): how much more often the
  best trials fall in some part of a parameter's range than the trials overall do (Pearson
  divergence of Parzen estimators on a grid; handles conditional parameters).
- :class:`FanovaImportanceEvaluator`: functional ANOVA of a random forest fitted on the
  trials — the share of the objective's variance each parameter explains on its own.
- :class:`MeanDecreaseImpurityImportanceEvaluator`: how much each parameter's splits lower the
  forest's squared error.

The random forests are grown, and fANOVA computed, in the Rust engine in parallel without the
GIL; no scikit-learn or NumPy is needed.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from dspex import _native
from dspex._experimental import _warn as _warn_experimental
from dspex.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from dspex.search_space import intersection_search_space
from dspex.trial import FrozenTrial, TrialState

Target = Optional[Callable[[FrozenTrial], float]]


class BaseImportanceEvaluator:
    """Base class of the importance evaluators: ``evaluate(study, params=None, *, target=None)``
    returns ``{param name: importance}``, most important first."""

    def evaluate(self, study: Any, params: Optional[List[str]] = None, *, target: Target = None) -> Dict[str, float]:
        """The importance of each parameter in ``params`` (by default every parameter all
        completed trials share) to the objective value, or to ``target(trial)``."""
        raise NotImplementedError


def get_param_importances(
    study: Any,
    *,
    evaluator: Optional[BaseImportanceEvaluator] = None,
    params: Optional[List[str]] = None,
    target: Target = None,
    normalize: bool = True,
) -> Dict[str, float]:
    """Importance of each parameter of ``study``, most important first.

    Args:
        study: A study with completed trials.
        evaluator: How importance is assessed; :class:`PedAnovaImportanceEvaluator` by default.
        params: The parameters to assess (default: as the evaluator chooses).
        target: What to explain instead of the objective value (required for a
            multi-objective study by the forest-based evaluators), e.g. ``lambda t: t.values[0]``.
        normalize: Scale the importances to sum to one (equal shares when they are all zero).
    """
    if evaluator is None:
        evaluator = PedAnovaImportanceEvaluator()
    if not isinstance(evaluator, BaseImportanceEvaluator):
        raise TypeError("Evaluator must be a subclass of BaseImportanceEvaluator.")
    res = evaluator.evaluate(study, params=params, target=target)
    if not normalize:
        _warn_experimental("normalize", "3.0.0")
        return res
    total = sum(res.values())
    if total == 0.0:
        return {k: 1.0 / len(res) for k in res}
    return {k: v / total for k, v in res.items()}


def _sorted(importances: Dict[str, float]) -> Dict[str, float]:
    return dict(reversed(sorted(importances.items(), key=lambda kv: kv[1])))


def _completed(study: Any) -> List[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _check_params(params: Any) -> None:
    if params is None:
        return
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"Parameters must be specified as a list. Actual parameters: {params}.")
    if any(not isinstance(p, str) for p in params):
        raise TypeError(f"Parameters must be specified by their names with strings. Actual parameters: {params}.")


def _distributions(study: Any, params: Optional[List[str]]) -> Dict[str, BaseDistribution]:
    """The parameters to assess with their distributions: every parameter all completed trials
    share, or ``params`` (which must have one distribution in every trial that has them)."""
    completed = _completed(study)
    _check_params(params)
    if params is None:
        return intersection_search_space(study.get_trials(deepcopy=False))
    if params and not any(all(p in t.distributions for p in params) for t in completed):
        raise ValueError(f"Study must contain completed trials with all specified parameters. Specified parameters: {params}.")
    found: Optional[Dict[str, BaseDistribution]] = None
    for t in completed:
        if not all(p in t.distributions for p in params):
            continue
        if found is None:
            found = {p: t.distributions[p] for p in params}
        elif any(t.distributions[p] != d for p, d in found.items()):
            raise ValueError(f"Parameters importances cannot be assessed with dynamic search spaces if parameters are specified. Specified parameters: {params}.")
    return dict(sorted((found or {}).items()))


def _value(trial: FrozenTrial, target: Target) -> float:
    return float(target(trial) if target is not None else trial.value)  # type: ignore[arg-type]


def _choice_index(dist: CategoricalDistribution, value: Any) -> int:
    for i, c in enumerate(dist.choices):
        if c == value or (isinstance(c, float) and isinstance(value, float) and math.isnan(c) and math.isnan(value)):
            return i
    raise ValueError(f"{value!r} is not one of the choices {dist.choices!r}")


def _encode(trials: Sequence[FrozenTrial], dists: Dict[str, BaseDistribution]) -> Tuple[List[List[float]], List[Tuple[float, float]], List[List[int]]]:
    """Rows of numbers for the forest: a column per numeric parameter (its raw value, bounded by
    its range) and a one-hot column per choice of a categorical one; with each parameter's columns."""
    space: List[Tuple[float, float]] = []
    groups: List[List[int]] = []
    for d in dists.values():
        n = len(d.choices) if isinstance(d, CategoricalDistribution) else 1
        groups.append(list(range(len(space), len(space) + n)))
        space += [(0.0, 1.0)] * n if isinstance(d, CategoricalDistribution) else [(float(d.low), float(d.high))]  # type: ignore[attr-defined]
    rows = []
    for t in trials:
        row: List[float] = []
        for name, d in dists.items():
            if isinstance(d, CategoricalDistribution):
                hot = [0.0] * len(d.choices)
                hot[_choice_index(d, t.params[name])] = 1.0
                row += hot
            else:
                row.append(float(t.params[name]))
        rows.append(row)
    return rows, space, groups


class _ForestEvaluator(BaseImportanceEvaluator):
    """Shared by the evaluators that fit a random forest on the encoded trials."""

    _method = ""
    _skip_single = False

    def __init__(self, *, n_trees: int = 64, max_depth: int = 64, seed: Optional[int] = None) -> None:
        if int(n_trees) < 1 or int(max_depth) < 1:
            raise ValueError(f"n_trees and max_depth must be positive, got n_trees={n_trees}, max_depth={max_depth}")
        self._n_trees = int(n_trees)
        self._max_depth = int(max_depth)
        self._seed = None if seed is None else int(seed) % 2**64

    def evaluate(self, study: Any, params: Optional[List[str]] = None, *, target: Target = None) -> Dict[str, float]:
        if target is None and study._is_multi_objective():
            raise ValueError(
                "If the `study` is being used for multi-objective optimization, please specify the `target`. "
                "For example, use `target=lambda t: t.values[0]` for the first objective value."
            )
        dists = _distributions(study, params)
        if params is None:
            params = list(dists)
        if not params:
            return {}
        singles = {k: d for k, d in dists.items() if d.single()} if self._skip_single else {}
        varied = {k: d for k, d in dists.items() if k not in singles}
        if not varied:
            return {k: 0.0 for k in singles}
        trials = [t for t in _completed(study) if set(params) <= set(t.params) and math.isfinite(_value(t, target))]
        if len(trials) <= 1:
            return {k: 0.0 for k in params}
        rows, space, groups = _encode(trials, varied)
        values = [_value(t, target) for t in trials]
        got = _native.forest_importances(rows, values, space, groups, self._method, self._n_trees, self._max_depth, self._seed)
        if got is None:
            raise RuntimeError("Encountered zero total variance in all trees.")
        return _sorted({**dict(zip(varied, got)), **{k: 0.0 for k in singles}})


class FanovaImportanceEvaluator(_ForestEvaluator):
    """fANOVA (Hutter et al., ICML 2014): a random forest of ``n_trees`` regression trees of
    depth at most ``max_depth`` is fitted on the completed trials; a parameter's importance is
    the variance of the forest's prediction averaged over every other parameter, as a share of
    the total variance. ``seed`` fixes the forest. Parameters with a single value get 0."""

    _method = "fanova"
    _skip_single = True


class MeanDecreaseImpurityImportanceEvaluator(_ForestEvaluator):
    """Mean decrease in impurity of a random forest fitted on the completed trials: how much
    the splits on each parameter lower the squared error, averaged over the trees."""

    _method = "mdi"


class PedAnovaImportanceEvaluator(BaseImportanceEvaluator):
    """PED-ANOVA (Watanabe et al., IJCAI 2023; conditional parameters as in condPED-ANOVA):
    how differently the trials in the top ``target_quantile`` are spread over a parameter's
    range than the trials in the top ``region_quantile`` (``evaluate_on_local=True``) or the
    range itself (False). Lower values are better when a ``target`` is given; a multi-objective
    study without one ranks trials by non-domination (ties broken by hypervolume)."""

    def __init__(self, *, target_quantile: float = 0.1, region_quantile: float = 1.0, evaluate_on_local: bool = True) -> None:
        if not 0.0 < target_quantile < region_quantile <= 1.0:
            raise ValueError("condition 0.0 < `target_quantile` < `region_quantile` <= 1.0 must be satisfied")
        if region_quantile != 1.0 and not evaluate_on_local:
            warnings.warn("If `evaluate_on_local` is False, `region_quantile` has no effect.", UserWarning, stacklevel=2)
        self._target_quantile = float(target_quantile)
        self._region_quantile = float(region_quantile)
        self._evaluate_on_local = bool(evaluate_on_local)
        self._n_steps = 50
        self._prior_weight = 1.0
        self._min_n_trials_in_regime = 2

    def _top(self, study: Any, trials: List[FrozenTrial], quantile: float, target: Target) -> List[FrozenTrial]:
        if quantile == 1.0:
            return trials
        if target is None and study._is_multi_objective():
            losses = [[v if d.name == "MINIMIZE" else -v for v, d in zip(t.values or [], study.directions)] for t in trials]
            keep = _native.best_of(losses, math.ceil(quantile * len(trials)))
            return [t for t, k in zip(trials, keep) if k]
        lower_is_better = target is not None or study.directions[0].name == "MINIMIZE"
        if target is not None:
            warnings.warn(
                f"{type(self).__name__} computes the importances of params to achieve low `target` values. "
                "If this is not what you want, please modify target, e.g., by multiplying the output by -1.",
                UserWarning,
                stacklevel=3,
            )
        losses1 = [_value(t, target) * (1.0 if lower_is_better else -1.0) for t in trials]
        cutoff = sorted(losses1)[math.ceil(quantile * len(losses1)) - 1]
        return [t for t, v in zip(trials, losses1) if v <= cutoff]

    def evaluate(self, study: Any, params: Optional[List[str]] = None, *, target: Target = None) -> Dict[str, float]:
        _check_params(params)
        completed = _completed(study)
        known = sorted({k for t in completed for k in t.distributions})
        if params is not None:
            missing = [p for p in params if p not in known]
            if missing:
                raise ValueError(f"Study must contain at least one completed trial for each specified parameter. Missing parameters: {missing}.")
        names = list(params) if params is not None else known
        trials = [t for t in completed if (math.isfinite(_value(t, target)) if target is not None else all(math.isfinite(v) for v in t.values or []))]
        if len(trials) <= 1:
            warnings.warn("The number of trials is too small to compute importances. Parameter importances will be equal.", UserWarning, stacklevel=2)
            return {k: 0.0 for k in names}
        top = self._top(study, trials, self._target_quantile, target)
        region = self._top(study, trials, self._region_quantile, target)
        if len(top) == len(region):
            warnings.warn("Target and region quantiles select the same set of trials. Parameter importances will be equal.", UserWarning, stacklevel=2)
        if not top:
            return {k: 0.0 for k in names}
        top_ids = {t._trial_id for t in top}
        importances = {k: 0.0 for k in names}
        for name in names:
            for dist, in_region in self._regimes(name, region).items():
                in_top = [t for t in in_region if t._trial_id in top_ids]
                if dist is None or dist.single() or not in_top:
                    continue
                alpha, beta = len(in_top) / len(top), len(in_region) / len(region)
                importances[name] += alpha**2 / beta * self._divergence(name, dist, in_top, in_region)
        scale = (len(top) / len(region)) ** 2
        return _sorted({k: v * scale for k, v in importances.items()})

    def _regimes(self, name: str, trials: List[FrozenTrial]) -> Dict[Optional[BaseDistribution], List[FrozenTrial]]:
        """The trials grouped by the distribution ``name`` has in them (None: absent); groups
        smaller than the minimum are dropped, with a warning."""
        regimes: Dict[Optional[BaseDistribution], List[FrozenTrial]] = defaultdict(list)
        for t in trials:
            regimes[t.distributions.get(name)].append(t)
        if any(len(v) < self._min_n_trials_in_regime for v in regimes.values()):
            warnings.warn(
                f"Some regimes for parameter `{name}` have less than {self._min_n_trials_in_regime} trials. The importance of the parameter may be inaccurate.",
                UserWarning,
                stacklevel=3,
            )
        return {k: v for k, v in regimes.items() if len(v) >= self._min_n_trials_in_regime}

    def _divergence(self, name: str, dist: BaseDistribution, top: List[FrozenTrial], region: List[FrozenTrial]) -> float:
        """Pearson divergence of the top trials' density from the region's (or the uniform one)."""
        p_top = _grid_density(name, dist, top, self._n_steps, self._prior_weight)
        if self._evaluate_on_local:
            p_local = _grid_density(name, dist, region, self._n_steps, self._prior_weight)
        else:
            p_local = [1.0 / len(p_top)] * len(p_top)
        return sum(q * ((p / q) - 1.0) ** 2 for p, q in zip(p_top, p_local))


def _grid_counts(name: str, dist: BaseDistribution, trials: List[FrozenTrial], n_steps: int) -> List[int]:
    """How many of the trials fall at each point of a grid over the parameter's range (each
    choice of a categorical one; at most ``n_steps`` points of a numeric one, in log space for a
    log one)."""
    if isinstance(dist, CategoricalDistribution):
        counts = [0] * len(dist.choices)
        for t in trials:
            counts[_choice_index(dist, t.params[name])] += 1
        return counts
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    if isinstance(dist, IntDistribution) and dist.log:
        n_steps = min(math.ceil(math.log(dist.high - dist.low + 1) / math.log(2)) + 1, n_steps)
    elif dist.step is not None:
        n_steps = min(round((dist.high - dist.low) / dist.step) + 1, n_steps)
    tr = math.log if dist.log else float
    low, high = tr(dist.low), tr(dist.high)
    size = (high - low) / (n_steps - 1)
    counts = [0] * n_steps
    for t in trials:
        i = math.ceil((tr(t.params[name]) - low) / size - 0.5)
        counts[min(max(i, 0), n_steps - 1)] += 1
    return counts


def _grid_density(name: str, dist: BaseDistribution, trials: List[FrozenTrial], n_steps: int, prior_weight: float) -> List[float]:
    """A Parzen estimator (Scott's bandwidth, a wide prior kernel) of where the trials fall,
    evaluated at each grid point (plus a tiny floor)."""
    counts = _grid_counts(name, dist, trials, n_steps)
    obs = [i for i, c in enumerate(counts) if c > 0]
    w = [float(counts[i]) for i in obs]
    n = len(counts)
    mix = w + [prior_weight] if obs else [1.0]
    total = sum(mix)
    mix = [m / total for m in mix]
    grid = range(n)
    if isinstance(dist, CategoricalDistribution):
        if not obs:
            return [1.0 / n + 1e-12] * n
        k = len(obs) + 1
        kernels = [[prior_weight / k] * n for _ in range(k)]
        for row, i in enumerate(obs):
            kernels[row][i] += 1.0
        kernels = [[v / s for v in r] if (s := sum(r)) else r for r in kernels]
        return [sum(m * kern[x] for m, kern in zip(mix, kernels)) + 1e-12 for x in grid]
    low, high = 0.0, float(n - 1)
    wsum = sum(w)
    mean = sum(o * x for o, x in zip(obs, w)) / wsum
    sigma = math.sqrt(sum(x * (o - mean) ** 2 for o, x in zip(obs, w)) / max(1.0, wsum - 1))
    cum = [sum(w[: j + 1]) for j in range(len(w))]
    q1 = next((j for j, c in enumerate(cum) if c >= wsum // 4), len(cum))
    q3 = next((j for j, c in enumerate(cum) if c > wsum * 3 // 4), len(cum))
    iqr = obs[min(len(obs) - 1, q3)] - obs[q1]
    sigma = 1.059 * min(iqr / 1.34, sigma) * wsum**-0.2
    mus = [float(o) for o in obs] + [(low + high) / 2.0]
    sigmas = [max(sigma, 0.5 / 1.64)] * len(obs) + [high - low + 1.0]
    return [sum(m * _discrete_truncnorm(x, mu, s, low, high) for m, mu, s in zip(mix, mus, sigmas)) + 1e-12 for x in grid]


def _gauss_mass(a: float, b: float) -> float:
    """P(a < Z <= b) for a standard normal Z, accurate in both tails."""
    r = math.sqrt(0.5)
    if b <= 0.0:
        return 0.5 * (math.erfc(-b * r) - math.erfc(-a * r))
    if a >= 0.0:
        return 0.5 * (math.erfc(a * r) - math.erfc(b * r))
    return 1.0 - 0.5 * (math.erfc(-a * r) + math.erfc(b * r))


def _discrete_truncnorm(x: float, mu: float, sigma: float, low: float, high: float) -> float:
    """Probability of the integer ``x`` under a normal rounded to integers and cut to [low, high]."""
    accept = _gauss_mass((low - 0.5 - mu) / sigma, (high + 0.5 - mu) / sigma)
    return _gauss_mass((x - 0.5 - mu) / sigma, (x + 0.5 - mu) / sigma) / accept if accept > 0 else 0.0


__all__ = [
    "BaseImportanceEvaluator",
    "FanovaImportanceEvaluator",
    "MeanDecreaseImpurityImportanceEvaluator",
    "PedAnovaImportanceEvaluator",
    "get_param_importances",
]
