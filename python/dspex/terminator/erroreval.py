"""``optuna.terminator.erroreval``: the error evaluators, under Optuna's module path."""

from dspex.terminator import BaseErrorEvaluator, CrossValidationErrorEvaluator, StaticErrorEvaluator, report_cross_validation_scores

__all__ = ["BaseErrorEvaluator", "CrossValidationErrorEvaluator", "StaticErrorEvaluator", "report_cross_validation_scores"]
