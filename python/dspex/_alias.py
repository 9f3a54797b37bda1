"""``import optuna`` resolving to dspex (:func:`install_as_optuna`), and what lets code written
for Optuna run on dspex when the real Optuna is installed too."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Optional, Sequence

from dspex import logging as _dlogging
from dspex.exceptions import TrialPruned

#: ``optuna.X`` modules that are dspex's under the same name.
_SAME_NAME = ("distributions", "exceptions", "integration", "logging", "pruners", "samplers", "search_space", "storages", "study", "trial")


class _AliasLoader(importlib.abc.Loader):
    """Loads ``optuna.X`` as the already imported ``dspex.X``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # imported already


class _OptunaFinder(importlib.abc.MetaPathFinder):
    """Finds ``optuna`` and ``optuna.X.Y`` as ``dspex`` and ``dspex.X.Y``; a part of Optuna that
    dspex does not have is a ModuleNotFoundError that says so."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != "optuna" and not fullname.startswith("optuna."):
            return None
        if fullname.startswith("optuna.integration."):  # Optuna's own shim over optuna-integration
            return importlib.util.spec_from_loader(fullname, _AliasLoader("optuna_integration." + fullname[len("optuna.integration."):]))
        dspex_name = "dspex" + fullname[len("optuna"):]
        if importlib.util.find_spec(dspex_name) is None:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: dspex runs this script in place of Optuna "
                f"(dspex.install_as_optuna), and {fullname} is not part of dspex yet; see the "
                "README's compatibility section",
                name=fullname,
            )
        return importlib.util.spec_from_loader(fullname, _AliasLoader(dspex_name))


_installed = False


def install_as_optuna() -> None:
    """Makes ``import optuna`` and every ``optuna.X`` submodule resolve to dspex for the rest of
    the process, so that an unmodified Optuna script (and libraries that import optuna, such as
    ``optuna_integration``) runs on dspex. Modules that already imported the real Optuna keep
    what they imported (a warning says so); call this first. Logging goes through the
    ``optuna`` logger hierarchy from now on, as in Optuna. Calling it again does nothing."""
    global _installed
    if _installed:
        return
    dspex = sys.modules["dspex"]  # this package (imported before any of its modules)
    real = sorted(n for n, m in sys.modules.items() if (n == "optuna" or n.startswith("optuna.")) and m is not None and not getattr(m, "__name__", "").startswith("dspex"))
    if real:
        warnings.warn(
            "dspex.install_as_optuna: the real optuna was imported before (" + ", ".join(real[:3]) + (", ..." if len(real) > 3 else "")
            + "); names imported from it keep pointing to it",
            RuntimeWarning,
            stacklevel=2,
        )
        for n in real:
            del sys.modules[n]
    sys.modules["optuna"] = dspex
    for name in _SAME_NAME:
        sys.modules[f"optuna.{name}"] = importlib.import_module(f"dspex.{name}")
    sys.meta_path.insert(0, _OptunaFinder())
    _dlogging._reroot("optuna")
    _installed = True


def is_trial_pruned(exc: BaseException) -> bool:
    """Whether ``exc`` asks to prune its trial: dspex's ``TrialPruned``, or the real Optuna's
    (raised by integrations such as ``optuna_integration``'s pruning callbacks when Optuna is
    installed beside dspex), recognised without importing Optuna."""
    if isinstance(exc, TrialPruned):
        return True
    return any(c.__name__ == "TrialPruned" and c.__module__.split(".")[0] == "optuna" for c in type(exc).__mro__)


__all__ = ["install_as_optuna", "is_trial_pruned"]
