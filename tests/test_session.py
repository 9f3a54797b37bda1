"""Sessions of this process's engine and their variables (DSpexSessionContext)."""

import array
import threading
import time

import pytest

import dspex
from dspex import DSpexSessionContext, _native


def test_variables_are_typed_constrained_and_versioned():
    with DSpexSessionContext() as ctx:
        v = ctx.variables
        assert v.define("temperature", "float", 1, min=0.0, max=2.0, tunable=True) == 1
        assert v.get("temperature") == 1.0 and isinstance(v.get("temperature"), float)
        assert v.set("temperature", 0.5, expected_version=1) == 2
        with pytest.raises(ValueError, match="version 2.*expected version 1"):
            v.set("temperature", 0.7, expected_version=1)
        with pytest.raises(ValueError, match="outside"):
            v.set("temperature", 3.0)
        with pytest.raises(ValueError, match="float variable cannot hold a str"):
            v.set("temperature", "hot")
        assert v.version("temperature") == 2
        d = v.distribution("temperature")
        assert isinstance(d, dspex.distributions.FloatDistribution) and (d.low, d.high) == (0.0, 2.0)
        with pytest.raises(KeyError, match="variable 'nope' not found|variable \"nope\" not found"):
            v.get("nope")


def test_every_type_and_its_constraints():
    with DSpexSessionContext() as ctx:
        v = ctx.variables
        v.define("name", "str", "abc", max_length=5, pattern="[a-z]+")
        with pytest.raises(ValueError, match="does not match"):
            v.set("name", "ab1")
        with pytest.raises(ValueError, match="longer than max_length"):
            v.set("name", "abcdef")
        v.define("flag", "bool", False, tunable=True)
        assert v.distribution("flag").choices == (False, True)
        v.define("model", "choice", "small", choices=["small", "large"], tunable=True)
        with pytest.raises(ValueError, match="not one of the choices"):
            v.set("model", "medium")
        v.define("k", "int", 5, min=1, max=50, log=True, tunable=True)
        assert v.distribution("k").log
        emb = array.array("f", [0.5, 1.5, 2.5])
        v.define("query", "embedding", emb, shape=(3,), dtype="float32")
        assert array.array("f", v.get("query")).tolist() == [0.5, 1.5, 2.5]
        with pytest.raises(ValueError, match="bytes do not hold"):
            v.set("query", b"\x00" * 8)
        v.define("payload", "tensor", b"\x01" * 16, shape=(2, 2), dtype="int32")
        assert v.type("payload") == "tensor"
        assert v.list() == ["flag", "k", "model", "name", "payload", "query"]
        assert v.list("*a*") == ["flag", "name", "payload"]
        v.delete("payload")
        assert "payload" not in v and "k" in v
        with pytest.raises(ValueError, match="not tunable"):
            v.distribution("name")


@pytest.mark.parametrize(
    "kind, value, constraints, needle",
    [
        ("float", 1.0, {"min": 2.0, "max": 1.0}, "greater than max"),
        ("int", 1, {"min": 0, "max": 5, "log": True}, "log=True needs min"),
        ("choice", 1, {"choices": []}, "must not be empty"),
        ("str", "a", {"pattern": "("}, "not a regular expression"),
        ("float", 1.0, {"choices": [1]}, "takes no constraint"),
        ("vector", 1.0, {}, "unknown variable type"),
        ("tensor", b"", {"shape": (1,), "dtype": "complex"}, "unknown dtype"),
        ("float", 1.0, {"tunable": True}, "needs min"),
        ("str", "x", {"tunable": True}, "cannot be tunable"),
        ("float", object(), {}, "values must be None, bool"),
    ],
)
def test_bad_definitions_are_clear_errors(kind, value, constraints, needle):
    with DSpexSessionContext() as ctx:
        with pytest.raises((ValueError, TypeError), match=needle):
            ctx.variables.define("x", kind, value, **constraints)


