"""Stopping a study when it can no longer improve by more than its noise (``optuna.terminator``,
deprecated in Optuna 4.9 and here for the scripts that still use it; its functions warn as
Optuna's do).

A :class:`Terminator` compares an *improvement* evaluator (how much better the study could
still get) with an *error* evaluator (how noisy the objective is, e.g. from cross-validation
scores reported by :func:`report_cross_validation_scores`); :class:`TerminatorCallback` stops
``study.optimize`` when the first falls below the second.

There: the improvement evaluators :class:`RegretBoundEvaluator` (Optuna's default) and
:class:`EMMREvaluator` (Gaussian processes fitted in the engine, the GP sampler's) and
:class:`BestValueStagnationEvaluator`; the error evaluators :class:`CrossValidationErrorEvaluator`
(the default), :class:`StaticErrorEvaluator` and :class:`MedianErrorEvaluator`.
"""

from __future__ import annotations

import math
import random
import sys
import warnings
from typing import Any, List, Optional, Sequence, Tuple

from dspex.logging import get_logger
from dspex.study import StudyDirection
from dspex.trial import FrozenTrial, TrialState

_logger = get_logger(__name__)
_CV_SCORES_KEY = "terminator:cv_scores"


def _deprecated() -> None:
    warnings.warn(
        "`optuna.terminator` module has been deprecated in v4.9.0. This feature will be removed in v6.0.0.",
        FutureWarning,
        stacklevel=3,
    )


def _complete(trials: Sequence[FrozenTrial]) -> List[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE]


class BaseErrorEvaluator:
    """How noisy the objective is: ``evaluate(trials, study_direction) -> float``."""

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        raise NotImplementedError


class CrossValidationErrorEvaluator(BaseErrorEvaluator):
    """The standard error of the best trial's cross-validation mean: with its ``k`` scores
    (:func:`report_cross_validation_scores`), ``sqrt((1/k + 1/(k-1)) * variance)``."""

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        done = _complete(trials)
        if not done:
            raise ValueError("no trial has completed yet: the cross-validation error needs the best trial's scores")
        pick = max if study_direction == StudyDirection.MAXIMIZE else min
        best = pick(done, key=lambda t: float(t.value))  # type: ignore[arg-type]
        scores = best.system_attrs.get(_CV_SCORES_KEY)
        if scores is None:
            raise ValueError("Cross-validation scores have not been reported. Please call `report_cross_validation_scores(trial, scores)` during a trial and pass the list of scores as `scores`.")
        k = len(scores)
        mean = sum(scores) / k
        variance = sum((s - mean) ** 2 for s in scores) / k
        return math.sqrt((1 / k + 1 / (k - 1)) * variance)


def report_cross_validation_scores(trial: Any, scores: Sequence[float]) -> None:
    """Records a trial's cross-validation scores (at least two) for
    :class:`CrossValidationErrorEvaluator`."""
    _deprecated()
    if len(scores) <= 1:
        raise ValueError("The length of `scores` is expected to be greater than one.")
    trial.storage.set_trial_system_attr(trial._trial_id, _CV_SCORES_KEY, [float(s) for s in scores])


class StaticErrorEvaluator(BaseErrorEvaluator):
    """An error of ``constant``, whatever the trials."""

    def __init__(self, constant: float) -> None:
        self._constant = constant

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        return self._constant


class BaseImprovementEvaluator:
    """How much better the study could still get: ``evaluate(trials, study_direction)``."""

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        raise NotImplementedError


class BestValueStagnationEvaluator(BaseImprovementEvaluator):
    """``max_stagnation_trials`` minus the completed trials since the best one: negative once
    the best value has not improved for that many trials."""

    def __init__(self, max_stagnation_trials: int = 30) -> None:
        if max_stagnation_trials < 0:
            raise ValueError("The maximum number of stagnant trials must not be negative.")
        self._max_stagnation_trials = max_stagnation_trials

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        done = _complete(trials)
        if not done:
            raise ValueError("Because no trial has been completed yet, the improvement cannot be evaluated.")
        maximize = study_direction == StudyDirection.MAXIMIZE
        best = 0
        for i, t in enumerate(done):
            better = float(t.value) > float(done[best].value) if maximize else float(t.value) < float(done[best].value)  # type: ignore[arg-type]
            if better:
                best = i
        return self._max_stagnation_trials - (len(done) - 1 - best)


