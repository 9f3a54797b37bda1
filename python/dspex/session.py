"""Sessions: engine-side namespaces that Python code joins, holding typed, constrained,
versioned variables shared by everyone in the session, full-text indexes, and the engine's
native tools.

```python
from dspex import DSpexSessionContext

with DSpexSessionContext(session_id="run_123") as ctx:
    ctx.variables.define("temperature", "float", 0.7, min=0.0, max=2.0, tunable=True)
    value, version = ctx.variables.get("temperature"), ctx.variables.version("temperature")
    ctx.variables.set("temperature", 0.2, expected_version=version)
    ctx.index("docs", ["the quick brown fox", "a lazy dog"], ids=["fox", "dog"])
    hits = ctx.tools["search"](index="docs", query="fox", k=1)   # [{"id": "fox", ...}]
```

Sessions live in this process's engine. A session idle for ``ttl`` seconds expires with
everything it owns; leaving the ``with`` block (or ``close()``) releases it at once.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from dspex import _native
from dspex.distributions import BaseDistribution, _from_native

VARIABLE_TYPES = ("float", "int", "str", "bool", "choice", "embedding", "tensor")


class Variables:
    """The variables of a session (``ctx.variables``)."""

    def __init__(self, native: _native.Session) -> None:
        self._native = native

    def define(self, name: str, type: str, value: Any, *, tunable: bool = False, **constraints: Any) -> int:
        """Declares variable ``name`` of ``type`` ("float", "int", "str", "bool", "choice",
        "embedding" or "tensor") with its first value; returns its version (1).

        Constraints: float/int ``min``, ``max``, ``log``; str ``max_length``, ``pattern`` (a
        regular expression the whole string matches); choice ``choices``; embedding/tensor
        ``shape`` and ``dtype`` ("float32", "float64", "int32", "int64", "uint8"; the value is
        the raw bytes, or an array with ``tobytes()``). ``tunable=True``: the constraints define
        a search-space distribution (:meth:`distribution`). Declaring an existing name with the
        same type keeps the variable as it is; with another type it is an error.
        """
        if not isinstance(name, str):
            raise TypeError(f"a variable name must be a str, got {name!r}")
        if type not in VARIABLE_TYPES:
            raise ValueError(f"unknown variable type {type!r} ({', '.join(VARIABLE_TYPES)})")
        return self._native.define(name, type, value, bool(tunable), **constraints)

    def get(self, name: str) -> Any:
        """The current value of ``name``."""
        return self._native.get(name)[0]

    def version(self, name: str) -> int:
        """How many times ``name`` was set (1 when defined)."""
        return self._native.get(name)[1]

    def set(self, name: str, value: Any, expected_version: Optional[int] = None) -> int:
        """Sets ``name`` (checked against its type and constraints); with ``expected_version``,
        only if nobody set it since that version (else ValueError naming both versions).
        Returns the new version."""
        return self._native.set(name, value, expected_version)

    def set_many(self, values: Union[Mapping[str, Any], Iterable[Tuple[str, Any, Optional[int]]]]) -> Dict[str, int]:
        """Sets several variables at once, all or none: a mapping ``{name: value}``, or
        ``(name, value, expected_version)`` triples. Returns the new versions by name."""
        changes: List[Tuple[str, Any, Optional[int]]]
        if isinstance(values, Mapping):
            changes = [(k, v, None) for k, v in values.items()]
        else:
            changes = [(k, v, e) for k, v, e in values]
        versions = self._native.set_many(changes)
        return {name: v for (name, _, _), v in zip(changes, versions)}

    def delete(self, name: str) -> None:
        """Removes ``name``."""
        self._native.delete(name)

    def list(self, pattern: Optional[str] = None) -> List[str]:
        """The variable names matching the glob ``pattern`` (``*``, ``?``; all when None),
        sorted."""
        return self._native.list(pattern)

    def type(self, name: str) -> str:
        """The type ``name`` was declared with."""
        return self._native.spec(name)[0]

    def distribution(self, name: str) -> BaseDistribution:
        """The search-space distribution of the tunable variable ``name``."""
        kind, tunable, dist = self._native.spec(name)
        if not tunable:
            raise ValueError(f"variable {name!r} is not tunable (define it with tunable=True)")
        return _from_native(dist)

    def watch(self, names: Optional[Iterable[str]] = None, timeout: Optional[float] = None) -> Iterator[Tuple[str, Any, int]]:
        """Yields ``(name, value, version)`` for every later change (of ``names`` only, when
        given; a deleted variable has the value None), until ``timeout`` seconds pass without
        one (None: forever)."""
        wanted = None if names is None else set(names)
        stream = self._native.watch()
        last = time.monotonic()
        while True:
            event = stream.next(0.2)
            if event is None:
                if timeout is not None and time.monotonic() - last >= timeout:
                    return
                continue
            last = time.monotonic()
            if wanted is None or event[0] in wanted:
                yield event

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._native.list(None)

    def __repr__(self) -> str:
        return f"<Variables of session {self._native.id!r}: {self.list()}>"


class Tool:
    """An engine-native tool of a session: ``tool(**kwargs)`` calls it, ``await
    tool.acall(**kwargs)`` without blocking the event loop; ``spec`` says what it takes."""

    def __init__(self, native: _native.Session, name: str, spec: Dict[str, Any]) -> None:
        self._native = native
        self.name = name
        self.spec = spec

    @property
    def description(self) -> str:
        return str(self.spec["description"])

    def __call__(self, **kwargs: Any) -> Any:
        return self._native.call_tool(self.name, kwargs)

    async def acall(self, **kwargs: Any) -> Any:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, lambda: self._native.call_tool(self.name, kwargs))

    def __repr__(self) -> str:
        params = ", ".join(p["name"] if p["required"] else f"{p['name']}={p['default']!r}" for p in self.spec["params"])
        return f"<tool {self.name}({params}) -> {self.spec['returns']}>"


class Tools(Mapping[str, Tool]):
    """The tools of a session by name (``ctx.tools``): the engine's native ones ("search": BM25
    over an index of the session, "chunk": overlapping word chunks, "echo")."""

    def __init__(self, native: _native.Session) -> None:
        self._native = native
        self._specs: Dict[str, Dict[str, Any]] = native.tool_specs()

    def __getitem__(self, name: str) -> Tool:
        spec = self._specs.get(name)
        if spec is None:
            raise KeyError(f"tool {name!r} not found (the session has {sorted(self._specs)})")
        return Tool(self._native, name, spec)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)


class DSpexSessionContext:
    """A session of the engine, joined for the duration of a ``with`` block.

    ``session_id``: joins that session (two contexts with the same id in this process reach the
    same variables), or creates it; None creates one with a fresh id. ``ttl``: seconds without
    traffic after which the session expires. ``engine``/``token``/``tls_ca``: a served engine
    (``dspex serve``); sessions there are not available yet, so ``engine`` must be None.
    ``tool_timeout``: the default timeout of Python tools' calls (they come with a later
    release). ``ctx.variables``: the session's variables; ``ctx.tools``: its tools;
    ``ctx.index(...)``: full-text indexes the ``search`` tool reads.
    """

    def __init__(
        self,
        session_id: Optional[str] = None,
        engine: Optional[str] = None,
        token: Optional[str] = None,
        tls_ca: Optional[str] = None,
        ttl: float = 3600,
        tool_timeout: float = 60,
    ) -> None:
        if engine is not None:
            raise NotImplementedError("sessions on a served engine (engine=...) are not available yet; leave engine=None for this process's engine")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise ValueError(f"session_id must be a non-empty str or None, got {session_id!r}")
        for what, v in (("ttl", ttl), ("tool_timeout", tool_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{what} must be a number of seconds > 0, got {v!r}")
        self._native = _native.Session.open(session_id, float(ttl))
        self.tool_timeout = float(tool_timeout)
        self.variables = Variables(self._native)
        self.tools = Tools(self._native)

    def index(self, name: str, texts: Iterable[str], ids: Optional[Iterable[Any]] = None, *, stop_words: bool = True, stem: bool = False) -> int:
        """Builds (or replaces) the full-text index ``name`` of this session over ``texts``, for
        the ``search`` tool; ``ids`` name the documents in results (their positions when None).
        The tokenizer splits on non-alphanumerics and lower-cases; ``stop_words`` drops English
        stop words, ``stem`` reduces words to their English stem. BM25's ``k1`` and ``b`` are
        chosen per query. Returns how many documents the index holds."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        return self._native.index(name, texts, None if ids is None else list(ids), bool(stop_words), bool(stem))

    @property
    def session_id(self) -> str:
        """The session's id (generated when none was given)."""
        return self._native.id

    @property
    def closed(self) -> bool:
        """True once the session was closed or expired."""
        return not self._native.alive

    def close(self) -> None:
        """Releases the session and everything it owns (once; later calls do nothing)."""
        if self._native.alive:
            try:
                self._native.close()
            except KeyError:
                pass  # expired or closed by another context meanwhile

    def __enter__(self) -> "DSpexSessionContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DSpexSessionContext(session_id={self.session_id!r})"


__all__ = ["DSpexSessionContext", "Tool", "Tools", "Variables"]
