"""Decorators that mark a function or class deprecated: using it warns with a FutureWarning that
says since when, when it goes and what to use. Optuna's integrations import them as
``optuna._deprecated`` (which resolves here under :func:`dspex.install_as_optuna`)."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional, TypeVar

_T = TypeVar("_T")

#: The message: ``name``, ``d_ver`` (deprecated in) and ``r_ver`` (removed in) are filled in.
_DEPRECATION_WARNING_TEMPLATE = "{name} has been deprecated in v{d_ver}. This feature will be removed in v{r_ver}."


def _message(name: str, deprecated_version: str, removed_version: str, text: Optional[str]) -> str:
    msg = _DEPRECATION_WARNING_TEMPLATE.format(name=name, d_ver=deprecated_version, r_ver=removed_version)
    return f"{msg} {text}" if text else msg


def deprecated_func(deprecated_version: str, removed_version: str, name: Optional[str] = None, text: Optional[str] = None) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Marks a function deprecated (a FutureWarning on each call)."""

    def decorate(func: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> _T:
            warnings.warn(_message(name or func.__name__, deprecated_version, removed_version, text), FutureWarning, stacklevel=2)
            return func(*args, **kwargs)

        return wrapped

    return decorate


def deprecated_class(deprecated_version: str, removed_version: str, name: Optional[str] = None, text: Optional[str] = None) -> Callable[[Any], Any]:
    """Marks a class deprecated (a FutureWarning when an instance is made)."""

    def decorate(cls: Any) -> Any:
        init = cls.__init__

        @functools.wraps(init)
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
            warnings.warn(_message(name or cls.__name__, deprecated_version, removed_version, text), FutureWarning, stacklevel=2)
            init(self, *args, **kwargs)

        cls.__init__ = wrapped
        return cls

    return decorate


__all__ = ["deprecated_class", "deprecated_func"]
