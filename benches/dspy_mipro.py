"""dspex.dspy.MIPROv2 against dspy.MIPROv2, side by side: the same task, seed and candidates,
a local OpenAI-compatible server (``dspex-testlm``) answering after ``--latency`` ms with an
answer hashed from the whole prompt (so instructions and demos change the score), LM caches
off. For each seed, both compile ``dspy.Predict("question -> answer")`` with ``auto="light"``
and the same ``num_threads``; dspex runs ``--concurrency`` trials at once. Reported per seed:
wall time of the whole compile and of the search phase (after the candidates exist), and the
full-valset score of the program each returns; then the medians and the ratios.

    python benches/dspy_mipro.py [--seeds 5] [--latency 100] [--threads 8] [--concurrency 4] [--out FILE]

Needs DSPy 3.4 and Optuna (DSPy's MIPROv2 searches with it) and ``cargo build --release -p
dspex-testlm`` (or ``$DSPEX_TESTLM``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import dspy  # noqa: E402
from dspy.teleprompt import MIPROv2 as DSPyMIPROv2  # noqa: E402
from lmserver import LMServer  # noqa: E402

from dspex.dspy import MIPROv2 as DspexMIPROv2  # noqa: E402


def data(n: int, offset: int = 0) -> List[Any]:
    return [dspy.Example(question=f"which item is number {offset + i}? [[hash]]", answer="high").with_inputs("question")
            for i in range(n)]


def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
    return prediction.answer.strip()[-1:] in "56789"


class TimedDSPy(DSPyMIPROv2):
    """dspy.MIPROv2, timing its search phase."""

    def _optimize_prompt_parameters(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return super()._optimize_prompt_parameters(*args, **kwargs)
        finally:
            self.search_seconds = time.perf_counter() - t


class TimedDspex(DspexMIPROv2):
    """dspex.dspy.MIPROv2, timing its search phase."""

    def _search(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return super()._search(*args, **kwargs)
        finally:
            self.search_seconds = time.perf_counter() - t


def run(kind: str, seed: int, args: argparse.Namespace, lm: Any) -> Dict[str, Any]:
    trainset, valset = data(args.train), data(args.val, offset=args.train)
    common = dict(metric=metric, auto="light", seed=seed, num_threads=args.threads, prompt_model=lm, task_model=lm)
    opt: Any = TimedDSPy(**common) if kind == "dspy" else TimedDspex(**common, concurrency=args.concurrency, show_progress_bar=False)
    t = time.perf_counter()
    best = opt.compile(dspy.Predict("question -> answer"), trainset=trainset, valset=valset)
    total = time.perf_counter() - t
    return {"compile_s": round(total, 3), "search_s": round(opt.search_seconds, 3), "score": float(best.score)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--latency", type=int, default=100, help="ms per LM answer")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--train", type=int, default=40)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    logging.getLogger("dspy").setLevel(logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    server = LMServer("--latency-ms", str(args.latency))
    rows = []
    try:
        lm = dspy.LM("openai/bench", api_base=server.url, api_key="bench", cache=False, num_retries=0)
        for seed in range(args.seeds):
            row = {"seed": seed, "dspy": run("dspy", seed, args, lm), "dspex": run("dspex", seed, args, lm)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.proc.kill()
    med = {k: {m: statistics.median(r[k][m] for r in rows) for m in ("compile_s", "search_s", "score")} for k in ("dspy", "dspex")}
    summary = {
        "setup": vars(args) | {"out": str(args.out) if args.out else None},
        "runs": rows,
        "median": med,
        "search_ratio": round(med["dspex"]["search_s"] / med["dspy"]["search_s"], 3),
        "compile_ratio": round(med["dspex"]["compile_s"] / med["dspy"]["compile_s"], 3),
    }
    print(json.dumps({k: summary[k] for k in ("median", "search_ratio", "compile_ratio")}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
