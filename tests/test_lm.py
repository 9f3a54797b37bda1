"""``dspex.native.LM`` against a local OpenAI-compatible server (``dspex-testlm``, real HTTP on
loopback): calls, batches and ``acall``, the cache in memory and on disk across processes,
budgets, accounting per tag, retries, and every bad input a user meets."""

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from dspex.exceptions import BudgetExceeded, LMError
from dspex.native import LM, Completion


def test_a_call_answers_with_usage_and_a_repeat_comes_from_the_cache(lm):
    model = LM("m-basic", base_url=lm.url)
    c = model("hello there")
    assert isinstance(c, Completion) and c.text == "echo: hello there" and str(c) == c.text
    assert c.usage.prompt_tokens == 2 and c.usage.total_tokens == 5 and not c.cached and c.latency > 0
    again = model([{"role": "system", "content": "x"}, {"role": "user", "content": "hello there"}])
    assert not again.cached  # other messages, other key
    assert model("hello there").cached and model("hello there").usage.total_tokens == 5
    assert not model("hello there", rollout_id=1).cached  # a deliberate repeat
    assert not model("hello there", temperature=0.5).cached  # other parameters, other key
    assert lm.stats()["requests"] == 4
    s = model.stats()
    assert (s["calls"], s["cache_hits"], s["requests"], s["errors"]) == (6, 2, 4, 0)
    assert s["total_tokens"] == 5 + 6 + 5 + 5  # cache hits cost nothing
    assert s["latency"]["p50"] > 0 and s["concurrency"]["max"] == 64


def test_batch_keeps_order_and_return_exceptions_puts_errors_in_place(lm):
    model = LM("m-batch", base_url=lm.url, cache=False, max_retries=0)
    prompts = [f"q{i}" for i in range(50)]
    out = model.batch(prompts)
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(50)]
    mixed = model.batch(["a", "b [[status:400]]", [{"role": "user", "content": "c"}]], return_exceptions=True)
    assert mixed[0].text == "echo: a" and mixed[2].text == "echo: c"
    assert isinstance(mixed[1], LMError) and mixed[1].status == 400
    with pytest.raises(LMError, match="answered 400") as e:
        model.batch(["a", "b [[status:400]]"])
    assert e.value.status == 400


def test_acall_runs_many_calls_in_the_engine_without_blocking_the_loop(lm):
    lm.behave(latency_ms=50)
    model = LM("m-async", base_url=lm.url, cache=False)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        out = await asyncio.gather(*(model.acall(f"a{i}") for i in range(200)))
        t.cancel()
        return out, ticks

    out, ticks = asyncio.run(main())
    assert [c.text for c in out] == [f"echo: a{i}" for i in range(200)]
    assert ticks > 5  # the loop kept running while the engine worked
    with pytest.raises(LMError):
        asyncio.run(model.acall("x [[status:422]]"))


def test_max_calls_makes_exactly_that_many_calls_and_then_refuses(lm):
    lm.behave(latency_ms=20)
    model = LM("m-budget", base_url=lm.url, cache=False, max_calls=20, max_concurrency=8)
    out = model.batch([f"b{i}" for i in range(50)], return_exceptions=True)
    done = [c for c in out if isinstance(c, Completion)]
    refused = [c for c in out if isinstance(c, BudgetExceeded)]
    assert (len(done), len(refused)) == (20, 30)
    assert "max_calls=20" in str(refused[0])
    assert lm.stats()["requests"] == 20
    with pytest.raises(BudgetExceeded):
        model("one more")
    assert model.stats()["budget"]["calls"] == 20


def test_tokens_and_cost_are_accounted_per_tag_with_the_price_table(lm):
    model = LM("m-cost", base_url=lm.url, cache=False, prices={"m-cost": {"input": 1.0, "output": 2.0}}, max_total_tokens=10)
    model.with_tag("retrieve")("one two three")  # 3 in, 4 out
    model.with_tag("answer")("four")  # 1 in, 2 out
    s = model.stats()
    assert (s["prompt_tokens"], s["completion_tokens"]) == (4, 6)
    assert s["cost"] == pytest.approx((4 * 1.0 + 6 * 2.0) / 1e6)
    assert s["by_tag"]["retrieve"]["total_tokens"] == 7 and s["by_tag"]["answer"]["calls"] == 1
    assert s["unpriced_calls"] == 0
    with pytest.raises(BudgetExceeded, match="max_total_tokens=10"):
        model("five")
    unpriced = LM("m-unpriced", base_url=lm.url, cache=False)
    unpriced("x")
    assert unpriced.stats()["cost"] == 0 and unpriced.stats()["unpriced_calls"] == 1


