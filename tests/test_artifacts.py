"""dspex.artifacts: files linked to studies and trials, readable by Optuna and the reverse."""

from __future__ import annotations

import io

import pytest

import dspex
from dspex.artifacts import (
    Backoff,
    FileSystemArtifactStore,
    download_artifact,
    get_all_artifact_meta,
    upload_artifact,
)
from dspex.artifacts.exceptions import ArtifactNotFound


def test_artifacts_of_studies_and_trials_round_trip_with_optuna(tmp_path):
    optuna = pytest.importorskip("optuna")
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = FileSystemArtifactStore(store_dir)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = dspex.create_study(study_name="art", storage=url)
    report = tmp_path / "report.csv"
    report.write_text("x,y\n1,2\n")
    study_artifact = upload_artifact(artifact_store=store, file_path=str(report), study_or_trial=study)

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        model = tmp_path / f"model-{trial.number}.json.gz"
        model.write_bytes(b"\x1f\x8b" + str(x).encode())
        upload_artifact(artifact_store=store, file_path=str(model), study_or_trial=trial)
        return x

    study.optimize(objective, n_trials=2)
    [meta] = get_all_artifact_meta(study)
    assert (meta.artifact_id, meta.filename, meta.mimetype, meta.encoding) == (study_artifact, "report.csv", "text/csv", None)
    trial_meta = get_all_artifact_meta(study.trials[1])
    assert [(m.filename, m.mimetype, m.encoding) for m in trial_meta] == [("model-1.json.gz", "application/json", "gzip")]
    out = tmp_path / "back.csv"
    download_artifact(artifact_store=store, file_path=str(out), artifact_id=study_artifact)
    assert out.read_text() == "x,y\n1,2\n"

    # Optuna lists and downloads what dspex uploaded ...
    theirs = optuna.load_study(study_name="art", storage=url)
    their_metas = optuna.artifacts.get_all_artifact_meta(theirs.trials[1], storage=theirs._storage)
    assert [m.artifact_id for m in their_metas] == [trial_meta[0].artifact_id]
    got = tmp_path / "optuna-got"
    optuna.artifacts.download_artifact(artifact_store=optuna.artifacts.FileSystemArtifactStore(str(store_dir)), file_path=str(got), artifact_id=trial_meta[0].artifact_id)
    assert got.read_bytes() == (tmp_path / "model-1.json.gz").read_bytes()
    # ... and dspex what Optuna uploaded.
    notes = tmp_path / "notes.txt"
    notes.write_text("from optuna")
    their_id = optuna.artifacts.upload_artifact(artifact_store=optuna.artifacts.FileSystemArtifactStore(str(store_dir)), file_path=str(notes), study_or_trial=theirs)
    again = dspex.load_study(study_name="art", storage=url)
    assert {m.artifact_id for m in get_all_artifact_meta(again)} == {study_artifact, their_id}


def test_bad_artifact_requests_say_what_is_wrong(tmp_path):
    store = FileSystemArtifactStore(tmp_path)
    with pytest.raises(ArtifactNotFound):
        store.open_reader("missing")
    with pytest.raises(ArtifactNotFound):
        store.remove("missing")
    with pytest.raises(ValueError, match="Invalid artifact_id"):
        store.write("../escape", io.BytesIO(b"x"))
    study = dspex.create_study()
    f = tmp_path / "f.bin"
    f.write_bytes(b"1")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ValueError, match="storage is required for FrozenTrial"):
        upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=study.trials[0])
    aid = upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=study)
    with pytest.raises(FileExistsError):
        download_artifact(artifact_store=store, file_path=str(f), artifact_id=aid)
    with pytest.raises(ValueError, match="max_retries"):
        Backoff(store, max_retries=0)


class Flaky:
    """A store whose first two writes fail, as a network store does."""

    def __init__(self, inner):
        self.inner, self.failures = inner, 2

    def write(self, artifact_id, body):
        if self.failures:
            self.failures -= 1
            body.read()
            raise OSError("connection reset")
        self.inner.write(artifact_id, body)

    def open_reader(self, artifact_id):
        return self.inner.open_reader(artifact_id)

    def remove(self, artifact_id):
        self.inner.remove(artifact_id)


def test_backoff_retries_a_flaky_store_from_the_start_of_the_file(tmp_path):
    flaky = Flaky(FileSystemArtifactStore(tmp_path))
    store = Backoff(flaky, min_delay=0.01, max_delay=0.05)
    store.write("a1", io.BytesIO(b"whole content"))
    assert flaky.failures == 0
    with store.open_reader("a1") as r:
        assert r.read() == b"whole content"
    store.remove("a1")
    with pytest.raises(ArtifactNotFound):
        store.remove("a1")
