"""Solvers: each library's sampler behind one call, ``run_study(solver, problem, seed, budget)``.

dspex, Optuna and rustuna share Optuna's API for what is used here
(``create_study(sampler=..., directions=...)``, ``study.optimize(objective, n_trials)``); hyperopt
is driven through ``fmin`` over the problem's static space, with a fixed-parameter trial object
so the same define-by-run objective evaluates its points.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

from .problems import Problem

# solver name -> (library, sampler)
SOLVERS: Dict[str, Tuple[str, str]] = {
    "dspex-tpe": ("dspex", "tpe"),
    "dspex-random": ("dspex", "random"),
    "optuna-tpe": ("optuna", "tpe"),
    "rustuna-tpe": ("rustuna", "tpe"),
    "hyperopt-tpe": ("hyperopt", "tpe"),
    # Gaussian-process and CMA-ES samplers: not in the default suite (Optuna's GP takes seconds
    # a trial, CMA-ES needs larger budgets), see benches/samplers.py.
    "dspex-gp": ("dspex", "gp"),
    "optuna-gp": ("optuna", "gp"),
    "dspex-cmaes": ("dspex", "cmaes"),
    "optuna-cmaes": ("optuna", "cmaes"),
    # Genetic samplers for several objectives (benches/samplers.py nsga2|nsga3).
    "dspex-nsga2": ("dspex", "nsga2"),
    "optuna-nsga2": ("optuna", "nsga2"),
    "dspex-nsga3": ("dspex", "nsga3"),
    "optuna-nsga3": ("optuna", "nsga3"),
}
DEFAULT_SOLVERS = tuple(s for s in SOLVERS if not s.endswith(("-gp", "-cmaes", "-nsga2", "-nsga3")))
OURS = "dspex-tpe"


def unsupported(solver: str, problem: Problem) -> Optional[str]:
    """Why ``solver`` cannot run ``problem`` (None when it can)."""
    lib = SOLVERS[solver][0]
    if lib == "hyperopt" and problem.kind == "multi":
        return "hyperopt has no multi-objective optimisation"
    if lib == "rustuna" and problem.constrained:
        return "rustuna's TPESampler has no constraints"
    return None


def _constraints(trial: Any) -> Any:
    return trial.user_attrs["constraints"]


def make_sampler(mod: Any, sampler: str, seed: int, constrained: bool = False) -> Any:
    """``sampler`` of library ``mod`` with ``seed``; for a constrained problem with the
    constraints the objective stores (samplers without constraints ignore them)."""
    extra = {"constraints_func": _constraints} if constrained else {}
    if sampler == "tpe":
        return mod.samplers.TPESampler(seed=seed, **extra)
    if sampler == "random":
        return mod.samplers.RandomSampler(seed=seed)
    if sampler == "gp":
        return mod.samplers.GPSampler(seed=seed)
    if sampler == "cmaes":
        return mod.samplers.CmaEsSampler(seed=seed)
    if sampler == "nsga2":
        return mod.samplers.NSGAIISampler(seed=seed, **extra)
    if sampler == "nsga3":
        return mod.samplers.NSGAIIISampler(seed=seed, **extra)
    raise ValueError(f"unknown sampler {sampler!r}")


class _FixedTrial:
    """What a define-by-run objective sees under hyperopt: suggest_* return the sampled point."""

    def __init__(self, params: Dict[str, Any]) -> None:
        self.params = params

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, step: Optional[float] = None) -> float:
        return min(high, max(low, float(self.params[name])))

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, step: int = 1) -> int:
        return int(min(high, max(low, int(round(float(self.params[name]))))))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.params[name]


def hyperopt_space(problem: Problem) -> Dict[str, Any]:
    from hyperopt import hp

    space: Dict[str, Any] = {}
    for p in problem.space:
        kind, name = p[0], p[1]
        if kind == "float":
            lo, hi, log = p[2], p[3], p[4]
            space[name] = hp.loguniform(name, math.log(lo), math.log(hi)) if log else hp.uniform(name, lo, hi)
        elif kind == "int":
            lo, hi, log = p[2], p[3], p[4]
            if log:
                space[name] = hp.qloguniform(name, math.log(lo), math.log(hi + 1), 1)
            else:
                space[name] = hp.uniformint(name, lo, hi)
        else:
            space[name] = hp.choice(name, list(p[2]))
    return space


def run_study(mods: Dict[str, Any], solver: str, problem: Problem, seed: int, budget: int) -> Dict[str, Any]:
    """Runs one study; returns {"values": [value or [values...] per completed trial, in order],
    "seconds": wall time of the optimisation}."""
    lib, sampler = SOLVERS[solver]
    mod = mods[lib]
    values: List[Any] = []
    if lib == "hyperopt":
        import numpy as np

        def fn(params: Dict[str, Any]) -> float:
            v = float(problem.objective(_FixedTrial(params)))
            values.append(v)
            return v

        t0 = time.perf_counter()
        mod.fmin(fn, hyperopt_space(problem), algo=mod.tpe.suggest, max_evals=budget, rstate=np.random.default_rng(seed), show_progressbar=False)
        return {"values": values, "seconds": time.perf_counter() - t0}

    def objective(trial: Any) -> Any:
        v = problem.objective(trial)
        if problem.kind == "single":
            values.append(float(v))
        elif problem.constrained and any(c > 0.0 for c in trial.user_attrs["constraints"]):
            values.append([math.inf] * len(v))  # infeasible: outside every reference box
        else:
            values.append([float(x) for x in v])
        return v

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # constraints_func is deprecated in Optuna 5
        made = make_sampler(mod, sampler, seed, problem.constrained)
    if problem.kind == "multi":
        study = mod.create_study(directions=problem.directions, sampler=made)
    else:
        study = mod.create_study(sampler=made)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=budget)
    elapsed = time.perf_counter() - t0
    if problem.kind == "single" and values:
        best = float(study.best_trial.value)
        if abs(min(values) - best) > 1e-9 * max(1.0, abs(best)):
            raise RuntimeError(f"best_trial.value {best} != min of returned values {min(values)}")
    return {"values": values, "seconds": elapsed}
