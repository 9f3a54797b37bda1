"""Stopping a study when it can no longer improve by more than its noise (``optuna.terminator``,
deprecated in Optuna 4.9 and here for the scripts that still use it; its functions warn as
Optuna's do).

A :class:`Terminator` compares an *improvement* evaluator (how much better the study could
still get) with an *error* evaluator (how noisy the objective is, e.g. from cross-validation
scores reported by :func:`report_cross_validation_scores`); :class:`TerminatorCallback` stops
``study.optimize`` when the first falls below the second.

There: :class:`BestValueStagnationEvaluator`, :class:`CrossValidationErrorEvaluator`,
:class:`StaticErrorEvaluator`, :class:`MedianErrorEvaluator`. Not yet: the Gaussian-process
evaluators :class:`RegretBoundEvaluator` (Optuna's default) and :class:`EMMREvaluator`, which
raise ``NotImplementedError`` when made, so a :class:`Terminator` needs an
``improvement_evaluator`` given explicitly.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, List, Optional, Sequence

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


class _NeedsGaussianProcess(BaseImprovementEvaluator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} needs a Gaussian process, which dspex does not have yet; "
            "give Terminator(improvement_evaluator=BestValueStagnationEvaluator(...)) instead"
        )


class RegretBoundEvaluator(_NeedsGaussianProcess):
    """Optuna's regret bound of a Gaussian process (not in dspex yet: raises when made)."""


class EMMREvaluator(_NeedsGaussianProcess):
    """Optuna's expected minimum model regret (not in dspex yet: raises when made)."""


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
