"""Starts ``dspex-testlm``, the local OpenAI-compatible server of the LM tests and benchmarks
(``crates/testlm``): real HTTP on a loopback port, with programmable latency, 429s, failures and
broken answers. The binary is ``$DSPEX_TESTLM``, or built with cargo from this checkout."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional

ROOT = Path(__file__).resolve().parent.parent


def binary() -> Optional[str]:
    """The server binary: ``$DSPEX_TESTLM``, else a cargo build of this checkout (None when
    neither is possible)."""
    env = os.environ.get("DSPEX_TESTLM")
    if env:
        return env
    built = ROOT / "target" / "release" / "dspex-testlm"
    if not built.exists():
        try:
            subprocess.run(["cargo", "build", "--release", "-q", "-p", "dspex-testlm"], cwd=ROOT, check=True, timeout=900)
        except (OSError, subprocess.SubprocessError):
            return None
    return str(built)


class LMServer:
    """A running ``dspex-testlm``; ``url`` is its ``/v1`` base URL."""

    def __init__(self, *args: str, exe: Optional[str] = None) -> None:
        exe = exe or binary()
        if exe is None:
            raise RuntimeError("dspex-testlm is not built (cargo build --release -p dspex-testlm) and cargo is not available")
        self.proc = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"dspex-testlm did not start: {line!r}")
        self.url = line[len("listening on "):]
        self.root = self.url[: -len("/v1")]

    def _control(self, path: str, body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.root + path, data=data, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            result: Dict[str, Any] = json.loads(r.read())
        return result

    def stats(self) -> Dict[str, Any]:
        """What the server saw: requests, ok, by_status, max_inflight_seen..."""
        return self._control("/control/stats")

    def reset(self) -> None:
        self._control("/control/reset", {})

    def behave(self, **behavior: Any) -> None:
        """Replaces the server's behaviour (latency_ms, max_inflight, retry_after, random_429,
        random_500, api_key, models)."""
        self._control("/control/behavior", behavior)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
