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

    @ctx.tool
    def rerank(query: str, texts: list) -> list:      # callable by the engine and by
        return sorted(texts, key=len)                 # everyone in the session
```

Sessions live in this process's engine, or on a served engine (``engine="host:port"`` of a
``dspex serve``) that several processes join. A session idle for ``ttl`` seconds expires with
everything it owns; leaving the ``with`` block (or ``close()``) releases it at once.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import typing
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple, TypeVar, Union, overload

from dspex import _native
from dspex.distributions import BaseDistribution, _from_native

if TYPE_CHECKING:
    import asyncio

    from dspex._lm import LM

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
    """A tool of a session (native, or a Python function some process registered):
    ``tool(**kwargs)`` calls it, ``await tool.acall(**kwargs)`` without blocking the event loop;
    ``spec`` says what it takes."""

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
    over an index of the session, "chunk": overlapping word chunks, "map": many calls of one
    tool run concurrently in the engine, "echo") and the Python functions registered in it.

    Looking a tool up asks the engine for the specs only when the name is not known yet (a
    round trip on a served engine); iterating, ``len`` and ``in`` always ask."""

    def __init__(self, native: _native.Session) -> None:
        self._native = native
        self._specs: Dict[str, Dict[str, Any]] = {}

    def _refresh(self) -> Dict[str, Dict[str, Any]]:
        self._specs = self._native.tool_specs()
        return self._specs

    def __getitem__(self, name: str) -> Tool:
        spec = self._specs.get(name) or self._refresh().get(name)
        if spec is None:
            raise KeyError(f"tool {name!r} not found (the session has {sorted(self._specs)})")
        return Tool(self._native, name, spec)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._refresh()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._refresh()))

    def __len__(self) -> int:
        return len(self._refresh())


def _param_type(annotation: Any) -> str:
    """The spec type of a parameter annotated ``annotation`` ("any" when it says nothing the
    engine can check)."""
    import inspect
    if annotation is inspect.Parameter.empty:
        return "any"
    origin = typing.get_origin(annotation) or annotation
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (bytes, "bytes"), (list, "list"), (dict, "dict")):
        if origin is t:
            return name
    return "any"


def _tool_spec(func: Callable[..., Any], name: str, description: Optional[str], shared: bool = False) -> Dict[str, Any]:
    """What the engine needs to know of ``func``: its parameters (by name: a call passes
    keyword arguments), their types from the annotations, which are required."""
    import inspect
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    params: List[Dict[str, Any]] = []
    extra = False
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            extra = True
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL):
            raise TypeError(f"tool {name!r}: parameter {p.name!r} cannot be passed by name (tools take keyword arguments)")
        entry: Dict[str, Any] = {"name": p.name, "type": _param_type(hints.get(p.name, p.annotation)), "required": p.default is p.empty}
        if p.default is not p.empty and (p.default is None or isinstance(p.default, (bool, int, float, str))):
            entry["default"] = p.default
        params.append(entry)
    ret = hints.get("return", inspect.signature(func).return_annotation)
    doc = description if description is not None else inspect.getdoc(func) or ""
    return {"name": name, "description": doc, "params": params, "extra_args": extra, "returns": _param_type(ret), "shared": shared}


_F = TypeVar("_F", bound=Callable[..., Any])

class _ToolServer:
    """Runs the calls to this context's Python tools: a few threads take them from the engine
    and run plain functions there; ``async def`` tools run on an event loop of their own."""

    def __init__(self, native: _native.Session) -> None:
        self._inbox = native.provide_tools()
        self._funcs: Dict[str, Tuple[Callable[..., Any], bool]] = {}  # name -> (func, is async)
        self._pools: Dict[str, Any] = {}  # name -> the thread pool of a tool registered with threads=N
        self._threads: List[threading.Thread] = []
        self._loop: Optional["asyncio.AbstractEventLoop"] = None
        self._tasks: Set[Any] = set()
        self._lock = threading.Lock()

    def register(self, func: Callable[..., Any], name: str, description: Optional[str], timeout: float, shared: bool = False,
                 threads: Optional[int] = None) -> None:
        import asyncio
        import concurrent.futures
        import inspect

        spec = _tool_spec(func, name, description, shared)
        with self._lock:
            self._inbox.register(spec, float(timeout))
            is_async = inspect.iscoroutinefunction(func)
            self._funcs[name] = (func, is_async)
            old = self._pools.pop(name, None)
            if old is not None:
                old.shutdown(wait=False)
            if threads is not None and not is_async:
                self._pools[name] = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=f"dspex-tool-{name}")
            if is_async and self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="dspex-tools-loop", daemon=True).start()
                self._loop = loop
            if not self._threads:
                n = min(32, (os.cpu_count() or 1) + 4)
                self._threads = [threading.Thread(target=self._serve, name=f"dspex-tools-{i}", daemon=True) for i in range(n)]
                for t in self._threads:
                    t.start()

    def unregister(self, name: str) -> None:
        with self._lock:
            self._inbox.unregister(name)
            self._funcs.pop(name, None)
            pool = self._pools.pop(name, None)
        if pool is not None:  # the calls under way on its threads finish first
            pool.shutdown(wait=True)

    def _serve(self) -> None:
        inbox = self._inbox
        while True:
            calls = inbox.next(16, 0.5)
            if calls is None:
                return
            coroutines = []
            for call_id, name, kwargs in calls:
                entry = self._funcs.get(name)
                if entry is None:
                    inbox.fail(call_id, "KeyError", f"tool {name!r} is not served here any more", "")
                    continue
                func, is_async = entry
                if is_async and self._loop is not None:
                    coroutines.append((call_id, func, kwargs))
                    continue
                pool = self._pools.get(name)
                if pool is not None:
                    try:
                        pool.submit(self._run, call_id, func, kwargs)
                        continue
                    except RuntimeError:  # unregistered meanwhile: its pool is shut down
                        pass
                self._run(call_id, func, kwargs)
            if coroutines and self._loop is not None:
                self._loop.call_soon_threadsafe(self._spawn, coroutines)

    def _run(self, call_id: int, func: Callable[..., Any], kwargs: Dict[str, Any]) -> None:
        try:
            result = func(**kwargs)
        except BaseException as e:  # the tool's failure is the caller's error
            self._inbox.fail(call_id, type(e).__name__, str(e), traceback.format_exc())
        else:
            self._answer(call_id, result)

    def _answer(self, call_id: int, result: Any) -> None:
        try:
            self._inbox.reply(call_id, result)
        except Exception as e:  # a result the engine cannot carry
            self._inbox.fail(call_id, type(e).__name__, f"its result cannot be sent: {e}", traceback.format_exc())

    def _spawn(self, calls: List[Tuple[int, Callable[..., Any], Dict[str, Any]]]) -> None:
        import asyncio

        async def run(call_id: int, func: Callable[..., Any], kwargs: Dict[str, Any]) -> None:
            try:
                result = await func(**kwargs)
            except BaseException as e:
                self._inbox.fail(call_id, type(e).__name__, str(e), traceback.format_exc())
            else:
                self._answer(call_id, result)

        loop = asyncio.get_running_loop()
        for call in calls:
            task = loop.create_task(run(*call))
            self._tasks.add(task)  # the loop only keeps weak references to its tasks
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for name in list(self._funcs):
            try:
                self._inbox.unregister(name)
            except Exception:
                pass  # the session is gone already
        self._inbox.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop_loop)

    def _stop_loop(self) -> None:
        """Cancels the calls still running on the event loop, then stops it (the cancellations
        run first)."""
        import asyncio

        for task in list(self._tasks):
            task.cancel()
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.stop)


class DSpexSessionContext:
    """A session of the engine, joined for the duration of a ``with`` block.

    ``session_id``: joins that session (two contexts with the same id in this process reach the
    same variables), or creates it; None creates one with a fresh id. ``ttl``: seconds without
    traffic after which the session expires. ``engine``: None for this process's own engine, or
    ``"host:port"`` / ``"https://host:port"`` of a ``dspex serve``, where a session id names state
    that several processes join (with ``token`` when the engine has one, by default
    ``$DSPEX_TOKEN``, and ``tls_ca``: the CA
    certificate of an engine serving TLS). Everything works the same on both; on a served
    engine the context keeps one stream open to it.
    ``tool_timeout``: the default timeout, in seconds, of calls to the Python tools this context
    registers (:meth:`tool`). ``ctx.variables``: the session's variables; ``ctx.tools``: its
    tools; ``ctx.index(...)``: full-text indexes the ``search`` tool reads.
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
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise ValueError(f"session_id must be a non-empty str or None, got {session_id!r}")
        for what, v in (("ttl", ttl), ("tool_timeout", tool_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{what} must be a number of seconds > 0, got {v!r}")
        if engine is None:
            if token is not None or tls_ca is not None:
                raise ValueError("token and tls_ca are for a served engine: give engine='host:port' too")
            self._native = _native.Session.open(session_id, float(ttl))
        else:
            if not isinstance(engine, str) or not engine:
                raise ValueError(f"engine must be 'host:port' or 'https://host:port', got {engine!r}")
            from dspex.remote import connect

            self._native = _native.Session.connect(connect(engine, token, tls_ca), session_id, float(ttl))
        self.engine = engine
        self._auth = (token, tls_ca)  # for processes that join this session (metric workers)
        self.tool_timeout = float(tool_timeout)
        self.variables = Variables(self._native)
        self.tools = Tools(self._native)
        self._server: Optional[_ToolServer] = None

    @overload
    def tool(self, func: _F) -> _F: ...

    @overload
    def tool(self, *, name: Optional[str] = None, description: Optional[str] = None, timeout: Optional[float] = None) -> Callable[[_F], _F]: ...

    def tool(self, func: Optional[_F] = None, *, name: Optional[str] = None, description: Optional[str] = None, timeout: Optional[float] = None) -> Any:
        """Registers a Python function (plain or ``async def``) as a tool of the session, as
        ``@ctx.tool`` or ``@ctx.tool(name=..., description=..., timeout=...)``; returns the
        function unchanged. See :meth:`register_tool`."""
        if func is not None:
            return self.register_tool(func)

        def decorate(f: _F) -> _F:
            return self.register_tool(f, name=name, description=description, timeout=timeout)

        return decorate

    def register_tool(self, func: _F, name: Optional[str] = None, description: Optional[str] = None, timeout: Optional[float] = None, shared: bool = False,
                      threads: Optional[int] = None) -> _F:
        """Registers ``func`` as the tool ``name`` (its ``__name__`` by default) of the session:
        the engine, this process and every other process in the session can call it, with
        keyword arguments checked against the function's signature and type annotations
        (int, float, str, bool, bytes, list, dict). Its description is ``description`` or the
        docstring. A call raising reaches the caller as :class:`dspex.exceptions.ToolError`
        (``.kind``: the exception's type name, ``.remote_traceback``); a call running past
        ``timeout`` seconds (the context's ``tool_timeout`` by default) as ``ToolTimeout``. The
        tool leaves the session with this context. With ``shared=True`` several processes may
        serve the tool (a pool of workers, each registering the same function with
        ``shared=True``): a call goes to the process with the fewest calls under way, and a call
        whose process dies is sent to another. When every process is gone without
        unregistering (killed, being restarted), the tool stays for ``timeout`` seconds and
        calls made meanwhile wait for a process to join. A plain function's calls run on a few
        threads shared by this context's tools; ``threads=N`` gives the tool N threads of its own
        (a blocking tool, e.g. one waiting on a network, with up to N calls at once; unregistering
        it waits for the calls under way). Returns ``func``."""
        if not callable(func):
            raise TypeError(f"a tool must be callable, got {func!r}")
        name = name if name is not None else getattr(func, "__name__", None)
        if not isinstance(name, str) or not name or name == "<lambda>":
            raise ValueError(f"a tool needs a name (name=...), got {name!r}")
        timeout = self.tool_timeout if timeout is None else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if self._server is None:
            self._server = _ToolServer(self._native)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
        self._server.register(func, name, description, float(timeout), bool(shared), threads)
        return func

    def unregister_tool(self, name: str) -> None:
        """Removes the tool ``name`` this context registered."""
        if self._server is None:
            raise KeyError(f"tool {name!r} not found")
        self._server.unregister(name)

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

    def add_lm(self, name: str, lm: "LM") -> None:
        """Makes ``lm`` (a :class:`dspex.native.LM`) the LM ``name`` of this session, which the
        ``lm`` tool (``ctx.tools["lm"](lm=name, prompt=...)``, or many at once through ``map``)
        and program steps call in the engine. In this process's engine that is ``lm`` itself
        (its ``stats()`` and budgets count those calls). A served engine builds its own client
        from ``lm``'s settings, sent over the session stream with the API key (use TLS off
        loopback); that copy has its own accounting and budget."""
        from dspex._lm import LM

        if not isinstance(lm, LM):
            raise TypeError(f"add_lm takes a dspex.native.LM, got {type(lm).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"an LM name must be a non-empty str, got {name!r}")
        self._native.add_lm(name, lm._config, lm._native)

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
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._native.alive:
            try:
                self._native.close()
            except (KeyError, _native.RemoteError):
                pass  # expired, or closed by another context (or process) meanwhile

    def __enter__(self) -> "DSpexSessionContext":
        from dspex._program import _current

        self._token: Optional[Any] = _current.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        from dspex._program import _current

        token = getattr(self, "_token", None)
        if token is not None:
            try:
                _current.reset(token)
            except ValueError:  # left in another context than it was entered in
                pass
            self._token = None
        self.close()

    def __repr__(self) -> str:
        return f"DSpexSessionContext(session_id={self.session_id!r})"


__all__ = ["DSpexSessionContext", "Tool", "Tools", "Variables"]
