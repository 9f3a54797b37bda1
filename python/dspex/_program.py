"""Engine-resident programs: modules whose work runs in the dspex engine, composed into a
``Program`` (a dataflow pipeline). Public through :mod:`dspex.native`.

Each module is a step: it reads named fields (the example's inputs, then what earlier steps
wrote) and writes new ones. Any argument given as a distribution
(``Retrieve(corpus, k=IntDistribution(1, 20))``) is a tunable variable of the program, named
``"step.arg"``; ``dspex.optimizer.Study`` searches them. Outside a study, a tunable argument
takes the module's default (``k=5`` for ``Retrieve``...).
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import json
import math
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from dspex.distributions import BaseDistribution, CategoricalDistribution, IntDistribution, distribution_to_json

if TYPE_CHECKING:
    from dspex._lm import LM
    from dspex.session import DSpexSessionContext

__all__ = ["ChainOfThought", "Fuse", "Module", "Prediction", "Predict", "Program", "PythonTool", "RAG", "Retrieve", "load_program"]

_ids = itertools.count(1)
_current: "contextvars.ContextVar[Optional[DSpexSessionContext]]" = contextvars.ContextVar("dspex_session", default=None)


def _session_key(ctx: "DSpexSessionContext") -> Tuple[Optional[str], str]:
    """Which session a module was bound to: the engine and the session id."""
    return (ctx.engine, ctx.session_id)


def _unique(prefix: str) -> str:
    """A name for something a module puts into a session (processes may share one)."""
    return f"{prefix}_{next(_ids)}_{uuid.uuid4().hex[:12]}"


class Prediction(Mapping[str, Any]):
    """The fields a program wrote for one example, by attribute (``pred.answer``) or key
    (``pred["answer"]``)."""

    def __init__(self, fields: Mapping[str, Any], trace: Optional[List[Tuple[str, Dict[str, Any], Dict[str, Any]]]] = None) -> None:
        self._fields = dict(fields)
        self.trace = trace

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(f"the prediction has no field {name!r} (it has: {', '.join(sorted(fields)) or 'none'})")

    def __getitem__(self, name: str) -> Any:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return "Prediction(" + ", ".join(f"{k}={v!r}" for k, v in self._fields.items()) + ")"


class Module:
    """A step of a program (see the module docs); subclasses say what it runs."""

    module = ""
    #: The defaults of the module's arguments, used for a tunable one outside a study.
    defaults: Dict[str, Any] = {}

    def __init__(self, name: str, args: Dict[str, Any]) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"a step name must be a non-empty str without '.', got {name!r}")
        self.name = name
        self.args = args

    def tunable(self) -> Dict[str, BaseDistribution]:
        """The arguments given as distributions."""
        return {k: v for k, v in self.args.items() if isinstance(v, BaseDistribution)}

    def default(self, arg: str) -> Any:
        """The value a tunable argument takes outside a study."""
        d = self.args[arg]
        if arg in self.defaults and _contains(d, self.defaults[arg]):
            return self.defaults[arg]
        if isinstance(d, CategoricalDistribution):
            return d.choices[0]
        low = getattr(d, "low")
        return low

    def reads(self) -> List[str]:
        """The fields the step reads."""
        return []

    def _extras(self) -> Dict[str, Any]:
        """Constructor arguments that are not step arguments (see :func:`save_program`)."""
        return {}

    def _bind(self, ctx: "DSpexSessionContext") -> Dict[str, Any]:
        """The step's JSON for the engine (registering what it needs in the session)."""
        args: Dict[str, Any] = {}
        for k, v in self.args.items():
            args[k] = {"distribution": distribution_to_json(v)} if isinstance(v, BaseDistribution) else v
        return {"name": self.name, "module": self.module, "args": args}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if v is not None)
        return f"{type(self).__name__}(name={self.name!r}, {shown})"


def _contains(d: BaseDistribution, v: Any) -> bool:
    if isinstance(d, CategoricalDistribution):
        return v in d.choices
    low, high = getattr(d, "low"), getattr(d, "high")
    return isinstance(v, (int, float)) and low <= v <= high


