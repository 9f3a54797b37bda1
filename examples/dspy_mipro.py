"""A DSPy program optimized with dspex's MIPROv2 (``from dspex.dspy import MIPROv2``) against a
local OpenAI-compatible server this script starts itself: no model weights, no network.

The task: name the standard-library module a docstring sentence describes. The "model" behind
the server is a toy that knows the modules (it looks the sentence up) but, like a real model,
answers in the form its prompt shows: a bare module name when the instructions ask for only the
name or when demonstrations answer that way, a sentence otherwise (which the exact-match metric
fails). It also answers DSPy's own proposal prompts, offering one of a few instructions. So
DSPy's candidates differ in quality, and the search has something to find: the program
starts near 0 and ends near 1.

    python examples/dspy_mipro.py [storage URL]

Needs DSPy 3.4 (``pip install "dspex[dspy]"``). With a storage URL (e.g.
``sqlite:///mipro.db``) the search is kept there, and running again continues it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

import dspy

from dspex.dspy import MIPROv2

INSTRUCTIONS = [
    "Read the description and reply with only the module name.",
    "Think about which part of the standard library is described and explain your answer.",
    "Identify the module described; answer in a full sentence.",
    "Given the description, output only the module name, nothing else.",
]


def modules() -> Dict[str, str]:
    """First sentence of a docstring -> module name, for standard-library modules."""
    out: Dict[str, str] = {}
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this", "idlelib", "tkinter", "turtle"):
            continue
        try:
            doc = (importlib.import_module(name).__doc__ or "").strip()
        except Exception:  # noqa: BLE001 - platform-specific modules
            continue
        sentence = re.split(r"(?<=\.)\s", " ".join(doc.split()), maxsplit=1)[0]
        if len(sentence.split()) >= 5 and name not in sentence.lower():
            out.setdefault(sentence, name)
    return out


KNOWN = modules()


def answer(messages: List[Dict[str, Any]], field: str) -> str:
    """The toy model's value for one output field."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    last = messages[-1]["content"]
    if field != "answer":  # DSPy's proposal and summary prompts
        pick = int(hashlib.sha256(last.encode()).hexdigest(), 16) % len(INSTRUCTIONS)
        return INSTRUCTIONS[pick] if field == "proposed_instruction" else "Descriptions of Python modules."
    question = re.search(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", last, flags=re.S)
    name = KNOWN.get(question.group(1).strip() if question else "", "unknown")
    demos = [m["content"] for m in messages[1:-1] if m["role"] == "assistant"]
    bare_demos = demos and all(re.search(r"\[\[ ## answer ## \]\]\n\w+\n", d) for d in demos)
    if "only the module name" in system or bare_demos:
        return name
    return f"The module described is probably {name}."


class Model(BaseHTTPRequestHandler):
    """POST /v1/chat/completions in DSPy's chat format."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        messages = body["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        fields = re.findall(r"^\d+\. `(\w+)`", system.split("Your output fields are:")[-1], flags=re.M)
        text = "".join(f"[[ ## {f} ## ]]\n{answer(messages, f)}\n\n" for f in fields) + "[[ ## completed ## ]]"
        data = json.dumps({"id": "chatcmpl-toy", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(prediction.answer.strip() == example.answer)


def main(storage: str | None = None) -> float:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lm = dspy.LM("openai/toy", api_base=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="none", cache=False)
        dspy.configure(lm=lm)
        data = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in KNOWN.items()][:80]
        trainset, valset = data[:20], data[20:]
        program = dspy.Predict("question -> answer")
        default = sum(exact(e, program(**e.inputs())) for e in valset) / len(valset)
        optimizer = MIPROv2(metric=exact, auto="light", seed=0, concurrency=4, num_threads=8, storage=storage,
                            show_progress_bar=False)
        best = optimizer.compile(program, trainset=trainset, valset=valset)
        s = optimizer.summary
        print(f"{len(trainset)} train / {len(valset)} validation examples; {s['complete']} trials, "
              f"{s['spent']['metric_calls']} evaluations, {s['spent']['lm_calls']} LM calls in the search")
        print(f"default program: {100 * default:.1f}%; optimized: {best.score:.1f}% (study {s['study_name']})")
        print(f"instructions: {best.signature.instructions!r}; {len(best.demos)} demos")
        assert best.score >= 100 * default
        return float(best.score)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