class _GpSpace:
    """Optuna's GP coordinates of the trials' intersection search space: a numeric parameter
    on [0, 1] (log scale for log ones, a step or integer range widened by half a step at each
    end), a categorical one as its choice index."""

    def __init__(self, trials: Sequence[FrozenTrial]) -> None:
        from dspex.distributions import CategoricalDistribution, FloatDistribution
        from dspex.search_space import intersection_search_space

        self.space = intersection_search_space(list(trials))
        self.is_categorical: List[bool] = []
        self._axes: List[Any] = []  # (lo, hi, log, low, high, step) or the number of choices
        dist: Any
        for dist in self.space.values():
            if isinstance(dist, CategoricalDistribution):
                self.is_categorical.append(True)
                self._axes.append(len(dist.choices))
                continue
            step = (dist.step or 0.0) if isinstance(dist, FloatDistribution) else float(dist.step)
            lo, hi = dist.low - step / 2, dist.high + step / 2
            if dist.log:
                lo, hi = math.log(lo), math.log(hi)
            self.is_categorical.append(False)
            self._axes.append((lo, hi, dist.log, float(dist.low), float(dist.high), step))

    def _unit(self, axis: Any, v: float) -> float:
        lo, hi, log = axis[0], axis[1], axis[2]
        t = math.log(v) if log else v
        return (t - lo) / (hi - lo) if hi > lo else 0.5

    def normalized(self, trials: Sequence[FrozenTrial]) -> List[List[float]]:
        rows = []
        for t in trials:
            row = []
            for (name, dist), axis in zip(self.space.items(), self._axes):
                v = dist.to_internal_repr(t.params[name])
                row.append(v if isinstance(axis, int) else self._unit(axis, v))
            rows.append(row)
        return rows

    def samples(self, n: int, rng: random.Random) -> List[List[float]]:
        """``n`` random points, each numeric coordinate on its parameter's grid (as Optuna's)."""
        out = []
        for _ in range(n):
            row = []
            for axis in self._axes:
                if isinstance(axis, int):
                    row.append(float(rng.randrange(axis)))
                    continue
                lo, hi, log, low, high, step = axis
                x = rng.random()
                if step > 0:
                    t = lo + x * (hi - lo)
                    v = math.exp(t) if log else t
                    v = min(max((v - low + 0.5 * step) // step * step + low, low), high)
                    x = self._unit(axis, v)
                row.append(x)
            out.append(row)
        return out


def _signed_values(trials: Sequence[FrozenTrial], direction: StudyDirection) -> List[float]:
    """The values to maximise (negated for minimisation), non-finite ones clipped to the finite
    range (as Optuna's GP does, with its warning)."""
    sign = -1.0 if direction == StudyDirection.MINIMIZE else 1.0
    vals = [sign * float(t.value) for t in trials]  # type: ignore[arg-type]
    finite = [v for v in vals if math.isfinite(v)]
    if len(finite) < len(vals):
        warnings.warn("Clip non-finite values to the min/max finite values for GP fittings.", UserWarning, stacklevel=3)
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        vals = [min(max(v, lo), hi) if not math.isnan(v) else lo for v in vals]
    return vals


def _standardized(vals: Sequence[float], floor: float) -> Tuple[List[float], float, float]:
    mean = sum(vals) / len(vals)
    std = max(floor, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)))
    return [(v - mean) / std for v in vals], mean, std


def _regret_bound(gp: Any, space: _GpSpace, top: List[List[float]], delta: float, n_samples: int, rng: random.Random) -> float:
    """Makarova et al.'s bound, for maximisation: max UCB over the search space (the top points
    and ``n_samples`` random ones) minus max LCB over the top points; standardised units."""
    beta = 2 * math.log(len(space.is_categorical) * len(top) ** 2 * math.pi**2 / 6 / delta) / 5
    at_top = gp.posterior(top)
    at_random = gp.posterior(space.samples(n_samples, rng))
    ucb = max(m + math.sqrt(beta * v) for m, v in at_top + at_random)
    lcb = max(m - math.sqrt(beta * v) for m, v in at_top)
    return ucb - lcb


def _native_gp() -> Any:
    from dspex import _native

    return _native.GaussianProcess


