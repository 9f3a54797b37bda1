"""benches/compare.py --smoke runs and produces sane dspex rows.

Peers (Optuna, rustuna) are measured when importable and otherwise named as missing; the dspex
rows must exist either way. The second test hides the peers to exercise the "missing" path even
where they are installed.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benches" / "compare.py"
PEERS = ("optuna", "rustuna")
PROBLEMS = ("rosenbrock10", "sphere10", "branin", "hartmann6")


def run_smoke(tmp_path, env=None):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),  # never pick up the source tree's python/dspex instead of the installed one
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    markdown = (out / "results.md").read_text()
    assert markdown.strip() in proc.stdout
    return report, markdown


def check_dspex_rows(report):
    meta = report["meta"]
    assert meta["smoke"] is True
    assert meta["libs"]["dspex"]["available"], meta["libs"]["dspex"]

    q = report["quality"]
    assert q["n_trials"] == 30 and q["seeds"] == [0, 1]
    assert set(q["problems"]) == set(PROBLEMS)
    for name, pr in q["problems"].items():
        d = pr["libs"]["dspex"]
        assert d["errors"] == [], (name, d["errors"])
        assert len(d["runs"]) == 2
        for run in d["runs"]:
            assert run["n"] == 30
            assert math.isfinite(run["best"])
            assert run["best"] >= pr["optimum"] - 1e-4, (name, run["best"])
        assert d["q25"] <= d["median"] <= d["q75"]
        assert pr["verdict"]["text"]

    s = report["speed"]["libs"]["dspex"]
    assert s["errors"] == [] and len(s["times"]) == 1
    assert 0 < s["median"] < 60

    rows = [r for r in report["concurrency"]["rows"] if r["lib"] == "dspex"]
    by_mode = {(r["mode"], r["sampler"]): r for r in rows}
    assert ("async", "tpe") in by_mode and ("threads", "tpe") in by_mode
    for r in rows:
        assert "error" not in r, r
        assert r["complete"] == r["n_trials"] == 128
        # Every trial sleeps 0.05 s and 32 run at once: nothing can beat 4 waves.
        assert r["seconds"] >= 0.9 * r["ideal"]
        assert r["seconds"] < 60
    assert "pass" in by_mode[("async", "tpe")]


def test_smoke_with_installed_libraries(tmp_path):
    report, markdown = run_smoke(tmp_path)
    check_dspex_rows(report)
    for peer in PEERS:
        info = report["meta"]["libs"][peer]
        if info["available"]:
            assert report["quality"]["problems"]["branin"]["libs"][peer]["errors"] == []
            assert "median" in report["speed"]["libs"][peer]
        else:
            assert peer in report["meta"]["missing"]
            assert f"{peer}: **MISSING**" in markdown
            assert peer not in report["speed"]["libs"]


def test_smoke_names_missing_peers(tmp_path):
    # Shadow the peers with packages that fail to import.
    shim = tmp_path / "shim"
    for peer in PEERS:
        (shim / peer).mkdir(parents=True)
        (shim / peer / "__init__.py").write_text(f"raise ImportError('{peer} hidden by the test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(shim) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    report, markdown = run_smoke(tmp_path, env=env)
    check_dspex_rows(report)
    assert report["meta"]["missing"] == list(PEERS)
    for peer in PEERS:
        assert f"{peer}: **MISSING**" in markdown
        assert "hidden by the test" in report["meta"]["libs"][peer]["error"]
        assert peer not in report["quality"]["problems"]["sphere10"]["libs"]
    assert report["quality"]["problems"]["sphere10"]["verdict"]["pass"] is None
    assert report["speed"]["speedup_of_dspex"]["rustuna"]["ratio"] is None
    assert all(r["lib"] == "dspex" for r in report["concurrency"]["rows"])


def test_remote_workers_bench_runs_small(tmp_path):
    # benches/remote_workers.py at a tenth of its size: every run ends with the trials asked
    # COMPLETE and none RUNNING, each trial lost with a killed worker re-run. (How many kills
    # land and how the work is shared depends on how fast the workers start: not checked.)
    out = tmp_path / "workers.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benches" / "remote_workers.py"), "--trials", "40", "--sleep", "0.01", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    for run in ("owner_alone", "owner_and_two_workers", "one_worker_killed_twice"):
        assert r[run]["states"].get("COMPLETE") == 40, r[run]
        assert "RUNNING" not in r[run]["states"]
    kills = r["one_worker_killed_twice"]
    assert kills["retried"] == kills["states"].get("FAIL", 0) <= len(kills["killed_pids"]) <= 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
