"""Artifacts: files kept beside a study or a trial (a model, a plot, a log), with Optuna's
interface (``optuna.artifacts``). A store keeps the bytes; the study or trial keeps, in a
system attribute ``artifacts:<id>``, the artifact's metadata in Optuna's JSON form, so Optuna
(and optuna-dashboard) list and download what dspex uploaded, and the reverse."""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, List, Optional, Protocol, Union

from dspex.artifacts.exceptions import ArtifactNotFound
from dspex.logging import get_logger

_logger = get_logger(__name__)
_PREFIX = "artifacts:"
_DEFAULT_MIMETYPE = "application/octet-stream"


class ArtifactStore(Protocol):
    """Where artifact bytes live: ``open_reader(id)``, ``write(id, body)``, ``remove(id)``."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


@dataclass
class ArtifactMeta:
    """What a study or trial records of one artifact: its id, the uploaded file's name, its
    MIME type and content encoding (guessed from the file name unless given)."""

    artifact_id: str
    filename: str
    mimetype: str
    encoding: Optional[str]


class FileSystemArtifactStore:
    """Artifacts as files named by their id in the directory ``base_path`` (which must exist)."""

    def __init__(self, base_path: Union[str, Path]) -> None:
        self._base_path = Path(base_path)

    def _path(self, artifact_id: str) -> Path:
        path = self._base_path / artifact_id
        base = os.path.abspath(self._base_path)
        if os.path.isabs(artifact_id) or os.path.commonpath([base, os.path.abspath(path)]) != base:
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        return path

    def open_reader(self, artifact_id: str) -> BinaryIO:
        try:
            return open(self._path(artifact_id), "rb")
        except FileNotFoundError as e:
            raise ArtifactNotFound(f"artifact {artifact_id!r} is not in {self._base_path}") from e

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        with open(self._path(artifact_id), "wb") as f:
            shutil.copyfileobj(content_body, f)

    def remove(self, artifact_id: str) -> None:
        try:
            os.remove(self._path(artifact_id))
        except FileNotFoundError as e:
            raise ArtifactNotFound(f"artifact {artifact_id!r} is not in {self._base_path}") from e


class Backoff:
    """Wraps a store so that failed reads, writes and removals are retried after an
    exponentially growing delay (``min_delay * multiplier**n``, at most ``max_delay``), up to
    ``max_retries`` times; a missing artifact is not retried."""

    def __init__(self, backend: ArtifactStore, *, max_retries: int = 10, multiplier: float = 2, min_delay: float = 0.1, max_delay: float = 30) -> None:
        if not (max_retries > 0 and multiplier > 0 and 0 < min_delay < max_delay):
            raise ValueError(f"need max_retries > 0, multiplier > 0 and 0 < min_delay < max_delay, got {max_retries}, {multiplier}, {min_delay}, {max_delay}")
        self._backend = backend
        self._max_retries = max_retries
        self._multiplier = multiplier
        self._min_delay = min_delay
        self._max_delay = max_delay

    def _retry(self, what: str, artifact_id: str, call: Any, rewind: Optional[BinaryIO] = None) -> Any:
        for i in range(self._max_retries):
            try:
                return call()
            except ArtifactNotFound:
                raise
            except Exception as e:
                if i == self._max_retries - 1:
                    raise
                _logger.error(f"Failed to {what} artifact={artifact_id} n_retry={i}: {e}")
            if rewind is not None:
                rewind.seek(0)
            time.sleep(min(self._min_delay * self._multiplier**i, self._max_delay))

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._retry("open", artifact_id, lambda: self._backend.open_reader(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._retry("write", artifact_id, lambda: self._backend.write(artifact_id, content_body), rewind=content_body)

    def remove(self, artifact_id: str) -> None:
        self._retry("remove", artifact_id, lambda: self._backend.remove(artifact_id))


def _set_attr(study_or_trial: Any, storage: Any, key: str, value: str) -> None:
    from dspex.study import Study
    from dspex.trial import Trial

    if isinstance(study_or_trial, Study):
        study_or_trial.set_system_attr(key, value)
    elif isinstance(study_or_trial, Trial) and storage is None:
        study_or_trial.storage.set_trial_system_attr(study_or_trial._trial_id, key, value)
    elif storage is not None and hasattr(storage, "set_trial_system_attr"):
        storage.set_trial_system_attr(study_or_trial._trial_id, key, value)
    else:
        raise ValueError("storage is required for FrozenTrial: pass the running Trial or the Study, or storage=trial.storage")


def _system_attrs(study_or_trial: Any, storage: Any) -> dict:
    if storage is not None and hasattr(storage, "get_trial") and hasattr(study_or_trial, "number"):
        return storage.get_trial(study_or_trial._trial_id).system_attrs
    return dict(study_or_trial.system_attrs)


def upload_artifact(
    *,
    artifact_store: ArtifactStore,
    file_path: str,
    study_or_trial: Any,
    storage: Any = None,
    mimetype: Optional[str] = None,
    encoding: Optional[str] = None,
) -> str:
    """Stores the file ``file_path`` in ``artifact_store`` and links it to ``study_or_trial``
    (a Study, a running Trial, or a FrozenTrial with ``storage``); returns the artifact's id."""
    filename = os.path.basename(file_path)
    guessed_type, guessed_encoding = mimetypes.guess_type(filename)
    meta = ArtifactMeta(str(uuid.uuid4()), filename, mimetype or guessed_type or _DEFAULT_MIMETYPE, encoding or guessed_encoding)
    _set_attr(study_or_trial, storage, _PREFIX + meta.artifact_id, json.dumps(asdict(meta)))
    with open(file_path, "rb") as f:
        artifact_store.write(meta.artifact_id, f)
    return meta.artifact_id


def download_artifact(*, artifact_store: ArtifactStore, file_path: str, artifact_id: str) -> None:
    """Writes the artifact ``artifact_id`` to ``file_path`` (which must not exist yet)."""
    if os.path.exists(file_path):
        raise FileExistsError(f"File already exists: {file_path}")
    with artifact_store.open_reader(artifact_id) as reader, open(file_path, "wb") as writer:
        shutil.copyfileobj(reader, writer)


def get_all_artifact_meta(study_or_trial: Any, *, storage: Any = None) -> List[ArtifactMeta]:
    """The artifacts linked to a study or a trial, in the order they were uploaded."""
    metas = []
    for key, value in _system_attrs(study_or_trial, storage).items():
        if key.startswith(_PREFIX):
            d = json.loads(value) if isinstance(value, str) else value
            metas.append(ArtifactMeta(d["artifact_id"], d["filename"], d["mimetype"], d["encoding"]))
    return metas


__all__ = [
    "ArtifactMeta",
    "ArtifactStore",
    "Backoff",
    "FileSystemArtifactStore",
    "download_artifact",
    "get_all_artifact_meta",
    "upload_artifact",
]