def test_set_many_is_all_or_nothing():
    with DSpexSessionContext() as ctx:
        v = ctx.variables
        v.define("a", "float", 0.1, min=0, max=1)
        v.define("b", "bool", False)
        with pytest.raises(ValueError, match='"b"'):
            v.set_many({"a": 0.2, "b": 3})
        assert v.get("a") == 0.1
        assert v.set_many([("a", 0.2, 1), ("b", True, 1)]) == {"a": 2, "b": 2}


def test_a_session_id_is_shared_and_sessions_are_isolated():
    with DSpexSessionContext(session_id="run_123") as one:
        one.variables.define("k", "int", 3, min=1, max=10)
        two = DSpexSessionContext(session_id="run_123")
        assert two.variables.get("k") == 3
        two.variables.set("k", 4)
        assert one.variables.get("k") == 4
        with DSpexSessionContext() as other:
            assert other.session_id != "run_123"
            assert other.variables.list() == []
            with pytest.raises(KeyError):
                other.variables.get("k")
    assert two.closed and "run_123" not in _native.Session.list_ids()
    with pytest.raises(KeyError, match="closed or expired"):
        two.variables.get("k")
    two.close()  # once closed, closing again does nothing


def test_idle_sessions_expire_with_what_they_own():
    ctx = DSpexSessionContext(ttl=0.3)
    ctx.variables.define("x", "bool", True)
    sid = ctx.session_id
    deadline = time.monotonic() + 5
    while not ctx.closed and time.monotonic() < deadline:  # asking is not traffic
        time.sleep(0.1)
    assert ctx.closed and sid not in _native.Session.list_ids()
    with pytest.raises(KeyError):
        ctx.variables.get("x")
    # Traffic keeps a session alive.
    busy = DSpexSessionContext(ttl=0.5)
    busy.variables.define("n", "int", 0)
    for i in range(12):
        busy.variables.set("n", i)
        time.sleep(0.1)
    assert not busy.closed
    busy.close()


def test_watch_sees_changes_from_another_thread():
    with DSpexSessionContext() as ctx:
        v = ctx.variables
        v.define("a", "int", 0)
        v.define("b", "int", 0)
        seen = []

        def watcher():
            for event in v.watch(["a"], timeout=1.0):
                seen.append(event)
                if event[1] is None:
                    return

        t = threading.Thread(target=watcher)
        t.start()
        time.sleep(0.2)
        v.set("b", 1)
        v.set("a", 1)
        v.set("a", 2)
        v.delete("a")
        t.join(5)
        assert seen == [("a", 1, 2), ("a", 2, 3), ("a", None, 3)]


def test_bad_context_arguments():
    with pytest.raises(ValueError, match="ttl"):
        DSpexSessionContext(ttl=0)
    with pytest.raises(ValueError, match="session_id"):
        DSpexSessionContext(session_id="")
    with pytest.raises(dspex.exceptions.RemoteError, match="cannot reach the engine at 127.0.0.1:1"):
        DSpexSessionContext(engine="127.0.0.1:1")


def _docstring_corpus():
    """A real corpus from what is installed: the docstrings of some standard-library modules
    and of their public functions and classes."""
    import importlib

    texts, ids = [], []
    names = "json re collections functools itertools textwrap argparse csv datetime heapq bisect statistics pathlib shutil tempfile fnmatch difflib string"
    for name in names.split():
        module = importlib.import_module(name)
        for attr, obj in [(name, module), *((f"{name}.{a}", getattr(module, a)) for a in sorted(dir(module)) if not a.startswith("_"))]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc.split()) > 8 and attr not in ids:
                texts.append(doc)
                ids.append(attr)
    return texts, ids


