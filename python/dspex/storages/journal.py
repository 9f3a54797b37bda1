"""Journal storage: studies kept as a log of operations in one file, in Optuna's journal format.

Optuna and dspex processes can share a journal file (each reads what the others append), and
each reads the files the other wrote. Use it where SQLite's locking does not work (NFS) or a
database server is not at hand::

    storage = JournalStorage(JournalFileBackend("./journal.log"))
    study = dspex.create_study(storage=storage)

The engine keeps the log replayed in memory and appends each operation under the file lock
Optuna takes (``<file>.lock``), so the processes sharing the file may be any mix of dspex and
Optuna."""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from dspex import _native
from dspex.storages._common import summaries


class BaseJournalFileLock:
    """How processes sharing a journal file take turns appending: a lock file ``<file>.lock``.
    ``grace_period`` (seconds, or None to wait for ever): a lock file left unchanged this long
    is taken to be abandoned by a dead process and removed."""

    _kind = ""

    def __init__(self, filepath: str, grace_period: Optional[int] = 30) -> None:
        if grace_period is not None and (isinstance(grace_period, bool) or not isinstance(grace_period, (int, float)) or grace_period <= 0):
            raise ValueError(f"grace_period must be None or a positive number of seconds, got {grace_period!r}")
        self._lock_file = os.fspath(filepath) + ".lock"
        self.grace_period = grace_period

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._lock_file[:-5]!r}, grace_period={self.grace_period!r})"


class JournalFileSymlinkLock(BaseJournalFileLock):
    """The lock is a symbolic link ``<file>.lock`` (works on NFSv2 and later; Optuna's default)."""

    _kind = "symlink"


class JournalFileOpenLock(BaseJournalFileLock):
    """The lock is a file ``<file>.lock`` created exclusively (``O_EXCL``; NFSv3 and later)."""

    _kind = "open"


class BaseJournalBackend:
    """Where a :class:`JournalStorage` keeps its log. dspex has the file backend
    (:class:`JournalFileBackend`)."""


class JournalFileBackend(BaseJournalBackend):
    """A journal in the file ``file_path`` (created when missing), appended to under
    ``lock_obj`` (default: :class:`JournalFileSymlinkLock` on the same path)."""

    def __init__(self, file_path: str, lock_obj: Optional[BaseJournalFileLock] = None) -> None:
        if not isinstance(file_path, (str, os.PathLike)):
            raise TypeError(f"file_path must be a path, got {file_path!r}")
        if lock_obj is not None and not isinstance(lock_obj, BaseJournalFileLock):
            raise TypeError(f"lock_obj must be a JournalFileSymlinkLock or a JournalFileOpenLock, got {lock_obj!r}")
        self._file_path = os.path.abspath(os.fspath(file_path))
        self._lock = lock_obj or JournalFileSymlinkLock(self._file_path)
        if os.path.abspath(self._lock._lock_file) != self._file_path + ".lock":
            raise ValueError(f"lock_obj locks {self._lock._lock_file[:-5]!r}, not the journal file {self._file_path!r}")

    def _url(self) -> str:
        grace = "none" if self._lock.grace_period is None else repr(float(self._lock.grace_period))
        return f"journal://{self._file_path}?lock={self._lock._kind}&grace_period={grace}"

    def __repr__(self) -> str:
        return f"JournalFileBackend({self._file_path!r})"


class JournalRedisBackend(BaseJournalBackend):
    """Optuna's Redis journal backend; dspex does not have it (use a file, SQLite or
    PostgreSQL)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("dspex has no Redis journal backend: use JournalFileBackend, or an RDBStorage (SQLite, PostgreSQL)")


class JournalStorage:
    """A storage whose studies live in a journal (``log_storage``: a
    :class:`JournalFileBackend`), in Optuna's format."""

    def __init__(self, log_storage: BaseJournalBackend) -> None:
        if not isinstance(log_storage, JournalFileBackend):
            raise TypeError(f"log_storage must be a JournalFileBackend, got {log_storage!r}")
        self._backend = log_storage
        self._native = _native.InMemoryStorage.from_url(log_storage._url())

    def get_all_study_names(self) -> list:
        return self._native.study_names()

    def get_all_studies(self) -> list:
        """Study summaries, as :meth:`dspex.storages.RDBStorage.get_all_studies`."""
        return summaries(self._native)

    def __repr__(self) -> str:
        return f"JournalStorage({self._backend!r})"

    def __reduce__(self) -> Tuple[Any, ...]:
        # Pickled as its file: unpickling replays the journal again.
        return (JournalStorage, (self._backend,))


__all__ = ["BaseJournalBackend", "JournalFileBackend", "JournalFileOpenLock", "JournalFileSymlinkLock", "JournalRedisBackend", "JournalStorage"]
