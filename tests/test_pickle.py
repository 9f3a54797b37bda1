"""Pickling studies, samplers, pruners and storages, as Optuna's pickle (multiprocessing and
joblib pass studies to other processes so)."""

from __future__ import annotations

import multiprocessing
import pickle

import pytest

import dspex


def objective(trial):
    x = trial.suggest_float("x", -5, 5)
    c = trial.suggest_categorical("c", ["a", "b"])
    trial.set_user_attr("twice", 2 * x)
    return x * x + (c == "b")


def _params(study):
    return [(t.number, t.state.name, t.params, t.values, t.user_attrs) for t in study.trials]


def test_an_in_memory_study_pickles_as_a_copy_that_goes_on_as_the_original():
    study = dspex.create_study(study_name="mem", sampler=dspex.samplers.TPESampler(seed=3, n_startup_trials=4), pruner=dspex.pruners.MedianPruner(n_startup_trials=2))
    study.set_user_attr("owner", "me")
    study.set_metric_names(["loss"])
    study.optimize(objective, n_trials=8)
    copy = pickle.loads(pickle.dumps(study))
    assert copy is not study and copy.study_name == "mem"
    assert _params(copy) == _params(study)
    assert copy.user_attrs == {"owner": "me"} and copy.metric_names == ["loss"]
    assert copy.best_trial.number == study.best_trial.number
    assert isinstance(copy.pruner, dspex.pruners.MedianPruner) and copy.pruner._spec == study.pruner._spec
    # The sampler pickled as its settings: seeded, both go on with the same trials.
    study.optimize(objective, n_trials=4)
    copy.optimize(objective, n_trials=4)
    assert _params(copy) == _params(study)
    with pytest.raises(TypeError, match="InMemoryStorage cannot be pickled"):
        pickle.dumps(dspex.storages.InMemoryStorage())


def _work(study):
    study.optimize(objective, n_trials=3)
    return len(study.trials)


def test_a_stored_study_pickles_as_its_storage_and_name_into_another_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    storage = dspex.storages.RDBStorage(url, heartbeat_interval=5)
    study = dspex.create_study(study_name="db", storage=storage, sampler=dspex.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2)
    again = pickle.loads(pickle.dumps(storage))
    assert again.url == url and again.heartbeat_interval == 5
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        counts = pool.map(_work, [study, study])
    assert all(n >= 5 for n in counts)
    assert len(dspex.load_study(study_name="db", storage=url).trials) == 8
