#!/usr/bin/env python3
"""Side-by-side comparison of dspex, Optuna and rustuna (issue 3, "Acceptance").

One run measures every library that is importable in *this* interpreter and prints three
tables (also written to ``--out DIR`` as ``results.json`` and ``results.md``):

1. Quality: best value after N trials (default 150) of each library's default TPE
   (``create_study(sampler=TPESampler(seed=s))``) on 10-D Rosenbrock, 10-D sphere, Branin and
   Hartmann6, over ``--seeds`` seeds (default 10): median and IQR, verdict "dspex median no worse
   than Optuna's median".
2. Speed: wall time of one sequential 1000-trial study over 10 float params with a trivial
   objective (sum of squares), default TPE; ratios dspex vs rustuna and dspex vs Optuna.
3. Concurrency: 2,560 trials of an ``async def`` objective awaiting ``asyncio.sleep(0.05)``
   with 256 in flight in dspex against the ideal 0.5 s; Optuna with ``n_jobs=256`` threads on a
   sync ``time.sleep(0.05)`` objective (2,560 trials too unless ``--optuna-conc-trials`` scales
   it down; the ideal follows the trial count), plus RandomSampler rows that separate scheduler
   overhead from sampler cost. rustuna has no concurrent optimize and is listed as not measured.

Peers are optional: a library that cannot be imported is named in the output as missing, never
silently skipped. They must not be dependencies of the dspex package: install them in a separate
virtualenv together with dspex (see benches/README.md).

Speed and concurrency measurements run in a fresh subprocess of this interpreter per library and
repetition (so one library's state, threads or garbage do not affect another's timing); quality
runs in this process, one study after another.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Problems, library import/probing and formatting are shared with `dspex bench`
# (python/dspex/bench/, issue 6), which runs the larger suite; this script keeps issue 3's checks.
from dspex.bench.common import fmt, import_lib, log, md_table, probe_libs, quantile, uptime_line
from dspex.bench.problems import branin, hartmann6, rosenbrock, sphere

LIBS = ("dspex", "optuna", "rustuna")

# --------------------------------------------------------------------------------------------
# Test problems (standard definitions and domains, all minimised)
# --------------------------------------------------------------------------------------------


# name -> (function, bounds per dimension, known global minimum)
PROBLEMS: Dict[str, Tuple[Callable[[Sequence[float]], float], List[Tuple[float, float]], float]] = {
    "rosenbrock10": (rosenbrock, [(-5.0, 10.0)] * 10, 0.0),
    "sphere10": (sphere, [(-5.12, 5.12)] * 10, 0.0),
    "branin": (branin, [(-5.0, 10.0), (0.0, 15.0)], 0.397887),
    "hartmann6": (hartmann6, [(0.0, 1.0)] * 6, -3.32237),
}

# --------------------------------------------------------------------------------------------
# Library adapters (the three share Optuna's API for what we use)
# --------------------------------------------------------------------------------------------


SAMPLER_NAMES = {"tpe": "TPESampler", "random": "RandomSampler"}


def tpe_study(mod: Any, seed: int) -> Any:
    return mod.create_study(sampler=mod.samplers.TPESampler(seed=seed))


# --------------------------------------------------------------------------------------------
# Workers (run in this process for quality, in a subprocess for timing)
# --------------------------------------------------------------------------------------------


def run_quality_study(mod: Any, problem: str, seed: int, n_trials: int) -> Dict[str, Any]:
    fn, bounds, _ = PROBLEMS[problem]
    names = [f"x{i}" for i in range(len(bounds))]
    values: List[float] = []

    def objective(trial: Any) -> float:
        x = [trial.suggest_float(n, lo, hi) for n, (lo, hi) in zip(names, bounds)]
        v = fn(x)
        values.append(v)
        return v

    study = tpe_study(mod, seed)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    elapsed = time.perf_counter() - t0
    best = float(study.best_trial.value)
    # The wrapper's running minimum must agree with what the study reports as best.
    if values and abs(min(values) - best) > 1e-9 * max(1.0, abs(best)):
        raise RuntimeError(f"best_trial.value {best} != min of returned values {min(values)}")
    return {"best": best, "n": len(values), "seconds": elapsed, "values": values}


def worker_speed(lib: str, n_trials: int, dim: int, seed: int) -> Dict[str, Any]:
    mod, _ = import_lib(lib)
    names = [f"x{i}" for i in range(dim)]

    def objective(trial: Any) -> float:
        s = 0.0
        for n in names:
            v = trial.suggest_float(n, -10.0, 10.0)
            s += v * v
        return s

    study = tpe_study(mod, seed)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "n_trials": n_trials, "best": float(study.best_trial.value)}


def worker_conc(lib: str, mode: str, n_trials: int, inflight: int, sleep: float, seed: int, sampler: str) -> Dict[str, Any]:
    import asyncio

    mod, _ = import_lib(lib)

    if mode == "async":

        async def objective(trial: Any) -> float:  # type: ignore[misc]
            x = trial.suggest_float("x", -10.0, 10.0)
            await asyncio.sleep(sleep)
            return x * x

    else:

        def objective(trial: Any) -> float:  # type: ignore[misc]
            x = trial.suggest_float("x", -10.0, 10.0)
            time.sleep(sleep)
            return x * x

    if sampler == "tpe":
        study = tpe_study(mod, seed)
    else:
        study = mod.create_study(sampler=mod.samplers.RandomSampler(seed=seed))
    t0 = time.perf_counter()
    if lib == "dspex":
        study.optimize(objective, n_trials=n_trials, concurrency=inflight)
    elif lib == "optuna":
        if mode == "async":
            raise ValueError("Optuna has no async objectives")
        study.optimize(objective, n_trials=n_trials, n_jobs=inflight)
    else:
        raise ValueError(f"{lib} has no concurrent optimize")
    elapsed = time.perf_counter() - t0
    complete = sum(1 for t in study.trials if str(t.state).endswith("COMPLETE"))
    return {"seconds": elapsed, "n_trials": len(study.trials), "complete": complete}


def run_worker_subprocess(args: List[str], timeout: float) -> Dict[str, Any]:
    """Runs ``compare.py --worker ...`` in a fresh interpreter; returns its JSON or an error."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------
