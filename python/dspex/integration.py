"""Optuna's integrations with other libraries (``optuna.integration.LightGBMPruningCallback``...),
which live in the ``optuna-integration`` package: each name is looked up there when first used.
Under :func:`dspex.install_as_optuna`, ``optuna.integration.X`` modules are that package's too."""

from __future__ import annotations

from typing import Any, List

#: A package for the import system, so that ``import optuna.integration.lightgbm`` (as optuna)
#: reaches the finder of :func:`dspex.install_as_optuna`, which maps it to optuna-integration.
__path__: List[str] = []


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        import optuna_integration  # type: ignore[import-untyped]
    except ImportError as e:
        raise ImportError(f"optuna.integration.{name} comes from the optuna-integration package: pip install optuna-integration") from e
    return getattr(optuna_integration, name)
