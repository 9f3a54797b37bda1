"""``optuna.terminator.median_erroreval``: :class:`MedianErrorEvaluator` under Optuna's module path."""

from dspex.terminator import MedianErrorEvaluator

__all__ = ["MedianErrorEvaluator"]
