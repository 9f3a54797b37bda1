"""Tune a retrieval program in the dspex engine: BM25 fused with a dense retriever, scored by
MRR@10 — no LM, no server, no network.

The corpus is the Python standard library's own documentation: the docstrings of public
functions, each *without* its one-line summary. A query is such a summary ("Return the
absolute value of the argument."), and the right answer is the function it came from. The
program:

    question --Retrieve (BM25: k1, b, stemming, depth)-----------\\
             \\-PythonTool (TF-IDF + SVD, scikit-learn: depth)----Fuse (weight) -> top 10

Every argument given as a distribution is searched by the engine's TPE; the metric
(reciprocal rank of the right document in the top 10, a cutoff the tuned depths do not move)
is the only Python the trials call besides the dense retriever. The tuned configuration is
then compared with the default one on held-out queries.

    python examples/tune_retrieval.py [n_trials]
"""

from __future__ import annotations

import importlib
import inspect
import random
import sys
import time

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from dspex import DSpexSessionContext
from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from dspex.native import Fuse, Program, PythonTool, Retrieve
from dspex.optimizer import Study, TPESampler

MODULES = ["os", "os.path", "shutil", "json", "re", "string", "textwrap", "itertools", "functools", "collections",
           "math", "statistics", "random", "datetime", "pathlib", "subprocess", "glob", "fnmatch", "heapq", "bisect",
           "inspect", "ast", "tokenize", "urllib.parse", "email.utils", "base64", "binascii", "zlib", "gzip", "tarfile",
           "zipfile", "csv", "configparser", "logging", "threading", "socket", "ssl", "http.client", "unittest",
           "argparse", "difflib", "pprint", "copy", "pickle", "shelve", "sqlite3", "tempfile", "time", "calendar",
           "codecs", "locale", "platform", "sysconfig", "traceback", "warnings", "weakref", "types", "uuid"]


def stdlib_pairs() -> list:
    """(summary, rest of the docstring) of the standard library's public functions and methods."""
    seen, pairs = set(), []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            obj = getattr(module, attr, None)
            members = [obj] + [getattr(obj, m, None) for m in sorted(dir(obj)) if not m.startswith("_")] if inspect.isclass(obj) else [obj]
            for f in members:
                if attr.startswith("_") or not callable(f):
                    continue
                doc = inspect.getdoc(f) or ""
                summary, _, rest = doc.partition("\n")
                rest = rest.strip()
                if len(summary.split()) < 4 or len(rest.split()) < 12 or rest in seen or summary in seen:
                    continue
                seen.update((rest, summary))
                pairs.append((summary.strip(), rest))
    return pairs


def main(n_trials: int = 40) -> dict:
    pairs = stdlib_pairs()
    corpus = [rest for _, rest in pairs]
    rng = random.Random(0)
    queries = [{"question": s, "doc": d} for s, d in pairs]
    rng.shuffle(queries)
    tune, held_out = queries[:200], queries[200:400]

    tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english")
    svd = TruncatedSVD(n_components=128, random_state=0)
    doc_vectors = svd.fit_transform(tfidf.fit_transform(corpus))
    doc_vectors /= np.linalg.norm(doc_vectors, axis=1, keepdims=True) + 1e-9

    def dense(question: str, depth: int = 20) -> list:
        """The `depth` documents closest to the question in the TF-IDF + SVD space."""
        q = svd.transform(tfidf.transform([question]))[0]
        scores = doc_vectors @ (q / (np.linalg.norm(q) + 1e-9))
        return [corpus[i] for i in np.argsort(-scores)[:depth]]

    def mrr_at_10(example, prediction, trace=None) -> float:
        top = prediction.context[:10]
        return 1.0 / (top.index(example["doc"]) + 1) if example["doc"] in top else 0.0

    with DSpexSessionContext() as ctx:
        program = Program([
            Retrieve(corpus, k=IntDistribution(10, 100), k1=FloatDistribution(0.2, 3.0), b=FloatDistribution(0.0, 1.0),
                     stem=CategoricalDistribution([False, True]), output="bm25", name="bm25"),
            PythonTool(dense, output="dense", depth=IntDistribution(10, 100)),
            Fuse("bm25", "dense", weight=FloatDistribution(0.0, 1.0), k=10),
        ], context=ctx)

        def held_out_mrr(params) -> float:
            return sum(mrr_at_10(q, program.run(params, question=q["question"])) for q in held_out) / len(held_out)

        t0 = time.perf_counter()
        best = Study(program, TPESampler(mrr_at_10, n_trials=n_trials, seed=0), trainset=tune).optimize(concurrency=4, example_concurrency=32)
        seconds = time.perf_counter() - t0
        result = {
            "corpus": len(corpus), "tune_queries": len(tune), "held_out_queries": len(held_out), "trials": n_trials,
            "seconds": round(seconds, 2), "best_params": best.params, "tune_mrr_best": round(best.score, 4),
            "held_out_mrr_default": round(held_out_mrr(program.defaults()), 4),
            "held_out_mrr_best": round(held_out_mrr(best.params), 4),
        }
    print(f"{result['corpus']} documents, {len(tune)} tuning queries, {n_trials} trials in {seconds:.1f} s (seed 0)")
    print("best configuration:", {k: round(v, 3) if isinstance(v, float) else v for k, v in best.params.items()})
    print(f"held-out MRR@10: default {result['held_out_mrr_default']:.4f} -> tuned {result['held_out_mrr_best']:.4f}")
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