def test_search_tool_over_an_indexed_corpus():
    texts, ids = _docstring_corpus()
    assert len(texts) >= 200
    with DSpexSessionContext() as ctx:
        assert ctx.index("stdlib", texts, ids=ids) == len(texts)
        assert set(ctx.tools) == {"chunk", "echo", "lm", "map", "search"}
        search = ctx.tools["search"]
        assert [p["name"] for p in search.spec["params"]] == ["index", "query", "k", "k1", "b"]
        target = ids[len(ids) // 2]
        words = [w for w in texts[len(ids) // 2].split() if w.isalpha() and len(w) > 6][:4]
        hits = search(index="stdlib", query=" ".join(words), k=5)
        assert 1 <= len(hits) <= 5 and set(hits[0]) == {"id", "score", "text"}
        assert hits == sorted(hits, key=lambda h: -h["score"])
        assert target in [h["id"] for h in hits]
        # k1 and b are query-time parameters: the same index, another ranking function.
        flat = search(index="stdlib", query=" ".join(words), k=5, k1=0.0)
        assert all(h["score"] >= 0 for h in flat)
        # stemming is an index-time option
        ctx.index("stemmed", ["running quickly", "a runner"], stem=True)
        assert [h["id"] for h in search(index="stemmed", query="runs", k=2)] == [0]
        assert ctx.tools["chunk"](text="a b c d e", size=2, overlap=1) == ["a b", "b c", "c d", "d e"]
        assert ctx.tools["echo"](value={"x": [1, b"\x00"]}) == {"x": [1, b"\x00"]}


def test_tools_are_awaitable():
    import asyncio

    with DSpexSessionContext() as ctx:
        ctx.index("d", ["alpha beta", "gamma"])

        async def main():
            return await asyncio.gather(*(ctx.tools["search"].acall(index="d", query="gamma") for _ in range(8)))

        results = asyncio.run(main())
        assert all(r[0]["id"] == 1 for r in results)


@pytest.mark.parametrize(
    "name, kwargs, exc, needle",
    [
        ("search", {"query": "x"}, ValueError, 'missing argument "index"'),
        ("search", {"index": "d", "query": 3}, ValueError, 'argument "query" must be a str'),
        ("search", {"index": "nope", "query": "x"}, KeyError, 'index "nope" not found'),
        ("search", {"index": "d", "query": "x", "b": 2.0}, ValueError, "b must be in"),
        ("search", {"index": "d", "query": "x", "k": -1}, ValueError, "k must be >= 0"),
        ("echo", {"valu": 1}, ValueError, 'unknown argument "valu"'),
        ("chunk", {"text": "a", "size": 2, "overlap": 2}, ValueError, "overlap"),
    ],
)
def test_bad_tool_calls_are_clear_errors(name, kwargs, exc, needle):
    with DSpexSessionContext() as ctx:
        ctx.index("d", ["alpha"])
        with pytest.raises(exc, match=needle):
            ctx.tools[name](**kwargs)
        with pytest.raises(KeyError, match="tool 'nope' not found"):
            ctx.tools["nope"]


def test_python_tools_are_called_through_the_engine():
    from dspex.exceptions import ToolError, ToolTimeout

    with DSpexSessionContext() as ctx:

        @ctx.tool
        def add(a: int, b: int = 2) -> int:
            """Adds two integers."""
            return a + b

        @ctx.tool(name="shout", timeout=0.3)
        async def _shout(text: str, pause: float = 0.0) -> str:
            import asyncio

            await asyncio.sleep(pause)
            return text.upper()

        @ctx.tool
        def boom(**kwargs):
            raise LookupError(f"no {sorted(kwargs)}")

        spec = ctx.tools["add"].spec
        assert spec["description"] == "Adds two integers."
        assert [(p["name"], p["type"], p["required"], p["default"]) for p in spec["params"]] == [("a", "int", True, None), ("b", "int", False, 2)]
        assert ctx.tools["add"](a=1) == 3
        assert ctx.tools["shout"](text="hi") == "HI"
        # The engine checks arguments against the signature before the call leaves it.
        with pytest.raises(ValueError, match='argument "a" must be a int, got a str'):
            ctx.tools["add"](a="1")
        with pytest.raises(ValueError, match='unknown argument "c"'):
            ctx.tools["add"](a=1, c=2)
        with pytest.raises(ToolError, match=r'tool "boom" raised LookupError: no \[\'x\'\]') as info:
            ctx.tools["boom"](x=1)
        assert info.value.kind == "LookupError"
        assert "raise LookupError" in info.value.remote_traceback
        with pytest.raises(ToolTimeout, match='"shout" did not answer within 0.3 s'):
            ctx.tools["shout"](text="x", pause=2.0)
        # The engine fans calls out itself: map runs them concurrently, results in order.
        assert ctx.tools["map"](tool="add", calls=[{"a": i} for i in range(50)], concurrency=8) == [i + 2 for i in range(50)]
        out = ctx.tools["map"](tool="boom", calls=[{}], return_exceptions=True)
        assert out[0]["kind"] == "LookupError"
        ctx.unregister_tool("boom")
        assert "boom" not in ctx.tools


def test_a_tool_leaves_with_its_context_and_calls_in_flight_fail_fast():
    from dspex.exceptions import ToolUnavailable

    release = threading.Event()
    with DSpexSessionContext(session_id="tools-owner") as caller:
        owner = DSpexSessionContext(session_id="tools-owner")

        @owner.tool
        def wait() -> str:
            release.wait(5)
            return "late"

        errors = []

        def call():
            try:
                caller.tools["wait"]()
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.2)
        start = time.monotonic()
        owner._server.close()  # the owner goes away while the call runs
        owner._server = None
        t.join(5)
        release.set()
        assert time.monotonic() - start < 2
        assert len(errors) == 1 and isinstance(errors[0], ToolUnavailable), errors
        assert "wait" not in caller.tools
        with pytest.raises(KeyError, match='tool "wait" not found'):
            caller._native.call_tool("wait", {})


def test_a_tool_with_threads_of_its_own_runs_that_many_calls_at_once():
    """threads=12: twelve blocking calls run together (a barrier of twelve passes; the threads
    the context's tools share are fewer on a small machine), and a raise reaches the caller."""
    barrier = threading.Barrier(12, timeout=20)

    def meet(i: int) -> int:
        barrier.wait()
        if i < 0:
            raise ValueError("negative")
        return i

    with DSpexSessionContext() as ctx:
        ctx.register_tool(meet, threads=12)
        got: list = []
        callers = [threading.Thread(target=lambda i=i: got.append(ctx.tools["meet"](i=i))) for i in range(12)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        assert sorted(got) == list(range(12))
        barrier = threading.Barrier(1)
        with pytest.raises(dspex.exceptions.ToolError, match="negative"):
            ctx.tools["meet"](i=-1)
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            ctx.register_tool(meet, name="m2", threads=0)


def test_bad_tool_registrations():
    with DSpexSessionContext() as ctx:
        with pytest.raises(ValueError, match="a native tool has this name"):
            ctx.register_tool(lambda: 1, name="search")
        with pytest.raises(ValueError, match="needs a name"):
            ctx.register_tool(lambda: 1)
        with pytest.raises(TypeError, match="cannot be passed by name"):
            ctx.register_tool(lambda *a: 1, name="star")
        with pytest.raises(ValueError, match="timeout must be"):
            ctx.register_tool(lambda: 1, name="t", timeout=0)
        with pytest.raises(TypeError, match="must be callable"):
            ctx.register_tool(3, name="t")  # type: ignore[arg-type]
        other = DSpexSessionContext(session_id=ctx.session_id)
        other.register_tool(lambda: 1, name="mine")
        with pytest.raises(ValueError, match="already registered .* by another process"):
            ctx.register_tool(lambda: 2, name="mine")


def test_bytes_pass_both_ways_and_a_result_that_cannot_travel_is_a_tool_error():
    from dspex.exceptions import ToolError

    with DSpexSessionContext() as ctx:

        @ctx.tool
        def flip(data: bytes) -> bytes:
            return data[::-1]

        @ctx.tool
        def odd() -> object:
            return object()

        payload = bytes(range(256)) * 4096
        assert ctx.tools["flip"](data=payload) == payload[::-1]
        with pytest.raises(ToolError, match="cannot be sent"):
            ctx.tools["odd"]()