def _check_number(step: str, arg: str, v: Any, *, low: float, integer: bool = False) -> None:
    if v is None or isinstance(v, BaseDistribution):
        return
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or not math.isfinite(v) or v < low:
        kind = "an int" if integer else "a number"
        raise ValueError(f"step {step!r}: {arg} must be {kind} >= {low} or a distribution, got {v!r}")


class Retrieve(Module):
    """BM25 search of a corpus held in the engine: reads ``query`` (default the field
    ``question``), writes the top ``k`` texts to ``output`` (default ``context``).

    ``corpus`` is a list of texts (indexed into the session when the program is bound; with
    ``stem`` tunable both a stemmed and an unstemmed index are built) or ``index``, the name of
    an index already in the session (``ctx.index``). ``k``, ``k1``, ``b`` and ``stem`` may be
    distributions."""

    module = "retrieve"
    defaults = {"k": 5, "k1": 1.2, "b": 0.75, "stem": False}

    def __init__(
        self,
        corpus: Optional[Sequence[str]] = None,
        k: Union[int, BaseDistribution] = 5,
        k1: Union[float, BaseDistribution] = 1.2,
        b: Union[float, BaseDistribution] = 0.75,
        *,
        index: Optional[str] = None,
        stem: Union[bool, BaseDistribution] = False,
        query: str = "question",
        output: str = "context",
        name: str = "retrieve",
    ) -> None:
        if (corpus is None) == (index is None):
            raise ValueError("Retrieve needs either corpus (a list of texts) or index (a session index name)")
        if corpus is not None:
            if isinstance(corpus, str) or not all(isinstance(t, str) for t in corpus):
                raise TypeError("Retrieve corpus must be a list of str")
            corpus = list(corpus)
            empty = [i for i, t in enumerate(corpus) if not t.strip()]
            if empty:
                raise ValueError(f"Retrieve corpus: documents {empty[:10]} are empty (of {len(corpus)})")
            if not corpus:
                raise ValueError("Retrieve corpus is empty")
        _check_number(name, "k", k, low=1, integer=True)
        _check_number(name, "k1", k1, low=0)
        _check_number(name, "b", b, low=0)
        super().__init__(name, {"k": k, "k1": k1, "b": b, "stem": stem, "query": query, "output": output})
        self.corpus = corpus
        self.index = index
        self._indexed: Dict[Tuple[Optional[str], str], str] = {}

    def reads(self) -> List[str]:
        return [self.args["query"]]

    def _extras(self) -> Dict[str, Any]:
        return {"corpus": self.corpus} if self.corpus is not None else {"index": self.index}

    def _bind(self, ctx: "DSpexSessionContext") -> Dict[str, Any]:
        step = super()._bind(ctx)
        if self.corpus is not None:
            key = _session_key(ctx)
            if key not in self._indexed:
                base = _unique("__corpus")
                stems = self.args["stem"]
                wanted = stems.choices if isinstance(stems, CategoricalDistribution) else [bool(stems)]
                for s in set(wanted):
                    ctx.index(base + ("#stem" if s else ""), self.corpus, stem=bool(s))
                self._indexed[key] = base
            step["args"]["index"] = self._indexed[key]
        else:
            step["args"]["index"] = self.index
        return step