class RegretBoundEvaluator(BaseImprovementEvaluator):
    """Optuna's default improvement evaluator: an upper bound on the regret of the best trial
    (how far it may be from the optimum) under a Gaussian process fitted to the top trials
    (``top_trials_ratio`` of the complete ones, at least ``min_n_trials``), with high
    probability (Makarova et al., 2022). The process is the GP sampler's, fitted in the
    engine; the upper confidence bound's maximum over the search space is searched at 8,192
    random points (Optuna: 2,048 quasi-random ones; four times as many uniform ones land as
    close to the maximum, with less spread from seed to seed)."""

    def __init__(self, top_trials_ratio: float = 0.5, min_n_trials: int = 20, seed: Optional[int] = None) -> None:
        self._top_trials_ratio = top_trials_ratio
        self._min_n_trials = min_n_trials
        self._optimize_n_samples = 8192
        self._rng = random.Random(seed)

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        done = _complete(trials)
        if not done:
            raise ValueError("Because no trial has been completed yet, the regret bound cannot be evaluated.")
        space = _GpSpace(trials)
        if not space.space:
            raise ValueError(f"The intersection search space is empty. This condition is not supported by {type(self).__name__}.")
        values = _signed_values(done, study_direction)
        x = space.normalized(done)
        n = len(done)
        top_n = min(max(int(n * self._top_trials_ratio), self._min_n_trials), n)
        cut = sorted(values)[n - top_n]
        top = [(row, v) for row, v in zip(x, values) if v >= cut]
        y, _, std = _standardized([v for _, v in top], 1e-10)
        gp = _native_gp()([row for row, _ in top], y, space.is_categorical, False)
        return _regret_bound(gp, space, [row for row, _ in top], 0.1, self._optimize_n_samples, self._rng) * std


def _norm_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


class EMMREvaluator(BaseImprovementEvaluator):
    """Optuna's expected minimum model regret (Ishibashi et al., 2023): how much the expected
    regret of the best trial changed with the last trial, bounded with Gaussian processes
    fitted to the trials before it and to all of them (the GP sampler's, in the engine). Below
    ``min_n_trials`` complete trials, or with no parameter, it never lets a study stop."""

    def __init__(self, deterministic_objective: bool = False, delta: float = 0.1, min_n_trials: int = 2, seed: Optional[int] = None) -> None:
        if isinstance(min_n_trials, bool) or not isinstance(min_n_trials, int) or min_n_trials <= 1:
            raise ValueError("`min_n_trials` is expected to be a finite integer more than one.")
        self._deterministic = deterministic_objective
        self._delta = delta
        self.min_n_trials = min_n_trials
        self._rng = random.Random(seed)

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        never = sys.float_info.max * 0.1
        done = _complete(trials)
        if len(done) < self.min_n_trials:
            return never
        space = _GpSpace(trials)
        if not space.space:
            warnings.warn(f"{type(self).__name__} cannot consider any search space.Termination will never occur in this study.", UserWarning, stacklevel=2)
            return never
        x = space.normalized(done)
        y, _, _ = _standardized(_signed_values(done, study_direction), sys.float_info.min)
        gp_cls = _native_gp()
        gp_t1 = gp_cls(x[:-1], y[:-1], space.is_categorical, self._deterministic)
        gp_t = gp_cls(x, y, space.is_categorical, self._deterministic, gp_t1)
        best_t = max(range(len(y)), key=lambda i: (y[i], -i))
        best_t1 = max(range(len(y) - 1), key=lambda i: (y[i], -i))
        cov = gp_t.covariance(x[best_t], x[best_t1])
        (mu_last, var_last), (_, var_t_best_t1), (mu_t_best, var_t_best) = gp_t.posterior([x[-1], x[best_t1], x[best_t]])
        mu_t1_best_t1 = gp_t1.posterior([x[best_t1]])[0][0]
        kappa_t1 = _regret_bound(gp_t1, space, x[:-1], self._delta, 8192, self._rng)
        term1 = mu_t1_best_t1 - mu_t_best
        v = math.sqrt(max(1e-10, var_t_best - 2.0 * cov + var_t_best_t1))
        g = (mu_t_best - mu_t1_best_t1) / v
        term2 = v * _norm_pdf(g)
        term3 = v * g * _norm_cdf(g)
        noise = 1e-6  # Optuna's minimum noise variance (its lambda is the inverse)
        kl = (
            0.5 * math.log(1.0 + var_last / noise)
            - 0.5 * var_last / (var_last + noise)
            + 0.5 * var_last * (y[-1] - mu_last) ** 2 / (var_last + noise) ** 2
        )
        term4 = kappa_t1 * math.sqrt(0.5 * kl)
        return min(sys.float_info.max * 0.5, term1 + term2 + term3 + term4)


