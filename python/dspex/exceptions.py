"""Exceptions raised by dspex (Optuna-compatible names)."""

from __future__ import annotations

from dspex._native import (
    BudgetExceeded,
    DSpexError,
    DuplicatedStudyError,
    LMError,
    RemoteError,
    StorageError,
    ToolError,
    ToolTimeout,
    ToolUnavailable,
)

#: Alias so code written for Optuna (``except optuna.exceptions.OptunaError``) keeps working.
OptunaError = DSpexError


class TrialPruned(DSpexError):
    """Raise from an objective to stop the trial early; it becomes PRUNED, not FAIL."""


#: A storage backend failed (unreachable database, unknown schema, corrupted rows, read-only file).
StorageInternalError = StorageError


class UpdateFinishedTrialError(DSpexError, RuntimeError):
    """An update was attempted on a trial that is already finished."""


class ExperimentalWarning(Warning):
    """The feature used is experimental and may change."""


__all__ = [
    "BudgetExceeded",
    "DSpexError",
    "DuplicatedStudyError",
    "ExperimentalWarning",
    "LMError",
    "OptunaError",
    "RemoteError",
    "StorageInternalError",
    "ToolError",
    "ToolTimeout",
    "ToolUnavailable",
    "TrialPruned",
    "UpdateFinishedTrialError",
]
