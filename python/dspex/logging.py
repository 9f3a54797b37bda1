"""dspex's logger (Optuna-compatible helpers: ``set_verbosity``, ``disable_default_handler``...)."""

from __future__ import annotations

import logging as _logging
import sys
import threading
from logging import CRITICAL, DEBUG, ERROR, FATAL, INFO, WARN, WARNING  # noqa: F401

_lock = threading.Lock()
_default_handler: _logging.Handler | None = None
_ROOT = "dspex"


def _configure() -> None:
    global _default_handler
    with _lock:
        if _default_handler is not None:
            return
        _default_handler = _logging.StreamHandler(sys.stderr)
        _default_handler.setFormatter(_logging.Formatter("[%(levelname)1.1s %(asctime)s] %(message)s"))
        root = _logging.getLogger(_ROOT)
        root.addHandler(_default_handler)
        root.setLevel(INFO)
        root.propagate = False


def get_logger(name: str) -> _logging.Logger:
    """A logger under the ``dspex`` hierarchy."""
    _configure()
    return _logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def get_verbosity() -> int:
    _configure()
    return _logging.getLogger(_ROOT).getEffectiveLevel()


def set_verbosity(verbosity: int) -> None:
    """Sets the level of dspex's root logger (e.g. ``dspex.logging.WARNING``)."""
    _configure()
    _logging.getLogger(_ROOT).setLevel(verbosity)


def disable_default_handler() -> None:
    _configure()
    assert _default_handler is not None
    _logging.getLogger(_ROOT).removeHandler(_default_handler)


def enable_default_handler() -> None:
    _configure()
    assert _default_handler is not None
    _logging.getLogger(_ROOT).addHandler(_default_handler)


def disable_propagation() -> None:
    _configure()
    _logging.getLogger(_ROOT).propagate = False


def enable_propagation() -> None:
    _configure()
    _logging.getLogger(_ROOT).propagate = True
