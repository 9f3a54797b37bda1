"""Shared helpers of the benchmark harness: library import/probing, formatting, machine state."""

from __future__ import annotations

import importlib
import logging
import math
import os
import subprocess
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: Versions the peers are pinned to in the ``bench`` extra (a different version is reported, not refused).
REQUIRED_VERSIONS = {"optuna": "5.0.0", "rustuna": "0.2.0"}


def import_lib(name: str) -> Tuple[Any, str]:
    """Imports a library and quiets its logging; returns (module, version)."""
    warnings.filterwarnings("ignore")  # Optuna's ExperimentalWarning etc.: not part of a report
    if name not in ("dspex", "optuna", "rustuna", "hyperopt"):
        raise ValueError(f"unknown library {name!r}")
    mod: Any = importlib.import_module(name)
    if name in ("dspex", "optuna"):
        mod.logging.set_verbosity(mod.logging.WARNING)
    elif name == "hyperopt":
        logging.getLogger("hyperopt").setLevel(logging.WARNING)
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _v

            version = _v(name)
        except Exception:  # noqa: BLE001
            version = "?"
    return mod, str(version)


def probe_libs(names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """{name: {"available": bool, "version" | "error": str}} for every requested library."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in names:
        try:
            _, version = import_lib(name)
        except Exception as e:  # noqa: BLE001 - ImportError, or a broken build raising anything
            out[name] = {"available": False, "error": f"{type(e).__name__}: {e}"}
            continue
        info: Dict[str, Any] = {"available": True, "version": version}
        want = REQUIRED_VERSIONS.get(name)
        if want is not None and version != want:
            info["warning"] = f"expected {name} {want}, found {version}"
        out[name] = info
    return out


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), no numpy needed."""
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fmt(v: Optional[float], digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def loadavg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        la = loadavg()
        return f"load average: {la}" if la else "load average: unknown"


def git_state(path: Optional[str] = None) -> str:
    """``git describe --always --dirty`` of the checkout at ``path`` (default: the working
    directory), or "unknown" outside a checkout. The installed dspex was built from it only if
    it was re-installed after the last change."""
    try:
        return (
            subprocess.run(
                ["git", "-C", path or os.getcwd(), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except Exception:  # noqa: BLE001
        return "unknown"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
