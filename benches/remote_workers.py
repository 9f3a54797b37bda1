"""Attached workers add capacity, and trials lost with a killed worker are re-run: one run of
the owner alone and of the owner with two attached workers (each evaluating one trial at a
time, objective sleeping ``--sleep`` seconds, ``--trials`` trials), then the same with one
worker SIGKILLed twice mid-trial and restarted. All against one ``dspex serve`` on loopback.

    python benches/remote_workers.py [--trials 400] [--sleep 0.02] [--out results/remote_workers.json]

Reports the rate of each run, the speed-up over the owner alone, the share of the trials each
evaluator (process id) finished, and the final trial states of the run with kills.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import dspex

OBJECTIVE = """
import os, time
SLEEP = float(os.environ["DSPEX_BENCH_SLEEP"])
MARKS = os.environ["DSPEX_BENCH_MARKS"]

def f(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("pid", os.getpid())
    open(os.path.join(MARKS, "started-%d" % os.getpid()), "w").close()
    time.sleep(SLEEP)
    return x
"""


def run(addr: str, name: str, n: int, workers: int, kills: int, env: Dict[str, str], marks: Path) -> Dict[str, Any]:
    """One study: this process (concurrency 1) plus ``workers`` attached ones; ``kills`` times
    the first worker is SIGKILLed once it has started a trial, and restarted."""
    import benchobj  # type: ignore[import-not-found]

    cmd = [sys.executable, "-m", "dspex.worker", "--engine", addr, "--study", name, "--objective", "benchobj:f",
           "--heartbeat-ms", "200"]
    study = dspex.create_study(study_name=name, engine=addr, sampler=dspex.samplers.RandomSampler(seed=0))
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    stop = threading.Event()
    killed: List[int] = []

    def killer() -> None:
        for _ in range(kills):
            victim = procs[0]
            marker = marks / f"started-{victim.pid}"
            while not marker.exists() and not stop.is_set():
                time.sleep(0.005)
            if stop.is_set():
                return
            time.sleep(0.005)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed.append(victim.pid)
            procs[0] = subprocess.Popen(cmd, env=env)

    k = threading.Thread(target=killer)
    # Workers attach before the run starts: wait until each has a process and the engine its stream.
    time.sleep(1.0 if workers else 0.0)
    t0 = time.perf_counter()
    k.start()
    try:
        study.optimize(benchobj.f, n_trials=n, max_retries=2)
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        k.join()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    trials = study.trials
    states = collections.Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state == dspex.TrialState.COMPLETE]
    by_pid = collections.Counter(t.user_attrs.get("pid") for t in complete)
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    return {
        "trials_asked": n,
        "evaluators": 1 + workers,
        "wall_s": round(wall, 3),
        "complete_per_s": round(len(complete) / wall, 1),
        "states": dict(states),
        "retried": len(retried),
        "share_by_pid": {("owner" if pid == os.getpid() else str(pid)): round(c / len(complete), 3) for pid, c in by_pid.items()},
        "killed_pids": killed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--sleep", type=float, default=0.02)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    dspex.logging.set_verbosity(dspex.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "benchobj.py").write_text(OBJECTIVE)
        marks = Path(tmp, "marks")
        marks.mkdir()
        # The objective module reads these, here and in the workers.
        os.environ.update(DSPEX_BENCH_SLEEP=str(args.sleep), DSPEX_BENCH_MARKS=str(marks))
        env = dict(os.environ, PYTHONPATH=tmp)
        sys.path.insert(0, tmp)
        server = subprocess.Popen([sys.executable, "-m", "dspex.cli", "serve", "--addr", "127.0.0.1:0", "--heartbeat-ms", "200"],
                                  stdout=subprocess.PIPE, text=True)
        m = re.search(r"listening on (\S+)", server.stdout.readline() if server.stdout else "")
        assert m, "the server did not start"
        addr = m.group(1)
        try:
            alone = run(addr, "alone", args.trials, 0, 0, env, marks)
            three = run(addr, "three", args.trials, 2, 0, env, marks)
            kills = run(addr, "kills", args.trials, 2, 2, env, marks)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
    summary = {
        "setup": {"trials": args.trials, "sleep_s": args.sleep, "machine": f"{os.cpu_count()} CPUs"},
        "owner_alone": alone,
        "owner_and_two_workers": three,
        "one_worker_killed_twice": kills,
        "speedup": round(three["complete_per_s"] / alone["complete_per_s"], 2),
        "min_share": min(three["share_by_pid"].values()),
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
