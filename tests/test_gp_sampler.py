"""GPSampler: Gaussian-process Bayesian optimisation in the engine, through the Python API,
Optuna's name for it, pickling, concurrent trials and study.toml."""

import json
import pathlib
import pickle
import statistics
import subprocess
import sys
import textwrap

import pytest

import dspex
from dspex.samplers import GPSampler, RandomSampler, TPESampler

dspex.logging.set_verbosity(dspex.logging.WARNING)


def _quadratic(trial):
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", 1e-3, 10, log=True)
    n = trial.suggest_int("n", -4, 4)
    c = trial.suggest_categorical("c", ["bad", "good", "worse"])
    penalty = {"bad": 4.0, "good": 0.0, "worse": 9.0}[c]
    return (x - 1.3) ** 2 + (y - 2.0) ** 2 + (n - 1) ** 2 + penalty


def _best(sampler, n_trials=30):
    study = dspex.create_study(sampler=sampler)
    study.optimize(_quadratic, n_trials=n_trials)
    return study


def test_gp_finds_the_minimum_of_a_mixed_space_far_better_than_random():
    gp = [_best(GPSampler(seed=s)).best_value for s in range(3)]
    rnd = [_best(RandomSampler(seed=s)).best_value for s in range(3)]
    assert statistics.median(gp) < 0.25 * statistics.median(rnd), (gp, rnd)
    study = _best(GPSampler(seed=0))
    assert study.best_params["c"] == "good" and study.best_params["n"] == 1


def test_seeded_runs_one_after_another_repeat():
    a = [t.params for t in _best(GPSampler(seed=5), 15).trials]
    b = [t.params for t in _best(GPSampler(seed=5), 15).trials]
    assert a == b


def test_startup_trials_come_from_the_independent_sampler():
    # With a startup as long as the study, every trial is the independent sampler's: the same
    # sequence as that sampler alone (sampling parameter by parameter, as an independent
    # sampler is asked to: TPE's multivariate mode would differ after its own startup).
    inner = [t.params for t in _best(TPESampler(seed=3, multivariate=False), 12).trials]
    gp = [t.params for t in _best(GPSampler(seed=9, n_startup_trials=100, independent_sampler=TPESampler(seed=3, multivariate=False)), 12).trials]
    assert gp == inner


def test_concurrent_trials_go_to_different_points():
    study = dspex.create_study(sampler=GPSampler(seed=1, n_startup_trials=4, deterministic_objective=True))

    async def objective(trial):
        import asyncio

        x = trial.suggest_float("x", -3, 3)
        await asyncio.sleep(0.01)
        return (x - 0.5) ** 2

    study.optimize(objective, n_trials=24, concurrency=4)
    xs = [t.params["x"] for t in study.trials]
    # Two trials that start at the same moment are sampled from the same history (neither sees
    # the other) and can coincide; the others see the running ones and go elsewhere.
    assert len(set(xs)) >= 22
    assert study.best_value < 0.05


def test_optuna_name_and_pickle():
    import optuna  # the real one is installed; under install_as_optuna it is dspex's

    assert hasattr(optuna.samplers, "GPSampler")
    s = GPSampler(seed=2, independent_sampler=TPESampler(seed=2, multivariate=True), deterministic_objective=True)
    t = pickle.loads(pickle.dumps(s))
    assert t._spec == s._spec
    assert t._spec[1]["independent_sampler"] == {"kind": "tpe", **{k: v for k, v in TPESampler(seed=2, multivariate=True)._spec[1].items() if v is not None}}
    a = [tr.params for tr in _best(s, 12).trials]
    b = [tr.params for tr in _best(t, 12).trials]
    assert a == b


