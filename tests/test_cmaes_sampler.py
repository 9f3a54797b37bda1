"""CmaEsSampler: CMA-ES in the engine, through the Python API (Optuna's signature), a study
resumed from its SQLite file, concurrency, the warm start and study.toml."""

import json
import pickle
import statistics
import subprocess
import sys
import textwrap

import pytest

import dspex
from dspex.samplers import CmaEsSampler, RandomSampler

dspex.logging.set_verbosity(dspex.logging.WARNING)


def _ellipsoid(trial):
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", 1e-3, 10, log=True)
    z = trial.suggest_float("z", -5, 5)
    return (x - 1.3) ** 2 + 10 * (y - 2.0) ** 2 + 100 * (z + 0.5) ** 2


def _run(sampler, n_trials=200, objective=_ellipsoid, **kw):
    study = dspex.create_study(sampler=sampler, **kw)
    study.optimize(objective, n_trials=n_trials)
    return study


def test_converges_far_past_random_search_and_repeats_for_a_seed():
    cma = _run(CmaEsSampler(seed=0), 400)
    assert cma.best_value < 1e-3
    assert cma.best_value < 1e-3 * _run(RandomSampler(seed=0), 400).best_value
    again = _run(CmaEsSampler(seed=0), 400)
    assert [t.params for t in again.trials] == [t.params for t in cma.trials]
    # Keyword-only, as Optuna 5.0's.
    with pytest.raises(TypeError):
        CmaEsSampler({"x": 1.0})  # type: ignore[misc]
    s = CmaEsSampler(x0={"x": 1.0, "y": 2.0, "z": 0.0}, sigma0=0.05, n_startup_trials=3, seed=4)
    study = _run(s, 40)
    assert study.best_value < _run(RandomSampler(seed=4), 40).best_value


def test_a_study_resumed_from_its_file_continues_the_same_strategy(tmp_path):
    whole = _run(CmaEsSampler(seed=2), 90)
    url = f"sqlite:///{tmp_path / 'cma.db'}"
    first = dspex.create_study(study_name="cma", storage=url, sampler=CmaEsSampler(seed=2))
    first.optimize(_ellipsoid, n_trials=45)
    resumed = dspex.load_study(study_name="cma", storage=url, sampler=CmaEsSampler(seed=2))
    resumed.optimize(_ellipsoid, n_trials=45)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]


def test_integers_with_margin_and_categoricals_from_the_independent_sampler():
    def objective(trial):
        a = trial.suggest_int("a", -10, 10)
        b = trial.suggest_int("b", 0, 1)
        x = trial.suggest_float("x", -2, 2, step=0.5)
        c = trial.suggest_categorical("c", ["p", "q"])
        return (a - 3) ** 2 + 4 * (1 - b) + (x - 1) ** 2 + (c == "p")

    study = _run(CmaEsSampler(seed=1, with_margin=True), 150, objective)
    assert study.best_value == 0.0
    assert {t.params["b"] for t in study.trials[100:]} == {0, 1}, "the binary parameter froze"


def test_restarts_pruned_trials_and_separable_runs():
    flat = _run(CmaEsSampler(seed=0, restart_strategy="ipop"), 300, lambda t: round(t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1)))
    assert len(flat.trials) == 300

    def reporting(trial):
        v = _ellipsoid(trial)
        trial.report(v, 0)
        if trial.number % 3 == 0:
            raise dspex.TrialPruned()
        return v

    random_best = _run(RandomSampler(seed=0), 150).best_value
    pruned = _run(CmaEsSampler(seed=0, consider_pruned_trials=True), 150, reporting)
    assert pruned.best_value < 0.1 * random_best
    sep = _run(CmaEsSampler(seed=0, use_separable_cma=True, popsize=8, inc_popsize=3), 150)
    assert sep.best_value < 0.1 * random_best
    # Learning-rate adaptation is slower on this easy problem (Optuna's too), still far ahead
    # of random search.
    lra = _run(CmaEsSampler(seed=0, lr_adapt=True), 300)
    assert lra.best_value < 0.1 * random_best


