"""A program study's metric served by other processes that join its session: what
``processes=N`` (:mod:`dspex.optimizer`) and the launchers (:mod:`dspex.launchers`) share."""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

__all__ = ["_MetricServers"]


class _MetricServers:
    """A program study's metric served by other processes, which join the session and serve it
    as one shared tool ``tool`` while the session variable ``<tool>_pool`` is ``"open"`` (what
    ``processes=N`` and the launchers have in common). An embedded session is served for the
    time of the study: on ``bind`` (loopback by default), over TLS with ``tls`` (``(cert PEM,
    key PEM)``). Subclasses start the workers (``_start(address, token)``), look after them
    (``_look()``: a problem that stops the start, or None) and stop them (``_stop()``, once
    the variable says they should leave)."""

    what = "metric worker"

    def __init__(self, ctx: Any, tool: str, bind: Optional[str] = None, tls: Optional[Tuple[bytes, bytes]] = None) -> None:
        import threading
        import time

        from dspex import _native

        self._ctx, self._tool, self._server = ctx, tool, None
        self._var = f"{tool}_pool"
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        token: Optional[str]
        try:
            if ctx.engine is None:
                cert, key = tls if tls is not None else (None, None)
                self._server = _native.serve_sessions(bind, cert, key)
                address, token = self._server.address, self._server.token
                if tls is not None:
                    address = f"https://{address}"
            else:
                address = ctx.engine
                token = ctx._auth[0] if ctx._auth[0] is not None else os.environ.get("DSPEX_TOKEN")
            ctx.variables.define(self._var, "str", "open")
            self._start(address, token)
            # the study starts once a worker serves the metric
            deadline = time.monotonic() + 120
            while tool not in ctx._native.tool_specs():
                problem = self._look()
                if problem:
                    raise RuntimeError(problem)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no {self.what} joined the session within 120 s")
                time.sleep(0.05)
            self._thread = threading.Thread(target=self._supervise, name="dspex-metric-workers", daemon=True)
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def _start(self, address: str, token: Optional[str]) -> None:
        raise NotImplementedError

    def _look(self) -> Optional[str]:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def _supervise(self) -> None:
        while not self._done.wait(0.1):
            self._look()

    def close(self) -> None:
        """Tells the workers to leave, waits for them (then kills the rest), stops serving."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._ctx.variables.set(self._var, "closed")
        except Exception:  # noqa: BLE001 - never defined, or the session is gone
            pass
        self._stop()
        try:
            self._ctx.variables.delete(self._var)
        except Exception:  # noqa: BLE001
            pass
        if self._server is not None:
            self._server.close()