class Predict(Module):
    """One LM call shaped by a DSPy-style signature (``"context, question -> answer"``, fields
    optionally typed ``name: int|float|bool|list``): reads the input fields, writes the output
    fields parsed from the answer (see the chat format in the README). ``lm`` is a
    :class:`dspex.native.LM` (or the name of an LM added with ``ctx.add_lm``).
    ``instructions``, ``temperature`` and ``demo_set`` (an index into ``demos`` when that is a
    list of demo lists) may be distributions."""

    module = "predict"
    defaults = {"temperature": None, "instructions": None, "demo_set": 0}

    def __init__(
        self,
        signature: str,
        lm: Union["LM", str],
        instructions: Union[None, str, BaseDistribution] = None,
        demos: Optional[Sequence[Any]] = None,
        temperature: Union[None, float, BaseDistribution] = None,
        *,
        demo_set: Union[None, int, BaseDistribution] = None,
        max_tokens: Optional[int] = None,
        name: str = "predict",
    ) -> None:
        from dspex._lm import LM

        if not isinstance(signature, str) or "->" not in signature:
            raise ValueError(f"step {name!r}: signature must be a str like 'context, question -> answer', got {signature!r}")
        if not isinstance(lm, (LM, str)):
            raise TypeError(f"step {name!r}: lm must be a dspex.native.LM or an LM name, got {type(lm).__name__}")
        _check_number(name, "temperature", temperature, low=0)
        super().__init__(name, {"signature": signature, "instructions": instructions, "demos": _plain(demos),
                                "demo_set": demo_set, "temperature": temperature, "max_tokens": max_tokens})
        self.lm = lm
        self._lm_names: Dict[Tuple[Optional[str], str], str] = {}

    def _extras(self) -> Dict[str, Any]:
        return {"lm": self.lm}

    def reads(self) -> List[str]:
        inputs = self.args["signature"].split("->", 1)[0]
        return [f.split(":", 1)[0].strip() for f in inputs.split(",") if f.strip()]

    def _bind(self, ctx: "DSpexSessionContext") -> Dict[str, Any]:
        step = super()._bind(ctx)
        if isinstance(self.lm, str):
            step["args"]["lm"] = self.lm
        else:
            key = _session_key(ctx)
            if key not in self._lm_names:
                self._lm_names[key] = _unique("__lm")
                ctx.add_lm(self._lm_names[key], self.lm)
            step["args"]["lm"] = self._lm_names[key]
        return step


class ChainOfThought(Predict):
    """:class:`Predict` with a ``reasoning`` output written before the others."""

    module = "chain_of_thought"


def _plain(v: Any) -> Any:
    """Demos as plain data (dspy.Example and objects become dicts)."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return _plain(_fields_of(v))


def _fields_of(item: Any) -> Dict[str, Any]:
    """The fields of an example: a dict, a ``dspy.Example`` or an object's attributes."""
    if isinstance(item, Mapping):
        return dict(item)
    to_dict = getattr(item, "toDict", None)
    if callable(to_dict):
        return dict(to_dict())
    if hasattr(item, "__dict__"):
        return {k: v for k, v in vars(item).items() if not k.startswith("_")}
    raise TypeError(f"an example must be a dict, a dspy.Example or an object with attributes, got {type(item).__name__}")


class PythonTool(Module):
    """A step that calls a Python function in this process (or any tool of the session): its
    keyword arguments are the fields named by ``inputs`` (default: the function's parameters
    that no other argument of the step gives) plus every extra keyword of the step (which may be
    a distribution, e.g. ``PythonTool(dense, k=IntDistribution(5, 50))``). The result goes to
    the field ``output``, or, when ``output`` is None, a returned dict is merged field by field."""

    module = "python_tool"

    def __init__(
        self,
        tool: Union[str, Callable[..., Any]],
        inputs: Optional[Sequence[str]] = None,
        output: Optional[str] = None,
        *,
        name: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(tool, str) and tool) and not callable(tool):
            raise TypeError("PythonTool takes a function or the name of a session tool")
        tool_name = tool if isinstance(tool, str) else getattr(tool, "__name__", "tool")
        if inputs is None and callable(tool):
            params = inspect.signature(tool).parameters.values()
            inputs = [p.name for p in params if p.name not in kwargs
                      and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty]
        if inputs is None:
            raise ValueError(f"PythonTool {tool_name!r}: give inputs= (the fields passed to the tool)")
        if isinstance(inputs, str) or not all(isinstance(i, str) for i in inputs):
            raise TypeError("PythonTool inputs must be a list of field names")
        super().__init__(name or tool_name, {"tool": tool_name, "inputs": list(inputs), "output": output, **kwargs})
        self.func = None if isinstance(tool, str) else tool
        self._registered: set = set()

    def reads(self) -> List[str]:
        return list(self.args["inputs"])

    def default(self, arg: str) -> Any:
        if self.func is not None:
            p = inspect.signature(self.func).parameters.get(arg)
            if p is not None and p.default is not p.empty and _contains(self.args[arg], p.default):
                return p.default
        return super().default(arg)

    def _bind(self, ctx: "DSpexSessionContext") -> Dict[str, Any]:
        if self.func is not None and _session_key(ctx) not in self._registered:
            ctx.register_tool(self.func, name=self.args["tool"])
            self._registered.add(_session_key(ctx))
        return super()._bind(ctx)


