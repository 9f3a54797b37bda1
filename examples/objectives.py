"""Objectives for `dspex optimize examples/study.toml` (named in the file as
`examples.objectives:rosenbrock`). Each worker process imports this module.

Run as a script, it evaluates the objectives once on a local study (a quick self-check):

    python examples/objectives.py
"""

import math
import time


def rosenbrock(trial):
    """The Rosenbrock valley; `x` and `y` are declared in study.toml's [search_space], `scale`
    is suggested here (define-by-run): both kinds of parameters mix in one objective."""
    x = trial.suggest_float("x", -2.0, 2.0)
    y = trial.suggest_float("y", -1.0, 3.0)
    scale = trial.suggest_categorical("scale", [1.0, 100.0])
    return (1 - x) ** 2 + scale * (y - x * x) ** 2


def slow_sphere(trial):
    """A sphere that takes a little time per trial and reports intermediate values (for
    pruners, and for tests that kill workers mid-trial)."""
    value = 0.0
    for i in range(3):
        v = trial.suggest_float(f"x{i}", -5.0, 5.0)
        value += v * v
        trial.report(value, i)
        time.sleep(0.02)
    return value


if __name__ == "__main__":
    import dspex

    dspex.logging.set_verbosity(dspex.logging.WARNING)
    study = dspex.create_study(sampler=dspex.samplers.RandomSampler(seed=0))
    study.optimize(rosenbrock, n_trials=20)
    assert math.isfinite(study.best_value)
    study.optimize(slow_sphere, n_trials=3)
    print(f"objectives ok: best value {study.best_value:.4f}")
