"""dspex's GPSampler, CmaEsSampler, NSGAIISampler and NSGAIIISampler side by side with Optuna
5.0's, with dspex's TPE and random search for reference. Optuna's GPSampler needs torch and
scipy, its CmaEsSampler the ``cmaes`` package:

    pip install "dspex[bench]" torch cmaes
    python benches/samplers.py gp [--budget 50] [--seeds 10] [--speed-trials 100,300] [--json]
    python benches/samplers.py gp --multi [--budget 50] [--seeds 10] [--speed-trials 100,300]
    python benches/samplers.py cmaes [--budget 300] [--seeds 20] [--speed-trials 1000,10000]
    python benches/samplers.py nsga2 [--budget 1000] [--seeds 20] [--speed-trials 1000,10000]
    python benches/samplers.py nsga3 [--budget 1000] [--seeds 20] [--speed-trials 1000,10000]

Quality: regret after ``--budget`` trials on a set of the suite's problems, per seed (best
value minus the optimum; for several objectives the true front's hypervolume minus that of
the trials, feasible ones only on a constrained problem), with the paired Wilcoxon verdict of
dspex's sampler against each other solver (Holm-adjusted over the problems). Speed: wall time
per trial (sampling and the study's bookkeeping; the objectives are sums of squares) around
each ``--speed-trials`` checkpoint on a 10-D problem (a sphere; two shifted spheres for the
genetic samplers and ``gp --multi``), one study per library. ``gp --multi`` runs the GP
samplers on the suite's multi-objective problems (ZDT1, ZDT2, DTLZ2 with 3 objectives, the
constrained CONSTR), against NSGA-II and random search. ``--smoke`` runs a small dspex-only version (the
test suite runs it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import warnings
from typing import Any, Dict, List

from dspex.bench.common import import_lib
from dspex.bench.problems import PROBLEMS
from dspex.bench.solvers import run_study
from dspex.bench.stats import holm, hypervolume, verdict

# family -> its Optuna class, the peer module it needs, and the defaults of the arguments.
FAMILIES: Dict[str, Dict[str, Any]] = {
    "gp": dict(
        cls="GPSampler",
        needs=("torch", "scipy"),
        problems=("branin", "hartmann3", "hartmann6", "sphere5", "rosenbrock5", "styblinski_tang5", "mixed_int_cat", "log_scaled"),
        budget=50,
        seeds=10,
        speed_trials="100,300",
        multi_problems=("zdt1", "zdt2", "dtlz2", "constr"),
        multi_others=("dspex-nsga2", "dspex-random"),
    ),
    "cmaes": dict(
        cls="CmaEsSampler",
        needs=("cmaes",),
        problems=("sphere5", "sphere10", "rosenbrock5", "rastrigin5", "ackley5", "styblinski_tang5", "levy5", "hartmann6", "log_scaled", "mixed_int_cat"),
        budget=300,
        seeds=20,
        speed_trials="1000,10000",
    ),
    "nsga2": dict(
        cls="NSGAIISampler",
        needs=(),
        problems=("zdt1", "zdt2", "zdt3", "zdt4", "dtlz1", "dtlz2", "constr"),
        budget=1000,
        seeds=20,
        speed_trials="1000,10000",
        others=("dspex-random",),
    ),
    "nsga3": dict(
        cls="NSGAIIISampler",
        needs=(),
        problems=("dtlz1", "dtlz2", "zdt1", "zdt3"),
        budget=1000,
        seeds=20,
        speed_trials="1000,10000",
        others=("dspex-nsga2", "dspex-random"),
    ),
}


def libraries(family: str, smoke: bool) -> Dict[str, Any]:
    mods = {"dspex": import_lib("dspex")[0]}
    if not smoke:
        try:
            for name in FAMILIES[family]["needs"]:
                importlib.import_module(name)
            mods["optuna"] = import_lib("optuna")[0]
            # Its CmaEsSampler warns once a trial about categorical parameters; NSGA-III is
            # experimental.
            mods["optuna"].logging.set_verbosity(mods["optuna"].logging.ERROR)
            warnings.filterwarnings("ignore", category=mods["optuna"].exceptions.ExperimentalWarning)
        except ImportError as e:
            print(f"optuna-{family} skipped: {e}", file=sys.stderr)
    return mods


def quality(mods: Dict[str, Any], family: str, problems: List[str], seeds: int, budget: int, multi: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    ours = f"dspex-{family}"
    f = FAMILIES[family]
    others = f["multi_others"] if multi and "multi_others" in f else f.get("others", ("dspex-tpe", "dspex-random"))
    solvers = [s for s in (ours, f"optuna-{family}", *others) if s.split("-")[0] in mods]
    for name in problems:
        problem = PROBLEMS[name]
        regrets: Dict[str, List[float]] = {}
        seconds: Dict[str, float] = {}
        for solver in solvers:
            regrets[solver] = []
            t0 = time.perf_counter()
            for seed in range(seeds):
                values = run_study(mods, solver, problem, seed, budget)["values"]
                if problem.kind == "multi":
                    regrets[solver].append(max(0.0, (problem.optimum or 0.0) - hypervolume(values, problem.ref_point or ())))
                else:
                    regrets[solver].append(min(values) - (problem.optimum or 0.0))
            seconds[solver] = time.perf_counter() - t0
        out[name] = {
            "dim": problem.dim,
            "regret": regrets,
            "seconds": seconds,
            "vs": {s: verdict(regrets[ours], regrets[s]) for s in solvers if s != ours},
        }
        print(f"{name:18s} " + "  ".join(f"{s} {statistics.median(regrets[s]):.4g} ({seconds[s]:.0f} s)" for s in solvers), file=sys.stderr)
    # Each competitor is one family of tests over the problems: Holm-adjusted p-values, and a
    # verdict only where the adjusted p is below 0.05.
    for other in (s for s in solvers if s != ours):
        tests = [out[name]["vs"][other] for name in problems]
        for v, p in zip(tests, holm([v["p"] for v in tests])):
            v["p_holm"] = p
            if p is not None and p >= 0.05:
                v["verdict"] = "tie"
    return out


def speed(mods: Dict[str, Any], family: str, checkpoints: List[int], multi: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    n_trials = max(checkpoints)

    def objective(t: Any) -> Any:
        x = [t.suggest_float(f"x{i}", -5, 5) for i in range(10)]
        if multi:
            return sum(v * v for v in x), sum((v - 1) ** 2 for v in x)
        return sum(v * v for v in x)

    for lib, mod in mods.items():
        stamps: List[float] = []
        sampler = getattr(mod.samplers, FAMILIES[family]["cls"])(seed=0)
        study = mod.create_study(sampler=sampler, directions=["minimize", "minimize"]) if multi else mod.create_study(sampler=sampler)
        stamps.append(time.perf_counter())
        study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, t: stamps.append(time.perf_counter())])
        deltas = [b - a for a, b in zip(stamps, stamps[1:])]
        at = {str(n): 1000 * statistics.mean(deltas[max(0, n - 10) : n]) for n in checkpoints if n <= len(deltas)}
        out[lib] = {"ms_per_trial_at": at, "seconds": stamps[-1] - stamps[0]}
        print(f"speed {lib}: " + ", ".join(f"{v:.3g} ms/trial at trial {k}" for k, v in at.items()), file=sys.stderr)
    return out


def report(q: Dict[str, Any], sp: Dict[str, Any], family: str, budget: int, seeds: int, multi: bool) -> str:
    ours = f"dspex-{family}"
    solvers = list(next(iter(q.values()))["regret"]) if q else []
    lines = [f"Median regret after {budget} trials over {seeds} seeds ({ours} vs each: paired Wilcoxon, Holm-adjusted over the problems, p < 0.05; seed-level wins-losses)", ""]
    lines.append("| problem | " + " | ".join(solvers) + f" | {ours} vs " + ", ".join(s for s in solvers if s != ours) + " |")
    lines.append("|---" * (len(solvers) + 2) + "|")
    for name, r in q.items():
        med = [f"{statistics.median(r['regret'][s]):.4g}" for s in solvers]
        vs = ", ".join(f"{v['verdict']} ({v.get('wins', 0)}-{v.get('losses', 0)})" for v in r["vs"].values())
        lines.append(f"| {name} ({r['dim']}-D) | " + " | ".join(med) + f" | {vs} |")
    checkpoints = list(next(iter(sp.values()))["ms_per_trial_at"])
    problem = "two 10-D spheres" if multi else "10-D sphere"
    lines += ["", f"| library ({problem}) | " + " | ".join(f"ms/trial at trial {k}" for k in checkpoints) + " |", "|---" * (1 + len(checkpoints)) + "|"]
    for lib, r in sp.items():
        lines.append(f"| {lib} | " + " | ".join(f"{v:.3g}" for v in r["ms_per_trial_at"].values()) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family", choices=sorted(FAMILIES))
    ap.add_argument("--budget", type=int, help="trials per study (gp: 50, cmaes: 300, nsga2/nsga3: 1000)")
    ap.add_argument("--seeds", type=int, help="seeds per problem (gp: 10, others: 20)")
    ap.add_argument("--speed-trials", help="comma-separated trial counts to time (gp: 100,300; others: 1000,10000)")
    ap.add_argument("--problems", help="comma-separated problems of the suite (default: the family's set)")
    ap.add_argument("--multi", action="store_true", help="gp: the multi-objective problems instead")
    ap.add_argument("--smoke", action="store_true", help="dspex only, 2 problems, 2 seeds, 15 trials, speed at 20 trials")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    a = ap.parse_args()
    f = FAMILIES[a.family]
    multi = a.family.startswith("nsga") or a.multi
    if a.multi and "multi_problems" not in f:
        ap.error(f"--multi: {a.family} has no multi-objective set")
    if a.smoke:
        a.budget, a.seeds, a.speed_trials = (120, 2, "20") if multi else (15, 2, "20")
        a.problems = "dtlz2,constr" if multi else "branin,mixed_int_cat"
    budget = a.budget or f["budget"]
    seeds = a.seeds or f["seeds"]
    checkpoints = [int(x) for x in (a.speed_trials or f["speed_trials"]).split(",")]
    mods = libraries(a.family, a.smoke)
    problems = (a.problems or ",".join(f["multi_problems" if a.multi else "problems"])).split(",")
    kind = "multi" if multi else "single"
    for p in problems:
        if p not in PROBLEMS or PROBLEMS[p].kind != kind:
            ap.error(f"--problems: {p!r} is not a {kind}-objective problem of the suite")
    q = quality(mods, a.family, problems, seeds, budget, multi)
    sp = speed(mods, a.family, checkpoints, multi)
    print(json.dumps({"quality": q, "speed": sp}, indent=1) if a.json else report(q, sp, a.family, budget, seeds, multi))


if __name__ == "__main__":
    main()