def test_warm_start_from_another_studys_trials():
    source = _run(RandomSampler(seed=0), 100).trials
    cold = _run(CmaEsSampler(seed=5), 12)
    warm = _run(CmaEsSampler(seed=5, source_trials=source), 12)
    # The warm start's first draws are around the source's best tenth, not the middle.
    assert statistics.median(t.value for t in warm.trials[1:]) < statistics.median(t.value for t in cold.trials[1:])


def _concurrent_cma(stagger):
    study = dspex.create_study(sampler=CmaEsSampler(seed=3, popsize=6))

    async def objective(trial):
        import asyncio

        v = _ellipsoid(trial)
        await asyncio.sleep(0.002 * (trial.number % 4 if stagger else 1))
        return v

    study.optimize(objective, n_trials=400, concurrency=4)
    return study


def test_concurrent_trials_and_pickling():
    study = _concurrent_cma(stagger=False)
    trials = study.trials
    assert len(trials) == 400 and all(t.state == dspex.TrialState.COMPLETE for t in trials)
    assert all(-5 <= t.params["x"] <= 5 and 1e-3 <= t.params["y"] <= 10 for t in trials)
    s = CmaEsSampler(seed=3, x0={"x": 1}, restart_strategy="bipop")
    assert pickle.loads(pickle.dumps(s))._spec == s._spec


@pytest.mark.parametrize("stagger", [False, True])
def test_concurrent_trials_beat_random_search(stagger):
    # Draws that finish after their generation ended join the next one (injected): four
    # trials at a time come close to one at a time, far better than random search.
    study = _concurrent_cma(stagger=stagger)
    assert study.best_value < 0.2 * _run(RandomSampler(seed=3), 400).best_value


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="lr_adapt.*use_separable_cma"):
        CmaEsSampler(lr_adapt=True, use_separable_cma=True)
    with pytest.raises(ValueError, match="restart_strategy"):
        CmaEsSampler(restart_strategy="ipopp")
    with pytest.raises(ValueError, match="with_margin"):
        CmaEsSampler(with_margin=True, use_separable_cma=True)
    with pytest.raises(TypeError, match="x0"):
        CmaEsSampler(x0=[1.0])
    with pytest.raises(TypeError, match=r"x0\['x'\]"):
        CmaEsSampler(x0={"x": "a"})
    with pytest.raises(ValueError, match="sigma0"):
        CmaEsSampler(sigma0=-1.0)
    with pytest.raises(ValueError, match="popsize"):
        CmaEsSampler(popsize=1)
    source = _run(RandomSampler(seed=0), 5).trials
    with pytest.raises(ValueError, match="source_trials.*restart_strategy"):
        CmaEsSampler(source_trials=source, restart_strategy="ipop")
    with pytest.raises(ValueError, match="no COMPLETE trial"):
        CmaEsSampler(source_trials=[])


def test_study_toml_with_a_cmaes_sampler(tmp_path):
    (tmp_path / "obj.py").write_text("def f(trial):\n    return (trial.suggest_float('x', -2, 2) - 0.7) ** 2 + trial.suggest_int('n', 0, 9) ** 2\n")
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        objective = "obj:f"
        n_trials = 80
        [sampler]
        kind = "cmaes"
        seed = 0
        with_margin = true
        x0 = { x = 0.0, n = 5 }
        [search_space]
        x = { type = "float", low = -2.0, high = 2.0 }
        n = { type = "int", low = 0, high = 9 }
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml", "--output", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["complete"] == 80 and r["best_value"] < 0.1
    (tmp_path / "study.toml").write_text('objective = "obj:f"\n[sampler]\nkind = "cmaes"\nrestart_strategy = "nope"\n')
    bad = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "restart_strategy" in bad.stderr
