"""Program-mode throughput: a Retrieve -> Predict program against the local OpenAI-compatible
server (``dspex-testlm``, 50 ms per request), N trials x M examples, a trivial Python metric,
caches off on both sides; side by side with DSPy doing the same work (the same program as a
``dspy.Module``: BM25 from ``bm25s`` over the same corpus, ``dspy.Predict``, scored by
``dspy.Evaluate`` one trial after another, as MIPROv2 runs them).

Reports, for each setting, the wall time, the ideal (requests x latency / requests in flight)
and the engine + metric overhead per example (wall time beyond the ideal, per example):

- equal requests in flight: dspex ``concurrency=4, example_concurrency=16`` against DSPy
  ``num_threads=64``;
- each at its best: DSPy over ``num_threads`` in (16, 32, 64, 128), dspex with up to 256 in flight
  (``example_concurrency`` dividing the trial's examples, so a trial's last wave of requests is
  not a partial one; more trials at once keep the LM waits of one overlapping the work of
  another).

    python benches/program_throughput.py            # 20 trials x 100 examples
    python benches/program_throughput.py --smoke    # 3 x 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lmserver import LMServer  # noqa: E402

from dspex import DSpexSessionContext  # noqa: E402
from dspex.distributions import IntDistribution  # noqa: E402
from dspex.native import LM, Predict, Program, Retrieve  # noqa: E402
from dspex.optimizer import Study, TPESampler  # noqa: E402

LATENCY_MS = 50.0


def corpus_and_examples(n: int) -> tuple:
    docs = [f"Document {i} says that item{i} belongs to group{i % 17} and weighs {i % 97} grams." for i in range(2000)]
    examples = [{"question": f"Which group does item{i * 13 % 2000} belong to?", "answer": f"group{(i * 13 % 2000) % 17}"} for i in range(n)]
    return docs, examples


def metric(example, prediction, trace=None) -> float:
    return float(example["answer"] in prediction.answer)


def run_dspex(server: LMServer, trials: int, examples: list, docs: list, concurrency: int, example_concurrency: int) -> dict:
    with DSpexSessionContext() as ctx:
        lm = LM("bench-program", base_url=server.url, cache=False, max_concurrency=1024)
        program = Program([Retrieve(docs, k=IntDistribution(1, 8)), Predict("context, question -> answer", lm)], context=ctx)
        program(question="warm up")
        server.reset()
        study = Study(program, TPESampler(metric, n_trials=trials, seed=0, minibatch_size=None, num_candidates=1), examples)
        t0 = time.perf_counter()
        study.optimize(concurrency=concurrency, example_concurrency=example_concurrency)
        wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 3), "requests": server.stats()["requests"], "max_in_flight": server.stats()["max_inflight_seen"]}


def run_dspy(server: LMServer, trials: int, examples: list, docs: list, num_threads: int) -> dict:
    import bm25s
    import dspy

    lm = dspy.LM("openai/bench-program", api_base=server.url, api_key="none", cache=False, num_retries=3)
    dspy.configure(lm=lm)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, show_progress=False), show_progress=False)

    class RAG(dspy.Module):
        def __init__(self, k: int) -> None:
            self.k = k
            self.predict = dspy.Predict("context, question -> answer")

        def forward(self, question: str):
            ids, _ = retriever.retrieve(bm25s.tokenize(question, show_progress=False), k=self.k, show_progress=False)
            return self.predict(context=[docs[i] for i in ids[0]], question=question)

    devset = [dspy.Example(**e).with_inputs("question") for e in examples]
    RAG(3)(question="warm up")
    server.reset()
    evaluate = dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: float(e.answer in p.answer), num_threads=num_threads,
                             display_progress=False, provide_traceback=False)
    t0 = time.perf_counter()
    for trial in range(trials):  # one trial after another, as MIPROv2 runs them
        evaluate(RAG(1 + trial % 8))
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 3), "requests": server.stats()["requests"], "max_in_flight": server.stats()["max_inflight_seen"]}


def with_ideal(row: dict, total: int, in_flight: int) -> dict:
    ideal = total / in_flight * LATENCY_MS / 1000
    row.update({"in_flight": in_flight, "ideal_s": round(ideal, 3), "ratio": round(row["wall_s"] / ideal, 3),
                "overhead_ms_per_example": round((row["wall_s"] - ideal) / total * 1000, 4)})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-dspy", action="store_true", help="dspex only")
    ap.add_argument("--out")
    a = ap.parse_args()
    trials, n = (3, 20) if a.smoke else (a.trials, a.examples)
    docs, examples = corpus_and_examples(n)
    total = trials * n
    server = LMServer("--latency-ms", str(LATENCY_MS), "--threads", "1")
    rows = []
    try:
        for conc, ex_conc in ((4, 16), (4, 64), (8, 32), (5, 50)):
            r = run_dspex(server, trials, examples, docs, conc, ex_conc)
            rows.append(with_ideal({"client": f"dspex concurrency={conc} example_concurrency={ex_conc}", **r}, total, min(conc * ex_conc, conc * n)))
            print(json.dumps(rows[-1]), flush=True)
        if not a.no_dspy:
            try:
                import dspy
            except ImportError:
                rows.append({"client": "dspy", "missing": "pip install dspy bm25s"})
            else:
                for threads in (16, 32, 64, 128):
                    r = run_dspy(server, trials, examples, docs, threads)
                    rows.append(with_ideal({"client": f"dspy {dspy.__version__} Evaluate num_threads={threads}", **r}, total, min(threads, n)))
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        server.stop()
    result = {"trials": trials, "examples": n, "latency_ms": LATENCY_MS, "rows": rows,
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
