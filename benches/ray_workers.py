"""Ray actors against local worker processes as a study's evaluators: ``--trials`` trials of a
CPU-bound objective (``--seconds`` of pure-Python work each) evaluated by two Ray actors on a
local Ray cluster (``dspex.launchers.Ray(num_workers=2)``) and by ``processes=2``, one after the
other in one run; prints the wall times and their ratio. A second part SIGKILLs one actor every
``--kill-every`` seconds during a ``--kill-trials`` study and counts the finished trials.

    python benches/ray_workers.py [--trials 400] [--seconds 0.2] [--kill-every 10] [--kill-trials 300] [--out FILE]

Needs Ray (``pip install "dspex[ray]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict

HERE = str(Path(__file__).resolve().parent)


class Burn:
    """The objective: ``seconds`` of CPU in pure Python, then a quadratic (picklable by
    reference to this module, which the actors import from ``PYTHONPATH``)."""

    def __init__(self, seconds: float, pids: str = "") -> None:
        self.seconds = seconds
        self.pids = pids

    def __call__(self, trial: Any) -> float:
        x = trial.suggest_float("x", -5, 5)
        if self.pids:
            open(os.path.join(self.pids, str(os.getpid())), "a").close()
        end = time.process_time() + self.seconds
        n = 0
        while time.process_time() < end:
            n += 1
        return x * x


def timed(study_optimize: Any) -> float:
    t = time.perf_counter()
    study_optimize()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--seconds", type=float, default=0.2)
    p.add_argument("--kill-every", type=float, default=10.0)
    p.add_argument("--kill-trials", type=int, default=300)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import ray

    import dspex
    from dspex.launchers import Ray

    sys.path.insert(0, HERE)
    from ray_workers import Burn as Importable  # the actors and processes import it by this name

    dspex.logging.set_verbosity(dspex.logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": HERE}})
    result: Dict[str, Any] = {"setup": {k: v for k, v in vars(args).items() if k != "out"}}
    try:
        ray_s = timed(lambda: dspex.create_study().optimize(Importable(args.seconds), n_trials=args.trials,
                                                            workers=Ray(num_workers=2)))
        proc_s = timed(lambda: dspex.create_study().optimize(Importable(args.seconds), n_trials=args.trials, processes=2))
        result.update(ray_s=round(ray_s, 2), processes_s=round(proc_s, 2), ratio=round(ray_s / proc_s, 3),
                      ideal_s=args.trials * args.seconds / 2)
        print(json.dumps(result), flush=True)

        import tempfile

        pids = tempfile.mkdtemp(prefix="dspex-ray-bench-")
        killed = []
        done = threading.Event()

        def killer() -> None:
            while not done.wait(args.kill_every):
                live = [int(n) for n in os.listdir(pids) if int(n) not in killed]
                for pid in live:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        break
                    except ProcessLookupError:
                        killed.append(pid)

        study = dspex.create_study()
        k = threading.Thread(target=killer)
        k.start()
        try:
            t = time.perf_counter()
            study.optimize(Importable(args.seconds, pids), n_trials=args.kill_trials, workers=Ray(num_workers=2),
                           max_retries=10)
            kill_s = time.perf_counter() - t
        finally:
            done.set()
            k.join()
        states: Dict[str, int] = {}
        for tr in study.trials:
            states[tr.state.name] = states.get(tr.state.name, 0) + 1
        result["kill"] = {"seconds": round(kill_s, 2), "actors_killed": len(killed), "states": states}
        print(json.dumps(result["kill"]), flush=True)
    finally:
        ray.shutdown()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
