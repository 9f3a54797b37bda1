"""``optuna.terminator.improvement.evaluator``: the improvement evaluators and their defaults."""

from dspex.terminator import BaseImprovementEvaluator, BestValueStagnationEvaluator, RegretBoundEvaluator

DEFAULT_TOP_TRIALS_RATIO = 0.5
DEFAULT_MIN_N_TRIALS = 20

__all__ = ["DEFAULT_MIN_N_TRIALS", "DEFAULT_TOP_TRIALS_RATIO", "BaseImprovementEvaluator", "BestValueStagnationEvaluator", "RegretBoundEvaluator"]
