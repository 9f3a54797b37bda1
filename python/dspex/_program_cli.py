"""``dspex optimize program.toml``: a program study described by a TOML file (a file with
``[[steps]]`` tables is a program; any other goes to the engine's study.toml runner).

::

    [study]                       # all optional
    name = "rag"                  # storage + name: continued when run again
    storage = "sqlite:///rag.db"
    n_trials = 40
    concurrency = 4
    example_concurrency = 64
    seed = 0
    minibatch_size = 35           # TPESampler's other options too (max_errors, failure_score, ...)

    [data]                        # a path (JSON list, JSON lines, or for a corpus a text file
    trainset = "train.jsonl"      # with one document per line) or "module:function" returning it
    valset = "val.jsonl"
    corpus = "docs.txt"

    [metric]
    function = "my_metrics:exact_match"   # metric(example, prediction, trace=None)

    [workers]                     # optional: the metric runs in N supervised worker processes
    processes = 4                 # (restarted when they die) instead of this one

    [lm.main]                     # dspex.native.LM keywords
    model = "my-model"
    base_url = "http://127.0.0.1:8000/v1"

    [[steps]]
    module = "retrieve"           # retrieve, predict, chain_of_thought, python_tool, fuse
    k = { int = [1, 20] }         # tunable: {int = [lo, hi]}, {float = [lo, hi], log = true}, {choice = [...]}

    [[steps]]
    module = "predict"
    signature = "context, question -> answer"
    lm = "main"

Paths and modules are found relative to the file's directory. Mistakes are reported with the
file and line.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional

from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

MODULE_ARGS = {
    "retrieve": {"corpus", "index", "k", "k1", "b", "stem", "query", "output", "name"},
    "predict": {"signature", "lm", "instructions", "demos", "temperature", "demo_set", "max_tokens", "name"},
    "python_tool": None,  # any keyword
    "fuse": {"a", "b", "weight", "k", "output", "name"},
}
MODULE_ARGS["chain_of_thought"] = MODULE_ARGS["predict"]


class ProgramFileError(ValueError):
    """A mistake in a program file, with its place."""


def is_program_file(path: str) -> bool:
    """True for a TOML file with ``[[steps]]`` tables."""
    try:
        with open(path, encoding="utf-8") as f:
            return any(line.strip() == "[[steps]]" for line in f)
    except OSError:
        return False


def _toml(text: str, path: str) -> Dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise ProgramFileError(f"{path}: reading TOML on Python < 3.11 needs tomli (pip install tomli)") from None
    try:
        doc: Dict[str, Any] = tomllib.loads(text)
        return doc
    except tomllib.TOMLDecodeError as e:
        raise ProgramFileError(f"{path}: {e}") from None


class _Where:
    """Finds the line of a key of the n-th ``[[steps]]`` table or of a ``[table]``."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def step(self, index: int, key: Optional[str] = None) -> str:
        seen = -1
        for n, line in enumerate(self.lines, 1):
            if line.strip() == "[[steps]]":
                seen += 1
                if seen == index and key is None:
                    return f"{self.path}:{n}"
            elif seen == index and key is not None and re.match(rf"\s*{re.escape(key)}\s*=", line):
                return f"{self.path}:{n}"
        return self.path

    def table(self, name: str, key: Optional[str] = None) -> str:
        inside = False
        for n, line in enumerate(self.lines, 1):
            s = line.strip()
            if s.startswith("["):
                inside = s == f"[{name}]"
                if inside and key is None:
                    return f"{self.path}:{n}"
            elif inside and key is not None and re.match(rf"\s*{re.escape(key)}\s*=", line):
                return f"{self.path}:{n}"
        return self.path


