"""Data and metric of examples/program.toml (a program study described by a file); run as a
script, it runs that file: ``python examples/program_bm25.py`` is ``dspex optimize
examples/program.toml``."""

from __future__ import annotations

import os
import random
import sys

from tune_retrieval import stdlib_pairs  # the same corpus as examples/tune_retrieval.py


def corpus() -> list:
    """The documents: docstrings without their summary line."""
    return [rest for _, rest in stdlib_pairs()]


def queries() -> list:
    """150 queries (a summary line each) with the document they come from."""
    pairs = stdlib_pairs()
    random.Random(0).shuffle(pairs)
    return [{"question": s, "doc": d} for s, d in pairs[:150]]


def mrr_at_10(example, prediction, trace=None) -> float:
    """Reciprocal rank of the right document in the top 10."""
    top = prediction.context[:10]
    return 1.0 / (top.index(example["doc"]) + 1) if example["doc"] in top else 0.0


if __name__ == "__main__":
    from dspex._program_cli import run

    sys.exit(run(os.path.join(os.path.dirname(os.path.abspath(__file__)), "program.toml")))
