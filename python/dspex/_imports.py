"""``try_import``: optional imports whose failure is reported when the feature is used (the
helper Optuna's integrations import as ``optuna._imports``, which resolves here under
:func:`dspex.install_as_optuna`)."""

from __future__ import annotations

from types import TracebackType
from typing import Optional, Tuple, Type


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
