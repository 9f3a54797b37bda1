"""Evaluations per second over one Attach stream (remote engine on loopback) against the
embedded engine, with trivial objectives. Build the extension in release mode first:

    maturin develop --release      # or: pip install .
    python benches/remote_throughput.py [--trials 20000] [--json]

For each objective and concurrency it runs the same study embedded and remote (one process,
one stream, `dspex serve` in a subprocess) and prints evaluations/s and the overhead per
evaluation of the stream (1/remote_rate - 1/embedded_rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import time

import dspex


def const(trial):
    return 1.0


def one_param(trial):
    return trial.suggest_float("x", 0.0, 1.0)


async def const_async(trial):
    return 1.0


OBJECTIVES = {"const": const, "one_param": one_param, "const_async": const_async}


def rate(study, func, n, conc):
    t = time.perf_counter()
    study.optimize(func, n_trials=n, concurrency=conc)
    return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dspex.logging.set_verbosity(dspex.logging.WARNING)
    server = subprocess.Popen([sys.executable, "-m", "dspex.cli", "serve", "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    m = re.search(r"listening on (\S+)", server.stdout.readline())
    assert m, "the server did not start"
    addr = m.group(1)
    rows = []
    try:
        for name, func in OBJECTIVES.items():
            for conc in args.concurrency:
                if name == "one_param" and conc > 16:
                    continue
                n = args.trials
                emb = dspex.create_study(sampler=dspex.samplers.RandomSampler(seed=0))
                rate(emb, func, min(n, 500), conc)  # warm-up
                emb_rate = rate(emb, func, n, conc)
                rem = dspex.create_study(study_name=f"{name}-{conc}", engine=addr, sampler=dspex.samplers.RandomSampler(seed=0))
                rate(rem, func, min(n, 500), conc)
                rem_rate = rate(rem, func, n, conc)
                overhead_us = (1 / rem_rate - 1 / emb_rate) * 1e6
                rows.append({"objective": name, "concurrency": conc, "trials": n, "embedded_per_s": round(emb_rate), "remote_per_s": round(rem_rate), "overhead_us": round(overhead_us, 1)})
                if not args.json:
                    print(f"{name:12s} concurrency {conc:3d}: embedded {emb_rate:9.0f}/s  remote (1 stream) {rem_rate:9.0f}/s  overhead {overhead_us:7.1f} us/eval", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    _ = asyncio
    sys.exit(main())
