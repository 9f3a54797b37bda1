"""NSGAIISampler and NSGAIIISampler: the genetic samplers in the engine, through the Python API
(Optuna's signatures and crossover classes), constraints, a study resumed from its SQLite file,
concurrency, ``import optuna`` and study.toml."""

import json
import math
import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest

import dspex
from dspex.bench.stats import hypervolume
from dspex.samplers import NSGAIIISampler, NSGAIISampler, RandomSampler
from dspex.samplers.nsgaii import (
    BLXAlphaCrossover,
    PolynomialMutation,
    SBXCrossover,
    SPXCrossover,
    UNDXCrossover,
    UniformCrossover,
    VSBXCrossover,
)

dspex.logging.set_verbosity(dspex.logging.WARNING)


def _zdt1(trial):
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(5)]
    g = 1.0 + 9.0 * sum(x[1:]) / 4.0
    return x[0], g * (1.0 - math.sqrt(x[0] / g))


def _dtlz2(trial):
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(6)]
    g = sum((v - 0.5) ** 2 for v in x[2:])
    a, b = x[0] * math.pi / 2, x[1] * math.pi / 2
    return (1 + g) * math.cos(a) * math.cos(b), (1 + g) * math.cos(a) * math.sin(b), (1 + g) * math.sin(a)


def _run(sampler, objective=_zdt1, n_trials=600, n_objectives=2, **kw):
    study = dspex.create_study(sampler=sampler, directions=["minimize"] * n_objectives, **kw)
    study.optimize(objective, n_trials=n_trials)
    return study


def _hv(study, ref):
    return hypervolume([t.values for t in study.trials if t.values is not None], ref)


def test_nsga2_and_nsga3_beat_random_search_and_repeat_for_a_seed():
    nsga2 = _run(NSGAIISampler(seed=0, population_size=30))
    random = _run(RandomSampler(seed=0))
    assert _hv(nsga2, (1.1, 11.0)) > _hv(random, (1.1, 11.0)) + 0.2
    again = _run(NSGAIISampler(seed=0, population_size=30))
    assert [t.params for t in again.trials] == [t.params for t in nsga2.trials]
    nsga3 = _run(NSGAIIISampler(seed=0, population_size=30), _dtlz2, 600, 3)
    assert _hv(nsga3, (1.1,) * 3) > _hv(_run(RandomSampler(seed=0), _dtlz2, 600, 3), (1.1,) * 3) + 0.05
    with pytest.raises(TypeError):
        NSGAIISampler(50)  # type: ignore[misc]  # keyword-only, as Optuna 5.0's


@pytest.mark.parametrize(
    "crossover",
    [UniformCrossover(0.3), BLXAlphaCrossover(), SBXCrossover(eta=10.0), VSBXCrossover(), UNDXCrossover(), SPXCrossover()],
    ids=repr,
)
def test_every_crossover_with_mixed_parameters(crossover):
    def objective(trial):
        x = trial.suggest_float("x", -2.0, 2.0)
        n = trial.suggest_int("n", 1, 64, log=True)
        s = trial.suggest_float("s", 0.0, 1.0, step=0.25)
        c = trial.suggest_categorical("c", ["a", "b", None])
        return x * x + s + (c == "a"), (x - 1) ** 2 + math.log2(n) / 6 + (c is None)

    sampler = NSGAIISampler(seed=1, population_size=8, crossover=crossover, mutation=PolynomialMutation(eta=5.0))
    study = _run(sampler, objective, 80)
    assert len(study.trials) == 80 and all(t.state.name == "COMPLETE" for t in study.trials)
    for t in study.trials:
        assert -2.0 <= t.params["x"] <= 2.0 and 1 <= t.params["n"] <= 64 and t.params["s"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert repr(crossover).startswith(type(crossover).__name__ + "(")
    assert crossover.n_parents == (3 if isinstance(crossover, (UNDXCrossover, SPXCrossover)) else 2)


def _constr(trial):
    x1 = trial.suggest_float("x1", 0.1, 1.0)
    x2 = trial.suggest_float("x2", 0.0, 5.0)
    trial.set_user_attr("c", [6.0 - x2 - 9.0 * x1, 1.0 + x2 - 9.0 * x1])
    return x1, (1.0 + x2) / x1


def test_constraints_steer_the_population_to_feasible_trials():
    with pytest.warns(FutureWarning, match="constraints_func"):
        sampler = NSGAIISampler(seed=2, population_size=20, constraints_func=lambda t: t.user_attrs["c"])
    study = _run(sampler, _constr, 300)
    # Without the constraints the population heads for the infeasible part of the front.
    blind = _run(NSGAIISampler(seed=2, population_size=20), _constr, 300)

    def feasible(s):
        return sum(all(c <= 0 for c in t.user_attrs["c"]) for t in s.trials[-100:])

    assert feasible(study) > feasible(blind) + 15
    # best_trials are the feasible Pareto front.
    assert study.best_trials and all(all(c <= 0 for c in t.user_attrs["c"]) for t in study.best_trials)

    # trial.set_constraint works the same way.
    def objective(trial):
        v = _constr(trial)
        for i, c in enumerate(trial.user_attrs["c"]):
            trial.set_constraint(f"c{i}", c)
        return v

    assert feasible(_run(NSGAIISampler(seed=2, population_size=20), objective, 300)) == feasible(study)


def test_a_study_resumed_from_its_file_continues_the_same_generations(tmp_path):
    whole = _run(NSGAIISampler(seed=3, population_size=10), n_trials=70)
    url = f"sqlite:///{tmp_path / 'nsga.db'}"
    first = dspex.create_study(study_name="g", storage=url, directions=["minimize"] * 2, sampler=NSGAIISampler(seed=3, population_size=10))
    first.optimize(_zdt1, n_trials=35)
    resumed = dspex.load_study(study_name="g", storage=url, sampler=NSGAIISampler(seed=3, population_size=10))
    resumed.optimize(_zdt1, n_trials=35)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]


