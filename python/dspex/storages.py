"""Storages: where studies live. Only the in-memory storage exists for now."""

from __future__ import annotations

from typing import List

from dspex import _native


class InMemoryStorage:
    """Keeps studies in process memory. Share one instance between ``create_study`` and
    ``load_study`` calls to load a study by name."""

    def __init__(self) -> None:
        self._native = _native.InMemoryStorage()

    def get_all_study_names(self) -> List[str]:
        return self._native.study_names()


def _resolve(storage: object) -> InMemoryStorage:
    if storage is None:
        return InMemoryStorage()
    if isinstance(storage, InMemoryStorage):
        return storage
    if isinstance(storage, str):
        raise NotImplementedError(
            f"storage={storage!r}: database storages are not supported yet; use None or dspex.storages.InMemoryStorage()"
        )
    raise TypeError(f"storage must be None or an InMemoryStorage, got {storage!r}")


__all__ = ["InMemoryStorage"]