def test_constraints_keep_the_best_trial_feasible_and_near_the_boundary():
    # min (x - 2)^2 + (y - 2)^2 subject to x + y <= 2: the optimum (1, 1), value 2, is on the
    # boundary; the unconstrained one (2, 2) is infeasible.
    def objective(trial):
        x = trial.suggest_float("x", 0, 3)
        y = trial.suggest_float("y", 0, 3)
        trial.set_user_attr("c", [x + y - 2.0])
        return (x - 2) ** 2 + (y - 2) ** 2

    with pytest.warns(FutureWarning, match="constraints_func"):
        sampler = GPSampler(seed=0, constraints_func=lambda t: t.user_attrs["c"])
    study = dspex.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)
    best = study.best_trial
    assert best.user_attrs["c"][0] <= 0 and best.value < 2.1
    # trial.set_constraint works the same way, without constraints_func.
    def with_set_constraint(trial):
        v = objective(trial)
        trial.set_constraint("sum", trial.user_attrs["c"][0])
        return v

    other = dspex.create_study(sampler=GPSampler(seed=0))
    other.optimize(with_set_constraint, n_trials=30)
    assert [t.params for t in other.trials] == [t.params for t in study.trials]
    random = dspex.create_study(sampler=RandomSampler(seed=0))
    random.optimize(objective, n_trials=30)
    assert best.value < min(t.value for t in random.trials if t.user_attrs["c"][0] <= 0)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(TypeError, match="constraints_func"):
        GPSampler(constraints_func=3)

    class Mine(dspex.samplers.BaseSampler):
        def sample_independent(self, study, trial, name, dist):
            return 0.0

    with pytest.raises(TypeError, match="independent_sampler"):
        GPSampler(independent_sampler=Mine())
    with pytest.raises(ValueError, match="n_startup_trials"):
        GPSampler(n_startup_trials=-1)
    with pytest.raises(TypeError, match="n_startup_trials"):
        GPSampler(n_startup_trials=2.5)
    with pytest.raises(TypeError, match="seed"):
        GPSampler(seed="0")


def _zdt1(trial):
    x = [trial.suggest_float(f"x{i}", 0, 1) for i in range(3)]
    g = 1 + 9 * (x[1] + x[2]) / 2
    # Feasible below the line f1 + f2 <= 1.5: the whole front is, many other points are not.
    f1, f2 = x[0], g * (1 - (x[0] / g) ** 0.5)
    trial.set_constraint("sum", f1 + f2 - 1.5)
    return f1, f2


def _feasible_hypervolume(study):
    from dspex.bench.stats import hypervolume

    ok = [t.values for t in study.trials if t.state.name == "COMPLETE" and t.constraints["sum"] <= 0]
    return hypervolume(ok, (1.1, 1.1))


def test_several_objectives_and_constraints_by_expected_hypervolume_improvement():
    def run(sampler, concurrency=1):
        study = dspex.create_study(directions=["minimize", "minimize"], sampler=sampler)
        study.optimize(_zdt1, n_trials=30, concurrency=concurrency)
        return study

    gp = [_feasible_hypervolume(run(GPSampler(seed=s))) for s in range(3)]
    rnd = [_feasible_hypervolume(run(RandomSampler(seed=s))) for s in range(3)]
    # The true front (all of it feasible) has a hypervolume of 0.877.
    assert statistics.median(gp) > 0.65 and statistics.median(gp) > statistics.median(rnd) + 0.3, (gp, rnd)
    study = run(GPSampler(seed=1), concurrency=3)
    assert len(study.trials) == 30 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len(study.best_trials) >= 3


def test_study_toml_with_a_gp_sampler(tmp_path):
    (tmp_path / "obj.py").write_text("def f(trial):\n    x = trial.suggest_float('x', -2, 2)\n    return (x - 0.7) ** 2\n")
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        objective = "obj:f"
        n_trials = 20
        [sampler]
        kind = "gp"
        seed = 0
        deterministic_objective = true
        [sampler.independent_sampler]
        kind = "random"
        seed = 0
        [search_space]
        x = { type = "float", low = -2.0, high = 2.0 }
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml", "--output", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["complete"] == 20 and r["best_value"] < 1e-3
    (tmp_path / "study.toml").write_text('objective = "obj:f"\n[sampler]\nkind = "gp"\nn_startup_trials = -3\n')
    bad = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", "study.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "study.toml:" in bad.stderr and "n_startup_trials" in bad.stderr


@pytest.mark.parametrize("multi", [False, True])
def test_the_side_by_side_harness_runs(tmp_path, multi):
    script = pathlib.Path(__file__).resolve().parent.parent / "benches" / "samplers.py"
    out = subprocess.run([sys.executable, str(script), "gp", "--smoke", "--json", *(["--multi"] if multi else [])], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert set(r["quality"]) == ({"dtlz2", "constr"} if multi else {"branin", "mixed_int_cat"})
    for q in r["quality"].values():
        assert len(q["regret"]["dspex-gp"]) == 2 and all(x >= -1e-6 for x in q["regret"]["dspex-gp"])
    assert r["speed"]["dspex"]["ms_per_trial_at"]["20"] > 0
