"""Storages: where studies live.

``None`` keeps studies in process memory; a URL (``sqlite:///path.db``, ``postgresql://...``)
or an :class:`RDBStorage` keeps them in a database, in Optuna 5.0's schema, so Optuna and
optuna-dashboard read dspex studies and dspex reads theirs; a :class:`JournalStorage` keeps them
in a file, in Optuna's journal format (:mod:`dspex.storages.journal`)."""

from __future__ import annotations

import atexit
from typing import Any, Dict, List, Optional, Tuple

from dspex import _native
from dspex._deprecated import deprecated_class as _deprecated_class
from dspex.storages._common import summaries


class InMemoryStorage:
    """Keeps studies in process memory. Share one instance between ``create_study`` and
    ``load_study`` calls to load a study by name."""

    def __init__(self) -> None:
        self._native = _native.InMemoryStorage()

    def get_all_study_names(self) -> List[str]:
        return self._native.study_names()

    def __reduce__(self) -> Tuple[Any, ...]:
        raise TypeError("an InMemoryStorage cannot be pickled (its studies live in this process); pickle a Study, which copies its trials")


class RetryFailedTrialCallback:
    """Re-queues a trial failed by the heartbeat check as a WAITING copy with the same params
    (Optuna's callback of the same name; attributes ``failed_trial`` and ``retry_history``)."""

    def __init__(self, max_retry: Optional[int] = None, inherit_intermediate_values: bool = False) -> None:
        if max_retry is not None and (not isinstance(max_retry, int) or max_retry < 0):
            raise ValueError(f"max_retry must be None or an int >= 0, got {max_retry!r}")
        self._max_retry = max_retry
        self._inherit_intermediate_values = bool(inherit_intermediate_values)

    @staticmethod
    def retried_trial_number(trial: Any) -> Optional[int]:
        return trial.system_attrs.get("failed_trial", None)

    @staticmethod
    def retry_history(trial: Any) -> List[int]:
        return trial.system_attrs.get("retry_history", [])


RetryHeartbeatStaleTrialCallback = RetryFailedTrialCallback


class RDBStorage:
    """A SQLite or PostgreSQL storage in Optuna 5.0's schema (the schema is created in an empty
    database; any other schema version is refused).

    With ``heartbeat_interval`` (seconds), running trials record a heartbeat; before a trial
    starts, RUNNING trials whose heartbeat is older than ``grace_period`` (default twice the
    interval) are marked FAIL, and re-queued when ``failed_trial_callback`` is a
    :class:`RetryFailedTrialCallback`.
    """

    def __init__(
        self,
        url: str,
        engine_kwargs: Optional[Dict[str, Any]] = None,
        skip_compatibility_check: bool = False,
        *,
        heartbeat_interval: Optional[float] = None,
        grace_period: Optional[float] = None,
        failed_trial_callback: Optional[RetryFailedTrialCallback] = None,
        heartbeat_stale_trial_callback: Optional[RetryFailedTrialCallback] = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {url!r}")
        cb = heartbeat_stale_trial_callback or failed_trial_callback
        if cb is not None and not isinstance(cb, RetryFailedTrialCallback):
            raise TypeError(f"failed_trial_callback must be a RetryFailedTrialCallback, got {cb!r}")
        for name, v in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ValueError(f"{name} must be None or a positive number of seconds, got {v!r}")
        self.url = url
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.failed_trial_callback = cb
        self._native = _native.InMemoryStorage.from_url(
            url,
            heartbeat_interval=None if heartbeat_interval is None else float(heartbeat_interval),
            grace_period=None if grace_period is None else float(grace_period),
            retry=cb is not None,
            retry_max=None if cb is None else cb._max_retry,
            retry_inherit_intermediate_values=False if cb is None else cb._inherit_intermediate_values,
        )

    def get_all_study_names(self) -> List[str]:
        return self._native.study_names()

    def get_all_studies(self) -> List[Dict[str, Any]]:
        """Study summaries: study_id, study_name, directions, n_trials, user_attrs,
        system_attrs, datetime_start (Unix seconds or None)."""
        return summaries(self._native)

    def __repr__(self) -> str:
        return f"RDBStorage({self.url!r})"

    def __reduce__(self) -> Tuple[Any, ...]:
        # Pickled as its URL and options: unpickling opens the database again.
        return (_rdb_storage, (self.url, self.heartbeat_interval, self.grace_period, self.failed_trial_callback))


def _rdb_storage(url: str, heartbeat_interval: Optional[float], grace_period: Optional[float], callback: Optional[RetryFailedTrialCallback]) -> RDBStorage:
    return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, failed_trial_callback=callback)


