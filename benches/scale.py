"""Studies far larger than the tests use: ``--sizes`` trials (random sampler, 10 float params,
a trivial objective, one process evaluating) in memory and, up to ``--sqlite-max`` trials, in
SQLite, each size in a fresh process; reports the peak RSS of that process and the mean time
per trial over the last tenth of the run. Peers (Optuna 5.0, rustuna 0.2) run the same study in
memory when installed, up to ``--peer-max`` trials.

Then resumes: for each of ``--resume-sizes``, a SQLite study of that many trials is loaded in a
fresh process and continued for 100 trials (load time, time per new trial, peak RSS). The
largest study built above is grown to that size by copying its own rows (SQLite's INSERT ...
SELECT with shifted trial ids and numbers): a study of a million trials written trial by trial
would take hours of fsyncs, and what a resume reads is the same rows either way.

    python benches/scale.py [--sizes 10000,100000,1000000] [--sqlite-max 100000]
        [--peer-max 100000] [--resume-sizes 100000,1000000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

CHILD = r"""
import json, resource, sys, time
lib, n, storage, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4] == "1"
if lib == "dspex":
    import dspex as o
    o.logging.set_verbosity(o.logging.WARNING)
elif lib == "optuna":
    import optuna as o
    o.logging.set_verbosity(o.logging.WARNING)
else:
    import rustuna as o
names = [f"p{i}" for i in range(10)]
def objective(trial):
    return sum(trial.suggest_float(p, -1.0, 1.0) for p in names)
t0 = time.perf_counter()
if resume:
    study = o.load_study(study_name="scale", storage=storage, sampler=o.samplers.RandomSampler(seed=1))
    loaded = time.perf_counter() - t0
    t1 = time.perf_counter()
    study.optimize(objective, n_trials=n)
    out = {"load_s": round(loaded, 3), "per_trial_ms": round((time.perf_counter() - t1) / n * 1e3, 4)}
else:
    study = o.create_study(study_name="scale", storage=storage, sampler=o.samplers.RandomSampler(seed=0))
    head = n - max(1, n // 10)
    study.optimize(objective, n_trials=head)
    t1 = time.perf_counter()
    study.optimize(objective, n_trials=n - head)
    out = {"per_trial_ms": round((time.perf_counter() - t1) / (n - head) * 1e3, 4),
           "total_s": round(time.perf_counter() - t0, 2)}
out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(out))
"""


def _available(lib: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {lib}"], capture_output=True).returncode == 0


def _run(lib: str, n: int, storage: str = "", resume: bool = False, timeout: float = 7200) -> Optional[Dict[str, Any]]:
    p = subprocess.run([sys.executable, "-c", CHILD, lib, str(n), storage, "1" if resume else "0"],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def grow(path: Path, target: int) -> None:
    """Copies the study's first trials (all their rows) after its last until it has ``target``."""
    db = sqlite3.connect(path)
    tables = [("trial_params", "param_name, param_value, distribution_json"),
              ("trial_values", "objective, value, value_type"),
              ("trial_intermediate_values", "step, intermediate_value, intermediate_value_type"),
              ("trial_user_attributes", "key, value_json"),
              ("trial_system_attributes", "key, value_json")]
    while True:
        (n,) = db.execute("SELECT COUNT(*) FROM trials").fetchone()
        if n >= target:
            break
        k = min(n, target - n)
        (shift,) = db.execute("SELECT MAX(trial_id) FROM trials").fetchone()
        db.execute("INSERT INTO trials (trial_id, number, study_id, state, datetime_start, datetime_complete) "
                   "SELECT trial_id + ?, number + ?, study_id, state, datetime_start, datetime_complete "
                   "FROM trials WHERE number < ? ORDER BY trial_id", (shift, n, k))
        for table, cols in tables:
            db.execute(f"INSERT INTO {table} (trial_id, {cols}) SELECT trial_id + ?, {cols} FROM {table} "
                       "WHERE trial_id IN (SELECT trial_id FROM trials WHERE number < ?)", (shift, k))
        db.commit()
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--sqlite-max", type=int, default=100000)
    ap.add_argument("--peer-max", type=int, default=100000)
    ap.add_argument("--resume-sizes", default="100000,1000000")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes: List[int] = [int(s) for s in args.sizes.split(",")]
    rows: List[Dict[str, Any]] = []
    peers = [lib for lib in ("optuna", "rustuna") if _available(lib)]
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            runs = [("dspex", "")] + [("dspex", f"sqlite:///{d}/s{n}.db")] * (n <= args.sqlite_max)
            for lib, storage in runs + [(p, "") for p in peers if n <= args.peer_max]:
                r = _run(lib, n, storage)
                row = {"lib": lib, "storage": "sqlite" if storage else "memory", "trials": n, **(r or {})}
                rows.append(row)
                print(json.dumps(row), flush=True)
        built = max((n for n in sizes if n <= args.sqlite_max), default=0)
        resumes: List[Dict[str, Any]] = []
        for n in [int(s) for s in args.resume_sizes.split(",") if s]:
            path = Path(d) / f"r{n}.db"
            shutil.copy(Path(d) / f"s{built}.db", path)
            grow(path, n)
            r = _run("dspex", 100, f"sqlite:///{path}", resume=True)
            resume = {"lib": "dspex", "storage": "sqlite", "resume_of": n, "new_trials": 100,
                      "db_mb": round(path.stat().st_size / 2**20, 1), **(r or {})}
            resumes.append(resume)
            print(json.dumps(resume), flush=True)
            path.unlink()
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "resumes": resumes}, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("DSPEX_LOG", "error")
    main()
