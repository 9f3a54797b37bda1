"""QMCSampler: Sobol and Halton points over the first completed trial's search space, through
the Python API, concurrency and study.toml."""

import asyncio
import json
import math
import subprocess
import sys
import textwrap

import pytest

import dspex
from dspex.samplers import QMCSampler, RandomSampler

dspex.logging.set_verbosity(dspex.logging.WARNING)


def _space(trial):
    x = trial.suggest_float("x", 0, 1)
    y = trial.suggest_float("y", 1e-3, 1e3, log=True)
    c = trial.suggest_categorical("c", ["a", "b", "c", "d"])
    n = trial.suggest_int("n", 0, 7)
    return x + math.log10(y) + "abcd".index(c) + n


def _run(sampler, n_trials=65, **kw):
    study = dspex.create_study(sampler=sampler)
    study.optimize(_space, n_trials=n_trials, **kw)
    return study


@pytest.mark.parametrize("qmc_type,scramble", [("sobol", False), ("sobol", True), ("halton", False), ("halton", True)])
def test_points_fill_each_dimension_evenly(qmc_type, scramble):
    study = _run(QMCSampler(qmc_type=qmc_type, scramble=scramble, seed=0))
    qmc = study.trials[1:]  # trial 0 is the independent sampler's
    # Trials 1..64 are the sequence's first 64 points: every quarter of x and of log y, every
    # choice and every integer gets its share (random points would miss by several).
    units = {"x": [t.params["x"] for t in qmc], "log y": [(math.log10(t.params["y"]) + 3) / 6 for t in qmc]}
    for name, values in units.items():
        counts = [0] * 4
        for v in values:
            counts[min(int(v * 4 + 1e-9), 3)] += 1
        assert max(counts) - min(counts) <= (4 if qmc_type == "halton" else 0), (name, counts)
    assert sorted({t.params["c"] for t in qmc}) == ["a", "b", "c", "d"]
    assert {t.params["n"] for t in qmc} == set(range(8))
    if qmc_type == "sobol" and not scramble:
        first = study.trials[1].params
        assert first["x"] == 0.0 and first["y"] == pytest.approx(1e-3) and first["c"] == "a" and first["n"] == 0


def test_seeded_studies_repeat_and_scrambles_differ_by_seed():
    a = [t.params for t in _run(QMCSampler(scramble=True, seed=3), 12).trials]
    b = [t.params for t in _run(QMCSampler(scramble=True, seed=3), 12).trials]
    c = [t.params for t in _run(QMCSampler(scramble=True, seed=4), 12).trials]
    assert a == b and a[1:] != c[1:]


def test_concurrent_trials_take_distinct_points():
    async def objective(trial):
        await asyncio.sleep(0.005)
        return _space(trial)

    study = dspex.create_study(sampler=QMCSampler(seed=1, independent_sampler=RandomSampler(seed=1)))
    study.optimize(objective, n_trials=40, concurrency=4)
    xs = [t.params["x"] for t in study.trials]
    assert len(set(xs)) == 40


def test_bad_arguments_and_optuna_name():
    import dspex as optuna

    with pytest.raises(ValueError, match="qmc_type"):
        optuna.samplers.QMCSampler(qmc_type="lattice")
    with pytest.raises(TypeError, match="independent_sampler"):
        QMCSampler(independent_sampler="random")


def test_study_toml_with_a_qmc_sampler(tmp_path):
    (tmp_path / "obj.py").write_text("def f(trial):\n    return trial.suggest_float('x', 0, 1)\n")
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        objective = "obj:f"
        n_trials = 9
        [sampler]
        kind = "qmc"
        qmc_type = "halton"
        seed = 0
        [workers]
        processes = 1  # one trial at a time: trial 0 completes before trial 1 starts
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml", "--output", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["best_value"] == 0.0  # Halton's point 0 (trial 1) is x = 0
    (tmp_path / "study.toml").write_text('objective = "obj:f"\n[sampler]\nkind = "qmc"\nqmc_type = "lattice"\n')
    bad = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "study.toml:" in bad.stderr and "qmc_type" in bad.stderr
