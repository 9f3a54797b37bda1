"""Optuna scripts on dspex: ``dspex run`` / ``install_as_optuna`` (``import optuna`` and its
submodules resolve to dspex), Optuna's defaults (MedianPruner, the ``optuna`` logger), and the
real Optuna's ``TrialPruned`` raised by an integration (optuna_integration's LightGBM pruning
callback on a real LightGBM model) counting as pruned."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

import dspex

SCRIPT = """
import sys
import optuna
import optuna.samplers
from optuna.trial import TrialState
from optuna.study import StudyDirection

optuna.logging.set_verbosity(optuna.logging.WARNING)

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    for step in range(3):
        trial.report((x - 2) ** 2 + step, step)
    return (x - 2) ** 2

if __name__ == "__main__":
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=12)
    done = study.get_trials(states=[TrialState.COMPLETE, TrialState.PRUNED])
    print("module", optuna.__name__, optuna.trial.__name__)
    print("argv", sys.argv[1:])
    print("pruner", type(study.pruner).__name__, study.direction == StudyDirection.MINIMIZE)
    print("trials", len(done))
"""


def _run(*args: str, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("how", [("-m", "dspex.cli", "run"), ("-m", "dspex.run")], ids=["dspex run", "python -m dspex.run"])
def test_an_unmodified_optuna_script_runs_on_dspex(tmp_path, how):
    (tmp_path / "script.py").write_text(SCRIPT)
    out = _run(*how, "script.py", "--flag", "value", cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["module"] == "dspex dspex.trial"
    assert lines["argv"] == "['--flag', 'value']"
    assert lines["pruner"] == "MedianPruner True"  # Optuna's default pruner
    assert lines["trials"] == "12"


def test_a_part_of_optuna_dspex_lacks_is_a_clear_import_error(tmp_path):
    (tmp_path / "s.py").write_text("import optuna\nimport optuna.no_such_part\n")
    out = _run("-m", "dspex.run", "s.py", cwd=str(tmp_path))
    assert out.returncode != 0
    assert "optuna.no_such_part is not part of dspex yet" in out.stderr, out.stderr
    out = _run("-m", "dspex.run", "missing.py", cwd=str(tmp_path))
    assert out.returncode == 2 and "no such file" in out.stderr


def test_a_handler_on_the_optuna_logger_sees_every_trial_line(tmp_path):
    code = textwrap.dedent(
        """
        import logging
        import dspex.as_optuna
        import optuna

        seen = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())
        logging.getLogger("optuna").addHandler(Keep())
        study = optuna.create_study()
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        print(sum(m.startswith("Trial ") and "finished" in m for m in seen))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        print(sum(m.startswith("Trial ") and "finished" in m for m in seen))
        """
    )
    out = _run("-c", code, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "3"]
    assert "Trial 0 finished" in out.stderr  # the default handler moved to the optuna logger


def test_the_real_optunas_trial_pruned_prunes_the_trial():
    optuna = pytest.importorskip("optuna")
    assert optuna.__name__ == "optuna" and optuna is not dspex  # the real one, beside dspex

    def objective(trial: dspex.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number % 2:
            raise optuna.TrialPruned("pruned by an integration")
        return x

    study = dspex.create_study()
    study.optimize(objective, n_trials=6)
    states = [t.state for t in study.trials]
    assert states.count(dspex.TrialState.PRUNED) == 3 and states.count(dspex.TrialState.COMPLETE) == 3


def _lightgbm_objective(optuna_integration, lgb, data):
    x_train, x_valid, y_train, y_valid = data

    def objective(trial):
        params = {
            "objective": "binary",
            "metric": "binary_logloss",
            "verbosity": -1,
            "num_threads": 1,
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 2, 64),
        }
        dtrain = lgb.Dataset(x_train, label=y_train)
        dvalid = lgb.Dataset(x_valid, label=y_valid)
        cb = optuna_integration.LightGBMPruningCallback(trial, "binary_logloss")
        booster = lgb.train(params, dtrain, num_boost_round=40, valid_sets=[dvalid], callbacks=[cb])
        return float(booster.best_score["valid_0"]["binary_logloss"])

    return objective


def test_an_integrations_pruning_callback_works_with_a_dspex_trial():
    """optuna_integration's LightGBMPruningCallback gets a dspex trial (duck typing), reports
    the validation loss each round, asks should_prune and raises the real Optuna's TrialPruned."""
    lgb = pytest.importorskip("lightgbm")
    optuna_integration = pytest.importorskip("optuna_integration")
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    data = train_test_split(x, y, test_size=0.25, random_state=0)
    study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=0), pruner=dspex.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5))
    study.optimize(_lightgbm_objective(optuna_integration, lgb, data), n_trials=16)
    states = [t.state for t in study.trials]
    assert dspex.TrialState.FAIL not in states
    assert states.count(dspex.TrialState.PRUNED) >= 1, states
    assert all(len(t.intermediate_values) >= 6 for t in study.trials)
    assert study.best_value < 0.3


