"""`dspex optimize study.toml --launcher ray` (a module of its own: it runs after
test_ray.py's cluster is gone, so the launcher starts a local cluster of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray")

import dspex  # noqa: E402


def test_dspex_optimize_with_the_ray_launcher(tmp_path: Path) -> None:
    """`dspex optimize study.toml --launcher ray`: one supervised launcher process starts a local
    Ray cluster whose actors attach to the CLI's engine and evaluate every trial."""
    # Trials wait (for at most a minute from the first one) until two processes have evaluated,
    # so the first actor to join cannot finish the study before the second one is up.
    seen = tmp_path / "pids"
    (tmp_path / "rayobj.py").write_text(textwrap.dedent(f"""
        import os, time
        SEEN = {str(seen)!r}
        def f(trial):
            trial.set_user_attr("pid", os.getpid())
            with open(SEEN, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            deadline = os.path.getctime(SEEN) + 60  # a minute from the first trial, for the whole run
            while time.time() < deadline and len(set(open(SEEN).read().split())) < 2:
                time.sleep(0.05)
            return trial.suggest_float("x", -1, 1) ** 2
    """))
    db = tmp_path / "s.db"
    (tmp_path / "study.toml").write_text(textwrap.dedent(f"""
        name = "on-ray"
        objective = "rayobj:f"
        n_trials = 30
        storage = "sqlite:///{db}"
        [workers]
        processes = 2
        num_cpus_per_worker = 0.5
    """))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the launcher starts a local cluster
    out = subprocess.run([sys.executable, "-m", "dspex.cli", "optimize", str(tmp_path / "study.toml"), "--launcher", "ray",
                          "--output", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert r["complete"] == 30, r
    pids = {t.user_attrs["pid"] for t in dspex.load_study(study_name="on-ray", storage=f"sqlite:///{db}").trials}
    assert len(pids) == 2  # two actors, neither the CLI nor the launcher process
