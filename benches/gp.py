"""GPSampler side by side: dspex's (in the engine) against Optuna 5.0's (PyTorch and SciPy),
with dspex's TPE and random search for reference. Needs optuna, torch and scipy for Optuna's:

    pip install "dspex[bench]" torch
    python benches/gp.py [--budget 50] [--seeds 10] [--speed-trials 300] [--json]

Quality: regret (best value minus the optimum) after ``--budget`` trials on a set of the
suite's single-objective problems, per seed, with the paired Wilcoxon verdict of dspex-gp
against each other solver. Speed: wall time per trial (sampling, nearly all of it) around
trial 100 and trial ``--speed-trials`` on a 10-D sphere, one study per library.
``--smoke`` runs a small dspex-only version (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Dict, List

from dspex.bench.common import import_lib
from dspex.bench.problems import PROBLEMS
from dspex.bench.solvers import run_study
from dspex.bench.stats import holm, verdict

QUALITY_PROBLEMS = ("branin", "hartmann3", "hartmann6", "sphere5", "rosenbrock5", "styblinski_tang5", "mixed_int_cat", "log_scaled")
SOLVERS = ("dspex-gp", "optuna-gp", "dspex-tpe", "dspex-random")


def libraries(smoke: bool) -> Dict[str, Any]:
    mods = {"dspex": import_lib("dspex")[0]}
    if not smoke:
        try:
            import scipy  # noqa: F401
            import torch  # noqa: F401

            mods["optuna"] = import_lib("optuna")[0]
        except ImportError as e:
            print(f"optuna-gp skipped: {e}", file=sys.stderr)
    return mods


def quality(mods: Dict[str, Any], problems: List[str], seeds: int, budget: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    solvers = [s for s in SOLVERS if s.split("-")[0] in mods]
    for name in problems:
        problem = PROBLEMS[name]
        regrets: Dict[str, List[float]] = {}
        seconds: Dict[str, float] = {}
        for solver in solvers:
            regrets[solver] = []
            t0 = time.perf_counter()
            for seed in range(seeds):
                values = run_study(mods, solver, problem, seed, budget)["values"]
                regrets[solver].append(min(values) - (problem.optimum or 0.0))
            seconds[solver] = time.perf_counter() - t0
        out[name] = {
            "dim": problem.dim,
            "regret": regrets,
            "seconds": seconds,
            "vs": {s: verdict(regrets["dspex-gp"], regrets[s]) for s in solvers if s != "dspex-gp"},
        }
        print(f"{name:18s} " + "  ".join(f"{s} {statistics.median(regrets[s]):.4g} ({seconds[s]:.0f} s)" for s in solvers), file=sys.stderr)
    # Each competitor is one family of tests over the problems: Holm-adjusted p-values, and a
    # verdict only where the adjusted p is below 0.05.
    for other in (s for s in solvers if s != "dspex-gp"):
        tests = [out[name]["vs"][other] for name in problems]
        for v, p in zip(tests, holm([v["p"] for v in tests])):
            v["p_holm"] = p
            if p is not None and p >= 0.05:
                v["verdict"] = "tie"
    return out


def speed(mods: Dict[str, Any], n_trials: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for lib, mod in mods.items():
        stamps: List[float] = []
        study = mod.create_study(sampler=mod.samplers.GPSampler(seed=0))
        stamps.append(time.perf_counter())
        study.optimize(lambda t: sum(t.suggest_float(f"x{i}", -5, 5) ** 2 for i in range(10)), n_trials=n_trials, callbacks=[lambda s, t: stamps.append(time.perf_counter())])
        deltas = [b - a for a, b in zip(stamps, stamps[1:])]
        at = {str(n): 1000 * statistics.mean(deltas[max(0, n - 10) : n]) for n in (100, n_trials) if n <= len(deltas)}
        out[lib] = {"ms_per_trial_at": at, "seconds": stamps[-1] - stamps[0]}
        print(f"speed {lib}: " + ", ".join(f"{v:.1f} ms/trial at trial {k}" for k, v in at.items()), file=sys.stderr)
    return out


def report(q: Dict[str, Any], sp: Dict[str, Any], budget: int, seeds: int) -> str:
    solvers = list(next(iter(q.values()))["regret"]) if q else []
    lines = [f"Median regret after {budget} trials over {seeds} seeds (dspex-gp vs each: paired Wilcoxon, Holm-adjusted over the problems, p < 0.05; seed-level wins-losses)", ""]
    lines.append("| problem | " + " | ".join(solvers) + " | dspex-gp vs " + ", ".join(s for s in solvers if s != "dspex-gp") + " |")
    lines.append("|---" * (len(solvers) + 2) + "|")
    for name, r in q.items():
        med = [f"{statistics.median(r['regret'][s]):.4g}" for s in solvers]
        vs = ", ".join(f"{v['verdict']} ({v.get('wins', 0)}-{v.get('losses', 0)})" for v in r["vs"].values())
        lines.append(f"| {name} ({r['dim']}-D) | " + " | ".join(med) + f" | {vs} |")
    checkpoints = list(next(iter(sp.values()))["ms_per_trial_at"])
    lines += ["", "| library (10-D sphere) | " + " | ".join(f"ms/trial at trial {k}" for k in checkpoints) + " |", "|---" * (1 + len(checkpoints)) + "|"]
    for lib, r in sp.items():
        lines.append(f"| {lib} | " + " | ".join(f"{v:.1f}" for v in r["ms_per_trial_at"].values()) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--speed-trials", type=int, default=300)
    ap.add_argument("--problems", default=",".join(QUALITY_PROBLEMS))
    ap.add_argument("--smoke", action="store_true", help="dspex only, 2 problems, 2 seeds, 15 trials, speed at 20 trials")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    a = ap.parse_args()
    if a.smoke:
        a.budget, a.seeds, a.speed_trials, a.problems = 15, 2, 20, "branin,mixed_int_cat"
    mods = libraries(a.smoke)
    problems = a.problems.split(",")
    for p in problems:
        if p not in PROBLEMS or PROBLEMS[p].kind != "single":
            ap.error(f"--problems: {p!r} is not a single-objective problem of the suite")
    q = quality(mods, problems, a.seeds, a.budget)
    sp = speed(mods, a.speed_trials)
    print(json.dumps({"quality": q, "speed": sp}, indent=1) if a.json else report(q, sp, a.budget, a.seeds))


if __name__ == "__main__":
    main()
