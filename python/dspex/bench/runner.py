"""``dspex bench``: problems x solvers x seeds x budgets, plus speed, into a report directory.

    dspex bench --suite quick --out bench-report      # under 2 minutes
    dspex bench --suite full --out bench-report       # 20 seeds, every problem (about 20 minutes)

Writes DIR/report.md, DIR/results.json (everything), DIR/quality.json and DIR/speed.json (the
tables) and DIR/plots/*.png (matplotlib, when installed). Peers (Optuna, rustuna, hyperopt) are
optional: a library that cannot be imported is named in the report as missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from . import speed as speedmod
from .common import fmt, git_state, import_lib, log, md_table, probe_libs, uptime_line
from .problems import PROBLEMS, Problem, sklearn_available
from .solvers import DEFAULT_SOLVERS, OURS, SOLVERS, run_study, unsupported
from .stats import hypervolume_curve, summarize, verdict

SUITES: Dict[str, Dict[str, Any]] = {
    "quick": {
        "problems": ["sphere10", "rosenbrock5", "rastrigin5", "ackley5", "branin", "hartmann6", "mixed_int_cat", "log_scaled", "conditional", "zdt1", "svc_breast_cancer"],
        "seeds": 6,
        "budgets": [20, 40],
        "speed_trials": {"dspex": 1000, "rustuna": 1000, "optuna": 300, "hyperopt": 300},
        "speed_checkpoints": [100, 300, 1000],
        "dims": [2, 10, 40],
        "dims_trials": 100,
        "e2e_trials": 300,
        "conc_inflight": [1, 16, 128],
        "conc_waves": 3,
        "conc_sleep": 0.02,
    },
    "full": {
        "problems": list(PROBLEMS),
        "seeds": 20,
        "budgets": [50, 100, 150],
        "speed_trials": {"dspex": 10000, "rustuna": 10000, "optuna": 2000, "hyperopt": 1000},
        "speed_checkpoints": [100, 300, 1000, 3000, 10000],
        "dims": [2, 5, 10, 20, 40],
        "dims_trials": 300,
        "e2e_trials": 1000,
        "conc_inflight": [1, 8, 32, 128, 256],
        "conc_waves": 4,
        "conc_sleep": 0.05,
    },
}
LIB_ORDER = ("dspex", "optuna", "rustuna", "hyperopt")


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------


def _checkpoints(budget: int, budgets: Sequence[int]) -> List[int]:
    pts = {max(1, round(budget * k / 25)) for k in range(1, 26)} | {b for b in budgets if b <= budget}
    return sorted(pts)


def _score_curve(problem: Problem, values: List[Any], points: Sequence[int]) -> List[Optional[float]]:
    """Best value (single) or hypervolume (multi) after each of ``points`` trials."""
    out: List[Optional[float]] = []
    if problem.kind == "single":
        best = math.inf
        it = 0
        for p in points:
            while it < min(p, len(values)):
                best = min(best, values[it])
                it += 1
            out.append(best if best < math.inf else None)
    else:
        out = hypervolume_curve(values, points, problem.ref_point or (1.0,) * problem.n_objectives)
    return out


def _budget_for(problem: Problem, b: int) -> int:
    return max(5, int(round(b * problem.budget_scale)))


def section_quality(cfg: argparse.Namespace, solvers: List[str], mods: Dict[str, Any]) -> Dict[str, Any]:
    res: Dict[str, Any] = {"seeds": list(range(cfg.seeds)), "budgets": cfg.budgets, "load_before": uptime_line(), "problems": {}}
    for pname in cfg.problems:
        problem = PROBLEMS[pname]
        budgets = [_budget_for(problem, b) for b in cfg.budgets]
        points = _checkpoints(budgets[-1], budgets)
        entry: Dict[str, Any] = {
            "kind": problem.kind,
            "dim": problem.dim,
            "description": problem.description,
            "optimum": problem.optimum,
            "budgets": budgets,
            "points": points,
            "solvers": {},
        }
        if problem.hyperopt_note:
            entry["note"] = problem.hyperopt_note
        t_prob = time.perf_counter()
        for solver in solvers:
            why = unsupported(solver, problem)
            if why:
                entry["solvers"][solver] = {"unsupported": why}
                continue
            runs = []
            for seed in range(cfg.seeds):
                try:
                    r = run_study(mods, solver, problem, seed, budgets[-1])
                    runs.append({"seed": seed, "curve": _score_curve(problem, r["values"], points), "n": len(r["values"]), "seconds": r["seconds"]})
                except Exception as e:  # noqa: BLE001 - report, do not hide
                    runs.append({"seed": seed, "error": f"{type(e).__name__}: {e}"})
            entry["solvers"][solver] = {"runs": runs}
        _finish_problem(problem, entry)
        log(f"  quality {pname:18s} {time.perf_counter() - t_prob:6.1f} s  " + "  ".join(
            f"{s}={fmt(v['at'][str(budgets[-1])]['median'])}" for s, v in entry["solvers"].items() if "at" in v))
        res["problems"][pname] = entry
    res["load_after"] = uptime_line()
    return res


def _finish_problem(problem: Problem, entry: Dict[str, Any]) -> None:
    """Regrets (lower is better), summaries per budget, and paired Wilcoxon verdicts."""
    points = entry["points"]
    if problem.kind == "single" and problem.optimum is None:
        finals = [r["curve"][-1] for s in entry["solvers"].values() for r in s.get("runs", []) if "curve" in r and r["curve"][-1] is not None]
        entry["reference"] = min(finals) if finals else 0.0
        entry["reference_note"] = "no known optimum: regret against the best value any run found"
    ref = entry.get("reference", problem.optimum)
    for s in entry["solvers"].values():
        for r in s.get("runs", []):
            if "curve" not in r:
                continue
            if problem.kind == "single":
                r["regret"] = [None if v is None else max(0.0, v - ref) for v in r["curve"]]
            else:
                r["regret"] = [None if v is None else max(0.0, problem.optimum - v) for v in r["curve"]]
        ok = [r for r in s.get("runs", []) if "regret" in r and r["regret"][-1] is not None]
        s["errors"] = [r["error"] for r in s.get("runs", []) if "error" in r]
        if not ok:
            continue
        s["at"] = {}
        for b in entry["budgets"]:
            i = points.index(b)
            s["at"][str(b)] = summarize([r["regret"][i] for r in ok])
            s["at"][str(b)]["raw"] = summarize([r["curve"][i] for r in ok])
        s["median_curve"] = [statistics.median(r["regret"][i] for r in ok) for i in range(len(points))]
        s["mean_seconds"] = statistics.fmean(r["seconds"] for r in ok)
    ours = entry["solvers"].get(OURS, {})
    entry["verdicts"] = {}
    for b in entry["budgets"]:
        i = points.index(b)
        vb: Dict[str, Any] = {}
        for peer, s in entry["solvers"].items():
            if peer == OURS or "at" not in s or "at" not in ours:
                continue
            mine = {r["seed"]: r["regret"][i] for r in ours["runs"] if "regret" in r}
            theirs = {r["seed"]: r["regret"][i] for r in s["runs"] if "regret" in r}
            seeds = sorted(set(mine) & set(theirs))
            vb[peer] = verdict([mine[k] for k in seeds], [theirs[k] for k in seeds])
        entry["verdicts"][str(b)] = vb


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------


def section_speed(cfg: argparse.Namespace, libs: List[str]) -> Dict[str, Any]:
    s = cfg.suite_cfg
    res: Dict[str, Any] = {"load_before": uptime_line(), "config": {k: s[k] for k in s if k.startswith(("speed", "dims", "e2e", "conc"))}}
    to = cfg.worker_timeout
    res["trials"] = {}
    for lib in libs:
        n = s["speed_trials"].get(lib, 1000)
        r = speedmod.run_task("trials", to, lib=lib, n=n, dim=10, seed=0, checkpoints=s["speed_checkpoints"])
        res["trials"][lib] = r
        log(f"  speed trials {lib:8s} n={n}: " + (r["error"] if "error" in r else " ".join(f"{k}:{v:.2f}ms" for k, v in r["ms_at"].items())))
    res["dims"] = {}
    for lib in libs:
        r = speedmod.run_task("dims", to, lib=lib, n=s["dims_trials"], dims=s["dims"], seed=0)
        res["dims"][lib] = r
        log(f"  speed dims {lib:8s}: " + (r["error"] if "error" in r else " ".join(f"{k}D:{v:.2f}ms" for k, v in r["ms_by_dim"].items())))
    res["e2e"] = {}
    for lib in libs:
        r = speedmod.run_task("e2e", to, lib=lib, n=s["e2e_trials"], dim=10, seed=0)
        res["e2e"][lib] = r
        log(f"  speed e2e {lib:8s}: " + (r["error"] if "error" in r else f"{r['trials_per_s']:.0f} trials/s, {r['rss_mb']:.0f} MB"))
    res["conc"] = {}
    res["conc_not_supported"] = {}
    for lib, mode in (("dspex", "async"), ("dspex", "threads"), ("optuna", "threads")):
        if lib not in libs:
            continue
        r = speedmod.run_task("conc", to, lib=lib, mode=mode, inflights=s["conc_inflight"], waves=s["conc_waves"], sleep=s["conc_sleep"], seed=0)
        res["conc"][f"{lib}/{mode}"] = r
        log(f"  speed conc {lib}/{mode}: " + (r["error"] if "error" in r else " ".join(f"{k}:{v['efficiency']:.2f}" for k, v in r["rows"].items())))
    if "rustuna" in libs:
        res["conc_not_supported"]["rustuna"] = "rustuna 0.2.0's Study.optimize(objective, n_trials, catch) has no n_jobs/concurrency"
    if "hyperopt" in libs:
        res["conc_not_supported"]["hyperopt"] = "hyperopt's fmin is sequential without a MongoDB/Spark backend"
    res["load_after"] = uptime_line()
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _cell(s: Dict[str, Any], b: str) -> str:
    if "unsupported" in s:
        return "n/a"
    if "at" not in s:
        return "error: " + (s.get("errors") or ["?"])[0][:60]
    a = s["at"][b]
    cell = f"{fmt(a['median'], 3)} [{fmt(a['q25'], 2)}, {fmt(a['q75'], 2)}]"
    if s.get("errors"):
        cell += f" ({len(s['errors'])} errors)"
    return cell


def _vcell(v: Optional[Dict[str, Any]]) -> str:
    if not v or v["verdict"] == "n/a":
        return "n/a"
    mark = {"better": "**better**", "worse": "**WORSE**", "tie": "tie"}[v["verdict"]]
    return f"{mark} (p={v['p']:.2g}, {v['wins']}-{v['losses']})"


def verdict_counts(q: Dict[str, Any], budget_index: int = -1) -> Dict[str, Dict[str, int]]:
    counts: Dict[str, Dict[str, int]] = {}
    for pr in q["problems"].values():
        b = str(pr["budgets"][budget_index])
        for peer, v in pr["verdicts"].get(b, {}).items():
            c = counts.setdefault(peer, {"better": 0, "tie": 0, "worse": 0, "n/a": 0})
            c[v["verdict"]] += 1
    return counts


def headline(report: Dict[str, Any]) -> str:
    """The short table for the README: verdict counts at the final budget, and speed."""
    out: List[str] = []
    q = report.get("quality")
    if q:
        counts = verdict_counts(q)
        rows = [[f"dspex-tpe vs {peer}", str(c["better"]), str(c["tie"]), str(c["worse"])] for peer, c in counts.items()]
        out.append(md_table(["paired Wilcoxon, p < 0.05", "better", "tie", "worse"], rows))
        worse = [f"{name} (vs {peer})" for name, pr in q["problems"].items() for peer, v in pr["verdicts"].get(str(pr["budgets"][-1]), {}).items() if v["verdict"] == "worse"]
        out.append("")
        out.append(f"{len(q['problems'])} problems, {len(q['seeds'])} seeds, budget {q['budgets'][-1]} trials. Worse on: " + (", ".join(worse) if worse else "none") + ".")
    sp = report.get("speed")
    if sp:
        rows = []
        for lib in [x for x in LIB_ORDER if x in sp.get("e2e", {})]:
            e = sp["e2e"][lib]
            t = sp["trials"].get(lib, {}).get("ms_at", {})
            last = max((int(k) for k in t), default=None)
            rows.append([
                lib,
                "-" if "error" in e else f"{e['trials_per_s']:.0f}",
                fmt(t.get("1000", t.get(str(last))) if t else None, 3) + ("" if "1000" in t or last is None else f" (at {last})"),
                fmt(t.get(str(last)), 3) + (f" (at {last})" if last else "") if t else "-",
                "-" if "error" in e else f"{e['rss_mb']:.0f}",
            ])
        out.append("")
        out.append(md_table([f"library ({sp['config']['e2e_trials']} trials, 10-D, trivial objective)", "trials/s", "ms/trial at 1000 trials", "ms/trial at the largest study", "peak RSS MB"], rows))
    return "\n".join(out)


def render(report: Dict[str, Any]) -> str:
    meta = report["meta"]
    out: List[str] = [f"# dspex bench: suite `{meta['suite']}`", ""]
    out.append(f"- command: `{meta['command']}`")
    out.append(f"- python {meta['python']} on {meta['platform']}, {meta['cpus']} CPUs; checkout {meta['dspex_source']} (dspex is whatever is installed)")
    for lib, info in meta["libs"].items():
        if info["available"]:
            out.append(f"- {lib} {info['version']}" + (f" (WARNING: {info['warning']})" if "warning" in info else ""))
        else:
            out.append(f"- {lib}: **MISSING** (not importable: {info['error']}); its rows are absent")
    for name, why in meta.get("skipped_problems", {}).items():
        out.append(f"- problem {name}: **skipped** ({why})")
    out.append(f"- load at start: {meta['load_start']}; at end: {meta['load_end']}; total {meta['total_seconds']:.0f} s")
    out.append("")
    out.append("## Headline")
    out.append("")
    out.append(headline(report))
    q = report.get("quality")
    if q:
        solvers = report["solvers"]
        peers = [s for s in solvers if s != OURS]
        out.append("")
        out.append("## Quality")
        out.append("")
        out.append(
            f"Seeds 0..{len(q['seeds']) - 1}. Each cell: median [25th, 75th percentile] over seeds of the **regret** "
            "(best value minus the known optimum; for ZDT the true front's hypervolume minus the hypervolume reached; "
            "for the scikit-learn task the best 1 - accuracy minus the best any run found). Lower is better. "
            "Verdict: two-sided Wilcoxon signed-rank test of dspex-tpe against the peer, paired by seed index, "
            "better/worse at p < 0.05, with dspex's wins-losses over seeds."
        )
        if len(q["seeds"]) < 6:
            out.append(f"With {len(q['seeds'])} seeds no difference can reach p < 0.05 (the exact test's smallest p is 2/2^n).")
        for bi, b in enumerate(q["budgets"]):
            out.append("")
            out.append(f"### Budget {b} trials" + (" (final)" if bi == len(q["budgets"]) - 1 else ""))
            out.append("")
            rows = []
            for name, pr in q["problems"].items():
                bb = str(pr["budgets"][bi])
                label = f"{name} ({pr['dim']}-D)" + ("" if int(bb) == b else f" [{bb} trials]")
                row = [label] + [_cell(pr["solvers"].get(s, {"unsupported": "-"}), bb) for s in solvers]
                row += [_vcell(pr["verdicts"].get(bb, {}).get(p)) for p in peers]
                rows.append(row)
            out.append(md_table(["problem"] + solvers + [f"vs {p}" for p in peers], rows))
        out.append("")
        out.append("Problems:")
        for name, pr in q["problems"].items():
            extra = "; ".join(x for x in (pr.get("note", ""), pr.get("reference_note", "")) if x)
            out.append(f"- `{name}`: {pr['description']}" + (f" ({extra})" if extra else ""))
        secs = ", ".join(
            f"{s} {statistics.fmean(pr['solvers'][s]['mean_seconds'] for pr in q['problems'].values() if 'mean_seconds' in pr['solvers'].get(s, {})):.2f} s"
            for s in solvers
            if any("mean_seconds" in pr["solvers"].get(s, {}) for pr in q["problems"].values())
        )
        out.append("")
        out.append(f"Mean wall time of one quality study: {secs}.")
    sp = report.get("speed")
    if sp:
        libs = [x for x in LIB_ORDER if x in sp["trials"]]
        out.append("")
        out.append("## Speed")
        out.append("")
        out.append("Each measurement in a fresh subprocess; default TPE, seed 0, floats in [-10, 10], objective sum of squares. "
                   "Time per trial = end of one objective call to the end of the next (sampling, suggest calls, tell, storage), "
                   "mean over the last 10% (at least 10) of the trials below each count.")
        out.append("")
        cps = sp["config"]["speed_checkpoints"]
        rows = []
        for lib in libs:
            r = sp["trials"][lib]
            if "error" in r:
                rows.append([lib] + ["error"] * len(cps) + [r["error"][:80]])
            else:
                rows.append([lib] + [fmt(r["ms_at"].get(str(c)), 3) for c in cps] + [f"{r['n_trials']} trials in {r['seconds']:.1f} s, peak RSS {r['rss_mb']:.0f} MB"])
        out.append("### ms per trial vs number of trials (10-D)")
        out.append("")
        out.append(md_table(["library"] + [f"at {c}" for c in cps] + ["study"], rows))
        out.append("")
        out.append("`-`: that library's study was capped below this count (the suite sizes the slow peers down to fit its time).")
        dims = sp["config"]["dims"]
        rows = []
        for lib in libs:
            r = sp["dims"].get(lib, {})
            rows.append([lib] + (["error"] * len(dims) if "error" in r else [fmt(r["ms_by_dim"].get(str(d)), 3) for d in dims]))
        out.append("")
        out.append(f"### ms per trial vs dimensions (mean over trials {sp['config']['dims_trials'] // 2 + 1}..{sp['config']['dims_trials']})")
        out.append("")
        out.append(md_table(["library"] + [f"{d}-D" for d in dims], rows))
        out.append("")
        out.append(f"### End-to-end ({sp['config']['e2e_trials']} sequential trials, 10-D)")
        out.append("")
        rows = []
        for lib in libs:
            e = sp["e2e"].get(lib, {})
            rows.append([lib, "error" if "error" in e else f"{e['trials_per_s']:.0f}", "-" if "error" in e else f"{e['seconds']:.2f}", "-" if "error" in e else f"{e['rss_mb']:.0f}"])
        out.append(md_table(["library", "trials/s", "wall s", "peak RSS MB"], rows))
        out.append("")
        out.append(f"### Concurrency: objective sleeping {sp['config']['conc_sleep']} s, {sp['config']['conc_waves']} waves")
        out.append("")
        ks = sp["config"]["conc_inflight"]
        rows = []
        for key, r in sp["conc"].items():
            if "error" in r:
                rows.append([key] + ["error"] * len(ks))
            else:
                rows.append([key] + [f"{r['rows'][str(k)]['efficiency']:.2f} ({r['rows'][str(k)]['seconds']:.2f} s)" for k in ks])
        out.append(md_table(["library/objective"] + [f"{k} in flight" for k in ks], rows))
        out.append("")
        out.append("Efficiency = ideal / wall, ideal = ceil(trials / in flight) x sleep (1.0 is perfect).")
        for lib, why in sp["conc_not_supported"].items():
            out.append(f"- {lib}: not measured ({why})")
        out.append(f"\nLoad before: {sp['load_before']}; after: {sp['load_after']}.")
    if report.get("plots"):
        out.append("")
        out.append("## Plots")
        out.append("")
        for p in report["plots"]:
            out.append(f"![{p}](plots/{p})")
    elif report.get("plots_note"):
        out.append("")
        out.append(f"Plots: {report['plots_note']}")
    out.append("")
    return "\n".join(out)


def make_plots(report: Dict[str, Any], outdir: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pdir = os.path.join(outdir, "plots")
    os.makedirs(pdir, exist_ok=True)
    made: List[str] = []
    q = report.get("quality")
    if q:
        names = list(q["problems"])
        cols = 5 if len(names) > 12 else 4
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            pr = q["problems"][name]
            for s, v in pr["solvers"].items():
                if "median_curve" in v:
                    ax.plot(pr["points"], [max(x, 1e-12) for x in v["median_curve"]], label=s, lw=2 if s == OURS else 1)
            ax.set_yscale("log")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("trials", fontsize=8)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle("median regret (best-so-far) over seeds")
        fig.tight_layout()
        fig.savefig(os.path.join(pdir, "regret.png"), dpi=80)
        plt.close(fig)
        made.append("regret.png")
    sp = report.get("speed")
    if sp:
        fig, ax = plt.subplots(1, 3, figsize=(15, 4))
        for lib, r in sp["trials"].items():
            if "ms_at" in r and r["ms_at"]:
                xs = sorted(int(k) for k in r["ms_at"])
                ax[0].plot(xs, [r["ms_at"][str(x)] for x in xs], marker="o", label=lib)
        ax[0].set(xscale="log", yscale="log", xlabel="trials so far", ylabel="ms per trial", title="time per trial vs trials (10-D)")
        ax[0].legend()
        for lib, r in sp["dims"].items():
            if "ms_by_dim" in r:
                xs = sorted(int(k) for k in r["ms_by_dim"])
                ax[1].plot(xs, [r["ms_by_dim"][str(x)] for x in xs], marker="o", label=lib)
        ax[1].set(xscale="log", yscale="log", xlabel="dimensions", ylabel="ms per trial", title=f"time per trial vs dims ({sp['config']['dims_trials']} trials)")
        ax[1].set_xticks(sp["config"]["dims"], [str(d) for d in sp["config"]["dims"]])
        ax[1].minorticks_off()
        ax[1].legend()
        for key, r in sp["conc"].items():
            if "rows" in r:
                xs = sorted(int(k) for k in r["rows"])
                ax[2].plot(xs, [r["rows"][str(x)]["n_trials"] / r["rows"][str(x)]["seconds"] for x in xs], marker="o", label=key)
        ax[2].set(xscale="log", yscale="log", xlabel="trials in flight", ylabel="trials/s", title=f"trials/s vs concurrency (sleep {sp['config']['conc_sleep']} s)")
        ax[2].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(pdir, "speed.png"), dpi=80)
        plt.close(fig)
        made.append("speed.png")
    return made


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _source_state() -> str:
    """The checkout the report was run from (the working directory), else the one dspex was
    imported from (an editable install), else "unknown"."""
    state = git_state()
    if state == "unknown":
        import dspex

        state = git_state(os.path.dirname(os.path.abspath(dspex.__file__)))
    return state


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dspex bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=tuple(SUITES), default="quick")
    p.add_argument("--out", default="bench-report", help="report directory (created)")
    p.add_argument("--solvers", default=",".join(DEFAULT_SOLVERS), help=f"comma-separated, from {', '.join(SOLVERS)}")
    p.add_argument("--problems", default=None, help=f"comma-separated (default: the suite's), from {', '.join(PROBLEMS)}")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the suite's)")
    p.add_argument("--budgets", default=None, help="comma-separated trial budgets, the last is each study's length")
    p.add_argument("--sections", default="quality,speed", help="comma-separated: quality, speed")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--worker-timeout", type=float, default=1800.0, help="seconds before a speed subprocess is killed")
    cfg = p.parse_args(argv)
    cfg.suite_cfg = dict(SUITES[cfg.suite])
    cfg.solvers = [x.strip() for x in cfg.solvers.split(",") if x.strip()]
    for s in cfg.solvers:
        if s not in SOLVERS:
            p.error(f"--solvers: unknown solver {s!r} (choose from {', '.join(SOLVERS)})")
    cfg.problems = [x.strip() for x in cfg.problems.split(",") if x.strip()] if cfg.problems else list(cfg.suite_cfg["problems"])
    for name in cfg.problems:
        if name not in PROBLEMS:
            p.error(f"--problems: unknown problem {name!r} (choose from {', '.join(PROBLEMS)})")
    cfg.seeds = cfg.seeds or cfg.suite_cfg["seeds"]
    cfg.budgets = sorted(int(x) for x in cfg.budgets.split(",")) if cfg.budgets else list(cfg.suite_cfg["budgets"])
    cfg.sections = [x.strip() for x in cfg.sections.split(",") if x.strip()]
    if cfg.seeds < 1 or not cfg.budgets or cfg.budgets[0] < 1:
        p.error("--seeds and --budgets must be >= 1")
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    t_start = time.perf_counter()
    wanted_libs = [lib for lib in LIB_ORDER if any(SOLVERS[s][0] == lib for s in cfg.solvers)]
    libs_info = probe_libs(wanted_libs)
    libs = [lib for lib in wanted_libs if libs_info[lib]["available"]]
    for lib, info in libs_info.items():
        if not info["available"]:
            log(f"MISSING: {lib} is not importable ({info['error']}); its rows are absent")
    solvers = [s for s in cfg.solvers if SOLVERS[s][0] in libs]
    mods = {lib: import_lib(lib)[0] for lib in libs}
    skipped: Dict[str, str] = {}
    if "svc_breast_cancer" in cfg.problems and not sklearn_available():
        skipped["svc_breast_cancer"] = "scikit-learn is not installed (pip install 'dspex[bench]')"
        cfg.problems = [x for x in cfg.problems if x != "svc_breast_cancer"]
    report: Dict[str, Any] = {
        "meta": {
            "suite": cfg.suite,
            "command": " ".join(["dspex bench", *(sys.argv[2:] if argv is None and sys.argv[1:2] == ["bench"] else (argv or sys.argv[1:]))]),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "libs": libs_info,
            "missing": [lib for lib in wanted_libs if not libs_info[lib]["available"]],
            "skipped_problems": skipped,
            "dspex_source": _source_state(),
            "load_start": uptime_line(),
        },
        "solvers": solvers,
        "config": {"problems": cfg.problems, "seeds": cfg.seeds, "budgets": cfg.budgets, "sections": cfg.sections, "suite": cfg.suite_cfg},
    }
    if "quality" in cfg.sections:
        log(f"== quality: {len(cfg.problems)} problems x {len(solvers)} solvers x {cfg.seeds} seeds, budgets {cfg.budgets}")
        report["quality"] = section_quality(cfg, solvers, mods)
    if "speed" in cfg.sections:
        log(f"== speed: {libs}")
        report["speed"] = section_speed(cfg, libs)
    os.makedirs(cfg.out, exist_ok=True)
    if not cfg.no_plots:
        try:
            report["plots"] = make_plots(report, cfg.out)
        except ImportError as e:
            report["plots_note"] = f"not drawn: matplotlib is not installed ({e})"
    else:
        report["plots_note"] = "not drawn (--no-plots)"
    report["meta"]["load_end"] = uptime_line()
    report["meta"]["total_seconds"] = time.perf_counter() - t_start
    text = render(report)
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    if "quality" in report:
        with open(os.path.join(cfg.out, "quality.json"), "w") as f:
            quality = {
                n: {k: v for k, v in pr.items() if k != "solvers"} | {"solvers": {s: {k: v for k, v in x.items() if k != "runs"} for s, x in pr["solvers"].items()}}
                for n, pr in report["quality"]["problems"].items()
            }
            json.dump(quality, f, indent=1, default=str)
    if "speed" in report:
        with open(os.path.join(cfg.out, "speed.json"), "w") as f:
            json.dump(report["speed"], f, indent=1, default=str)
    with open(os.path.join(cfg.out, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(cfg.out, "headline.md"), "w") as f:
        f.write(headline(report) + "\n")
    print(headline(report))
    log(f"wrote {cfg.out}/report.md, results.json, quality.json, speed.json, headline.md in {report['meta']['total_seconds']:.0f} s")
    return 0
