"""The Optuna-compatible API: study lifecycle, ask/tell, enqueue, add_trial, concurrency,
callbacks, pruning, attributes, export."""

import asyncio
import datetime
import math
import subprocess
import sys
import threading
import time

import pytest

import dspex
import dspex as optuna
from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from dspex.trial import TrialState


def test_typical_optuna_script_runs_with_import_dspex_as_optuna():
    def objective(trial):
        x = trial.suggest_float("x", -10, 10)
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        n = trial.suggest_int("n_layers", 1, 4)
        units = trial.suggest_int("units", 16, 128, step=16)
        act = trial.suggest_categorical("act", ["relu", "tanh", None])
        trial.set_user_attr("note", f"n={n}")
        return (x - 3) ** 2 + math.log10(lr) ** 2 / 100 + n + units / 1000 + (act == "tanh")

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=10))
    study.optimize(objective, n_trials=40)
    assert len(study.trials) == 40
    best = study.best_trial
    assert best.value == study.best_value
    assert best.params == study.best_params
    assert set(best.params) == {"x", "lr", "n_layers", "units", "act"}
    assert isinstance(best.params["n_layers"], int) and 1 <= best.params["n_layers"] <= 4
    assert best.params["units"] % 16 == 0
    assert best.params["act"] in ("relu", "tanh", None)
    assert isinstance(best.distributions["lr"], FloatDistribution) and best.distributions["lr"].log
    assert best.user_attrs["note"] == f"n={best.params['n_layers']}"
    assert isinstance(best.datetime_start, datetime.datetime)
    assert isinstance(best.duration, datetime.timedelta)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    # Re-running the objective on the best trial (FrozenTrial answers suggest_*).
    assert objective(best) == pytest.approx(best.value)


def test_ask_and_tell():
    study = dspex.create_study(direction="maximize", sampler=dspex.samplers.RandomSampler(seed=0))
    for i in range(5):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        assert trial.params == {"x": x}
        ft = study.tell(trial, x)
        assert ft.state == TrialState.COMPLETE and ft.value == x
    t = study.ask({"y": IntDistribution(0, 3)})
    assert 0 <= t.params["y"] <= 3
    study.tell(t, state=TrialState.PRUNED)
    t2 = study.ask()
    study.tell(t2.number, state=TrialState.FAIL)
    with pytest.raises(ValueError, match="Cannot tell a FAIL trial"):
        study.tell(t2, 1.0)
    assert study.tell(t2, 1.0, skip_if_finished=True).state == TrialState.FAIL
    t3 = study.ask()
    with pytest.raises(ValueError):
        study.tell(t3, float("nan"), state=TrialState.COMPLETE)
    assert study.tell(t3, float("nan")).state == TrialState.FAIL
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    assert [t.state for t in study.get_trials(states=[TrialState.PRUNED, TrialState.FAIL])] == [
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.FAIL,
    ]
    assert study.best_value == max(t.value for t in study.get_trials(states=[TrialState.COMPLETE]))


def test_enqueue_trial_params_are_used_first():
    study = dspex.create_study()
    study.enqueue_trial({"x": 1.5, "k": "b"}, user_attrs={"source": "manual"})
    study.enqueue_trial({"x": 1.5, "k": "b"}, skip_if_exists=True)
    seen = []

    def objective(trial):
        seen.append((trial.suggest_float("x", 0, 2), trial.suggest_categorical("k", ["a", "b"])))
        return 0.0

    study.optimize(objective, n_trials=3)
    assert seen[0] == (1.5, "b")
    assert study.trials[0].user_attrs == {"source": "manual"}
    assert len(study.trials) == 3


def test_add_trial_with_create_trial():
    study = dspex.create_study()
    study.add_trial(
        dspex.trial.create_trial(
            params={"x": 2.0, "c": "a"},
            distributions={"x": FloatDistribution(0, 10), "c": CategoricalDistribution(["a", "b"])},
            value=4.0,
            intermediate_values={0: 10.0, 1: 5.0},
        )
    )
    study.add_trials([dspex.trial.create_trial(state=TrialState.FAIL)])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.best_params == {"x": 2.0, "c": "a"}
    assert study.best_trial.intermediate_values == {0: 10.0, 1: 5.0}
    with pytest.raises(ValueError):
        dspex.trial.create_trial(params={"x": 1.0}, distributions={}, value=1.0)
    with pytest.raises(ValueError):
        study.add_trial(dspex.trial.create_trial(params={"x": 20.0}, distributions={"x": FloatDistribution(0, 10)}, value=1.0))


