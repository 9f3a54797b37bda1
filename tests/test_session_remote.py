"""Sessions on a served engine (`dspex serve` on a loopback port): the same variables, indexes
and tools as in-process, shared by processes that join one session id, Python tools the engine
calls over the session stream, and the bad inputs of a network: wrong token, a tool process
killed mid-call, oversized payloads, the session cap, `dspex sessions`."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from test_remote import _start_server, _stop

from dspex import DSpexSessionContext
from dspex.exceptions import ToolError, ToolTimeout, ToolUnavailable

PY = sys.executable


@pytest.fixture
def served():
    p, addr = _start_server("--token", "s3cret", "--max-message-bytes", str(8 * 1024 * 1024), "--max-sessions", "5")
    yield addr
    _stop(p)
    assert p.returncode == 0, p.stderr.read()


def _ctx(addr, **kw):
    return DSpexSessionContext(engine=addr, token="s3cret", **kw)


def test_variables_indexes_and_native_tools_work_as_in_process(served):
    with _ctx(served, session_id="remote-basics") as ctx:
        assert ctx.session_id == "remote-basics"
        assert ctx.variables.define("t", "float", 0.5, min=0.0, max=1.0, tunable=True) == 1
        assert ctx.variables.set("t", 0.25, expected_version=1) == 2
        with pytest.raises(ValueError, match="version 2.*expected version 1"):
            ctx.variables.set("t", 0.3, expected_version=1)
        with pytest.raises(ValueError, match="outside"):
            ctx.variables.set("t", 3.0)
        assert ctx.variables.get("t") == 0.25 and ctx.variables.version("t") == 2
        assert ctx.variables.distribution("t").high == 1.0
        ctx.variables.define("emb", "embedding", bytes(16), shape=(4,), dtype="float32")
        assert ctx.variables.set_many({"t": 0.1, "emb": bytes(range(16))}) == {"t": 3, "emb": 2}
        assert ctx.variables.list("e*") == ["emb"]
        ctx.index("docs", ["the quick brown fox", "a lazy dog sleeps", "the fox and the dog"], ids=["a", "b", "c"])
        hits = ctx.tools["search"](index="docs", query="fox", k=2)
        assert [h["id"] for h in hits] == ["c", "a"]
        assert ctx.tools["echo"](value={"x": [1, 2.5, None, b"\x00"]}) == {"x": [1, 2.5, None, b"\x00"]}
        with pytest.raises(KeyError, match='tool "nope" not found'):
            ctx._native.call_tool("nope", {})
        with pytest.raises(ValueError, match='missing argument "index"'):
            ctx.tools["search"](query="x")
        with pytest.raises(KeyError, match='variable "zz" not found'):
            ctx.variables.get("zz")


def test_watch_over_the_stream(served):
    with _ctx(served) as ctx, _ctx(served, session_id=ctx.session_id) as other:
        ctx.variables.define("n", "int", 0)
        seen = []

        def watch():
            for event in ctx.variables.watch(["n"], timeout=2):
                seen.append(event)
                if len(seen) == 3:
                    return

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.3)
        for i in range(1, 4):
            other.variables.set("n", i)
        t.join(5)
        assert seen == [("n", 1, 2), ("n", 2, 3), ("n", 3, 4)]


TOOL_PROCESS = textwrap.dedent(
    """
    import sys, time
    from dspex import DSpexSessionContext
    with DSpexSessionContext(engine=sys.argv[1], token="s3cret", session_id=sys.argv[2]) as ctx:
        ctx.variables.define("from_child", "str", "hello")

        @ctx.tool
        def slow_square(x: int) -> int:
            time.sleep(x / 1000)
            return x * x

        @ctx.tool
        def hang() -> None:
            time.sleep(3600)

        print("ready", flush=True)
        sys.stdin.read()  # until the parent closes it (or kills this process)
    """
)


def test_a_tool_of_another_process_and_what_happens_when_it_is_killed(served):
    child = subprocess.Popen([PY, "-c", TOOL_PROCESS, served, "shared-run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with _ctx(served, session_id="shared-run") as ctx:
            assert ctx.variables.get("from_child") == "hello"
            assert set(ctx.tools) >= {"slow_square", "hang", "search"}
            assert ctx.tools["slow_square"](x=7) == 49
            # The engine fans out 64 calls at a time to the other process, over its one stream.
            out = ctx.tools["map"](tool="slow_square", calls=[{"x": i % 5} for i in range(200)], concurrency=64)
            assert out == [(i % 5) ** 2 for i in range(200)]
            with pytest.raises(ValueError, match='argument "x" must be a int'):
                ctx.tools["slow_square"](x="7")
            errors = []

            def call_hang():
                try:
                    ctx.tools["hang"]()
                except Exception as e:
                    errors.append(e)

            t = threading.Thread(target=call_hang)
            t.start()
            time.sleep(0.5)
            start = time.monotonic()
            child.send_signal(signal.SIGKILL)  # the tool's process dies mid-call
            t.join(10)
            assert time.monotonic() - start < 5
            assert len(errors) == 1 and isinstance(errors[0], ToolUnavailable), errors
            deadline = time.monotonic() + 5
            while "hang" in ctx.tools and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "hang" not in ctx.tools
    finally:
        child.kill()
        child.wait()


def test_python_tools_served_over_the_stream(served):
    with _ctx(served, tool_timeout=5) as owner, _ctx(served, session_id=owner.session_id) as caller:

        @owner.tool
        async def greet(name: str, punct: str = "!") -> str:
            return f"hi {name}{punct}"

        @owner.tool(timeout=0.3)
        def sleepy(s: float) -> float:
            time.sleep(s)
            return s

        @owner.tool
        def broken() -> None:
            raise ZeroDivisionError("nope")

        assert caller.tools["greet"](name="ann") == "hi ann!"
        with _ctx(served) as stranger:  # another session neither sees nor reaches it
            assert "greet" not in stranger.tools
            with pytest.raises(KeyError, match='tool "greet" not found'):
                stranger._native.call_tool("greet", {"name": "x"})
        assert owner.tools["greet"](name="bob", punct="?") == "hi bob?"
        with pytest.raises(ToolTimeout):
            caller.tools["sleepy"](s=2.0)
        with pytest.raises(ToolError, match='"broken" raised ZeroDivisionError: nope') as info:
            caller.tools["broken"]()
        assert info.value.kind == "ZeroDivisionError" and "ZeroDivisionError" in info.value.remote_traceback
        big = os.urandom(3 * 1024 * 1024)

        @owner.tool
        def size(data: bytes) -> int:
            return len(data)

        assert caller.tools["size"](data=big) == len(big)


def test_bad_remote_inputs(served):
    from dspex.exceptions import RemoteError

    with pytest.raises(RemoteError, match="UNAUTHENTICATED"):
        DSpexSessionContext(engine=served, token="wrong")
    with pytest.raises(ValueError, match="token and tls_ca are for a served engine"):
        DSpexSessionContext(token="x")
    with _ctx(served) as ctx:
        with pytest.raises(ValueError, match="larger than the engine's message limit of 8388608 bytes"):
            ctx.variables.define("big", "str", "x" * (9 * 1024 * 1024))
        assert ctx.variables.define("ok", "int", 1) == 1  # the stream is still fine
        # The cap of the engine (--max-sessions 5): this one, plus four more, then an error.
        extra = [_ctx(served) for _ in range(4)]
        with pytest.raises(RuntimeError, match="holds 5 sessions, its limit"):
            _ctx(served)
        for c in extra:
            c.close()
        _ctx(served).close()


def test_sessions_cli(served):
    env = {**os.environ, "DSPEX_TOKEN": "s3cret"}
    with _ctx(served, session_id="cli-one") as ctx:
        ctx.variables.define("a", "int", 1)
        ctx.index("idx", ["some text"])

        def cli(*args):
            return subprocess.run([PY, "-m", "dspex.cli", "sessions", *args, "--engine", served], capture_output=True, text=True, env=env, timeout=60)

        out = cli("list", "--output", "json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [r["session_id"] for r in rows] == ["cli-one"]
        assert rows[0]["variables"] == 1 and rows[0]["indexes"] == ["idx"]
        show = cli("show", "cli-one")
        assert show.returncode == 0 and "cli-one" in show.stdout and "idx" in show.stdout
        missing = cli("show", "nope")
        assert missing.returncode == 1 and 'session "nope" not found' in missing.stderr
        assert cli("close", "cli-one").returncode == 0
        assert json.loads(cli("list", "--output", "json").stdout) == []
        with pytest.raises(KeyError, match="closed or expired|not found"):
            ctx.variables.get("a")


def test_the_example_runs_against_a_served_engine(served):
    import pathlib

    example = pathlib.Path(__file__).resolve().parent.parent / "examples" / "session_tools.py"
    out = subprocess.run([PY, str(example), served], capture_output=True, text=True, timeout=120, env={**os.environ, "DSPEX_TOKEN": "s3cret"})
    assert out.returncode == 0, out.stderr
    assert "heapq.merge" in out.stdout and "statistics" in out.stdout


def test_a_64_mib_payload_through_a_python_tool():
    p, addr = _start_server("--max-message-bytes", str(200 * 1024 * 1024))
    try:
        with DSpexSessionContext(engine=addr) as owner, DSpexSessionContext(engine=addr, session_id=owner.session_id) as caller:

            @owner.tool
            def tail(data: bytes) -> bytes:
                return data[-16:] + len(data).to_bytes(8, "little")

            payload = os.urandom(64 * 1024 * 1024)
            assert caller.tools["tail"](data=payload) == payload[-16:] + len(payload).to_bytes(8, "little")
            assert caller.tools["echo"](value=payload) == payload  # and back, 64 MiB each way
    finally:
        _stop(p)
