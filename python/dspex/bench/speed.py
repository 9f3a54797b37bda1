"""Speed measurements, each in a fresh subprocess (``python -m dspex.bench.speed JSON``) so one
library's threads, caches or garbage never affect another's timing, and ``ru_maxrss`` is the peak
RSS of that one measurement.

Tasks:
- ``trials``: one sequential study of ``n`` trials over ``dim`` floats with a trivial objective
  (sum of squares); the time of each trial (end of one objective call to the end of the next:
  sampling, suggest calls, tell, storage) averaged over a window just below each checkpoint.
- ``dims``: the same at a fixed number of trials for several dimensions.
- ``e2e``: end-to-end trials/s of a sequential study with the trivial objective, and peak RSS.
- ``conc``: an objective that sleeps; wall time against the ideal ceil(n / inflight) x sleep for
  several numbers of trials in flight.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Sequence

from .common import import_lib


def _rss_mb() -> float:
    """Peak RSS of this process in MiB. VmHWM (Linux) belongs to this process's address space;
    ru_maxrss would inherit the parent's high-water mark across fork + exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB; macOS: bytes


def _trivial_study(lib: str, n: int, dim: int, seed: int) -> List[float]:
    """Runs the study; returns the end time (perf_counter, from the start) of every trial."""
    mod, _ = import_lib(lib)
    names = [f"x{i}" for i in range(dim)]
    ends: List[float] = []
    if lib == "hyperopt":
        import numpy as np
        from hyperopt import hp

        space = {nm: hp.uniform(nm, -10.0, 10.0) for nm in names}

        def fn(params: Dict[str, float]) -> float:
            s = sum(v * v for v in params.values())
            ends.append(time.perf_counter())
            return s

        t0 = time.perf_counter()
        mod.fmin(fn, space, algo=mod.tpe.suggest, max_evals=n, rstate=np.random.default_rng(seed), show_progressbar=False)
        return [e - t0 for e in ends]

    def objective(trial: Any) -> float:
        s = 0.0
        for nm in names:
            v = trial.suggest_float(nm, -10.0, 10.0)
            s += v * v
        ends.append(time.perf_counter())
        return s

    study = mod.create_study(sampler=mod.samplers.TPESampler(seed=seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return [e - t0 for e in ends]


def _per_trial_ms(ends: Sequence[float]) -> List[float]:
    return [1000.0 * (b - a) for a, b in zip([0.0, *ends[:-1]], ends)]


def _window_mean(ms: Sequence[float], upto: int) -> float:
    w = max(10, upto // 10)
    chunk = ms[max(0, upto - w) : upto]
    return sum(chunk) / len(chunk)


def task_trials(lib: str, n: int, dim: int, seed: int, checkpoints: Sequence[int]) -> Dict[str, Any]:
    ends = _trivial_study(lib, n, dim, seed)
    ms = _per_trial_ms(ends)
    return {
        "ms_at": {str(c): _window_mean(ms, c) for c in checkpoints if c <= len(ms)},
        "seconds": ends[-1],
        "n_trials": len(ends),
        "rss_mb": _rss_mb(),
    }


def task_dims(lib: str, n: int, dims: Sequence[int], seed: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for d in dims:
        ms = _per_trial_ms(_trivial_study(lib, n, d, seed))
        half = ms[len(ms) // 2 :]
        out[str(d)] = sum(half) / len(half)
    return {"ms_by_dim": out, "n_trials": n, "rss_mb": _rss_mb()}


def task_e2e(lib: str, n: int, dim: int, seed: int) -> Dict[str, Any]:
    ends = _trivial_study(lib, n, dim, seed)
    return {"seconds": ends[-1], "n_trials": len(ends), "trials_per_s": len(ends) / ends[-1], "rss_mb": _rss_mb()}


def task_conc(lib: str, mode: str, inflights: Sequence[int], waves: int, sleep: float, seed: int) -> Dict[str, Any]:
    import asyncio

    mod, _ = import_lib(lib)
    if mode == "async":

        async def objective(trial: Any) -> float:
            x = trial.suggest_float("x", -10.0, 10.0)
            await asyncio.sleep(sleep)
            return x * x

    else:

        def objective(trial: Any) -> float:  # type: ignore[misc]
            x = trial.suggest_float("x", -10.0, 10.0)
            time.sleep(sleep)
            return x * x

    rows = {}
    for k in inflights:
        n = waves * k
        study = mod.create_study(sampler=mod.samplers.TPESampler(seed=seed))
        t0 = time.perf_counter()
        if lib == "dspex":
            study.optimize(objective, n_trials=n, concurrency=k)
        elif lib == "optuna":
            study.optimize(objective, n_trials=n, n_jobs=k)
        else:
            raise ValueError(f"{lib} has no concurrent optimize")
        wall = time.perf_counter() - t0
        complete = sum(1 for t in study.trials if str(t.state).endswith("COMPLETE"))
        ideal = math.ceil(n / k) * sleep
        rows[str(k)] = {"n_trials": n, "seconds": wall, "ideal": ideal, "efficiency": ideal / wall, "complete": complete}
    return {"rows": rows, "rss_mb": _rss_mb()}


TASKS: Dict[str, Callable[..., Dict[str, Any]]] = {"trials": task_trials, "dims": task_dims, "e2e": task_e2e, "conc": task_conc}


def run_task(task: str, timeout: float, **kwargs: Any) -> Dict[str, Any]:
    """Runs one task in a fresh interpreter; returns its JSON or {"error": ...}."""
    payload = json.dumps({"task": task, **kwargs})
    cmd = [sys.executable, "-m", "dspex.bench.speed", payload]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def _worker_main(argv: Sequence[str]) -> int:
    args = json.loads(argv[0])
    task = args.pop("task")
    print(json.dumps(TASKS[task](**args)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
