"""A first end-to-end check: create a study, optimize, read the best trial."""

import dspex


def test_optimize_finds_the_minimum_region():
    def objective(trial):
        x = trial.suggest_float("x", -10, 10)
        return (x - 2) ** 2

    study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=1))
    study.optimize(objective, n_trials=60)
    assert len(study.trials) == 60
    assert abs(study.best_params["x"] - 2) < 1.5
    assert study.best_value == min(t.value for t in study.trials)
    assert study.best_trial.state == dspex.TrialState.COMPLETE


def test_a_sync_study_does_not_import_asyncio_or_inspect():
    # Importing asyncio costs ~15 ms, inspect ~3 ms: a study with a plain objective must not pay.
    import subprocess
    import sys

    code = (
        "import sys, dspex\n"
        "s = dspex.create_study()\n"
        "s.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=3)\n"
        "print('asyncio' in sys.modules, 'inspect' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False", out.stderr


def test_async_objectives_are_recognised_in_every_form():
    import functools

    from dspex._optimize import _is_async

    async def coro(trial):  # noqa: ANN001, ANN202
        return 0.0

    def plain(trial):  # noqa: ANN001, ANN202
        return 0.0

    class AsyncCallable:
        async def __call__(self, trial):  # noqa: ANN001, ANN204
            return 0.0

    class SyncCallable:
        def __call__(self, trial):  # noqa: ANN001, ANN204
            return 0.0

        async def method(self, trial):  # noqa: ANN001, ANN202
            return 0.0

    assert _is_async(coro) and _is_async(AsyncCallable()) and _is_async(SyncCallable().method)
    assert _is_async(functools.partial(coro))
    assert not _is_async(plain) and not _is_async(SyncCallable()) and not _is_async(lambda t: 0.0)
    assert not _is_async(functools.partial(plain))
