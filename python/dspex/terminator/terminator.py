"""``optuna.terminator.terminator``: :class:`Terminator` under Optuna's module path."""

from dspex.terminator import BaseTerminator, Terminator

__all__ = ["BaseTerminator", "Terminator"]