# Statistics and formatting
# --------------------------------------------------------------------------------------------


def mannwhitney_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """One-sided p-value that ``a`` is stochastically greater (worse) than ``b`` (scipy if present)."""
    try:
        from scipy.stats import mannwhitneyu
    except Exception:  # noqa: BLE001
        return None
    try:
        return float(mannwhitneyu(a, b, alternative="greater").pvalue)
    except Exception:  # noqa: BLE001
        return None


def git_state() -> str:
    """Commit of the checkout this script lives in (+ "-dirty" with uncommitted changes); the
    installed dspex was built from it only if it was re-installed after the last change."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(
            ["git", "-C", here, "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        ).stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


# --------------------------------------------------------------------------------------------
# The three sections
# --------------------------------------------------------------------------------------------


def section_quality(cfg: argparse.Namespace, libs: List[str], mods: Dict[str, Any]) -> Dict[str, Any]:
    res: Dict[str, Any] = {
        "n_trials": cfg.trials,
        "seeds": list(range(cfg.seeds)),
        "load_before": uptime_line(),
        "problems": {},
    }
    for problem in cfg.problems:
        per_lib: Dict[str, Any] = {}
        for lib in libs:
            runs = []
            for seed in range(cfg.seeds):
                try:
                    r = run_quality_study(mods[lib], problem, seed, cfg.trials)
                except Exception as e:  # noqa: BLE001 - report, do not hide
                    r = {"error": f"{type(e).__name__}: {e}"}
                r["seed"] = seed
                if not cfg.keep_values:
                    r.pop("values", None)
                runs.append(r)
                log(f"  quality {problem:13s} {lib:8s} seed {seed}: " + (fmt(r["best"]) if "best" in r else r["error"]))
            bests = [r["best"] for r in runs if "best" in r]
            summary: Dict[str, Any] = {"runs": runs, "errors": [r["error"] for r in runs if "error" in r]}
            if bests:
                summary.update(
                    median=statistics.median(bests),
                    q25=quantile(bests, 0.25),
                    q75=quantile(bests, 0.75),
                    min=min(bests),
                    max=max(bests),
                    mean_seconds=statistics.mean(r["seconds"] for r in runs if "seconds" in r),
                )
            per_lib[lib] = summary
        verdict: Dict[str, Any]
        d, o = per_lib.get("dspex", {}), per_lib.get("optuna", {})
        if "median" not in d:
            verdict = {"pass": None, "text": "n/a (no dspex result)"}
        elif "median" not in o:
            verdict = {"pass": None, "text": "n/a (no Optuna result)"}
        else:
            diff = d["median"] - o["median"]
            ok = diff <= 0
            p = mannwhitney_p([r["best"] for r in d["runs"] if "best" in r], [r["best"] for r in o["runs"] if "best" in r])
            text = "PASS" if ok else "FAIL"
            text += f" (dspex - optuna = {fmt(diff, 3)}"
            if p is not None:
                text += f"; MWU p(dspex worse) = {p:.2f}"
            text += ")"
            verdict = {"pass": ok, "median_diff": diff, "mwu_p_dspex_worse": p, "text": text}
        res["problems"][problem] = {"optimum": PROBLEMS[problem][2], "libs": per_lib, "verdict": verdict}
    res["load_after"] = uptime_line()
    return res


def section_speed(cfg: argparse.Namespace, libs: List[str]) -> Dict[str, Any]:
    res: Dict[str, Any] = {"n_trials": cfg.speed_trials, "dim": 10, "load_before": uptime_line(), "libs": {}}
    reps = {lib: cfg.optuna_speed_repeats if lib == "optuna" else cfg.speed_repeats for lib in libs}
    times: Dict[str, List[float]] = {lib: [] for lib in libs}
    errors: Dict[str, List[str]] = {lib: [] for lib in libs}
    # Repetitions interleave the libraries, so a change of the machine's load hits all of them.
    for rep in range(max(reps.values(), default=0)):
        for lib in libs:
            if rep >= reps[lib]:
                continue
            r = run_worker_subprocess(
                ["speed", "--lib", lib, "--n-trials", str(cfg.speed_trials), "--dim", "10", "--seed", str(rep)],
                timeout=cfg.worker_timeout,
            )
            if "error" in r:
                errors[lib].append(r["error"])
                log(f"  speed {lib:8s} rep {rep}: {r['error']}")
            else:
                times[lib].append(r["seconds"])
                log(f"  speed {lib:8s} rep {rep}: {r['seconds']:.3f} s")
    for lib in libs:
        entry: Dict[str, Any] = {"times": times[lib], "errors": errors[lib]}
        if times[lib]:
            entry["median"] = statistics.median(times[lib])
            entry["ms_per_trial"] = 1000.0 * entry["median"] / cfg.speed_trials
        res["libs"][lib] = entry
    d = res["libs"].get("dspex", {}).get("median")
    ratios: Dict[str, Any] = {}
    for peer, need in (("rustuna", 1.0), ("optuna", 50.0)):
        p = res["libs"].get(peer, {}).get("median")
        if d is None or p is None:
            ratios[peer] = {"ratio": None, "pass": None, "need": need}
        else:
            ratios[peer] = {"ratio": p / d, "pass": p / d >= need if need > 1 else p / d > need, "need": need}
    res["speedup_of_dspex"] = ratios
    res["load_after"] = uptime_line()
    return res


def section_concurrency(cfg: argparse.Namespace, libs: List[str]) -> Dict[str, Any]:
    sleep = cfg.conc_sleep
    # (lib, mode, sampler, trials); the first row is the acceptance criterion, the others explain it.
    plan: List[Tuple[str, str, str, int]] = []
    if "dspex" in libs:
        plan.append(("dspex", "async", "tpe", cfg.conc_trials))
        plan.append(("dspex", "threads", "tpe", cfg.conc_trials))
    if "optuna" in libs:
        plan.append(("optuna", "threads", "tpe", cfg.optuna_conc_trials))
    if not cfg.no_conc_random:
        if "dspex" in libs:
            plan.append(("dspex", "async", "random", cfg.conc_trials))
        if "optuna" in libs:
            plan.append(("optuna", "threads", "random", cfg.optuna_conc_trials))
    hows = {
        ("dspex", "async"): "async def + asyncio.sleep, concurrency",
        ("dspex", "threads"): "sync def + time.sleep, concurrency (threads)",
        ("optuna", "threads"): "sync def + time.sleep, n_jobs (threads)",
    }
    inflight = cfg.conc_inflight
    res: Dict[str, Any] = {
        "sleep": sleep,
        "inflight": cfg.conc_inflight,
        "load_before": uptime_line(),
        "rows": [],
        "not_supported": {},
    }
    if "rustuna" in libs:
        res["not_supported"]["rustuna"] = "rustuna 0.2.0's Study.optimize(objective, n_trials, catch) has no n_jobs/concurrency"
    for lib, mode, sampler, n in plan:
        ideal = math.ceil(n / inflight) * sleep
        r = run_worker_subprocess(
            ["conc", "--lib", lib, "--mode", mode, "--sampler", sampler, "--n-trials", str(n), "--inflight", str(inflight), "--sleep", str(sleep)],
            timeout=cfg.worker_timeout,
        )
        how = hows[(lib, mode)]
        row: Dict[str, Any] = {"lib": lib, "mode": mode, "sampler": sampler, "how": how, "n_trials": n, "inflight": inflight, "ideal": ideal}
        if "error" in r:
            row["error"] = r["error"]
            log(f"  concurrency {lib} {mode} {sampler}: {r['error']}")
        else:
            row.update(seconds=r["seconds"], x_ideal=r["seconds"] / ideal, complete=r["complete"])
            log(f"  concurrency {lib} {mode} {sampler} n={n}: {r['seconds']:.3f} s ({r['seconds'] / ideal:.2f}x ideal)")
        if lib == "dspex" and mode == "async" and sampler == "tpe" and "x_ideal" in row:
            row["pass"] = row["x_ideal"] <= 1.25 and row["complete"] == n
        res["rows"].append(row)
    res["load_after"] = uptime_line()
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def render(report: Dict[str, Any]) -> str:
    out: List[str] = []
    meta = report["meta"]
    out.append("# dspex vs Optuna vs rustuna")
    out.append("")
    out.append(f"- command: `{meta['command']}`")
    out.append(f"- python {meta['python']} on {meta['platform']}, {meta['cpus']} CPUs")
    for lib, info in meta["libs"].items():
        if info["available"]:
            out.append(f"- {lib} {info['version']}" + (f" (WARNING: {info['warning']})" if "warning" in info else ""))
        else:
            out.append(f"- {lib}: **MISSING** (not importable: {info['error']}); its rows are absent")
    out.append(f"- checkout: {meta['dspex_source']} (dspex is whatever is installed in this interpreter)")
    out.append(f"- load at start: {meta['load_start']}")
    out.append(f"- load at end: {meta['load_end']}")
    if meta.get("smoke"):
        out.append("- **smoke mode**: sizes are tiny; the figures say nothing about the acceptance criteria")
    libs = [lib for lib, info in meta["libs"].items() if info["available"]]

    q = report.get("quality")
    if q:
        out.append("")
        out.append(f"## 1. Quality: best value after {q['n_trials']} trials, {len(q['seeds'])} seeds (default TPE, seed = 0..{len(q['seeds']) - 1})")
        out.append("")
        out.append("Median [IQR] of the best value (minimised); verdict: dspex median no worse than Optuna's.")
        out.append("")
        header = ["problem (optimum)"] + libs + ["verdict"]
        rows = []
        for problem, pr in q["problems"].items():
            row = [f"{problem} ({fmt(pr['optimum'])})"]
            for lib in libs:
                s = pr["libs"].get(lib, {})
                if "median" in s:
                    cell = f"{fmt(s['median'])} [{fmt(s['q25'], 3)}, {fmt(s['q75'], 3)}]"
                    if s["errors"]:
                        cell += f" ({len(s['errors'])} errors)"
                else:
                    cell = "error: " + (s.get("errors") or ["?"])[0]
                row.append(cell)
            row.append(pr["verdict"]["text"])
            rows.append(row)
        out.append(md_table(header, rows))
        out.append("")
        secs = ", ".join(
            f"{lib} {statistics.mean(pr['libs'][lib]['mean_seconds'] for pr in q['problems'].values() if 'mean_seconds' in pr['libs'].get(lib, {})):.2f} s"
            for lib in libs
            if any("mean_seconds" in pr["libs"].get(lib, {}) for pr in q["problems"].values())
        )
        out.append(f"Mean wall time of one quality study: {secs}. Load before: {q['load_before']}; after: {q['load_after']}.")

    s = report.get("speed")
    if s:
        out.append("")
        out.append(f"## 2. Speed: sequential {s['n_trials']}-trial study, {s['dim']} float params, sum of squares, default TPE")
        out.append("")
        rows = []
        for lib in libs:
            e = s["libs"].get(lib, {})
            if "median" in e:
                times = ", ".join(f"{t:.2f}" for t in e["times"])
                rows.append([lib, f"{e['median']:.3f}", f"{e['ms_per_trial']:.3f}", times + (f" ({len(e['errors'])} errors)" if e["errors"] else "")])
            else:
                rows.append([lib, "error", "-", "; ".join(e.get("errors", ["?"]))])
        out.append(md_table(["library", "wall s (median)", "ms / trial", "all runs (s)"], rows))
        out.append("")
        for peer, r in s["speedup_of_dspex"].items():
            if r["ratio"] is None:
                out.append(f"- {peer} / dspex: n/a")
            else:
                need = "faster than" if r["need"] == 1.0 else f"at least {r['need']:.0f}x faster than"
                out.append(f"- {peer} / dspex = **{r['ratio']:.2f}x** (need dspex {need} {peer}): {'PASS' if r['pass'] else 'FAIL'}")
        out.append("")
        out.append(f"Load before: {s['load_before']}; after: {s['load_after']}.")

    c = report.get("concurrency")
    if c:
        out.append("")
        out.append(f"## 3. Concurrency: objective sleeping {c['sleep']} s, {c['inflight']} in flight")
        out.append("")
        rows = []
        for r in c["rows"]:
            scaled = "" if r["lib"] == "dspex" or r["n_trials"] == report["config"]["conc_trials"] else f" (scaled from {report['config']['conc_trials']})"
            if "error" in r:
                rows.append([r["lib"], r["how"], SAMPLER_NAMES[r["sampler"]], f"{r['n_trials']}{scaled}", f"{r['ideal']:.2f}", "error", r["error"], ""])
            else:
                verdict = "" if "pass" not in r else ("PASS (<= 1.25x)" if r["pass"] else "FAIL (> 1.25x)")
                if r["complete"] != r["n_trials"]:
                    verdict += f" only {r['complete']} COMPLETE"
                rows.append([r["lib"], r["how"], SAMPLER_NAMES[r["sampler"]], f"{r['n_trials']}{scaled}", f"{r['ideal']:.2f}", f"{r['seconds']:.3f}", f"{r['x_ideal']:.2f}x", verdict])
        out.append(md_table(["library", "objective", "sampler", "trials", "ideal s", "wall s", "vs ideal", "verdict"], rows))
        for lib, why in c["not_supported"].items():
            out.append(f"- {lib}: not measured ({why})")
        out.append("")
        out.append(
            "Ideal = ceil(trials / in flight) x sleep. One float param, seed 0. The acceptance row is the first one "
            "(default TPE, async); the RandomSampler rows separate the scheduler's overhead from the sampler's cost."
        )
        out.append(f"Load before: {c['load_before']}; after: {c['load_after']}.")
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-out", help="directory for results.json and results.md (default bench-out/)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (2 seeds, 30 trials, small speed/concurrency runs)")
    p.add_argument("--libs", default=",".join(LIBS), help="comma-separated libraries to try (default: all three)")
    p.add_argument("--sections", default="quality,speed,concurrency", help="comma-separated sections to run")
    p.add_argument("--seeds", type=int, default=None, help="quality: number of seeds (default 10; smoke 2)")
    p.add_argument("--trials", type=int, default=None, help="quality: trials per study (default 150; smoke 30)")
    p.add_argument("--problems", default=",".join(PROBLEMS), help="quality: comma-separated problems")
    p.add_argument("--keep-values", action="store_true", help="quality: keep every trial's value in results.json")
    p.add_argument("--speed-trials", type=int, default=None, help="speed: trials (default 1000; smoke 100)")
    p.add_argument("--speed-repeats", type=int, default=None, help="speed: runs of dspex and rustuna (seeds 0..), median reported (default 5; smoke 1)")
    p.add_argument("--optuna-speed-repeats", type=int, default=None, help="speed: runs of Optuna (default 3; smoke 1)")
    p.add_argument("--conc-trials", type=int, default=None, help="concurrency: dspex trials (default 2560; smoke 128)")
    p.add_argument("--conc-inflight", type=int, default=None, help="concurrency: trials in flight (default 256; smoke 32)")
    p.add_argument("--optuna-conc-trials", type=int, default=None, help="concurrency: Optuna trials (default 2560 like dspex, about 15 s; smoke 128)")
    p.add_argument("--no-conc-random", action="store_true", help="concurrency: skip the RandomSampler rows")
    p.add_argument("--conc-sleep", type=float, default=0.05, help="concurrency: seconds each objective sleeps (default 0.05)")
    p.add_argument("--worker-timeout", type=float, default=1800.0, help="seconds before a timing subprocess is killed")
    # internal: timing workers
    p.add_argument("--worker", choices=("speed", "conc"), help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="async", help=argparse.SUPPRESS)
    p.add_argument("--n-trials", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--inflight", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--sleep", type=float, default=0.05, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help=argparse.SUPPRESS)
    cfg = p.parse_args(argv)
    defaults = {
        "seeds": (10, 2),
        "trials": (150, 30),
        "speed_trials": (1000, 100),
        "speed_repeats": (5, 1),
        "optuna_speed_repeats": (3, 1),
        "conc_trials": (2560, 128),
        "conc_inflight": (256, 32),
        "optuna_conc_trials": (2560, 128),
    }
    for k, (full, smoke) in defaults.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, smoke if cfg.smoke else full)
    cfg.libs = [x.strip() for x in cfg.libs.split(",") if x.strip()]
    for lib in cfg.libs:
        if lib not in LIBS:
            p.error(f"--libs: unknown library {lib!r} (choose from {', '.join(LIBS)})")
    cfg.sections = [x.strip() for x in cfg.sections.split(",") if x.strip()]
    cfg.problems = [x.strip() for x in cfg.problems.split(",") if x.strip()]
    for prob in cfg.problems:
        if prob not in PROBLEMS:
            p.error(f"--problems: unknown problem {prob!r} (choose from {', '.join(PROBLEMS)})")
    if cfg.seeds < 1 or cfg.trials < 1:
        p.error("--seeds and --trials must be >= 1")
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    if cfg.worker == "speed":
        print(json.dumps(worker_speed(cfg.lib, cfg.n_trials, cfg.dim, cfg.seed)))
        return 0
    if cfg.worker == "conc":
        print(json.dumps(worker_conc(cfg.lib, cfg.mode, cfg.n_trials, cfg.inflight, cfg.sleep, cfg.seed, cfg.sampler)))
        return 0

    t_start = time.perf_counter()
    libs_info = probe_libs(cfg.libs)
    available = [lib for lib in cfg.libs if libs_info[lib]["available"]]
    for lib, info in libs_info.items():
        if not info["available"]:
            log(f"MISSING: {lib} is not importable ({info['error']}); its rows are absent from every table")
        elif "warning" in info:
            log(f"WARNING: {info['warning']}")
    mods = {lib: import_lib(lib)[0] for lib in available}

    report: Dict[str, Any] = {
        "meta": {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "libs": libs_info,
            "missing": [lib for lib in cfg.libs if not libs_info[lib]["available"]],
            "smoke": cfg.smoke,
            "dspex_source": git_state(),
            "load_start": uptime_line(),
        },
        "config": {k: v for k, v in vars(cfg).items() if k not in ("worker", "lib", "mode", "n_trials", "dim", "inflight", "sleep", "seed", "sampler")},
    }
    if "quality" in cfg.sections:
        log(f"== quality: {len(cfg.problems)} problems x {cfg.seeds} seeds x {cfg.trials} trials, libs {available}")
        report["quality"] = section_quality(cfg, available, mods)
    if "speed" in cfg.sections:
        log(f"== speed: {cfg.speed_trials} sequential trials, 10 params")
        report["speed"] = section_speed(cfg, available)
    if "concurrency" in cfg.sections:
        log(f"== concurrency: {cfg.conc_trials} trials, {cfg.conc_inflight} in flight")
        report["concurrency"] = section_concurrency(cfg, available)
    report["meta"]["load_end"] = uptime_line()
    report["meta"]["total_seconds"] = time.perf_counter() - t_start

    text = render(report)
    print(text)
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(cfg.out, "results.md"), "w") as f:
        f.write(text)
    log(f"wrote {os.path.join(cfg.out, 'results.json')} and results.md in {report['meta']['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