def test_install_as_optuna_runs_an_integration_against_dspex(tmp_path):
    """Installed as optuna, the integration imports dspex as optuna: its TrialPruned is dspex's."""
    pytest.importorskip("lightgbm")
    pytest.importorskip("optuna_integration")
    code = textwrap.dedent(
        """
        import dspex
        dspex.install_as_optuna()
        import lightgbm as lgb
        import optuna
        import optuna_integration
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split
        from test_optuna_dropin import _lightgbm_objective

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        x, y = load_breast_cancer(return_X_y=True)
        data = train_test_split(x, y, test_size=0.25, random_state=0)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        study.optimize(_lightgbm_objective(optuna_integration, lgb, data), n_trials=12)
        states = [t.state.name for t in study.trials]
        print(optuna.TrialPruned is dspex.TrialPruned, "FAIL" in states, states.count("PRUNED") > 0)
        """
    )
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True"], out.stdout


def test_fixed_trial_base_trial_and_the_deprecated_suggest_methods():
    from dspex.trial import BaseTrial, FixedTrial

    def objective(trial: BaseTrial) -> float:
        x = trial.suggest_uniform("x", 0, 1)
        lr = trial.suggest_loguniform("lr", 1e-4, 1e-1)
        q = trial.suggest_discrete_uniform("q", 0, 1, 0.25)
        k = trial.suggest_int("k", 1, 3)
        trial.report(x, 0)
        assert not trial.should_prune()
        return x + lr + q + k

    with pytest.warns(FutureWarning, match="suggest_uniform has been deprecated"):
        assert objective(FixedTrial({"x": 0.5, "lr": 0.01, "q": 0.25, "k": 2})) == pytest.approx(2.76)
    fixed = FixedTrial({"x": 2.0}, number=7)
    with pytest.warns(UserWarning, match="out of the range"):
        assert fixed.suggest_float("x", 0, 1) == 2.0
    assert fixed.params == {"x": 2.0} and fixed.number == 7
    with pytest.raises(ValueError, match="'y' is not found"):
        fixed.suggest_float("y", 0, 1)
    study = dspex.create_study()
    with pytest.warns(FutureWarning):
        study.optimize(objective, n_trials=3)
    assert all(isinstance(t, BaseTrial) for t in study.trials)
    assert study.best_trial.distributions["lr"].log and study.best_trial.distributions["q"].step == 0.25
    from dspex.distributions import UniformDistribution, _convert_old_distribution_to_new_distribution

    with pytest.warns(FutureWarning):
        old = UniformDistribution(0, 1)
    assert type(_convert_old_distribution_to_new_distribution(old)) is dspex.distributions.FloatDistribution