def _callable(ref: str, where: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    if not module or not name:
        raise ProgramFileError(f"{where}: {ref!r} is not 'module:function'")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ProgramFileError(f"{where}: cannot load {ref!r}: {e}") from None
    if not callable(obj):
        raise ProgramFileError(f"{where}: {ref!r} is not callable")
    return obj


def _data(ref: Any, base: str, where: str, corpus: bool = False) -> List[Any]:
    if not isinstance(ref, str):
        raise ProgramFileError(f"{where}: expected a path or 'module:function', got {ref!r}")
    path = os.path.join(base, ref)
    if ":" in ref and not os.path.exists(path):
        out = _callable(ref, where)()
        return list(out)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ProgramFileError(f"{where}: cannot read {path}: {e.strerror}") from None
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            items = json.loads(text)
        elif path.endswith((".jsonl", ".ndjson")) or stripped.startswith("{"):
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif corpus:
            items = [line for line in text.splitlines() if line.strip()]
        else:
            raise ProgramFileError(f"{where}: {path} is neither a JSON list nor JSON lines")
    except json.JSONDecodeError as e:
        raise ProgramFileError(f"{where}: {path} line {e.lineno}: {e.msg}") from None
    if corpus:
        items = [x["text"] if isinstance(x, dict) and "text" in x else x for x in items]
    return list(items)


def _value(v: Any, where: str) -> Any:
    """A plain value, or a distribution from ``{int = [lo, hi]}``, ``{float = [lo, hi]}``,
    ``{choice = [...]}`` (with ``log``, ``step``)."""
    if not isinstance(v, dict):
        return v
    kinds = [k for k in ("int", "float", "choice") if k in v]
    if len(kinds) != 1 or set(v) - {"int", "float", "choice", "log", "step"}:
        raise ProgramFileError(f"{where}: a tunable value is {{int = [lo, hi]}}, {{float = [lo, hi]}} or {{choice = [...]}} (with log, step), got {v!r}")
    kind = kinds[0]
    try:
        if kind == "choice":
            return CategoricalDistribution(list(v["choice"]))
        lo, hi = v[kind]
        if kind == "int":
            return IntDistribution(int(lo), int(hi), log=bool(v.get("log", False)), step=int(v.get("step", 1)))
        return FloatDistribution(float(lo), float(hi), log=bool(v.get("log", False)), step=v.get("step"))
    except (TypeError, ValueError) as e:
        raise ProgramFileError(f"{where}: {e}") from None


def load(path: str) -> Dict[str, Any]:
    """Reads a program file into what :func:`run` needs (checked, places in errors)."""
    from dspex.native import LM

    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = _toml(text, path)
    where = _Where(path, text)
    base = os.path.dirname(os.path.abspath(path))
    if base not in sys.path:
        sys.path.insert(0, base)
    unknown = set(doc) - {"study", "data", "metric", "lm", "steps", "workers"}
    if unknown:
        name = sorted(unknown)[0]
        raise ProgramFileError(f"{where.table(name)}: unknown table [{name}] (study, data, metric, lm, steps, workers)")
    workers = doc.get("workers", {})
    for k in set(workers) - {"processes"}:
        raise ProgramFileError(f"{where.table('workers', k)}: [workers] has no key {k!r} (processes)")
    processes = workers.get("processes")
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int) or processes < 1):
        raise ProgramFileError(f"{where.table('workers', 'processes')}: processes must be an int >= 1, got {processes!r}")
    data = doc.get("data", {})
    if "trainset" not in data:
        raise ProgramFileError(f"{where.table('data')}: [data] needs trainset")
    metric_ref = doc.get("metric", {}).get("function")
    if not isinstance(metric_ref, str):
        raise ProgramFileError(f"{where.table('metric')}: [metric] needs function = \"module:function\"")
    lms = {}
    for name, settings in doc.get("lm", {}).items():
        try:
            lms[name] = LM(**settings)
        except (TypeError, ValueError) as e:
            raise ProgramFileError(f"{where.table('lm.' + name)}: [lm.{name}]: {e}") from None
    corpus = _data(data["corpus"], base, where.table("data", "corpus"), corpus=True) if "corpus" in data else None
    steps = []
    for i, st in enumerate(doc.get("steps", [])):
        module = st.get("module")
        if module not in MODULE_ARGS:
            raise ProgramFileError(f"{where.step(i, 'module')}: unknown module {module!r} (retrieve, predict, chain_of_thought, python_tool, fuse)")
        allowed = MODULE_ARGS[module]
        kwargs: Dict[str, Any] = {}
        for k, v in st.items():
            if k == "module":
                continue
            if allowed is not None and k not in allowed:
                raise ProgramFileError(f"{where.step(i, k)}: {module} has no argument {k!r} ({', '.join(sorted(allowed))})")
            kwargs[k] = _value(v, where.step(i, k))
        if module == "retrieve" and "corpus" in kwargs:
            kwargs["corpus"] = _data(kwargs["corpus"], base, where.step(i, "corpus"), corpus=True)
        elif module == "retrieve" and "index" not in kwargs:
            if corpus is None:
                raise ProgramFileError(f"{where.step(i)}: retrieve needs a corpus ([data] corpus or corpus = ...)")
            kwargs["corpus"] = corpus
        if module in ("predict", "chain_of_thought"):
            if kwargs.get("lm") not in lms:
                raise ProgramFileError(f"{where.step(i, 'lm')}: lm must name an [lm.NAME] table ({', '.join(lms) or 'none defined'})")
            kwargs["lm"] = lms[kwargs["lm"]]
        if module == "python_tool":
            if not isinstance(kwargs.get("tool"), str):
                raise ProgramFileError(f"{where.step(i)}: python_tool needs tool = \"module:function\"")
            kwargs["tool"] = _callable(kwargs["tool"], where.step(i, "tool"))
        steps.append((module, kwargs, where.step(i)))
    if not steps:
        raise ProgramFileError(f"{path}: no [[steps]]")
    return {"steps": steps, "study": doc.get("study", {}), "trainset": _data(data["trainset"], base, where.table("data", "trainset")),
            "valset": _data(data["valset"], base, where.table("data", "valset")) if "valset" in data else None,
            "metric": _callable(metric_ref, where.table("metric", "function")), "where": where, "processes": processes}