def test_multi_objective_best_trials_is_the_pareto_front():
    study = dspex.create_study(directions=["minimize", "maximize"], sampler=dspex.samplers.RandomSampler(seed=3))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        return x, x * x

    study.optimize(objective, n_trials=30)
    front = study.best_trials
    assert front
    # minimize x, maximize x^2: each trial is on the front (x^2 is monotone in x) only if no other
    # trial dominates it; check the definition directly.
    values = [t.values for t in study.trials]
    for t in front:
        a = t.values
        assert not any(b[0] <= a[0] and b[1] >= a[1] and (b[0] < a[0] or b[1] > a[1]) for b in values)
    with pytest.raises(RuntimeError):
        study.best_trial
    assert len(study.directions) == 2


def test_async_objectives_run_concurrently_on_one_loop():
    live = 0
    peak = 0
    loops = set()

    async def objective(trial):
        nonlocal live, peak
        loops.add(id(asyncio.get_running_loop()))
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.02)
        live -= 1
        return trial.suggest_float("x", 0, 1)

    study = dspex.create_study(sampler=dspex.samplers.RandomSampler(seed=0))
    start = time.monotonic()
    study.optimize(objective, n_trials=600, concurrency=200)
    elapsed = time.monotonic() - start
    assert len(study.trials) == 600
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(loops) == 1
    assert 100 < peak <= 200
    assert elapsed < 30  # sequentially it would take 12 s; generous sanity bound


@pytest.mark.parametrize("inside_loop", [False, True])
def test_an_async_trial_the_storage_cannot_record_ends_the_run_with_the_error(tmp_path, inside_loop):
    # An event loop's trial is recorded in the background: a storage failure there must still
    # reach the caller, as it does when the trial is told at once.
    import sqlite3

    path = tmp_path / "s.db"

    async def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE trial_values")
        await asyncio.sleep(0)
        return x

    study = dspex.create_study(storage=f"sqlite:///{path}")
    with pytest.raises(dspex.exceptions.StorageInternalError, match="trial_values"):
        if inside_loop:
            asyncio.run(study.optimize_async(objective, n_trials=1))
        else:
            study.optimize(objective, n_trials=1)


def test_optimize_async_inside_a_running_loop():
    async def objective(trial):
        await asyncio.sleep(0)
        return trial.suggest_float("x", 0, 1)

    async def main():
        study = dspex.create_study()
        await study.optimize_async(objective, n_trials=20, concurrency=5)
        return study

    assert len(asyncio.run(main()).trials) == 20


def test_sync_objectives_run_on_threads():
    lock = threading.Lock()
    live = 0
    peak = 0
    threads = set()

    def objective(trial):
        nonlocal live, peak
        with lock:
            live += 1
            peak = max(peak, live)
            threads.add(threading.get_ident())
        time.sleep(0.01)
        with lock:
            live -= 1
        return trial.suggest_float("x", 0, 1)

    study = dspex.create_study()
    study.optimize(objective, n_trials=40, n_jobs=4)
    assert len(study.trials) == 40
    assert 1 < peak <= 4
    assert len(threads) > 1


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_n_trials_is_exact(concurrency):
    study = dspex.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=53, concurrency=concurrency)
    assert len(study.trials) == 53
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=7, concurrency=concurrency)
    assert len(study.trials) == 60


def test_callbacks_see_each_finished_trial_and_can_stop():
    seen = []

    def cb(study, trial):
        seen.append((trial.number, trial.state))
        if trial.number == 4:
            study.stop()

    study = dspex.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=100, callbacks=[cb])
    assert seen == [(i, TrialState.COMPLETE) for i in range(5)]
    assert len(study.trials) == 5
    with pytest.raises(RuntimeError):
        study.stop()


def test_stop_from_the_objective():
    def objective(trial):
        if trial.number == 4:
            trial.study.stop()
        return trial.suggest_float("x", 0, 10)

    study = dspex.create_study()
    study.optimize(objective, n_trials=10)
    assert len(study.trials) == 5