class MedianErrorEvaluator(BaseErrorEvaluator):
    """An error threshold from an improvement evaluator itself: after ``warm_up_trials``, the
    median of its values over the next ``n_initial_trials`` trials, times
    ``threshold_ratio``; before that, one that never stops the study."""

    def __init__(self, paired_improvement_evaluator: BaseImprovementEvaluator, warm_up_trials: int = 10, n_initial_trials: int = 20, threshold_ratio: float = 0.01) -> None:
        if warm_up_trials < 0:
            raise ValueError("`warm_up_trials` is expected to be a non-negative integer.")
        if n_initial_trials <= 0:
            raise ValueError("`n_initial_trials` is expected to be a positive integer.")
        if threshold_ratio <= 0.0 or not math.isfinite(threshold_ratio):
            raise ValueError("`threshold_ratio_to_initial_median` is expected to be a positive.")
        self._paired = paired_improvement_evaluator
        self._warm_up = warm_up_trials
        self._n_initial = n_initial_trials
        self._ratio = threshold_ratio
        self._threshold: Optional[float] = None

    def evaluate(self, trials: List[FrozenTrial], study_direction: StudyDirection) -> float:
        if self._threshold is not None:
            return self._threshold
        done = sorted(_complete(trials), key=lambda t: t.number)
        if len(done) < self._warm_up + self._n_initial:
            return -sys.float_info.min  # never stops: improvements are not negative
        criteria = sorted(self._paired.evaluate(done[self._warm_up : self._warm_up + i], study_direction) for i in range(1, self._n_initial + 1))
        self._threshold = min(sys.float_info.max, criteria[len(criteria) // 2] * self._ratio)
        return self._threshold


class BaseTerminator:
    """``should_terminate(study) -> bool``."""

    def should_terminate(self, study: Any) -> bool:
        raise NotImplementedError


class Terminator(BaseTerminator):
    """Stops once ``min_n_trials`` trials completed and the improvement left is below the
    error. The error evaluator defaults to :class:`CrossValidationErrorEvaluator` (a constant 0
    with :class:`BestValueStagnationEvaluator`)."""

    def __init__(self, improvement_evaluator: Optional[BaseImprovementEvaluator] = None, error_evaluator: Optional[BaseErrorEvaluator] = None, min_n_trials: int = 20) -> None:
        if min_n_trials <= 0:
            raise ValueError("`min_n_trials` is expected to be a positive integer.")
        self._improvement = improvement_evaluator or RegretBoundEvaluator()
        if error_evaluator is None:
            stagnation = isinstance(self._improvement, BestValueStagnationEvaluator)
            error_evaluator = StaticErrorEvaluator(constant=0) if stagnation else CrossValidationErrorEvaluator()
        self._error = error_evaluator
        self._min_n_trials = min_n_trials

    def should_terminate(self, study: Any) -> bool:
        if len(study.get_trials(states=[TrialState.COMPLETE])) < self._min_n_trials:
            return False
        improvement = self._improvement.evaluate(trials=study.trials, study_direction=study.direction)
        error = self._error.evaluate(trials=study.trials, study_direction=study.direction)
        return improvement < error


class TerminatorCallback:
    """A ``study.optimize`` callback that stops the study when ``terminator`` says so."""

    def __init__(self, terminator: Optional[BaseTerminator] = None) -> None:
        _deprecated()
        self._terminator = terminator or Terminator()

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        if self._terminator.should_terminate(study=study):
            _logger.info("The study has been stopped by the terminator.")
            study.stop()


__all__ = [
    "BaseErrorEvaluator",
    "BaseImprovementEvaluator",
    "BaseTerminator",
    "BestValueStagnationEvaluator",
    "CrossValidationErrorEvaluator",
    "EMMREvaluator",
    "MedianErrorEvaluator",
    "RegretBoundEvaluator",
    "StaticErrorEvaluator",
    "Terminator",
    "TerminatorCallback",
    "report_cross_validation_scores",
]
