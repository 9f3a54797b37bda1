"""Multi-objective tuning with NSGA-II: accuracy against model size, under a constraint.

A k-nearest-neighbours regressor on synthetic data (standard library only) is tuned for two
objectives at once: the validation error and the number of stored training points (the
model's size and lookup cost). A constraint keeps the error below a bound, so the front holds
only models good enough to ship. ``NSGAIISampler`` runs in the engine; the result is the
Pareto front (``study.best_trials``), not a single best trial. Run it with
``python examples/multi_objective.py``.
"""

from __future__ import annotations

import heapq
import math
import random

import dspex
from dspex.samplers import NSGAIISampler
from dspex.samplers.nsgaii import SBXCrossover

random.seed(1)


def target(x: float, y: float) -> float:
    return math.sin(3 * x) * math.cos(2 * y) + 0.3 * x


def make_data(n: int) -> list[tuple[float, float, float]]:
    rows = []
    for _ in range(n):
        x, y = random.uniform(-1, 1), random.uniform(-1, 1)
        rows.append((x, y, target(x, y) + random.gauss(0, 0.05)))
    return rows


TRAIN, VALID = make_data(300), make_data(80)
MAX_ERROR = 0.3  # models with a larger validation RMSE are not worth shipping


def validation_rmse(points: list[tuple[float, float, float]], k: int, scale_y: float) -> float:
    """RMSE of a k-NN regressor (distance with the y axis scaled by ``scale_y``)."""
    total = 0.0
    for x, y, z in VALID:
        nearest = heapq.nsmallest(k, points, key=lambda p: (p[0] - x) ** 2 + (scale_y * (p[1] - y)) ** 2)
        total += (sum(p[2] for p in nearest) / len(nearest) - z) ** 2
    return math.sqrt(total / len(VALID))


def objective(trial: dspex.Trial) -> tuple[float, float]:
    n_points = trial.suggest_int("n_points", 10, len(TRAIN), log=True)
    k = trial.suggest_int("k", 1, 15)
    scale_y = trial.suggest_float("scale_y", 0.25, 4.0, log=True)
    error = validation_rmse(TRAIN[:n_points], min(k, n_points), scale_y)
    trial.set_constraint("max_error", error - MAX_ERROR)  # feasible when <= 0
    return error, float(n_points)


def main() -> None:
    dspex.logging.set_verbosity(dspex.logging.WARNING)
    sampler = NSGAIISampler(population_size=20, crossover=SBXCrossover(), seed=0)
    study = dspex.create_study(directions=["minimize", "minimize"], sampler=sampler, study_name="knn-size")
    study.optimize(objective, n_trials=120)
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    print(f"{len(study.trials)} trials, {len(front)} on the feasible Pareto front (error <= {MAX_ERROR}):")
    for t in front:
        error, size = t.values
        print(f"  {int(size):4d} points  rmse {error:.3f}  k={t.params['k']:2d}  scale_y={t.params['scale_y']:.2f}")
    assert front and all(t.values[0] <= MAX_ERROR for t in front)


if __name__ == "__main__":
    main()
