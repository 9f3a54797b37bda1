"""``optuna.terminator.improvement.emmr``: :class:`EMMREvaluator` under Optuna's module path."""

from dspex.terminator import EMMREvaluator

__all__ = ["EMMREvaluator"]