class Fuse(Module):
    """Reciprocal-rank fusion of two ranked lists (fields ``a`` and ``b``, e.g. a BM25
    ``Retrieve`` and a dense retriever's ``PythonTool``): an item scores ``weight / (60 +
    rank in a) + (1 - weight) / (60 + rank in b)``; the top ``k`` go to ``output``. ``weight``
    and ``k`` may be distributions."""

    module = "fuse"
    defaults = {"weight": 0.5, "k": 10}

    def __init__(self, a: str, b: str, weight: Union[float, BaseDistribution] = 0.5, k: Union[int, BaseDistribution] = 10,
                 *, output: str = "context", name: str = "fuse") -> None:
        _check_number(name, "k", k, low=1, integer=True)
        _check_number(name, "weight", weight, low=0)
        super().__init__(name, {"a": a, "b": b, "weight": weight, "k": k, "output": output})

    def reads(self) -> List[str]:
        return [self.args["a"], self.args["b"]]


class Program:
    """A pipeline of modules run in the engine, in order, each reading fields of the example
    and of earlier steps and writing new ones.

    ``program(**inputs)`` runs it once with its default configuration (each tunable argument
    at its module's default) and returns a :class:`Prediction`; ``program.variables`` maps
    every tunable ``"step.arg"`` to its distribution; ``program.inputs`` are the fields it
    needs from an example. ``context`` is the session it runs in (default: the innermost
    ``with DSpexSessionContext()`` block)."""

    def __init__(self, steps: Sequence[Module], context: Optional["DSpexSessionContext"] = None) -> None:
        steps = list(steps)
        if not steps or not all(isinstance(s, Module) for s in steps):
            raise TypeError("a Program takes a non-empty list of modules (Retrieve, Predict, PythonTool, Fuse...)")
        names = [s.name for s in steps]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"two steps have the name {sorted(dup)[0]!r}: give name= to tell them apart")
        ctx = context if context is not None else _current.get()
        if ctx is None:
            raise ValueError("a Program needs a session: pass context=ctx or build it inside `with DSpexSessionContext() as ctx:`")
        self.steps = steps
        self.context = ctx
        #: The configuration ``program(**inputs)`` runs with (``"step.arg"`` → value); tunable
        #: arguments not in it take their defaults.
        self.params: Dict[str, Any] = {}
        #: What a loaded program was saved with besides its steps and params (e.g. ``score``).
        self.saved: Dict[str, Any] = {}
        self._json: Optional[Dict[str, Any]] = None

    @property
    def variables(self) -> Dict[str, BaseDistribution]:
        """Every tunable argument, as ``"step.arg"`` → distribution."""
        return {f"{s.name}.{a}": d for s in self.steps for a, d in s.tunable().items()}

    @property
    def inputs(self) -> List[str]:
        """The fields an example must have: read by a step before any step writes them."""
        written: set = set()
        needed: List[str] = []
        for s in self.steps:
            for f in s.reads():
                if f not in written and f not in needed:
                    needed.append(f)
            written.update(self._writes(s))
        return needed

    @staticmethod
    def _writes(s: Module) -> List[str]:
        if isinstance(s, Predict):
            outs = s.args["signature"].split("->", 1)[1]
            names = [f.split(":", 1)[0].strip() for f in outs.split(",") if f.strip()]
            return (["reasoning"] if isinstance(s, ChainOfThought) else []) + names
        out = s.args.get("output")
        return [out] if isinstance(out, str) else []

    def defaults(self) -> Dict[str, Any]:
        """The default configuration: every tunable ``"step.arg"`` at its module's default."""
        return {f"{s.name}.{a}": s.default(a) for s in self.steps for a in s.tunable()}

    def to_json(self) -> Dict[str, Any]:
        """The program as the engine reads it (binding its corpora, LMs and tools to the
        session first)."""
        if self._json is None:
            self._json = {"steps": [s._bind(self.context) for s in self.steps]}
        return self._json

    def example_inputs(self, item: Any, where: str = "example") -> Dict[str, Any]:
        """The program's input fields of an example, checked."""
        fields = _fields_of(item)
        out = {}
        for f in self.inputs:
            if f not in fields:
                step = next(s.name for s in self.steps if f in s.reads())
                have = ", ".join(sorted(fields)) or "none"
                raise ValueError(f"{where} has no field {f!r}, which step {step!r} reads (it has: {have})")
            out[f] = _plain(fields[f])
        return out

    def run(self, params: Optional[Mapping[str, Any]] = None, **inputs: Any) -> Prediction:
        """Runs the program once in the engine with ``params`` (``"step.arg"`` → value; missing
        ones take their defaults) on ``inputs``."""
        values = self.defaults()
        for k, v in (params or {}).items():
            if k not in values:
                raise KeyError(f"the program has no tunable argument {k!r} (it has: {', '.join(sorted(values)) or 'none'})")
            values[k] = v
        spec = {"program": self.to_json(), "params": values, "inputs": self.example_inputs(inputs, "the call")}
        out = self.context._native.program("run", json.dumps(spec))
        trace = [(t["step"], t["inputs"], t["outputs"]) for t in out["trace"]]
        return Prediction(out["prediction"], trace)

    def __call__(self, **inputs: Any) -> Prediction:
        return self.run(self.params, **inputs)

    def run_many(self, examples: Sequence[Any], params: Optional[Mapping[str, Any]] = None, concurrency: int = 64) -> List[Union[Prediction, Exception]]:
        """Runs the program on every example (dicts, ``dspy.Example`` objects, or objects with the
        input fields) concurrently in the engine, ``concurrency`` at a time; a
        :class:`Prediction` per example, in order, or the error of a run that failed (a
        ``RuntimeError`` naming what went wrong)."""
        return self._run_many(examples, params, concurrency)[0]

    def _run_many(self, examples: Sequence[Any], params: Optional[Mapping[str, Any]] = None, concurrency: int = 64,
                  budget: Optional[Mapping[str, Any]] = None) -> Tuple[List[Union[Prediction, Exception]], Optional[Dict[str, Any]]]:
        """:meth:`run_many`, charging every LM call to ``budget`` too (``{"budget": limits,
        "budget_spent": {calls, tokens, cost}}``, a study's budget); returns the runs and what
        the budget has spent after them (None without one)."""
        values = self.defaults()
        values.update(self.params if params is None else params)
        items = [self.example_inputs(e, f"example {i}") for i, e in enumerate(examples)]
        spec = {"program": self.to_json(), "params": values, "inputs": items, "concurrency": int(concurrency), **(budget or {})}
        answer = self.context._native.program("run_many", json.dumps(spec))
        spent = None
        if isinstance(answer, dict):
            answer, spent = answer["runs"], answer["budget_spent"]
        out: List[Union[Prediction, Exception]] = []
        for r in answer:
            if "error" in r:
                out.append(RuntimeError(r["error"]))
            else:
                out.append(Prediction(r["prediction"], [(t["step"], t["inputs"], t["outputs"]) for t in r["trace"]]))
        return out, spent

    def save(self, path: Union[str, "os.PathLike[str]"], params: Optional[Mapping[str, Any]] = None, **meta: Any) -> None:
        """Writes the program to a JSON file: its steps with their arguments (distributions
        included), corpora, LM settings (never an API key or an auth header: the key is read
        from ``api_key_env`` again on load), Python tools by name, and ``params`` (default
        :attr:`params`), the configuration :func:`load_program` gives back."""
        steps = []
        for st in self.steps:
            kwargs = {**st.args, **st._extras(), "name": st.name}
            steps.append({"module": st.module, "kwargs": {k: _save_value(v) for k, v in kwargs.items()}})
        doc = {"format": "dspex.program/1", "steps": steps, "params": dict(self.params if params is None else params), **meta}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)

    def __repr__(self) -> str:
        return "Program(" + " -> ".join(f"{s.name}:{s.module}" for s in self.steps) + ")"


