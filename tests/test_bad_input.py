"""Bad input: each case gives a FAIL trial with its reason, or a clear error naming the value."""

import logging
import os
import signal
import threading
import time
import traceback

import pytest

import dspex
from dspex.trial import TrialState


def _reason(t):
    return t.system_attrs["fail_reason"]


def test_same_name_with_another_distribution_kind_fails_the_trial():
    def objective(trial):
        trial.suggest_float("x", 0, 1)
        trial.suggest_int("x", 0, 10)
        return 0.0

    study = dspex.create_study()
    with pytest.raises(ValueError, match="'x'|\"x\""):
        study.optimize(objective, n_trials=5)
    assert len(study.trials) == 1
    assert study.trials[0].state == TrialState.FAIL
    assert "different distribution kind" in _reason(study.trials[0])

    # In `catch`, the study goes on and each trial fails with the reason.
    study2 = dspex.create_study()
    study2.optimize(objective, n_trials=3, catch=(ValueError,))
    assert [t.state for t in study2.trials] == [TrialState.FAIL] * 3


def test_same_name_with_another_range_warns_and_keeps_the_first_value():
    def objective(trial):
        a = trial.suggest_float("x", 0, 1)
        with pytest.warns(RuntimeWarning, match="already suggested"):
            b = trial.suggest_float("x", 5, 6)
        assert a == b
        return a

    study = dspex.create_study()
    study.optimize(objective, n_trials=2)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_another_kind_in_a_later_trial_is_refused():
    study = dspex.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ValueError, match="distribution kind"):
        study.optimize(lambda t: t.suggest_categorical("x", ["a"]) and 0.0, n_trials=1)
    assert study.trials[1].state == TrialState.FAIL


@pytest.mark.parametrize(
    "value, expected",
    [
        ("not a number", "could not be cast to float"),
        (None, "None could not be cast"),
        (object(), "could not be cast to float"),
        (float("nan"), "not acceptable"),
        (float("inf"), "not acceptable"),
        (float("-inf"), "not acceptable"),
        ((1.0, 2.0), "did not match the number of objectives"),
    ],
)
def test_bad_return_values_fail_the_trial_with_the_reason(value, expected, caplog):
    study = dspex.create_study()
    with caplog.at_level(logging.WARNING, logger="dspex"):
        dspex.logging.enable_propagation()
        try:
            study.optimize(lambda t: value, n_trials=2)
        finally:
            dspex.logging.disable_propagation()
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert expected in _reason(study.trials[0])
    assert any("Trial 0 failed" in r.getMessage() for r in caplog.records)


def test_wrong_number_of_values_in_a_multi_objective_study():
    study = dspex.create_study(directions=["minimize", "minimize"])
    study.optimize(lambda t: 1.0, n_trials=1)
    assert study.trials[0].state == TrialState.FAIL
    assert "number of values 1" in _reason(study.trials[0])


@pytest.mark.parametrize("direction", ["minimise", "up", "", 3])
def test_unknown_direction_is_a_value_error_naming_it(direction):
    with pytest.raises(ValueError, match=repr(direction).replace("'", ".").replace("(", r"\(")):
        dspex.create_study(direction=direction)
    with pytest.raises(ValueError):
        dspex.create_study(directions=["minimize", direction])


