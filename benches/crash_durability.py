"""Crash durability of a SQLite study: a study runs in a child process, which is SIGKILLed at
``--kills`` random points (from its start-up to the middle of its trials), and started again
on the same file each time. After every kill the file must pass ``PRAGMA integrity_check``,
and every trial that a callback saw finished (the callback appends its number to a log and
fsyncs it) must be in the study with the state the callback saw. The last start runs to the
end: the study resumes and finishes ``--trials`` more trials.

    python benches/crash_durability.py [--kills 50] [--trials 300] [--concurrency 4] [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

CHILD = r"""
import os, sys, time
import dspex

db, log, n_trials, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dspex.logging.set_verbosity(dspex.logging.WARNING)
study = dspex.create_study(study_name="crash", storage=f"sqlite:///{db}", load_if_exists=True)
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

def seen(study, trial):
    os.write(fd, f"{trial.number} {trial.state.name}\n".encode())
    os.fsync(fd)

def objective(trial):
    x = trial.suggest_float("x", -5, 5)
    trial.suggest_int("n", 1, 9)
    trial.set_user_attr("pid", os.getpid())
    time.sleep(0.01)
    if x > 4:
        raise ValueError("fails on purpose")
    return x * x

study.optimize(objective, n_trials=n_trials, concurrency=concurrency, callbacks=[seen], catch=(ValueError,))
print("done", flush=True)
"""


def _check(db: Path, log: Path) -> Dict[str, Any]:
    """The file's integrity and the callback-seen trials against what the study holds."""
    con = sqlite3.connect(db)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    import dspex

    stored = {t.number: t.state.name for t in dspex.load_study(study_name="crash", storage=f"sqlite:///{db}").trials}
    seen = {}
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:  # a line cut by the kill is not a trial the callback finished seeing
                seen[int(parts[0])] = parts[1]
    lost = sorted(n for n, s in seen.items() if stored.get(n) != s)
    return {"integrity": integrity, "stored": len(stored), "seen": len(seen), "lost": lost}


def run(kills: int, trials: int, concurrency: int, seed: int, workdir: Path) -> Dict[str, Any]:
    """Kills the child ``kills`` times at random points, checking after each; then lets it finish."""
    db, log = workdir / "crash.db", workdir / "seen.log"
    rng = random.Random(seed)
    cmd = [sys.executable, "-c", CHILD, str(db), str(log), str(trials), str(concurrency)]
    points: List[Dict[str, Any]] = []
    # Calibrate: how long a start-up and a whole run take, so that kills land anywhere from
    # the import of dspex to the middle of the trials.
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    full = time.perf_counter() - t0
    for i in range(kills):
        after = rng.uniform(0.0, full)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(after)
        p.send_signal(signal.SIGKILL)
        p.wait()
        c = _check(db, log)
        c.update(kill=i, after_s=round(after, 3))
        points.append(c)
    before = _check(db, log)["stored"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    final = _check(db, log)
    return {
        "setup": {"kills": kills, "trials": trials, "concurrency": concurrency, "seed": seed, "run_s": round(full, 2)},
        "kills_recovered": sum(1 for p in points if p["integrity"] == "ok" and not p["lost"]),
        "finished_trials_lost": sum(len(p["lost"]) for p in points) + len(final["lost"]),
        "integrity": sorted({p["integrity"] for p in points} | {final["integrity"]}),
        "resumed": out.returncode == 0 and "done" in out.stdout,
        "trials_after_resume": final["stored"] - before,
        "points": points,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        result = run(args.kills, args.trials, args.concurrency, args.seed, Path(d))
    summary = {k: v for k, v in result.items() if k != "points"}
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if result["finished_trials_lost"] or result["integrity"] != ["ok"] or not result["resumed"]:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("DSPEX_LOG", "error")
    main()
