"""Data and metric of examples/program.toml (a program study described by a file); run as a
script, it runs that file: ``python examples/program_bm25.py`` is ``dspex optimize
examples/program.toml``."""

from __future__ import annotations

import inspect
import os
import random
import sys

MODULES = ["os", "os.path", "shutil", "json", "re", "string", "textwrap", "itertools", "functools", "collections",
           "math", "statistics", "random", "datetime", "pathlib", "subprocess", "glob", "heapq", "bisect", "csv"]


def _pairs() -> list:
    import importlib

    seen, pairs = set(), []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            f = getattr(module, attr, None)
            if attr.startswith("_") or not callable(f) or inspect.isclass(f):
                continue
            summary, _, rest = (inspect.getdoc(f) or "").partition("\n")
            rest = rest.strip()
            if len(summary.split()) >= 4 and len(rest.split()) >= 12 and rest not in seen:
                seen.add(rest)
                pairs.append((summary.strip(), rest))
    return pairs


def corpus() -> list:
    """The documents: docstrings without their summary line."""
    return [rest for _, rest in _pairs()]


def queries() -> list:
    """150 queries (a summary line each) with the document they come from."""
    pairs = _pairs()
    random.Random(0).shuffle(pairs)
    return [{"question": s, "doc": d} for s, d in pairs[:150]]


def mrr_at_10(example, prediction, trace=None) -> float:
    """Reciprocal rank of the right document in the top 10."""
    top = prediction.context[:10]
    return 1.0 / (top.index(example["doc"]) + 1) if example["doc"] in top else 0.0


if __name__ == "__main__":
    from dspex._program_cli import run

    sys.exit(run(os.path.join(os.path.dirname(os.path.abspath(__file__)), "program.toml")))
