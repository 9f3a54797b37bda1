"""Quickstart: tune a small model's hyper-parameters with dspex, embedded (no server).

The "model" is a ridge regression fitted in closed form on synthetic data, so the example
runs in a second with the standard library only. Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import math
import random

import dspex

random.seed(0)
N_FEATURES = 5
TRUE_W = [random.uniform(-2, 2) for _ in range(N_FEATURES)]


def make_data(n: int) -> tuple[list[list[float]], list[float]]:
    xs = [[random.gauss(0, 1) for _ in range(N_FEATURES)] for _ in range(n)]
    ys = [sum(w * x for w, x in zip(TRUE_W, row)) + random.gauss(0, 0.5) for row in xs]
    return xs, ys


TRAIN, VALID = make_data(60), make_data(200)


def fit_ridge(xs: list[list[float]], ys: list[float], alpha: float, steps: int, lr: float) -> list[float]:
    """Gradient descent on the ridge loss (kept dependency-free on purpose)."""
    w = [0.0] * N_FEATURES
    n = len(xs)
    for _ in range(steps):
        grad = [alpha * wi for wi in w]
        for row, y in zip(xs, ys):
            err = sum(wi * xi for wi, xi in zip(w, row)) - y
            for j in range(N_FEATURES):
                grad[j] += err * row[j] / n
        w = [wi - lr * g for wi, g in zip(w, grad)]
    return w


def objective(trial: dspex.Trial) -> float:
    alpha = trial.suggest_float("alpha", 1e-4, 10.0, log=True)
    lr = trial.suggest_float("lr", 1e-3, 0.5, log=True)
    steps = trial.suggest_int("steps", 5, 60, step=5)
    w = fit_ridge(*TRAIN, alpha=alpha, steps=steps, lr=lr)
    xs, ys = VALID
    mse = sum((sum(wi * xi for wi, xi in zip(w, row)) - y) ** 2 for row, y in zip(xs, ys)) / len(xs)
    return math.sqrt(mse)


def main() -> None:
    dspex.logging.set_verbosity(dspex.logging.WARNING)
    study = dspex.create_study(direction="minimize", sampler=dspex.samplers.TPESampler(seed=42))
    study.optimize(objective, n_trials=60, concurrency=4)
    print(f"best params: {study.best_params}")
    print(f"best value (validation RMSE): {study.best_value:.4f}")


if __name__ == "__main__":
    main()
