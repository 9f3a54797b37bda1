"""Exceptions raised by dspex (Optuna-compatible names)."""

from __future__ import annotations

from dspex._native import DSpexError, DuplicatedStudyError

#: Alias so code written for Optuna (``except optuna.exceptions.OptunaError``) keeps working.
OptunaError = DSpexError


class TrialPruned(DSpexError):
    """Raise from an objective to stop the trial early; it becomes PRUNED, not FAIL."""


class StorageInternalError(DSpexError):
    """A storage backend failed."""


class UpdateFinishedTrialError(DSpexError, RuntimeError):
    """An update was attempted on a trial that is already finished."""


class ExperimentalWarning(Warning):
    """The feature used is experimental and may change."""


__all__ = [
    "DSpexError",
    "DuplicatedStudyError",
    "ExperimentalWarning",
    "OptunaError",
    "StorageInternalError",
    "TrialPruned",
    "UpdateFinishedTrialError",
]