def run(path: str, output: str = "text") -> int:
    """Runs the program study of ``path``; prints the best configuration."""
    from dspex import DSpexSessionContext
    from dspex.native import ChainOfThought, Fuse, Predict, Program, PythonTool, Retrieve
    from dspex.optimizer import Study, StudyError, TPESampler

    classes = {"retrieve": Retrieve, "predict": Predict, "chain_of_thought": ChainOfThought, "python_tool": PythonTool, "fuse": Fuse}
    try:
        spec = load(path)
        study_opts = dict(spec["study"])
        run_opts = {k: study_opts.pop(k) for k in ("concurrency", "example_concurrency") if k in study_opts}
        storage, name = study_opts.pop("storage", None), study_opts.pop("name", None)
        with DSpexSessionContext() as ctx:
            modules = []
            for module, kwargs, where in spec["steps"]:
                try:
                    modules.append(classes[module](**kwargs))
                except (TypeError, ValueError) as e:
                    raise ProgramFileError(f"{where}: {e}") from None
            program = Program(modules, context=ctx)
            try:
                optimizer = TPESampler(spec["metric"], **study_opts)
            except (TypeError, ValueError) as e:
                raise ProgramFileError(f"{spec['where'].table('study')}: [study]: {e}") from None
            study = Study(program, optimizer, spec["trainset"], spec["valset"], storage=storage, study_name=name)
            best = study.optimize(show_progress_bar=output == "text", processes=spec["processes"], **run_opts)
    except (ProgramFileError, StudyError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"study_name": best.study_name, "score": best.score, "params": best.params,
              "complete": study.summary["complete"], "failed": study.summary["failed"]}
    if output == "json":
        print(json.dumps(result))
    else:
        print(f"study {best.study_name}: {result['complete']} trials complete, {result['failed']} failed")
        print(f"best score {best.score:.6g} with {best.params}")
    return 0


def main(args: List[str]) -> Optional[int]:
    """``dspex optimize FILE [--output text|json]`` for a program file; None for any other."""
    files = [a for a in args if a.endswith(".toml")]
    if not files or not is_program_file(files[0]):
        return None
    output = "text"
    if "--output" in args:
        i = args.index("--output")
        output = args[i + 1] if i + 1 < len(args) else "text"
    return run(files[0], output)


__all__ = ["ProgramFileError", "is_program_file", "load", "main", "run"]
