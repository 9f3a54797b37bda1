"""Storage throughput: trials/s of dspex's SQL storages vs Optuna 5.0's RDBStorage on the same
database, and of both JournalStorages on a journal file (a trivial objective with 3 params and 2
intermediate values, random sampler, so the storage dominates).

    python benches/storage_throughput.py --sqlite-dir /tmp --pg postgresql://... [--trials 500]
        [--optuna-python /opt/peers/bin/python]

Prints one JSON line per (library, backend) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid

BODY = """
import time, sys
def objective(trial):
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_int("y", 0, 10)
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    trial.report(x, 0)
    trial.report(x * 2, 1)
    return x * x + y + (c == "a")
def run(lib, url, n, jobs):
    lib.logging.set_verbosity(lib.logging.WARNING)
    if url.startswith("journal:"):
        url = lib.storages.JournalStorage(lib.storages.journal.JournalFileBackend(url[len("journal:"):]))
    s = lib.create_study(study_name="bench-" + sys.argv[4], storage=url, sampler=lib.samplers.RandomSampler(seed=0))
    t0 = time.perf_counter()
    s.optimize(objective, n_trials=n, n_jobs=jobs)
    dt = time.perf_counter() - t0
    assert len(s.trials) == n
    print(n / dt)
"""


def measure(python: str, lib: str, url: str, n: int, jobs: int) -> float:
    code = f"import {lib} as lib\n{BODY}\nrun(lib, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))"
    r = subprocess.run([python, "-c", code, url, str(n), str(jobs), uuid.uuid4().hex[:8]], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{lib} on {url}: {r.stderr[-2000:]}")
    return float(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--sqlite-dir", default=tempfile.gettempdir())
    ap.add_argument("--pg", default=os.environ.get("DSPEX_TEST_PG_URL"))
    ap.add_argument("--optuna-python", default="/opt/peers/bin/python" if os.path.exists("/opt/peers/bin/python") else sys.executable)
    args = ap.parse_args()
    rows = []
    backends = [("sqlite", None), ("journal", None)]
    if args.pg:
        backends.append(("postgresql", args.pg))
    for backend, pg in backends:
        for lib, python in (("dspex", sys.executable), ("optuna", args.optuna_python)):
            path = os.path.join(args.sqlite_dir, f"bench-{lib}-{uuid.uuid4().hex[:8]}")
            url = pg or (f"journal:{path}.log" if backend == "journal" else f"sqlite:///{path}.db")
            try:
                tps = round(measure(python, lib, url, args.trials, args.jobs), 1)
                err = None
            except RuntimeError as e:  # Optuna's SQLite storage sometimes fails under n_jobs > 1
                tps, err = None, str(e).strip().splitlines()[-1]
            row = {"library": lib, "backend": backend, "trials": args.trials, "n_jobs": args.jobs, "trials_per_s": tps, "error": err}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| backend | n_jobs | dspex trials/s | Optuna trials/s | ratio |\n|---|---|---|---|---|")
    for backend, _ in backends:
        d = next(r for r in rows if r["backend"] == backend and r["library"] == "dspex")["trials_per_s"]
        o = next(r for r in rows if r["backend"] == backend and r["library"] == "optuna")["trials_per_s"]
        ratio = f"{d / o:.1f}x" if d and o else "-"
        print(f"| {backend} | {args.jobs} | {d or 'failed'} | {o or 'failed'} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
