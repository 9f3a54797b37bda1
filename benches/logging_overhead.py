"""Concurrency efficiency of ``async def`` trials with dspex's default logging (a line per
trial at INFO) against WARNING: 2,560 trials sleeping 50 ms, 256 in flight, each run in a fresh
interpreter whose stderr goes to a file. Prints the efficiency (ideal time / wall time) of each
run and the medians.

    python benches/logging_overhead.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import asyncio, json, math, sys, time
import dspex
if sys.argv[1] != "default":
    dspex.logging.set_verbosity(getattr(dspex.logging, sys.argv[1]))
K, WAVES, SLEEP = 256, 10, 0.05

async def objective(trial):
    x = trial.suggest_float("x", -10.0, 10.0)
    await asyncio.sleep(SLEEP)
    return x * x

study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=int(sys.argv[2])))
t0 = time.perf_counter()
study.optimize(objective, n_trials=K * WAVES, concurrency=K)
wall = time.perf_counter() - t0
print(json.dumps({"efficiency": WAVES * SLEEP / wall, "trials": len(study.trials)}))
"""


def run(level: str, seed: int) -> float:
    with tempfile.TemporaryFile() as err:
        out = subprocess.run([sys.executable, "-c", CHILD, level, str(seed)], stdout=subprocess.PIPE, stderr=err, text=True, check=True)
        lines = 0
        err.seek(0)
        lines = sum(1 for ln in err if b"Trial" in ln)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if level == "default" and lines != r["trials"]:
        raise SystemExit(f"expected a log line per trial, got {lines} for {r['trials']} trials")
    return r["efficiency"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    res: dict = {"default": [], "WARNING": []}
    for i in range(args.runs):
        for level in res:
            res[level].append(run(level, i))
    for level, v in res.items():
        print(f"{level:8s} efficiency {' '.join(f'{x:.3f}' for x in v)}  median {statistics.median(v):.3f}")


if __name__ == "__main__":
    main()