def fail_stale_trials(study: Any) -> None:
    """Fails the RUNNING trials of ``study`` whose heartbeat stopped (``RDBStorage(...,
    heartbeat_interval=...)``: their process died or hangs) and, with a
    ``RetryFailedTrialCallback``, re-queues them. dspex also does this before each trial starts;
    a storage without heartbeats (or in memory) has nothing to fail."""
    storage = study._storage
    if isinstance(storage, RDBStorage):
        storage._native.fail_stale_trials(study.study_name)


def _resolve(storage: object) -> Any:
    if storage is None:
        return InMemoryStorage()
    if isinstance(storage, (InMemoryStorage, RDBStorage, JournalStorage)):
        return storage
    if isinstance(storage, str):
        return RDBStorage(storage)
    raise TypeError(f"storage must be None, a URL, an InMemoryStorage, an RDBStorage or a JournalStorage, got {storage!r}")


from dspex.storages import journal as _journal  # noqa: E402
from dspex.storages.journal import BaseJournalBackend, JournalStorage  # noqa: E402  (uses nothing above)


@_deprecated_class("4.0.0", "6.0.0", text="Use :class:`~optuna.storages.journal.JournalFileBackend` instead.")
class JournalFileStorage(_journal.JournalFileBackend):
    """Optuna's former name of :class:`dspex.storages.journal.JournalFileBackend`."""


@_deprecated_class("4.0.0", "6.0.0", name="The import path :class:`~optuna.storages.JournalFileSymlinkLock`", text="Use :class:`~optuna.storages.journal.JournalFileSymlinkLock` instead.")
class JournalFileSymlinkLock(_journal.JournalFileSymlinkLock):
    """Optuna's former import path of :class:`dspex.storages.journal.JournalFileSymlinkLock`."""


@_deprecated_class("4.0.0", "6.0.0", name="The import path :class:`~optuna.storages.JournalFileOpenLock`", text="Use :class:`~optuna.storages.journal.JournalFileOpenLock` instead.")
class JournalFileOpenLock(_journal.JournalFileOpenLock):
    """Optuna's former import path of :class:`dspex.storages.journal.JournalFileOpenLock`."""


BaseJournalLogStorage = BaseJournalBackend

#: Storages that keep their studies outside this process (a study in one pickles as its name).
_PERSISTENT = (RDBStorage, JournalStorage)

__all__ = [
    "BaseJournalLogStorage",
    "InMemoryStorage",
    "JournalFileOpenLock",
    "JournalFileStorage",
    "JournalFileSymlinkLock",
    "JournalStorage",
    "RDBStorage",
    "RetryFailedTrialCallback",
    "RetryHeartbeatStaleTrialCallback",
    "fail_stale_trials",
]


def _flush_at_exit() -> None:
    # A SQL storage batches a running trial's updates (parameters, reports, attributes) for up
    # to half a second; write them before the process ends (a trial asked and suggested just
    # before exit, as `dspex ask` does, keeps its parameters).
    try:
        _native.flush_storages()
    except Exception:  # noqa: BLE001  (the engine has logged why)
        pass


atexit.register(_flush_at_exit)