def test_the_disk_cache_is_shared_by_processes_and_never_keeps_the_key(lm, tmp_path):
    path = tmp_path / "lm-cache.sqlite"
    script = textwrap.dedent(f"""
        from dspex.native import LM
        lm = LM("m-disk", base_url={lm.url!r}, api_key="sk-secret-123", cache_path={str(path)!r})
        out = lm.batch([f"d{{i}}" for i in range(30)])
        assert not any(c.cached for c in out)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert lm.stats()["requests"] == 30
    model = LM("m-disk", base_url=lm.url, api_key="sk-secret-123", cache_path=path)
    out = model.batch([f"d{i}" for i in range(30)])
    assert all(c.cached for c in out) and out[7].text == "echo: d7"
    assert lm.stats()["requests"] == 30  # no request for a warm batch
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name != path.name)
    assert b"sk-secret-123" not in raw and lm.url.encode() not in raw
    assert "sk-secret-123" not in repr(model) and "sk-secret-123" not in str(model.stats())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM lm_cache").fetchone()[0] == 30


def test_dspex_cache_commands_report_export_import_and_clear(lm, tmp_path):
    path = tmp_path / "c.sqlite"
    LM("m-cli", base_url=lm.url, cache_path=path).batch(["x", "y", "z"])
    dspex_cli = [sys.executable, "-m", "dspex.cli"]
    stats = subprocess.run([*dspex_cli, "cache", "stats", str(path)], capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert '"entries": 3' in stats.stdout and "m-cli" in stats.stdout
    export = tmp_path / "c.jsonl"
    assert subprocess.run([*dspex_cli, "cache", "export", str(path), "--out", str(export)], timeout=60).returncode == 0
    assert len(export.read_text().splitlines()) == 3
    cleared = subprocess.run([*dspex_cli, "cache", "clear", str(path)], capture_output=True, text=True, timeout=60)
    assert "deleted 3 entries" in cleared.stdout
    other = tmp_path / "other.sqlite"
    imported = subprocess.run([*dspex_cli, "cache", "import", str(other), str(export)], capture_output=True, text=True, timeout=60)
    assert "imported 3 entries" in imported.stdout, imported.stderr
    assert all(c.cached for c in LM("m-cli", base_url=lm.url, cache_path=other).batch(["x", "y", "z"]))
    missing = subprocess.run([*dspex_cli, "cache", "stats", str(tmp_path / "none.sqlite")], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no cache file" in missing.stderr


def test_retryable_answers_are_retried_and_the_error_says_how_often(lm):
    lm.behave(retry_after=0.01)
    model = LM("m-retry", base_url=lm.url, cache=False, max_retries=3)
    assert model("x [[flaky:2]]").text == "echo: x [[flaky:2]]"
    assert model.stats()["retries"] == 2
    with pytest.raises(LMError, match="answered 503 after 4 attempts") as e:
        model("y [[flaky:9]]")
    assert e.value.status == 503


def test_server_errors_name_the_fix(lm, monkeypatch):
    lm.behave(api_key="sk-good", models=["known"])
    monkeypatch.delenv("MY_LM_KEY", raising=False)
    with pytest.raises(LMError, match="MY_LM_KEY") as e:
        LM("known", base_url=lm.url, api_key_env="MY_LM_KEY", cache=False)("hi")
    assert e.value.status == 401
    monkeypatch.setenv("MY_LM_KEY", "sk-good")
    assert LM("known", base_url=lm.url, api_key_env="MY_LM_KEY", cache=False)("hi").text == "echo: hi"
    with pytest.raises(LMError, match='"nope"') as e:
        LM("nope", base_url=lm.url, api_key="sk-good", cache=False)("hi")
    assert e.value.status == 404
    lm.behave()
    with pytest.raises(LMError, match="not JSON") as e:
        LM("m-bad", base_url=lm.url, cache=False)("[[malformed]]")
    assert e.value.status is None


def test_a_server_that_is_down_fails_after_the_retries(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LMError, match="failed after 2 attempt") as e:
        LM("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, cache=False)("hi")
    assert e.value.status is None


def test_bad_arguments_are_refused_before_any_request(lm):
    with pytest.raises(ValueError, match="temperature must be between 0 and 2"):
        LM("m", base_url=lm.url, temperature=-0.1)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        LM("m", base_url=lm.url, max_tokens=0)
    with pytest.raises(ValueError, match="base_url"):
        LM("m", base_url="localhost:8000")
    with pytest.raises(TypeError, match="max_calls must be an int"):
        LM("m", base_url=lm.url, max_calls=2.5)
    with pytest.raises(ValueError, match="prices"):
        LM("m", base_url=lm.url, prices={"m": {"input": -1, "output": 0}})
    with pytest.raises(ValueError, match="headers"):
        LM("m", base_url=lm.url, headers={"bad header": "x"})
    model = LM("m-args", base_url=lm.url)
    with pytest.raises(ValueError, match="temperature must be between 0 and 2"):
        model("x", temperature=3)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        model("x", max_tokens=0)
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        model([{"content": "no role"}])
    with pytest.raises(ValueError, match="cannot be set per call"):
        model("x", model="other")
    with pytest.raises(TypeError, match="prompt str or a list"):
        model(42)
    with pytest.raises(TypeError, match="JSON"):
        model("x", stop=object())
    assert lm.stats()["requests"] == 0


def test_embed_returns_one_vector_per_text_in_order(lm):
    model = LM("m-embed", base_url=lm.url)
    v = model.embed(["a b", "c", "a b"])
    assert len(v) == 3 and v[0] == v[2] and v[0] != v[1] and len(v[0]) == 16
    assert model.embed("a b") == [v[0]]
    with pytest.raises(TypeError):
        model.embed([1, 2])


def test_the_openai_prefix_is_dropped_and_the_default_base_url_comes_from_the_environment(lm, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", lm.url)
    lm.behave(models=["gpt-test"])
    assert LM("openai/gpt-test", cache=False)("hi").text == "echo: hi"
    assert os.environ["OPENAI_BASE_URL"] == lm.url


def test_a_session_lm_is_called_by_the_lm_tool_and_many_at_once_through_map(lm):
    from dspex import DSpexSessionContext
    from dspex.exceptions import ToolError

    with DSpexSessionContext() as ctx:
        model = LM("m-session", base_url=lm.url, max_calls=3)
        ctx.add_lm("main", model)
        out = ctx.tools["lm"](lm="main", prompt="hello", tag="t1")
        assert out["text"] == "echo: hello" and out["prompt_tokens"] == 1 and not out["cached"]
        msgs = [{"role": "user", "content": "hi"}]
        assert ctx.tools["lm"](lm="main", messages=msgs, params={"temperature": 0.3})["text"] == "echo: hi"
        many = ctx.tools["map"](tool="lm", calls=[{"lm": "main", "prompt": p} for p in ("a", "b", "hello")], return_exceptions=True)
        assert many[0]["text"] == "echo: a" and many[2]["cached"]  # "hello" is in the cache
        assert many[1]["kind"] == "BudgetExceeded", many[1]  # the 4th call past max_calls=3
        with pytest.raises(ToolError, match="max_calls=3") as e:
            ctx.tools["lm"](lm="main", prompt="more")
        assert e.value.kind == "BudgetExceeded"
        # this process's engine calls the LM object itself: its accounting and budget
        assert model.stats()["requests"] == 3 and model.stats()["by_tag"]["t1"]["calls"] == 1
        with pytest.raises(BudgetExceeded):
            model("direct")
        with pytest.raises(KeyError, match="LM"):
            ctx.tools["lm"](lm="other", prompt="x")
        with pytest.raises(ValueError, match="either prompt or messages"):
            ctx.tools["lm"](lm="main")
        with pytest.raises(TypeError):
            ctx.add_lm("x", "not an LM")
