"""PartialFixedSampler: some parameters fixed, the rest left to a base sampler, through the
Python API, Optuna's name for it, pickling and study.toml."""

import json
import pickle
import subprocess
import sys
import textwrap

import pytest

import dspex
from dspex.samplers import GPSampler, GridSampler, PartialFixedSampler, RandomSampler, TPESampler

dspex.logging.set_verbosity(dspex.logging.WARNING)


def _objective(trial):
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", -5, 5)
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    n = trial.suggest_int("n", 0, 10)
    return (x - 1) ** 2 + (y + 2) ** 2 + {"a": 1.0, "b": 0.0, "c": 2.0}[c] + n


@pytest.mark.parametrize("base", [TPESampler(seed=1, n_startup_trials=5), GPSampler(seed=1, n_startup_trials=5), RandomSampler(seed=1)], ids=["tpe", "gp", "random"])
def test_fixed_parameters_keep_their_values_and_the_base_optimises_the_rest(base):
    study = dspex.create_study(sampler=PartialFixedSampler({"x": 2.5, "c": "a", "n": None}, base))
    study.optimize(_objective, n_trials=25)
    assert {t.params["x"] for t in study.trials} == {2.5}
    assert {t.params["c"] for t in study.trials} == {"a"}
    # None means "not fixed" (as in Optuna): n and y are sampled.
    assert len({t.params["n"] for t in study.trials}) > 1
    assert len({t.params["y"] for t in study.trials}) > 10
    if not isinstance(base, RandomSampler):
        assert abs(study.best_params["y"] + 2) < 1.0


def test_a_value_outside_the_distribution_is_sampled_instead():
    study = dspex.create_study(sampler=PartialFixedSampler({"x": 50.0, "c": "zzz"}, RandomSampler(seed=0)))
    study.optimize(_objective, n_trials=10)
    assert all(-5 <= t.params["x"] <= 5 and t.params["c"] in ("a", "b", "c") for t in study.trials)
    assert len({t.params["x"] for t in study.trials}) == 10


def test_a_grid_base_visits_its_grid_over_the_free_parameters():
    grid = GridSampler({"x": [0.0, 1.0, 2.0]}, seed=0)
    study = dspex.create_study(sampler=PartialFixedSampler({"y": 3.0}, grid))
    study.optimize(lambda t: t.suggest_float("x", -5, 5) + t.suggest_float("y", -5, 5), n_trials=10)
    # The grid is exhausted after its three points; y is fixed throughout.
    assert [t.params["y"] for t in study.trials] == [3.0] * 3
    assert sorted(t.params["x"] for t in study.trials) == [0.0, 1.0, 2.0]


def test_optuna_name_pickling_and_bad_arguments():
    import dspex as optuna  # the names an Optuna script uses

    sampler = optuna.samplers.PartialFixedSampler(fixed_params={"x": 1.0}, base_sampler=optuna.samplers.TPESampler(seed=0))
    copy = pickle.loads(pickle.dumps(sampler))
    study = dspex.create_study(sampler=copy)
    study.optimize(_objective, n_trials=3)
    assert {t.params["x"] for t in study.trials} == {1.0}
    with pytest.raises(TypeError, match="base_sampler.*dspex built-in sampler"):
        PartialFixedSampler({"x": 1.0}, object())
    with pytest.raises(TypeError, match="fixed_params"):
        PartialFixedSampler([("x", 1.0)], RandomSampler())
    with pytest.raises(TypeError, match=r"fixed_params\['x'\]"):
        PartialFixedSampler({"x": [1.0]}, RandomSampler())
    with pytest.raises(AttributeError, match="NoSuchSampler"):
        optuna.samplers.NoSuchSampler()


def test_study_toml_with_a_partial_fixed_sampler(tmp_path):
    (tmp_path / "obj.py").write_text("def f(trial):\n    return (trial.suggest_float('x', -5, 5) - 1) ** 2 + trial.suggest_float('y', -5, 5) ** 2\n")
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        objective = "obj:f"
        n_trials = 12
        [sampler]
        kind = "partial_fixed"
        fixed_params = { y = 0.5 }
        [sampler.base_sampler]
        kind = "tpe"
        seed = 3
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml", "--output", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["best_params"]["y"] == 0.5
    (tmp_path / "study.toml").write_text('objective = "obj:f"\n[sampler]\nkind = "partial_fixed"\nfixed_params = { y = 0.5 }\n')
    bad = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "study.toml:" in bad.stderr and "base_sampler" in bad.stderr