def test_direction_and_directions_together():
    with pytest.raises(ValueError):
        dspex.create_study(direction="minimize", directions=["minimize"])


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: dspex.samplers.TPESampler(n_startup_trials=-1), "n_startup_trials=-1"),
        (lambda: dspex.samplers.TPESampler(n_ei_candidates=0), "n_ei_candidates=0"),
        (lambda: dspex.samplers.TPESampler(prior_weight=-2.0), "prior_weight=-2"),
        (lambda: dspex.samplers.TPESampler(prior_weight=0.0), "prior_weight=0"),
        (lambda: dspex.samplers.TPESampler(below_clip_factor=0.5), "below_clip_factor=0.5"),
        (lambda: dspex.samplers.TPESampler(below_clip_factor=float("nan")), "below_clip_factor=nan"),
        (lambda: dspex.samplers.TPESampler(gamma=lambda n: n), "gamma"),
        (lambda: dspex.samplers.RandomSampler(seed=-5), "-5"),
        (lambda: dspex.samplers.GridSampler({"x": []}), "x"),
        (lambda: dspex.samplers.GridSampler({"x": [1, 1]}), "x=1"),
        (lambda: dspex.samplers.GridSampler({"x": [[1, 2]]}), r"\[1, 2\]"),
        (lambda: dspex.pruners.MedianPruner(n_startup_trials=-1), "n_startup_trials"),
        (lambda: dspex.pruners.PercentilePruner(150.0), "percentile"),
        (lambda: dspex.pruners.PercentilePruner("high"), "percentile='high'"),
        (lambda: dspex.pruners.SuccessiveHalvingPruner(reduction_factor=1), "reduction_factor"),
        (lambda: dspex.pruners.SuccessiveHalvingPruner(min_resource="soon"), "min_resource='soon'"),
        (lambda: dspex.pruners.HyperbandPruner(min_resource=0), "min_resource"),
        (lambda: dspex.pruners.ThresholdPruner(), "lower|upper"),
        (lambda: dspex.pruners.PatientPruner(None, patience=-1), "patience"),
        (lambda: dspex.pruners.WilcoxonPruner(p_threshold=2.0), "p_threshold"),
    ],
)
def test_bad_sampler_and_pruner_arguments_name_the_value(make, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        make()


def test_not_a_sampler_or_pruner():
    with pytest.raises(ValueError, match="sampler"):
        dspex.create_study(sampler="tpe")
    with pytest.raises(ValueError, match="pruner"):
        dspex.create_study(pruner=42)


@pytest.mark.parametrize("kwargs", [{"n_trials": -1}, {"timeout": -1.0}, {"n_jobs": 0}, {"concurrency": "many"}])
def test_bad_optimize_arguments(kwargs):
    study = dspex.create_study()
    with pytest.raises(ValueError):
        study.optimize(lambda t: 0.0, **kwargs)


def test_bad_suggest_arguments():
    study = dspex.create_study()
    t = study.ask()
    with pytest.raises(ValueError, match="low"):
        t.suggest_float("x", 1.0, 0.0)
    with pytest.raises(ValueError):
        t.suggest_float("y", 0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="unique"):
        t.suggest_categorical("c", ["a", "a"])
    with pytest.raises(TypeError):
        t.suggest_categorical("d", [[1], [2]])


class Boom(Exception):
    pass


def _raiser(trial):
    trial.suggest_float("x", 0, 1)
    if trial.number == 2:
        raise Boom("exploded at trial 2")
    return 1.0


def test_exception_in_catch_fails_the_trial_and_the_study_goes_on():
    study = dspex.create_study()
    study.optimize(_raiser, n_trials=5, catch=(Boom,))
    assert len(study.trials) == 5
    assert study.trials[2].state == TrialState.FAIL
    assert "Boom: exploded at trial 2" in _reason(study.trials[2])
    assert "_raiser" in _reason(study.trials[2])  # the traceback is recorded


def _slow_raiser(trial):
    # The other trials take a while, so that on a loaded machine the raising thread gets the
    # GIL back long before its siblings could run the whole budget.
    time.sleep(0.01)
    return _raiser(trial)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_uncaught_exception_stops_the_study_and_reaches_the_caller(concurrency):
    study = dspex.create_study()
    with pytest.raises(Boom, match="exploded") as info:
        study.optimize(_slow_raiser, n_trials=50, concurrency=concurrency)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "_raiser" in frames
    assert study.trials[2].state == TrialState.FAIL
    # Stopped at once: at most the trials the other evaluators had already started.
    assert len(study.trials) < 20
    assert all(t.state.is_finished() for t in study.trials)


def test_async_uncaught_exception_reaches_the_caller():
    async def objective(trial):
        if trial.number == 3:
            raise Boom("async boom")
        return 0.0

    study = dspex.create_study()
    with pytest.raises(Boom, match="async boom"):
        study.optimize(objective, n_trials=100, concurrency=4)
    assert study.trials[3].state == TrialState.FAIL
    assert all(t.state.is_finished() for t in study.trials)


def test_callback_exception_reaches_the_caller():
    def cb(study, trial):
        raise Boom("callback")

    study = dspex.create_study()
    with pytest.raises(Boom, match="callback"):
        study.optimize(lambda t: 0.0, n_trials=10, callbacks=[cb])
    assert len(study.trials) == 1


def test_ctrl_c_in_a_sequential_study_keeps_finished_trials():
    def objective(trial):
        if trial.number == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # interrupted by the signal
        return trial.suggest_float("x", 0, 1)

    study = dspex.create_study()
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=10)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    assert "KeyboardInterrupt" in _reason(study.trials[3])


@pytest.mark.parametrize("kind", ["threads", "async"])
def test_ctrl_c_while_waiting_fails_trials_in_flight(kind):
    import asyncio

    def sync_objective(trial):
        time.sleep(0.05)
        return trial.suggest_float("x", 0, 1)

    async def async_objective(trial):
        await asyncio.sleep(0.05)
        return trial.suggest_float("x", 0, 1)

    timer = threading.Timer(0.4, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    study = dspex.create_study()
    with pytest.raises(KeyboardInterrupt):
        study.optimize(sync_objective if kind == "threads" else async_objective, concurrency=4)
    timer.cancel()
    time.sleep(0.2)  # let worker threads finish their last objective call
    trials = study.trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 1
    assert all(t.state.is_finished() for t in trials)
    assert any(t.state == TrialState.FAIL and "KeyboardInterrupt" in _reason(t) for t in trials)
