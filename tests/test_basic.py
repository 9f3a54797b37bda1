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


def test_a_sync_study_does_not_import_asyncio():
    # Importing asyncio costs ~15 ms: a study with a plain objective must not pay it.
    import subprocess
    import sys

    code = (
        "import sys, dspex\n"
        "s = dspex.create_study()\n"
        "s.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=3)\n"
        "print('asyncio' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