def test_max_trials_callback_metric_names_summaries_and_copy_study(tmp_path):
    from dspex.study import MaxTrialsCallback

    src = f"sqlite:///{tmp_path / 'a.db'}"
    study = dspex.create_study(study_name="s", storage=src, direction="maximize")
    study.set_user_attr("owner", "me")
    study.set_metric_names(["accuracy"])
    with pytest.raises(ValueError, match="match the length"):
        study.set_metric_names(["a", "b"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=100, callbacks=[MaxTrialsCallback(4)])
    assert len(study.trials) == 4 and study.metric_names == ["accuracy"]
    # Optuna's constructor loads a stored study
    again = dspex.Study(study_name="s", storage=src)
    assert again.best_value == study.best_value

    dst = f"sqlite:///{tmp_path / 'b.db'}"
    dspex.copy_study(from_study_name="s", from_storage=src, to_storage=dst, to_study_name="t")
    copied = dspex.load_study(study_name="t", storage=dst)
    assert [t.params for t in copied.trials] == [t.params for t in study.trials]
    assert copied.user_attrs == {"owner": "me"} and copied.metric_names == ["accuracy"]
    [summary] = dspex.get_all_study_summaries(dst)
    assert (summary.study_name, summary.n_trials, summary.direction) == ("t", 4, dspex.StudyDirection.MAXIMIZE)
    assert summary.best_trial is not None and summary.best_trial.value == study.best_value
    assert summary.user_attrs == {"owner": "me"} and summary.datetime_start is not None


def test_optuna_integration_modules_resolve_under_the_alias(tmp_path):
    """``optuna.integration.X`` (Optuna's shim over optuna-integration), and LightGBMTuner, which
    subclasses Study with Optuna's constructor and writes trial attributes through trial.storage."""
    pytest.importorskip("lightgbm")
    pytest.importorskip("optuna_integration")
    code = textwrap.dedent(
        """
        import dspex.as_optuna
        import optuna
        import optuna.integration.lightgbm as lgb
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        x, y = load_breast_cancer(return_X_y=True)
        xt, xv, yt, yv = train_test_split(x, y, test_size=0.25, random_state=0)
        params = {"objective": "binary", "metric": "binary_logloss", "verbosity": -1, "num_threads": 1}
        tuner = lgb.LightGBMTuner(params, lgb.Dataset(xt, label=yt), valid_sets=[lgb.Dataset(xv, label=yv)],
                                  num_boost_round=20, show_progress_bar=False, optuna_seed=0)
        tuner.run()
        print(len(tuner.study.trials), tuner.best_score < 0.3, optuna.integration.LightGBMPruningCallback.__module__)
        """
    )
    out = _run("-c", code, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    n, good, module = out.stdout.split()
    assert int(n) > 50 and good == "True" and module.startswith("optuna_integration")


def _constrained(trial):
    """Optuna's constrained quadratic: feasible inside a circle and outside another."""
    x = trial.suggest_float("x", -15, 30)
    y = trial.suggest_float("y", -15, 30)
    c0 = (x - 5) ** 2 + y**2 - 25
    c1 = -((x - 8) ** 2) - (y + 3) ** 2 + 7.7
    trial.set_user_attr("constraint", (c0, c1))
    return 4 * x**2 + 4 * y**2, c0, c1


@pytest.mark.parametrize("how", ["constraints_func", "set_constraint"])
def test_constraints_steer_tpe_and_the_best_trial_is_feasible(tmp_path, how):
    storage = f"sqlite:///{tmp_path / 'c.db'}"
    if how == "constraints_func":
        with pytest.warns(FutureWarning, match="constraints_func has been deprecated"):
            sampler = dspex.samplers.TPESampler(seed=0, constraints_func=lambda t: t.user_attrs["constraint"])
        study = dspex.create_study(sampler=sampler, storage=storage)
        study.optimize(lambda t: _constrained(t)[0], n_trials=120)
    else:
        def objective(trial):
            v, c0, c1 = _constrained(trial)
            trial.set_constraint("c0", c0)
            trial.set_constraint("c1", c1)
            return v

        study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=0), storage=storage)
        study.optimize(objective, n_trials=120)
    feasible = [all(v <= 0 for v in t.constraints.values()) for t in study.trials]
    assert all(len(t.constraints) == 2 for t in study.trials)
    # TPE learns where the feasible region is: more feasible trials after the random start
    assert sum(feasible[60:]) > 2 * sum(feasible[:10]) and sum(feasible[60:]) >= 20
    best = study.best_trial
    assert all(v <= 0 for v in best.constraints.values())
    assert best.value == min(t.value for t, ok in zip(study.trials, feasible) if ok)
    # infeasible trials with better values exist but are never the best
    assert any(t.value < best.value for t, ok in zip(study.trials, feasible) if not ok)


