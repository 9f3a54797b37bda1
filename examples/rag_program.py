"""A retrieve-then-answer program (dspex.native.RAG) tuned by the engine against a local
OpenAI-compatible server that this script starts itself — no model weights, no network.

The "model" behind the server is a toy reader: it answers with the context passage that
shares the most words with the question. The corpus is the first paragraph of the docstrings of
standard-library modules, each prefixed with its module's name; a question is a sentence from a
later paragraph of the same docstring with the module's name left out, and the metric checks
that the answer names the right module. The engine searches the retrieval depth ``k`` and the instructions; every LM
call goes over real HTTP from the engine, and this process only scores predictions.

    python examples/rag_program.py [n_trials]
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dspex import DSpexSessionContext
from dspex.native import LM, RAG
from dspex.optimizer import Study, TPESampler

MODULES = ["json", "csv", "re", "heapq", "bisect", "shutil", "glob", "fnmatch", "textwrap", "difflib", "pprint",
           "tempfile", "zipfile", "tarfile", "gzip", "zlib", "base64", "hashlib", "hmac", "secrets", "uuid", "sqlite3",
           "pickle", "shelve", "copy", "enum", "string", "calendar", "argparse", "logging", "threading", "queue",
           "sched", "socket", "selectors", "ssl", "email", "mailbox", "html", "xml", "webbrowser", "wave", "colorsys",
           "gettext", "locale", "cmd", "shlex", "tkinter", "turtle", "pdb", "timeit", "trace", "tracemalloc", "abc",
           "atexit", "traceback", "warnings", "dataclasses", "contextlib", "inspect", "ast", "dis", "tokenize"]


def corpus() -> tuple:
    docs, questions = [], []
    for name in MODULES:
        try:
            doc = (importlib.import_module(name).__doc__ or "").strip()
        except ImportError:
            continue
        paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
        if len(paragraphs) < 2:
            continue
        # the corpus has the first paragraph; the question is a sentence from a later one
        later = [s for p in paragraphs[1:] for s in re.split(r"(?<=\.)\s+", p) if len(s.split()) >= 6]
        if not later:
            continue
        docs.append(f"{name}: {paragraphs[0]}")
        question = re.sub(rf"\b{re.escape(name)}\b", "this module", later[0])
        questions.append({"question": f"Which module is described here: {question}", "answer": name})
    return docs, questions


def words(text: str) -> set:
    return set(re.findall(r"[a-z]+", text.lower()))


class Reader(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: answers with the best-overlapping context passage."""

    protocol_version = "HTTP/1.1"  # keep-alive: the engine reuses its connections
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = body["messages"][-1]["content"]
        sections = dict(re.findall(r"## (\w+)\n(.*?)(?=\n\n## |\Z)", prompt, flags=re.S))
        passages = [re.sub(r"^\[\d+\] ", "", line) for line in sections.get("context", "").splitlines() if line.strip()]
        question = words(sections.get("question", ""))
        best = max(passages, key=lambda p: len(words(p) & question), default="I do not know.")
        answer = {"id": "chatcmpl-reader", "object": "chat.completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": f"## answer\n{best}"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(best.split()),
                            "total_tokens": len(prompt.split()) + len(best.split())}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def main(n_trials: int = 12) -> dict:
    docs, questions = corpus()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Reader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    def names_the_module(example, prediction, trace=None) -> float:
        return float(prediction.answer.split(":", 1)[0] == example["answer"])

    try:
        with DSpexSessionContext() as ctx:
            lm = LM("toy-reader", base_url=base_url, cache=False)
            rag = RAG(context=ctx, corpus=docs, lm=lm)
            default = sum(names_the_module(q, rag(question=q["question"])) for q in questions) / len(questions)
            best = Study(rag, TPESampler(names_the_module, n_trials=n_trials, seed=0), trainset=questions).optimize(concurrency=4)
            print(f"{len(docs)} documents, {len(questions)} questions, {n_trials} trials")
            print(f"default configuration (k={rag.defaults()['retrieve.k']}): accuracy {default:.3f}")
            print(f"best k found by the engine: {best.k.value}, accuracy {best.score:.3f}")
            q = questions[0]
            print(f"Q: {q['question']}\nA: {best(question=q['question']).answer[:100]}")
            print("LM calls:", lm.stats()["calls"])
            return {"default": default, "best": best.score, "k": best.k.value}
    finally:
        server.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