def test_timeout():
    def objective(trial):
        time.sleep(0.02)
        return trial.suggest_float("x", 0, 1)

    study = dspex.create_study()
    start = time.monotonic()
    study.optimize(objective, timeout=0.3)
    assert time.monotonic() - start < 10
    n = len(study.trials)
    assert 2 <= n < 100
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_trial_timeout_fails_a_slow_trial():
    def objective(trial):
        if trial.number == 1:
            time.sleep(0.5)
        return trial.suggest_float("x", 0, 1)

    study = dspex.create_study()
    study.optimize(objective, n_trials=3, concurrency=2, trial_timeout=0.2, max_retries=0)
    t1 = study.trials[1]
    assert t1.state == TrialState.FAIL
    assert "timed out" in t1.system_attrs["fail_reason"]
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2

    # With retries (the default, 2), the timed-out trial is re-run with its parameters.
    study = dspex.create_study()
    study.optimize(objective, n_trials=3, concurrency=2, trial_timeout=0.2)
    trials = study.trials
    assert trials[1].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_pruning_with_trial_pruned_and_median_pruner():
    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(10):
            value = x * (10 - step)
            trial.report(value, step)
            if trial.should_prune():
                raise dspex.TrialPruned()
        return x

    study = dspex.create_study(pruner=dspex.pruners.MedianPruner(n_startup_trials=3), sampler=dspex.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=40)
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    # a pruned trial keeps its last intermediate value as its value
    assert all(t.value == t.intermediate_values[t.last_step] for t in pruned)
    # TrialPruned raised on its own (no pruner) also prunes
    s2 = dspex.create_study()

    def always(trial):
        raise dspex.TrialPruned("not worth it")

    s2.optimize(always, n_trials=3)
    assert [t.state for t in s2.trials] == [TrialState.PRUNED] * 3


def test_report_twice_warns_and_keeps_the_first():
    study = dspex.create_study()
    t = study.ask()
    t.report(1.0, 0)
    with pytest.warns(UserWarning, match="already reported"):
        t.report(2.0, 0)
    with pytest.raises(TypeError):
        t.report("x", 1)
    study.tell(t, 0.0)
    assert study.trials[0].intermediate_values == {0: 1.0}


def test_every_pruner_can_be_built():
    p = dspex.pruners
    for pruner in [
        p.NopPruner(),
        p.MedianPruner(),
        p.PercentilePruner(25.0),
        p.SuccessiveHalvingPruner(),
        p.HyperbandPruner(),
        p.ThresholdPruner(upper=1.0),
        p.PatientPruner(p.MedianPruner(), patience=2),
        p.PatientPruner(None, patience=1),
        p.WilcoxonPruner(),
    ]:
        study = dspex.create_study(pruner=pruner)
        study.optimize(lambda t: [t.report(float(s), s) for s in range(3)] and 1.0, n_trials=3)
        assert len(study.trials) == 3


def test_hyperband_brackets_follow_the_study_name_as_in_optuna():
    real_optuna = pytest.importorskip("optuna")
    real_optuna.logging.set_verbosity(real_optuna.logging.WARNING)

    def states(mod, name):
        pruner = mod.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
        study = mod.create_study(study_name=name, pruner=pruner, sampler=mod.samplers.RandomSampler(seed=0))

        def objective(trial):
            trial.suggest_float("x", 0.0, 1.0)
            # Curves that depend on the trial number only, so both libraries see the same ones.
            level = ((trial.number * 7919) % 13) / 13.0
            for step in range(1, 10):
                trial.report(level + 0.1 * step, step)
                if trial.should_prune():
                    raise mod.TrialPruned()
            return level

        study.optimize(objective, n_trials=40)
        return [t.state.name for t in study.trials]

    for name in ("hb-a", "another study"):
        ours = states(dspex, name)
        assert ours == states(real_optuna, name)
        assert "PRUNED" in ours and "COMPLETE" in ours


def test_grid_sampler_visits_every_point_then_stops():
    space = {"a": [1, 2, 3], "b": ["x", "y"]}
    study = dspex.create_study(sampler=dspex.samplers.GridSampler(space, seed=0))
    study.optimize(lambda t: t.suggest_int("a", 1, 3) + len(t.suggest_categorical("b", ["x", "y"])), n_trials=100)
    assert len(study.trials) == 6
    assert sorted((t.params["a"], t.params["b"]) for t in study.trials) == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]


def test_seeded_tpe_is_reproducible():
    def run():
        s = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=7))
        s.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2 + t.suggest_int("k", 0, 9), n_trials=30)
        return [t.params for t in s.trials]

    assert run() == run()


def test_study_and_trial_attributes():
    study = dspex.create_study()
    study.set_user_attr("dataset", {"name": "iris", "rows": [1, 2]})
    assert study.user_attrs == {"dataset": {"name": "iris", "rows": [1, 2]}}
    with pytest.raises(TypeError):
        study.set_user_attr("bad", object())

    def objective(trial):
        trial.set_user_attr("score_parts", [0.5, 0.25])
        trial.set_system_attr("sys", True)
        assert trial.user_attrs == {"score_parts": [0.5, 0.25]}
        return 0.75

    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.user_attrs == {"score_parts": [0.5, 0.25]}
    assert t.system_attrs["sys"] is True