def test_concurrent_trials_and_pickling():
    study = dspex.create_study(directions=["minimize"] * 2, sampler=NSGAIISampler(seed=4, population_size=20))

    async def objective(trial):
        import asyncio

        v = _zdt1(trial)
        await asyncio.sleep(0.001 * (trial.number % 3))
        return v

    study.optimize(objective, n_trials=400, concurrency=4)
    assert _hv(study, (1.1, 11.0)) > _hv(_run(RandomSampler(seed=4), n_trials=400), (1.1, 11.0)) + 0.2
    s = NSGAIIISampler(seed=4, reference_points=[[1, 0], [0.5, 0.5], [0, 1]], crossover=SBXCrossover())
    assert pickle.loads(pickle.dumps(s))._spec == s._spec


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="population_size"):
        NSGAIISampler(population_size=1)
    with pytest.raises(ValueError, match="population_size.*>= 3"):
        NSGAIISampler(population_size=2, crossover=UNDXCrossover())
    with pytest.raises(ValueError, match="crossover_prob"):
        NSGAIISampler(crossover_prob=1.5)
    with pytest.raises(ValueError, match="eta"):
        NSGAIISampler(crossover=SBXCrossover(eta=-1.0))
    with pytest.raises(ValueError, match="crossover=.*must be one of"):
        NSGAIISampler(crossover="sbx")
    with pytest.raises(ValueError, match="mutation="):
        NSGAIISampler(mutation=object())
    with pytest.raises(ValueError, match="child_generation_strategy"):
        NSGAIISampler(child_generation_strategy=lambda study, space, parents: {})
    with pytest.raises(TypeError, match="constraints_func"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        NSGAIISampler(constraints_func=3)
    with pytest.raises(ValueError, match="dividing_parameter"):
        NSGAIIISampler(dividing_parameter=0)
    with pytest.raises(TypeError, match="reference_points"):
        NSGAIIISampler(reference_points=[["a", 1]])
    with pytest.raises(ValueError, match="one weight per objective"):
        dspex.create_study(directions=["minimize"] * 3, sampler=NSGAIIISampler(reference_points=[[1, 0], [0, 1]]))


def test_optuna_scripts_use_them_through_import_optuna():
    script = textwrap.dedent("""
        import dspex
        dspex.install_as_optuna()
        import optuna
        from optuna.samplers.nsgaii import SBXCrossover
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        def f(trial):
            x = trial.suggest_float("x", 0, 1)
            y = trial.suggest_float("y", 0, 1)
            return x, (1 + y) * (1 - x ** 0.5)
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=10, crossover=SBXCrossover()))
        study.optimize(f, n_trials=60)
        print(type(study.sampler).__module__, len(study.best_trials) > 0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dspex.samplers", "True"]


def test_study_toml_with_a_genetic_sampler(tmp_path):
    (tmp_path / "obj.py").write_text("def f(trial):\n    x = trial.suggest_float('x', 0, 1)\n    n = trial.suggest_int('n', 0, 9)\n    return x + n, (1 - x) + (9 - n)\n")
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        objective = "obj:f"
        n_trials = 60
        directions = ["minimize", "minimize"]
        [sampler]
        kind = "nsgaiii"
        seed = 0
        population_size = 10
        crossover = { kind = "blx_alpha", alpha = 0.3 }
        mutation = { kind = "polynomial", eta = 10.0 }
        [search_space]
        x = { type = "float", low = 0.0, high = 1.0 }
        n = { type = "int", low = 0, high = 9 }
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml", "--output", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["complete"] == 60
    (tmp_path / "study.toml").write_text('objective = "obj:f"\ndirections = ["minimize", "minimize"]\n[sampler]\nkind = "nsgaii"\ncrossover = { kind = "two_point" }\n')
    bad = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "two_point" in bad.stderr


def test_the_side_by_side_harness_runs(tmp_path):
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "benches" / "samplers.py"
    out = subprocess.run([sys.executable, str(script), "nsga2", "--smoke", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert set(r["quality"]) == {"dtlz2", "constr"}
    for q in r["quality"].values():
        assert len(q["regret"]["dspex-nsga2"]) == 2 and all(x >= 0 for x in q["regret"]["dspex-nsga2"])
    assert r["speed"]["dspex"]["ms_per_trial_at"]["20"] > 0
