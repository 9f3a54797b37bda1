"""Decorators that mark a function or class experimental: using it warns with
:class:`dspex.exceptions.ExperimentalWarning`. Optuna's integrations import them as
``optuna._experimental`` (which resolves here under :func:`dspex.install_as_optuna`)."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional, TypeVar

from dspex.exceptions import ExperimentalWarning

_T = TypeVar("_T")


def _warn(name: str, version: str) -> None:
    warnings.warn(f"{name} is experimental (since v{version}); its interface may change.", ExperimentalWarning, stacklevel=3)


def experimental_func(version: str, name: Optional[str] = None) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Marks a function experimental (a warning on each call)."""

    def decorate(func: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> _T:
            _warn(name or func.__name__, version)
            return func(*args, **kwargs)

        return wrapped

    return decorate


def experimental_class(version: str, name: Optional[str] = None) -> Callable[[Any], Any]:
    """Marks a class experimental (a warning when an instance is made)."""

    def decorate(cls: Any) -> Any:
        init = cls.__init__

        @functools.wraps(init)
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
            _warn(name or cls.__name__, version)
            init(self, *args, **kwargs)

        cls.__init__ = wrapped
        return cls

    return decorate


__all__ = ["experimental_class", "experimental_func"]
