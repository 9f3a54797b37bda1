"""A session of the engine: index a real corpus (the docstrings of a few standard-library
modules), search it with the engine's BM25 tool at two settings of k1/b, keep the setting in a
tunable session variable, and register a Python tool (a reranker) that the engine calls: its
`map` tool fans a batch of calls out to it concurrently.

    python examples/session_tools.py              # this process's engine
    python examples/session_tools.py HOST:PORT    # a `dspex serve`, the same code
"""

import importlib
import sys

from dspex import DSpexSessionContext

engine = sys.argv[1] if len(sys.argv) > 1 else None

texts, ids = [], []
for name in ("json", "csv", "textwrap", "heapq", "bisect", "statistics", "difflib"):
    module = importlib.import_module(name)
    for attr in [None, *sorted(a for a in dir(module) if not a.startswith("_"))]:
        obj = module if attr is None else getattr(module, attr)
        doc = getattr(obj, "__doc__", None)
        key = name if attr is None else f"{name}.{attr}"
        if isinstance(doc, str) and len(doc.split()) > 8 and key not in ids:
            texts.append(doc)
            ids.append(key)

with DSpexSessionContext(session_id="example", engine=engine) as ctx:
    n = ctx.index("stdlib", texts, ids=ids, stem=True)
    print(f"indexed {n} docstrings")
    ctx.variables.define("k1", "float", 1.2, min=0.0, max=3.0, tunable=True)
    ctx.variables.define("b", "float", 0.75, min=0.0, max=1.0, tunable=True)
    search = ctx.tools["search"]
    print(search)
    query = "merge sorted inputs into a single sorted output"
    for k1, b in ((1.2, 0.75), (0.5, 0.3)):
        ctx.variables.set_many({"k1": k1, "b": b})
        hits = search(index="stdlib", query=query, k=3, k1=ctx.variables.get("k1"), b=ctx.variables.get("b"))
        print(f"k1={k1} b={b}: " + ", ".join(f"{h['id']} ({h['score']:.2f})" for h in hits))
    assert hits and hits[0]["id"] == "heapq.merge", hits
    print("search space of the tunable variables:", {v: ctx.variables.distribution(v) for v in ("k1", "b")})


    @ctx.tool
    def rerank(query: str, hits: list, prefer: str = "") -> list:
        """Moves the hits whose id starts with `prefer` first (a stand-in for a learned reranker)."""
        return sorted(hits, key=lambda h: (not h["id"].startswith(prefer), -h["score"]))

    queries = ["split text into lines", "average of numbers", "find insertion point in a sorted list"]
    found = [search(index="stdlib", query=q, k=5) for q in queries]
    # The engine calls the Python tool, three calls in flight at once.
    reranked = ctx.tools["map"](tool="rerank", calls=[{"query": q, "hits": h, "prefer": "statistics"} for q, h in zip(queries, found)])
    for q, hits in zip(queries, reranked):
        print(f"{q!r}: {[h['id'] for h in hits[:3]]}")
    assert reranked[1][0]["id"].startswith("statistics"), reranked[1]
