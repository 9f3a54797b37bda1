"""Engine-native modules for Python: objects whose work runs in the dspex engine (tokio, no GIL).

``LM`` is a client of any OpenAI-compatible API (OpenAI, vLLM, llama.cpp's server, Ollama, a
LiteLLM proxy)::

    from dspex.native import LM

    lm = LM("my-model", base_url="http://127.0.0.1:8000/v1", max_concurrency=64, cache_path="lm.sqlite")
    print(lm("Say hi").text)
    answers = lm.batch([f"Question {i}?" for i in range(1000)])   # concurrent, in the engine
    print(lm.stats()["total_tokens"])

Programs run in the engine too: modules (``Retrieve``, ``Predict``, ``ChainOfThought``,
``PythonTool``, ``Fuse``) composed into a ``Program`` (or the prebuilt ``RAG``), whose arguments
given as distributions are a search space for :mod:`dspex.optimizer`.
"""

from dspex._lm import LM, BudgetExceeded, Completion, LMError, Usage
from dspex._program import (
    RAG,
    ChainOfThought,
    Fuse,
    Module,
    Predict,
    Prediction,
    Program,
    PythonTool,
    Retrieve,
    load_program,
)

__all__ = ["LM", "RAG", "BudgetExceeded", "ChainOfThought", "Completion", "Fuse", "LMError", "Module", "Predict",
           "Prediction", "Program", "PythonTool", "Retrieve", "Usage", "load_program"]
