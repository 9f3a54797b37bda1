"""The LM client against a local OpenAI-compatible server (``dspex-testlm``), four measurements:

1. throughput: N requests with a fixed server latency and ``max_concurrency=C``: wall time
   against the ideal (N / C x latency), and CPU per request of this process; side by side, DSPy's
   ``dspy.LM`` (cache off) driven by a ThreadPoolExecutor of C threads on the same server (when
   dspy is installed);
2. throttling: the server answers 429 whenever more than 32 requests are in flight
   (Retry-After 0.2 s) and 5% at random: every request must succeed exactly once in the
   accounting, and the 429 share of the second half of the run must fall below a third of the
   first half's (the adaptive concurrency cap at work; reported for all 429s and for the
   load-induced ones alone, since the random 5% are a floor no client can go under);
3. warm cache: the same N requests re-run from a fresh process with the disk cache, three
   times (a fresh process each): HTTP requests made, and the median wall time against the cold
   run's;
4. budget: ``max_calls=500`` with 64 in flight: logical calls made, and ``BudgetExceeded``.

    python benches/lm_client.py                 # the acceptance sizes (a minute or two)
    python benches/lm_client.py --smoke         # small sizes, seconds

The server is started from ``$DSPEX_TESTLM`` or built with cargo (tests/lmserver.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lmserver import LMServer  # noqa: E402

from dspex.exceptions import BudgetExceeded  # noqa: E402
from dspex.native import LM  # noqa: E402


def throughput(n: int, latency_ms: float, conc: int) -> dict:
    server = LMServer("--latency-ms", str(latency_ms), "--threads", "2")
    try:
        lm = LM("bench-throughput", base_url=server.url, cache=False, max_concurrency=conc)
        lm("warm up")
        server.reset()
        prompts = [f"question {i}" for i in range(n)]
        cpu0, t0 = time.process_time(), time.perf_counter()
        out = lm.batch(prompts)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert len(out) == n and out[-1].text == f"echo: question {n - 1}"
        ideal = n / conc * latency_ms / 1000
        row = {"client": "dspex LM.batch", "requests": n, "wall_s": round(wall, 3), "ideal_s": round(ideal, 3),
               "ratio": round(wall / ideal, 3), "cpu_ms_per_request": round(cpu / n * 1000, 3),
               "server_max_inflight": server.stats()["max_inflight_seen"]}
        rows = [row]
        try:
            import dspy
        except ImportError:
            rows.append({"client": "dspy.LM", "missing": "dspy is not installed"})
            return {"rows": rows}
        dlm = dspy.LM("openai/bench-throughput", api_base=server.url, api_key="none", cache=False, num_retries=3)
        dlm("warm up")
        server.reset()
        cpu0, t0 = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(conc) as ex:
            dout = list(ex.map(lambda p: dlm(p)[0], prompts))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert len(dout) == n and dout[-1] == f"echo: question {n - 1}", dout[-1]
        rows.append({"client": f"dspy {dspy.__version__} LM + ThreadPoolExecutor({conc})", "requests": n,
                     "wall_s": round(wall, 3), "ideal_s": round(ideal, 3), "ratio": round(wall / ideal, 3),
                     "cpu_ms_per_request": round(cpu / n * 1000, 3), "server_max_inflight": server.stats()["max_inflight_seen"]})
        return {"rows": rows}
    finally:
        server.stop()


def throttling(n: int, latency_ms: float) -> dict:
    server = LMServer("--latency-ms", str(latency_ms), "--max-inflight", "32", "--retry-after", "0.2",
                      "--random-429", "0.05", "--seed", "1")
    try:
        lm = LM("bench-throttle", base_url=server.url, cache=False, max_concurrency=64, max_retries=20)
        samples = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                samples.append(server.stats())
                time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        t0 = time.perf_counter()
        out = lm.batch([f"t{i}" for i in range(n)], return_exceptions=True)
        wall = time.perf_counter() - t0
        stop.set()
        poller.join()
        final = server.stats()
        failed = [x for x in out if isinstance(x, BaseException)]
        # the first half of the run ends when half of the answers were given
        half = next((s for s in samples if s["ok"] >= n // 2), final)

        def share(s: dict) -> tuple:
            return s["by_status"].get("429", 0), s["requests"]

        t1, r1 = share(half)
        t2, r2 = share(final)
        first, second = t1 / max(r1, 1), (t2 - t1) / max(r2 - r1, 1)
        # the 429s for too many requests in flight: what the limiter can avoid (the 5% random
        # ones happen at any concurrency)
        l1, l2 = half["load_429"], final["load_429"]
        load_first, load_second = l1 / max(r1, 1), (l2 - l1) / max(r2 - r1, 1)
        st = lm.stats()
        return {"requests": n, "failed": len(failed), "wall_s": round(wall, 3), "server_ok": final["ok"],
                "accounted_calls": st["calls"], "throttled": st["throttled"], "retries": st["retries"],
                "share_429_first_half": round(first, 4), "share_429_second_half": round(second, 4),
                "second_below_a_third_of_first": second < first / 3,
                "load_429_share_first_half": round(load_first, 4), "load_429_share_second_half": round(load_second, 4),
                "final_concurrency_limit": st["concurrency"]["limit"]}
    finally:
        server.stop()


def warm_cache(n: int, latency_ms: float, conc: int) -> dict:
    server = LMServer("--latency-ms", str(latency_ms))
    try:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "cache.sqlite")
            script = textwrap.dedent(f"""
                import json, time
                from dspex.native import LM
                lm = LM("bench-cache", base_url={server.url!r}, cache_path={path!r}, max_concurrency={conc})
                t = time.perf_counter()
                out = lm.batch([f"cached question {{i}}" for i in range({n})])
                print(json.dumps({{"wall_s": time.perf_counter() - t, "cached": sum(c.cached for c in out)}}))
            """)

            def run() -> dict:
                p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=600)
                return json.loads(p.stdout.strip().splitlines()[-1])

            cold = run()
            before = server.stats()["requests"]
            warms = [run() for _ in range(3)]
            made = server.stats()["requests"] - before
        warm = sorted(w["wall_s"] for w in warms)[1]
        return {"requests": n, "cold_s": round(cold["wall_s"], 4), "warm_s_median_of_3": round(warm, 4),
                "warm_runs_s": [round(w["wall_s"], 4) for w in warms],
                "warm_over_cold": round(warm / cold["wall_s"], 4), "warm_http_requests": made,
                "warm_cached": [w["cached"] for w in warms]}
    finally:
        server.stop()


def budget(max_calls: int, conc: int) -> dict:
    server = LMServer("--latency-ms", "20")
    try:
        lm = LM("bench-budget", base_url=server.url, cache=False, max_calls=max_calls, max_concurrency=conc)
        out = lm.batch([f"b{i}" for i in range(max_calls * 2)], return_exceptions=True)
        refused = sum(isinstance(x, BudgetExceeded) for x in out)
        try:
            lm("one more")
            raised = False
        except BudgetExceeded:
            raised = True
        return {"max_calls": max_calls, "answered": sum(not isinstance(x, BaseException) for x in out),
                "refused": refused, "server_requests": server.stats()["requests"], "raises_budget_exceeded": raised}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--smoke", action="store_true", help="small sizes")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    n, lat = (200, 20.0) if a.smoke else (a.requests, a.latency_ms)
    results = {
        "throughput": throughput(n, lat, a.concurrency),
        "throttling": throttling(n, lat),
        "warm_cache": warm_cache(n, lat, a.concurrency),
        "budget": budget(50 if a.smoke else 500, 64),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    text = json.dumps(results, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
