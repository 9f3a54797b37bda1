"""dspex: an optimization engine. Python defines the experiment, a Rust engine runs it.

The API follows Optuna's, so ``import dspex as optuna`` runs a typical Optuna script::

    import dspex

    def objective(trial):
        x = trial.suggest_float("x", -10, 10)
        return (x - 2) ** 2

    study = dspex.create_study()
    study.optimize(objective, n_trials=100)
    print(study.best_params, study.best_value)
"""

from __future__ import annotations

import os as _os

# The extension's allocator (mimalloc) commits its arena eagerly by default. In a study with 256
# trials in flight, perf measured 13-20% of the process's CPU in the kernel zeroing fresh pages
# (clear_page, under mimalloc extending its free lists); without eager commit, under 1%.
# mimalloc reads the option when the extension loads: set it first (a value set by the user
# is kept).
_os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

from dspex import _native, distributions, exceptions, importance, integration, logging, pruners, remote, samplers, search_space, session, storages, study, trial
from dspex._alias import install_as_optuna
from dspex.exceptions import TrialPruned
from dspex.remote import attach
from dspex.session import DSpexSessionContext
from dspex.study import Study, StudyDirection, StudySummary, copy_study, create_study, delete_study, get_all_study_names, get_all_study_summaries, load_study
from dspex.trial import FrozenTrial, Trial, TrialState, create_trial

__version__: str = _native.__version__

__all__ = [
    "DSpexSessionContext",
    "FrozenTrial",
    "Study",
    "StudyDirection",
    "Trial",
    "TrialPruned",
    "TrialState",
    "__version__",
    "attach",
    "create_study",
    "create_trial",
    "delete_study",
    "distributions",
    "exceptions",
    "importance",
    "integration",
    "get_all_study_names",
    "get_all_study_summaries",
    "copy_study",
    "StudySummary",
    "install_as_optuna",
    "load_study",
    "logging",
    "pruners",
    "remote",
    "samplers",
    "search_space",
    "session",
    "storages",
    "study",
    "trial",
]


def __getattr__(name: str) -> object:
    # Optuna's layout: ``optuna.visualization`` and ``optuna.artifacts`` are there without
    # importing them (plotting is an optional extra, so they are imported on first use).
    if name in ("visualization", "artifacts"):
        import importlib

        return importlib.import_module("dspex.visualization")
    raise AttributeError(f"module 'dspex' has no attribute {name!r}")
