"""``try_import``: optional imports whose failure is reported when the feature is used (the
helper Optuna's integrations import as ``optuna._imports``, which resolves here under
:func:`dspex.install_as_optuna`); ``optional``: an optional dependency, or how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType, TracebackType
from typing import Optional, Tuple, Type


def optional(module: str, feature: str, extra: str) -> ModuleType:
    """Imports ``module``, which ``feature`` needs; when it is not installed, an ImportError
    says to ``pip install "dspex[extra]"`` (an ImportError from inside it is raised as is)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0]:
            raise
        raise ImportError(f'{feature} needs {module.split(".")[0]}: pip install "dspex[{extra}]"') from None


class _DeferredImport:
    """A ``with`` block of imports: an ImportError (or SyntaxError) inside it is kept instead of
    raised; :meth:`check` raises it later, when what needed the imports is used."""

    def __init__(self) -> None:
        self._failure: Optional[Tuple[BaseException, str]] = None

    def __enter__(self) -> "_DeferredImport":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> Optional[bool]:
        if exc is None or not isinstance(exc, (ImportError, SyntaxError)):
            return None
        what = getattr(exc, "name", None) or str(exc)
        self._failure = (exc, f"{what!r} is needed for this feature but could not be imported ({exc}); install it first.")
        return True

    def is_successful(self) -> bool:
        """True when every import of the block worked."""
        return self._failure is None

    def check(self) -> None:
        """Raises the kept import failure, if any."""
        if self._failure is not None:
            exc, message = self._failure
            raise ImportError(message) from exc


def try_import() -> _DeferredImport:
    """``with try_import() as imports: import lib`` ... later ``imports.check()``."""
    return _DeferredImport()


__all__ = ["try_import"]