def test_storage_names_and_load_study():
    storage = dspex.storages.InMemoryStorage()
    s = dspex.create_study(storage=storage, study_name="exp", direction="maximize")
    s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    with pytest.raises(dspex.exceptions.DuplicatedStudyError):
        dspex.create_study(storage=storage, study_name="exp", direction="maximize")
    again = dspex.create_study(storage=storage, study_name="exp", direction="maximize", load_if_exists=True)
    assert len(again.trials) == 4
    loaded = dspex.load_study(study_name="exp", storage=storage)
    assert loaded.best_value == s.best_value
    assert dspex.get_all_study_names(storage) == ["exp"]
    with pytest.raises(KeyError):
        dspex.load_study(study_name="nope", storage=storage)
    with pytest.raises(TypeError, match="storage must be"):
        dspex.create_study(storage=42)


def test_trials_dataframe_with_pandas():
    pd = pytest.importorskip("pandas")
    study = dspex.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("k", 0, 2), n_trials=5)
    df = study.trials_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 5
    for col in ("number", "value", "params_x", "params_k", "state", "duration"):
        assert col in df.columns
    assert list(df["state"]) == ["COMPLETE"] * 5


def test_trials_dataframe_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    study = dspex.create_study()
    with pytest.raises(ImportError, match="pip install pandas"):
        study.trials_dataframe()


def test_distributions_follow_optuna():
    with pytest.warns(UserWarning, match="not divisible"):
        d = FloatDistribution(0.0, 1.0, step=0.3)
    assert d.high == pytest.approx(0.9)
    with pytest.warns(UserWarning):
        assert IntDistribution(0, 10, step=3).high == 9
    with pytest.raises(ValueError, match="low"):
        FloatDistribution(2.0, 1.0)
    with pytest.raises(ValueError):
        FloatDistribution(0.0, 1.0, log=True)
    with pytest.raises(ValueError):
        CategoricalDistribution([])
    assert dspex.distributions.json_to_distribution(dspex.distributions.distribution_to_json(d)) == d
    assert FloatDistribution(0, 1) == FloatDistribution(0.0, 1.0)


def test_progress_bar_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    study = dspex.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "[dspex]" in err and "trials" in err


def test_cli_help_and_version():
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and dspex.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: dspex" in out.stdout.lower()


def test_a_handler_on_the_logger_sees_every_trial_line_before_callbacks_and_return():
    import logging

    seen = []

    class H(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    h = H()
    logger = logging.getLogger("dspex")
    logger.addHandler(h)
    dspex.logging.set_verbosity(dspex.logging.INFO)
    at_callback = []
    try:
        study = dspex.create_study()
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=20, concurrency=4)
        assert sum(m.startswith("Trial ") for m in seen) == 20
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5, callbacks=[lambda s, t: at_callback.append((t.number, any(m.startswith(f"Trial {t.number} ") for m in seen)))])
        assert [ok for _, ok in at_callback] == [True] * 5
        assert sum(m.startswith("Trial ") for m in seen) == 25
    finally:
        logger.removeHandler(h)


def test_optimize_inside_a_running_event_loop_and_an_interrupt_of_the_kernel():
    # As in Jupyter: optimize is called from a coroutine on a running loop. An interrupt
    # (what the kernel's Ctrl-C does) stops the study: finished trials stay, the ones in
    # flight fail, and no objective goes on running after optimize raised.
    import _thread
    import asyncio
    import threading

    running = []

    async def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        running.append(trial.number)
        try:
            await asyncio.sleep(0.05)
        finally:
            running.remove(trial.number)
        return x

    def sync_objective(trial):
        time.sleep(0.01)
        return trial.suggest_float("x", 0, 1)

    async def main():
        study = dspex.create_study()
        study.optimize(objective, n_trials=8, concurrency=4)
        study.optimize(sync_objective, n_trials=4)
        assert len(study.trials) == 12
        timer = threading.Timer(0.4, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            study.optimize(objective, n_trials=10_000, concurrency=4)
        n = len(study.trials)
        await asyncio.sleep(0.2)
        assert len(study.trials) == n and running == []
        states = [t.state for t in study.trials]
        assert TrialState.RUNNING not in states
        assert states.count(TrialState.FAIL) >= 1
        assert states.count(TrialState.COMPLETE) >= 12 + 8

    # A loop that leaves SIGINT to Python's default handler, as IPython kernels do
    # (asyncio.run installs its own, which only cancels the main task at its next await).
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