def test_constraint_inputs_are_checked_and_infeasible_only_studies_have_no_best():
    study = dspex.create_study()

    def objective(trial):
        trial.set_constraint("c", 1.0)
        with pytest.raises(TypeError, match="must be a float"):
            trial.set_constraint("d", "big")
        with pytest.raises(ValueError, match="NaN is not allowed"):
            trial.set_constraint("d", float("nan"))
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=3)
    assert [t.constraints for t in study.trials] == [{"c": 1.0}] * 3
    with pytest.raises(ValueError, match="no feasible trials"):
        study.best_trial
    study.add_trial(dspex.create_trial(value=5.0, params={}, distributions={}, constraints={"c": 0.0}))
    assert study.best_value == 5.0 and study.best_trial.constraints == {"c": 0.0}
    # a constraints_func that fails (or returns garbage) fails its trial, not the study
    with pytest.warns(FutureWarning):
        bad = dspex.samplers.TPESampler(constraints_func=lambda t: [float("nan")])
    s2 = dspex.create_study(sampler=bad)
    s2.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, catch=(ValueError,))
    assert [t.state for t in s2.trials] == [dspex.TrialState.FAIL] * 2
    assert "NaN" in s2.trials[0].system_attrs["fail_reason"]
    with pytest.raises(TypeError, match="must be a callable"):
        dspex.samplers.TPESampler(constraints_func=3)