_SECRET_HEADERS = ("authorization", "api-key", "x-api-key", "proxy-authorization")


def _save_value(v: Any) -> Any:
    from dspex._lm import LM

    if isinstance(v, BaseDistribution):
        return {"__distribution__": distribution_to_json(v)}
    if isinstance(v, LM):
        settings = json.loads(v._config)
        settings.pop("api_key", None)
        headers = settings.get("headers") or {}
        settings["headers"] = {k: x for k, x in headers.items()
                               if k.lower() not in _SECRET_HEADERS and "token" not in k.lower() and "key" not in k.lower()} or None
        settings["model_name"] = v.model
        return {"__lm__": settings}
    return v


def _load_value(v: Any) -> Any:
    from dspex._lm import LM
    from dspex.distributions import json_to_distribution

    if isinstance(v, dict) and set(v) == {"__distribution__"}:
        return json_to_distribution(v["__distribution__"])
    if isinstance(v, dict) and set(v) == {"__lm__"}:
        s = dict(v["__lm__"])
        model = s.pop("model_name", s.pop("model"))
        s.pop("model", None)
        return LM(model, **s)
    return v


_MODULES: Dict[str, type] = {}


def load_program(path: Union[str, "os.PathLike[str]"], context: Optional["DSpexSessionContext"] = None,
                 tools: Optional[Mapping[str, Callable[..., Any]]] = None) -> Program:
    """Reads a program written by :meth:`Program.save` (or ``BestProgram.save``) into the
    session ``context`` (default: the innermost ``with DSpexSessionContext()``); its
    :attr:`Program.params` is the saved configuration. A ``PythonTool`` step calls
    ``tools[name]`` when given, else the session's tool of that name."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("format") != "dspex.program/1":
        raise ValueError(f"{path}: not a saved dspex program (format dspex.program/1)")
    if not _MODULES:
        _MODULES.update({"retrieve": Retrieve, "predict": Predict, "chain_of_thought": ChainOfThought,
                         "python_tool": PythonTool, "fuse": Fuse})
    steps: List[Module] = []
    for i, st in enumerate(doc.get("steps", [])):
        cls = _MODULES.get(st.get("module"))
        if cls is None:
            raise ValueError(f"{path}: step {i} has an unknown module {st.get('module')!r}")
        kwargs = {k: _load_value(v) for k, v in st.get("kwargs", {}).items()}
        if cls is PythonTool and tools is not None and kwargs.get("tool") in tools:
            kwargs["tool"] = tools[kwargs["tool"]]
        steps.append(cls(**kwargs))
    program = Program(steps, context=context)
    unknown = set(doc.get("params", {})) - set(program.variables)
    if unknown:
        raise ValueError(f"{path}: params {sorted(unknown)} are not tunable arguments of the program")
    program.params = dict(doc.get("params", {}))
    program.saved = {k: v for k, v in doc.items() if k not in ("format", "steps", "params")}
    return program


#: Instruction candidates RAG searches over when none are given.
RAG_INSTRUCTIONS = (
    "Answer the question using the context.",
    "Read the context passages and answer the question with a short, exact phrase taken from them.",
    "Use only the facts in the context to answer the question; keep the answer brief.",
)


def RAG(
    context: Optional["DSpexSessionContext"] = None,
    corpus: Optional[Sequence[str]] = None,
    lm: Union["LM", str, None] = None,
    k: Union[int, BaseDistribution, None] = None,
    instructions: Union[None, str, BaseDistribution] = None,
    signature: str = "context, question -> answer",
    *,
    index: Optional[str] = None,
) -> Program:
    """The prebuilt Retrieve → Predict program (steps ``retrieve`` and ``predict``), with a
    default search space: ``k`` from 1 to 20 and three instruction candidates (pass plain
    values to fix them)."""
    if lm is None:
        raise ValueError("RAG needs lm= (a dspex.native.LM)")
    retrieve = Retrieve(corpus, k=IntDistribution(1, 20) if k is None else k, index=index, name="retrieve")
    predict = Predict(signature, lm, instructions=CategoricalDistribution(list(RAG_INSTRUCTIONS)) if instructions is None else instructions,
                      name="predict")
    return Program([retrieve, predict], context=context)
