"""``optuna.terminator.callback``: where Optuna's scripts import :class:`TerminatorCallback` from."""

from dspex.terminator import TerminatorCallback

__all__ = ["TerminatorCallback"]