def test_pareto_front_keeps_feasible_trials_only():
    study = dspex.create_study(directions=["minimize", "minimize"])
    for a, b, c in [(0.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (2.0, 2.0, 0.0)]:
        study.add_trial(dspex.create_trial(values=[a, b], params={}, distributions={}, constraints={"c": c}))
    assert sorted(t.values for t in study.best_trials) == [[0.5, 0.5], [1.0, 0.0]]


class _GridWalk(dspex.samplers.BaseSampler):
    """A sampler written in Python: x relative (a walk over a grid), the rest independent."""

    def __init__(self):
        self.calls = []
        self.fallback = dspex.samplers.RandomSampler(seed=0)

    def before_trial(self, study, trial):
        self.calls.append(("before", trial.number))

    def infer_relative_search_space(self, study, trial):
        return dspex.search_space.intersection_search_space(study.trials)

    def sample_relative(self, study, trial, search_space):
        return {"x": (trial.number % 5) / 4} if "x" in search_space else {}

    def sample_independent(self, study, trial, name, distribution):
        self.calls.append(("independent", name))
        return self.fallback.sample_independent(study, trial, name, distribution)

    def after_trial(self, study, trial, state, values):
        self.calls.append(("after", trial.number, state.name, values))


def _custom_objective(trial):
    x = trial.suggest_float("x", 0, 1)
    k = trial.suggest_int("k", 1, 9, log=True)
    c = trial.suggest_categorical("c", ["a", "b"])
    if c == "b" and trial.number == 3:
        raise dspex.TrialPruned()
    return x + k


@pytest.mark.parametrize("where", ["embedded", "served"])
def test_a_sampler_written_in_python_is_called_as_optuna_calls_it(tmp_path, where):
    sampler = _GridWalk()
    if where == "served":
        from test_remote import _start_server, _stop

        server, addr = _start_server()
        study = dspex.create_study(sampler=sampler, engine=addr, study_name="custom")
    else:
        server = None
        study = dspex.create_study(sampler=sampler, storage=f"sqlite:///{tmp_path / 's.db'}")
    try:
        study.enqueue_trial({"x": 0.125})
        study.optimize(_custom_objective, n_trials=8)
        trials = study.trials
        assert trials[0].params["x"] == 0.125  # enqueued values come first
        # from trial 2 on (once a trial completed) x is the sampler's relative sample
        assert [t.params["x"] for t in trials[2:]] == [(n % 5) / 4 for n in range(2, 8)]
        assert all(1 <= t.params["k"] <= 9 and t.params["c"] in ("a", "b") for t in trials)
        assert [c[1] for c in sampler.calls if c[0] == "before"] == list(range(8))
        after = [c for c in sampler.calls if c[0] == "after"]
        assert [a[2] for a in after] == [t.state.name for t in trials]
        done = [a for a in after if a[2] == "COMPLETE"]
        assert all(a[3] == [trials[a[1]].value] for a in done)
        # the engine recorded what the sampler chose, with the distributions
        assert trials[5].distributions["k"].log
    finally:
        if server is not None:
            _stop(server)


class _Delegating(dspex.samplers.BaseSampler):
    """A sampler written in Python that leaves the work to a built-in one (as wrappers do)."""

    def __init__(self, inner):
        self.inner = inner

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        return self.inner.sample_independent(study, trial, name, distribution)


def _mixed_objective(trial):
    x = trial.suggest_float("x", -4, 4)
    k = trial.suggest_int("k", 1, 16, log=True)
    c = trial.suggest_categorical("c", ["a", "b", None])
    return (x - 1) ** 2 + abs(k - 4) + (c != "b")


@pytest.mark.parametrize("where", ["embedded", "served"])
def test_built_in_samplers_and_pruners_answer_optunas_calls_from_python(where):
    if where == "served":
        from test_remote import _start_server, _stop

        server, addr = _start_server()
        make = lambda sampler, pruner=None: dspex.create_study(sampler=sampler, pruner=pruner, engine=addr)  # noqa: E731
    else:
        server = None
        make = lambda sampler, pruner=None: dspex.create_study(sampler=sampler, pruner=pruner)  # noqa: E731
    try:
        tpe = dspex.samplers.TPESampler(seed=0, n_startup_trials=8, multivariate=True)
        study = make(_Delegating(tpe))
        study.optimize(_mixed_objective, n_trials=40)
        trials = study.trials
        assert len(trials) == 40 and all(t.state == dspex.TrialState.COMPLETE for t in trials)
        assert all(-4 <= t.params["x"] <= 4 and 1 <= t.params["k"] <= 16 and t.params["c"] in ("a", "b", None) for t in trials)
        # TPE learned: its 32 trials are better than the 8 random ones, on average, and one
        # is close to the optimum (x=1, k=4, c="b": 0). The same TPE in the engine directly,
        # seed 0, embedded: mean 3.9 after the startup trials, best 0.03.
        mean = lambda ts: sum(t.value for t in ts) / len(ts)  # noqa: E731
        assert mean(trials[8:]) < 0.7 * mean(trials[:8])
        assert min(t.value for t in trials) < 0.5
        # multivariate: the relative space is the study's, sampled jointly
        t = study.ask()
        space = tpe.infer_relative_search_space(study, t)
        assert set(space) == {"x", "k", "c"}
        joint = tpe.sample_relative(study, t, space)
        assert set(joint) == {"x", "k", "c"} and isinstance(joint["k"], int)
        study.tell(t, state=dspex.TrialState.FAIL)
        # A built-in pruner answers prune(study, trial) as trial.should_prune() decides.
        pruner = dspex.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        study = make(dspex.samplers.RandomSampler(seed=1), pruner)

        def reporting(trial):
            for step in range(3):
                trial.report(trial.number * 1.0, step)
                assert pruner.prune(study, trial) == trial.should_prune()
            return trial.number * 1.0

        study.optimize(reporting, n_trials=6)
        t = study.ask()
        t.report(100.0, 0)
        assert pruner.prune(study, t) is True
        t.report(-1.0, 1)
        assert pruner.prune(study, t) is False
    finally:
        if server is not None:
            _stop(server)
    with pytest.raises(TypeError, match="samples a dspex study"):
        tpe.sample_independent(object(), t, "x", dspex.distributions.FloatDistribution(0, 1))
    with pytest.raises(NotImplementedError, match="written in Python implements it"):
        dspex.samplers.BaseSampler().sample_independent(study, t, "x", dspex.distributions.FloatDistribution(0, 1))


def test_a_python_samplers_bad_value_fails_the_trial_with_a_clear_error():
    class Outside(dspex.samplers.BaseSampler):
        def sample_independent(self, study, trial, name, distribution):
            return 7.0

    study = dspex.create_study(sampler=Outside())
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1, catch=(ValueError,))
    assert study.trials[0].state == dspex.TrialState.FAIL
    assert "the sampler's value 7.0 for \"x\" does not fit" in study.trials[0].system_attrs["fail_reason"]
    with pytest.raises(ValueError, match="implement Optuna's sampler interface"):
        dspex.create_study(sampler=object())


