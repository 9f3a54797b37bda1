"""Pruners: whether a running trial should stop early. They run in the Rust engine."""

from __future__ import annotations

from typing import Any

from dspex import _native


class BasePruner:
    """Base class of the engine's pruners."""

    _native: Any

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NopPruner(BasePruner):
    """Never prunes."""

    def __init__(self) -> None:
        self._native = _native.nop_pruner()


__all__ = ["BasePruner", "NopPruner"]
