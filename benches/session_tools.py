"""Session tools in this process's engine: the cost of a native tool call from Python, and BM25
search over 100,000 short documents against `bm25s` (if installed) on the same corpus, k1 and b.

    python benches/session_tools.py [--docs 100000] [--queries 1000] [--cycles 5 --sessions 10000]
                                    [--remote-calls 20000]

The corpus is real text from what is installed: the lines of the standard library's docstrings,
two of them per document, paired differently in each pass over the lines, until there are
--docs documents. Both libraries index the same tokens: dspex's tokenizer (lower-cased words,
English stop words removed, no stemming) is applied first and bm25s gets the token lists, so the
top-10 comparison measures ranking, not tokenizers. Reports index build time, queries/s and how
many queries have the same top-10 ids. Last, whether expiry releases memory: --cycles times,
--sessions sessions each with two variables and a small index are created, left idle until the
engine's sweep expires them, and the process's RSS is printed after each cycle (it should not
grow from cycle 2 on: allocators keep some pages after the first).

Remote (a `dspex serve` started on a loopback port): the round trip of a native tool call
(echo) over the session stream, and engine -> Python calls/s over one stream: a context
registers a trivial Python tool (plain and `async def`), and the engine's `map` tool calls it
--remote-calls times with 64 in flight.
"""

from __future__ import annotations

import argparse
import importlib
import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, List, Tuple

import dspex
from dspex import DSpexSessionContext

MODULES = (
    "json re collections functools itertools textwrap argparse csv datetime heapq bisect statistics pathlib shutil tempfile fnmatch difflib string os "
    "typing logging subprocess threading asyncio unittest email http urllib xml sqlite3 decimal fractions random inspect ast dataclasses enum contextlib pickle socket"
).split()


def lines() -> list:
    out = []
    for name in MODULES:
        m = importlib.import_module(name)
        for obj in [m, *(getattr(m, a) for a in dir(m) if not a.startswith("_"))]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str):
                out.extend(line.strip() for line in doc.splitlines() if len(line.split()) >= 4)
    return sorted(set(out))


def call_latency(ctx: DSpexSessionContext, n: int) -> float:
    """Median seconds per call of the native echo tool (5 runs of n calls, after a warm-up)."""
    echo = ctx.tools["echo"]
    for _ in range(1000):
        echo(value=1)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            echo(value=1)
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def start_server() -> Tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "dspex.cli", "serve", "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline() if p.stdout else ""
    m = re.search(r"listening on (\S+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return p, m.group(1)


def remote(calls: int) -> None:
    server, addr = start_server()
    try:
        with DSpexSessionContext(engine=addr) as ctx:
            print(f"native tool call (echo), remote round trip: {call_latency(ctx, 5000) * 1e6:.1f} us per call")

            @ctx.tool
            def ident(x: int) -> int:
                return x

            @ctx.tool
            async def aident(x: int) -> int:
                return x

            args = [{"x": i} for i in range(calls)]
            for name in ("ident", "aident"):
                ctx.tools["map"](tool=name, calls=args[:2000], concurrency=64)  # warm up
                rates = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    out = ctx.tools["map"](tool=name, calls=args, concurrency=64)
                    rates.append(calls / (time.perf_counter() - t0))
                    assert out == list(range(calls))
                kind = "async def" if name == "aident" else "def"
                print(f"engine -> Python tool calls over one stream, 64 in flight ({kind}): {statistics.median(rates):,.0f} calls/s")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def expiry_cycles(cycles: int, sessions: int) -> None:
    from dspex import _native

    for c in range(1, cycles + 1):
        for i in range(sessions):
            ctx = DSpexSessionContext(ttl=0.5)
            ctx.variables.define("k", "int", i, min=0)
            ctx.variables.define("name", "str", f"session {i}")
            ctx.index("d", [f"document {i} about topic {i % 7}", "another document"])
        deadline = time.monotonic() + 60
        while _native.Session.list_ids() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = len(_native.Session.list_ids())
        print(f"cycle {c}: {sessions} sessions created and expired ({left} left), RSS {rss_mib():.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k1", type=float, default=1.2)
    ap.add_argument("--b", type=float, default=0.75)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--remote-calls", type=int, default=20_000)
    a = ap.parse_args()
    print(f"dspex {dspex.__version__}")
    with DSpexSessionContext() as ctx:
        print(f"native tool call (echo), embedded: {call_latency(ctx, 20000) * 1e6:.2f} us per call")
    remote(a.remote_calls)

    base = lines()
    n = len(base)
    docs = [f"{base[i % n]} {base[(i * 7 + i // n) % n]}" for i in range(a.docs)]
    queries = [" ".join(base[(i * 7919) % len(base)].split()[:4]) for i in range(a.queries)]
    print(f"corpus: {len(docs)} documents from {len(base)} distinct docstring lines; {len(queries)} queries")

    with DSpexSessionContext() as ctx:
        t0 = time.perf_counter()
        ctx.index("c", docs)
        build = time.perf_counter() - t0
        search = ctx.tools["search"]
        t0 = time.perf_counter()
        ours = [search(index="c", query=q, k=10, k1=a.k1, b=a.b) for q in queries]
        qps = len(queries) / (time.perf_counter() - t0)
        print(f"dspex : index {build:.2f} s, {qps:,.0f} queries/s")
    try:
        import bm25s
    except ImportError:
        print("bm25s: not installed (pip install bm25s) - no side-by-side")
        bm25s = None
    if bm25s is not None:
        side_by_side(bm25s, a, docs, queries, ours)
    expiry_cycles(a.cycles, a.sessions)


def side_by_side(bm25s: Any, a: argparse.Namespace, docs: List[str], queries: List[str], ours: List[Any]) -> None:
    from dspex import _native

    corpus_tokens = [_native.tokenize(d) for d in docs]
    query_tokens = [_native.tokenize(q) for q in queries]
    t0 = time.perf_counter()
    retriever = bm25s.BM25(k1=a.k1, b=a.b, method="lucene")
    retriever.index(corpus_tokens, show_progress=False)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = [retriever.retrieve([q], k=10, show_progress=False, n_threads=1) for q in query_tokens]
    qps = len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    retriever.retrieve(query_tokens, k=10, show_progress=False, n_threads=1)
    batch_qps = len(queries) / (time.perf_counter() - t0)
    print(f"bm25s {bm25s.__version__}: index {build:.2f} s (token lists given), {qps:,.0f} queries/s one query a call, {batch_qps:,.0f} queries/s all in one call (one thread)")
    same_ids = same_scores = 0
    for hits, (idx, scores) in zip(ours, theirs):
        theirs_scores = [float(s) for s in scores[0]]
        if len(hits) == len(theirs_scores) and all(abs(h["score"] - s) <= 1e-5 * max(1.0, abs(s)) for h, s in zip(hits, theirs_scores)):
            same_scores += 1
        # Documents scored above the 10th score are the same set; at the 10th score, ties may
        # be broken differently (bm25s ranks float32 scores).
        cut = theirs_scores[-1] + 1e-5 * max(1.0, abs(theirs_scores[-1])) if theirs_scores else 0.0
        mine = {h["id"] for h in hits if h["score"] > cut}
        other = {int(i) for i, s in zip(idx[0], theirs_scores) if s > cut}
        if mine == other:
            same_ids += 1
    print(f"same top-10 scores: {same_scores}/{len(queries)}; same top-10 ids (ties at the 10th score aside): {same_ids}/{len(queries)}")


if __name__ == "__main__":
    main()