def test_a_sampler_written_against_the_real_optuna_runs_on_dspex():
    optuna = pytest.importorskip("optuna")

    class Fixed(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            return distribution.high

    study = dspex.create_study(sampler=Fixed())
    study.optimize(lambda t: t.suggest_float("x", 0, 2) + t.suggest_int("n", 0, 3), n_trials=3)
    assert [t.value for t in study.trials] == [5.0] * 3


def test_random_sampler_samples_every_distribution_in_python():
    from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    r = dspex.samplers.RandomSampler(seed=1)
    dists = [FloatDistribution(0, 1), FloatDistribution(1e-3, 1, log=True), FloatDistribution(0, 1, step=0.25),
             IntDistribution(1, 100, log=True), IntDistribution(0, 10, step=5), CategoricalDistribution(["u", None, 3])]
    for d in dists:
        for _ in range(200):
            v = r.sample_independent(None, None, "p", d)
            ok = v in d.choices if isinstance(d, CategoricalDistribution) else d._contains(v)
            assert ok, (d, v)
    assert {r.sample_independent(None, None, "p", dists[4]) for _ in range(200)} == {0, 5, 10}


def test_a_pruner_written_in_python_decides_in_the_evaluating_process():
    seen = []

    class StopAtThree(dspex.pruners.BasePruner):
        def prune(self, study, trial):
            seen.append((trial.number, trial.last_step))
            return trial.last_step is not None and trial.last_step >= 3 and trial.intermediate_values[trial.last_step] > 0.5

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(6):
            trial.report(x, step)
            if trial.should_prune():
                raise dspex.TrialPruned()
        return x

    study = dspex.create_study(pruner=StopAtThree(), sampler=dspex.samplers.RandomSampler(seed=3))
    study.optimize(objective, n_trials=20)
    for t in study.trials:
        if t.state == dspex.TrialState.PRUNED:
            assert t.params["x"] > 0.5 and t.last_step == 3
        else:
            assert t.params["x"] <= 0.5 and t.last_step == 5
    assert any(t.state == dspex.TrialState.PRUNED for t in study.trials) and seen[0] == (0, 0)
    with pytest.raises(ValueError, match="implement Optuna's prune"):
        dspex.create_study(pruner=object())


def test_check_distribution_compatibility_follows_the_engines_rule():
    from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution, check_distribution_compatibility

    check_distribution_compatibility(FloatDistribution(0, 1), FloatDistribution(-5, 5))  # ranges may differ
    check_distribution_compatibility(CategoricalDistribution(["a", 1]), CategoricalDistribution(["a", 1]))
    for old, new, why in (
        (FloatDistribution(0, 1), IntDistribution(0, 1), "kind"),
        (FloatDistribution(1, 2), FloatDistribution(1, 2, log=True), "log"),
        (CategoricalDistribution(["a", "b"]), CategoricalDistribution(["a", "c"]), "choices"),
    ):
        with pytest.raises(ValueError, match=why):
            check_distribution_compatibility(old, new)


def test_fail_stale_trials_fails_the_trials_of_a_dead_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    dspex.create_study(study_name="s", storage=url)
    # A process asks for a trial and dies without telling it (no clean-up: os._exit).
    code = (
        "import os, dspex\n"
        f"st = dspex.storages.RDBStorage({url!r}, heartbeat_interval=1)\n"
        "s = dspex.load_study(study_name='s', storage=st)\n"
        "t = s.ask(); t.suggest_float('x', 0, 1)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    storage = dspex.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    study = dspex.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    time.sleep(2.5)
    dspex.storages.fail_stale_trials(study)
    assert [t.state.name for t in study.get_trials()] == ["FAIL"]
    dspex.storages.fail_stale_trials(dspex.create_study())  # in memory: nothing to fail


def test_relative_params_show_what_a_python_sampler_chose_as_the_trial_started():
    seen = []

    def objective(trial):
        seen.append((trial.relative_params, set(trial.relative_search_space)))
        return trial.suggest_float("x", 0, 1)

    dspex.create_study(sampler=_GridWalk()).optimize(objective, n_trials=3)
    assert seen == [({}, set()), ({"x": 0.25}, {"x"}), ({"x": 0.5}, {"x"})]
    engine = []
    dspex.create_study().optimize(lambda t: engine.append(t.relative_params) or t.suggest_float("x", 0, 1), n_trials=2)
    assert engine == [{}, {}]
