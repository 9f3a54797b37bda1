"""The engine's LM client (public as :mod:`dspex.native`)."""

from __future__ import annotations

import json
import os
from json.encoder import encode_basestring_ascii
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

from dspex import _native
from dspex.exceptions import BudgetExceeded, LMError

__all__ = ["LM", "BudgetExceeded", "Completion", "LMError", "Usage"]

Messages = Union[str, Sequence[Mapping[str, Any]]]


class Usage(NamedTuple):
    """Tokens of one answer, as the server counted them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion:
    """An answer of the chat completions API.

    ``text`` is the first choice's content (``choices`` has all of them when ``n`` > 1),
    ``usage`` the tokens of the answer (a ``cached`` one keeps the usage of the request that
    made it, but costs nothing: ``LM.stats()`` does not count it), ``latency`` the seconds
    from the call to the answer, ``finish_reason`` why the model stopped."""

    __slots__ = ("text", "choices", "finish_reason", "usage", "cached", "latency", "model")

    def __init__(
        self,
        text: str,
        choices: List[str],
        finish_reason: Optional[str],
        usage: Usage,
        cached: bool,
        latency: float,
        model: str,
    ) -> None:
        self.text = text
        self.choices = choices
        self.finish_reason = finish_reason
        self.usage = usage
        self.cached = cached
        self.latency = latency
        self.model = model

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Completion(text={self.text!r}, usage={tuple(self.usage)}, cached={self.cached}, latency={self.latency:.3f})"


def _completion(t: Any) -> Completion:
    text, choices, finish, prompt, completion, cached, latency, model = t
    return Completion(text, choices, finish, Usage(prompt, completion), cached, latency, model)


def _messages_json(messages: Messages) -> str:
    if isinstance(messages, str):
        # the one-message list, written out: a batch of prompts spends no time in json.dumps
        return '[{"role":"user","content":' + encode_basestring_ascii(messages) + "}]"
    if isinstance(messages, Mapping) or not isinstance(messages, Sequence):
        raise TypeError(f"LM call: pass a prompt str or a list of message dicts, got {type(messages).__name__}")
    try:
        return json.dumps(list(messages))
    except (TypeError, ValueError) as e:
        raise TypeError(f"LM call: the messages must be JSON data (str, numbers, lists, dicts): {e}") from None


def _split_overrides(overrides: Dict[str, Any]) -> "tuple[Optional[str], Optional[str]]":
    rollout = overrides.pop("rollout_id", None)
    if rollout is not None:
        rollout = str(rollout)
    try:
        return (json.dumps(overrides) if overrides else None), rollout
    except (TypeError, ValueError) as e:
        raise TypeError(f"LM call: the parameters must be JSON data: {e}") from None


def _opt_number(name: str, value: Any, kind: type = float) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise TypeError(f"LM {name} must be {'a number' if kind is float else 'an int'} or None, got {value!r}")
    return value


class LM:
    """A language model behind an OpenAI-compatible HTTP API, called from the dspex engine.

    Calls run in the engine: ``lm(prompt_or_messages, **params)`` blocks, ``await
    lm.acall(...)`` does not block the event loop, ``lm.batch(prompts)`` runs many at once and
    returns completions in order. ``params`` go into the request body over the LM's own
    (``temperature``, ``max_tokens``, ``top_p``, ``stop``, ``seed``, ``n``,
    ``response_format``...); ``rollout_id=`` keeps deliberate repeats of one request apart in
    the cache.

    Args:
        model: the model name the server knows. A LiteLLM-style ``"openai/"`` prefix is dropped.
        base_url: the API root (``.../v1``); default ``$OPENAI_BASE_URL`` or OpenAI's.
        api_key: sent as a bearer token; default the ``api_key_env`` environment variable (no
            key at all for a local server that needs none). Never cached, logged or shown.
        temperature, max_tokens: sampling defaults of every call (0 to 2; >= 1).
        timeout: seconds per attempt. max_retries: attempts after the first, with exponential
            backoff and jitter (``Retry-After`` honoured) on connection errors, timeouts, 408,
            409, 429 and 5xx; other answers fail at once and say why.
        rpm, tpm: client-side requests and tokens per minute. max_concurrency: requests in
            flight at most. These three are shared by every ``LM`` of the process with the same
            model and base URL (the stricter values win); the concurrency is lowered
            automatically while the server answers 429 and raised back when it stops.
        cache: answer repeated requests from the cache (key: the request's model, messages and
            parameters; never the key or URL). cache_path: a SQLite file that keeps the cache
            across processes and runs (``dspex cache stats|export|import|clear``); without it
            the cache lives in this process's memory.
        headers: extra HTTP headers.
        max_calls, max_total_tokens, max_cost: hard budgets of this LM (and its ``with_tag``
            copies). A call reserves its place before it starts, so ``max_calls=500`` allows at
            most 500 calls that reach the server (cache hits are free; retries and hedges do
            not count); tokens and cost are added as answers arrive. Once exhausted, calls raise
            ``BudgetExceeded`` without a request.
        prices: ``{model: {"input": x, "output": y}}`` per million tokens, for the estimated
            cost in ``stats()``; a model without a price costs 0 and is counted in
            ``unpriced_calls``.
        hedge_after: seconds after which a call still unanswered sends a second identical
            request; the first answer wins and the other is cancelled.
    """

    def __init__(
        self,
        model: str,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: Optional[int] = None,
        timeout: float = 60,
        max_retries: int = 5,
        rpm: Optional[int] = None,
        tpm: Optional[int] = None,
        max_concurrency: int = 64,
        cache: bool = True,
        cache_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        headers: Optional[Mapping[str, str]] = None,
        max_calls: Optional[int] = None,
        max_total_tokens: Optional[int] = None,
        max_cost: Optional[float] = None,
        prices: Optional[Mapping[str, Mapping[str, float]]] = None,
        hedge_after: Optional[float] = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"LM model must be a non-empty str, got {model!r}")
        if base_url is None:
            base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        if not isinstance(base_url, str):
            raise TypeError(f"LM base_url must be a str, got {base_url!r}")
        if not isinstance(api_key_env, str):
            raise TypeError(f"LM api_key_env must be a str, got {api_key_env!r}")
        if api_key is None:
            api_key = os.environ.get(api_key_env) or None
        elif not isinstance(api_key, str):
            raise TypeError("LM api_key must be a str")
        if not isinstance(cache, bool):
            raise TypeError(f"LM cache must be a bool, got {cache!r}")
        ints = {"max_tokens": max_tokens, "max_retries": max_retries, "rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency, "max_calls": max_calls, "max_total_tokens": max_total_tokens}
        for name, value in ints.items():
            _opt_number(name, value, int)
            if value is not None and value < 0:
                raise ValueError(f"LM {name} must be >= 0, got {value}")
        floats = {"temperature": temperature, "timeout": timeout, "max_cost": max_cost, "hedge_after": hedge_after}
        for name, fvalue in floats.items():
            _opt_number(name, fvalue)
        if timeout is not None and timeout <= 0:
            raise ValueError(f"LM timeout must be > 0 seconds, got {timeout}")
        if hedge_after is not None and hedge_after <= 0:
            raise ValueError(f"LM hedge_after must be > 0 seconds, got {hedge_after}")
        self.model = model
        self.base_url = base_url
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache_path = None if cache_path is None else os.fspath(cache_path)
        wire_model = model[len("openai/") :] if model.startswith("openai/") else model
        config = {
            "model": wire_model,
            "base_url": base_url,
            "api_key": api_key,
            "api_key_env": api_key_env,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "timeout": timeout,
            "max_retries": max_retries,
            "rpm": rpm,
            "tpm": tpm,
            "max_concurrency": max_concurrency,
            "cache": cache,
            "cache_path": self.cache_path,
            "headers": dict(headers) if headers is not None else None,
            "max_calls": max_calls,
            "max_total_tokens": max_total_tokens,
            "max_cost": max_cost,
            "prices": {str(k): dict(v) for k, v in prices.items()} if prices is not None else None,
            "hedge_after": hedge_after,
        }
        try:
            text = json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"LM settings must be plain data (str, numbers, dicts): {e}") from None
        self._native = _native.LM(text)
        self._config = text  # what a session's engine builds its copy of this LM from

    def with_tag(self, tag: str) -> "LM":
        """This LM with its calls also accounted under ``tag`` in ``stats()["by_tag"]`` (same
        limits, cache and budget)."""
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"LM.with_tag needs a non-empty str, got {tag!r}")
        twin = LM.__new__(LM)
        twin.__dict__.update(self.__dict__)
        twin._native = self._native.with_tag(tag)
        return twin

    def __call__(self, messages: Messages, **params: Any) -> Completion:
        """Calls the model with a prompt (one user message) or a list of messages; blocks
        until the answer (or the error: ``LMError``, ``BudgetExceeded``, ValueError for bad
        parameters)."""
        overrides, rollout = _split_overrides(dict(params))
        return _completion(self._native.call(_messages_json(messages), overrides, rollout))

    async def acall(self, messages: Messages, **params: Any) -> Completion:
        """``lm(...)`` without blocking the event loop: the call runs in the engine and
        resolves this coroutine when it is answered."""
        import asyncio

        loop = asyncio.get_running_loop()
        future: "asyncio.Future[Any]" = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if future.cancelled():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def done(ok: bool, value: Any) -> None:  # called from an engine thread
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        overrides, rollout = _split_overrides(dict(params))
        self._native.start(_messages_json(messages), done, overrides, rollout)
        return _completion(await future)

    def batch(self, prompts: Sequence[Messages], return_exceptions: bool = False, **params: Any) -> List[Any]:
        """Calls the model for every prompt (or message list) concurrently in the engine, up to
        ``max_concurrency`` at a time, and returns the completions in order. A failed call
        raises its error, or with ``return_exceptions=True`` stands in its place."""
        if isinstance(prompts, (str, Mapping)):
            raise TypeError("LM.batch takes a list of prompts (or of message lists)")
        overrides, rollout = _split_overrides(dict(params))
        requests = [(_messages_json(p), overrides, rollout) for p in prompts]
        out = self._native.batch(requests, return_exceptions)
        return [x if isinstance(x, BaseException) else _completion(x) for x in out]

    def embed(self, texts: Union[str, Sequence[str]]) -> List[List[float]]:
        """Embeddings of ``texts`` (``/embeddings``), one vector per text in order (cached like
        completions)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in items):
            raise TypeError("LM.embed takes a str or a list of str")
        vectors, _tokens, _cached = self._native.embed(items)
        return vectors

    def stats(self) -> Dict[str, Any]:
        """The accounting of this LM: ``calls``, ``cache_hits``, ``requests`` (HTTP requests
        sent, retries and hedges included), ``retries``, ``hedges``, ``throttled`` (429
        answers), ``errors``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
        ``cost``, ``unpriced_calls``, ``latency`` (p50/p90/p99/max/mean seconds), ``by_tag``
        (the same per tag), ``budget`` (limits and spent) and ``concurrency`` (the current
        limit of the endpoint and its requests in flight)."""
        result: Dict[str, Any] = json.loads(self._native.stats())
        return result

    def __repr__(self) -> str:
        return f"LM(model={self.model!r}, base_url={self.base_url!r}, temperature={self.temperature})"
