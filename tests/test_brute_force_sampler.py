"""BruteForceSampler: every combination of a discrete search space once, define-by-run,
through the Python API, concurrency and study.toml."""

import asyncio
import json
import subprocess
import sys
import textwrap

import dspex
from dspex.samplers import BruteForceSampler

dspex.logging.set_verbosity(dspex.logging.WARNING)


def _grid(trial):
    c = trial.suggest_categorical("c", ["a", "b"])
    n = trial.suggest_int("n", 0, 4, step=2)
    return {"a": 0, "b": 1}[c] + n


def _combos(study):
    return sorted((t.params["c"], t.params["n"]) for t in study.trials)


def test_every_combination_once_and_the_study_stops():
    study = dspex.create_study(sampler=BruteForceSampler(seed=0))
    study.optimize(_grid, n_trials=100)
    assert _combos(study) == [(c, n) for c in "ab" for n in (0, 2, 4)]
    assert study.best_value == 0
    # Another seed: the same set in another order.
    other = dspex.create_study(sampler=BruteForceSampler(seed=1))
    other.optimize(_grid, n_trials=100)
    assert _combos(other) == _combos(study)
    assert [t.params for t in other.trials] != [t.params for t in study.trials]


def test_branches_of_a_define_by_run_objective():
    def objective(trial):
        if trial.suggest_categorical("model", ["linear", "tree"]) == "linear":
            return trial.suggest_float("alpha", 0.0, 1.0, step=0.25)
        return trial.suggest_int("depth", 1, 3)

    study = dspex.create_study(sampler=BruteForceSampler(seed=3))
    study.optimize(objective, n_trials=100)
    assert len(study.trials) == 5 + 3
    assert sorted(t.params.get("alpha", -1) for t in study.trials if t.params["model"] == "linear") == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_a_failed_combination_is_tried_again():
    failed = []

    def objective(trial):
        v = _grid(trial)
        if (trial.params["c"], trial.params["n"]) == ("b", 2) and not failed:
            failed.append(trial.number)
            raise RuntimeError("transient")
        return v

    study = dspex.create_study(sampler=BruteForceSampler(seed=0))
    study.optimize(objective, n_trials=100, catch=(RuntimeError,))
    done = sorted((t.params["c"], t.params["n"]) for t in study.trials if t.state.name == "COMPLETE")
    assert done == [(c, n) for c in "ab" for n in (0, 2, 4)] and len(study.trials) == 7


def test_concurrent_trials_cover_the_space_and_stop():
    async def objective(trial):
        await asyncio.sleep(0.01)
        return _grid(trial)

    study = dspex.create_study(sampler=BruteForceSampler(seed=2, avoid_premature_stop=True))
    study.optimize(objective, n_trials=50, concurrency=3)
    assert set(_combos(study)) == {(c, n) for c in "ab" for n in (0, 2, 4)}
    assert len(study.trials) < 50


def test_a_continuous_parameter_is_sampled_at_random():
    study = dspex.create_study(sampler=BruteForceSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    assert len({t.params["x"] for t in study.trials}) == 5


def test_study_toml_with_a_brute_force_sampler(tmp_path):
    (tmp_path / "obj.py").write_text("def f(trial):\n    return trial.suggest_int('k', 1, 4) * 1.0\n")
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        objective = "obj:f"
        n_trials = 50
        [sampler]
        kind = "brute_force"
        seed = 0
        [workers]
        processes = 1  # one trial at a time: two started together may pick the same k (as in Optuna)
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml", "--output", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["complete"] == 4 and r["best_value"] == 1.0
