"""PostgreSQL restarted under a running study, on a cluster of the test's own (scripts/pg.sh with
its own state directory), immediately and after 3 s down: no trial a callback saw finished is
lost, and the study resumes once the server is back."""

from __future__ import annotations

import glob
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import dspex

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg() -> Iterator[tuple]:
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PostgreSQL is not installed (scripts/test.sh installs it)")
        pytest.skip("PostgreSQL is not installed")
    # Directly under /tmp: the postgres user must reach it (pytest's tmp_path is root's alone).
    env = dict(os.environ, DSPEX_PG_STATE=f"/tmp/dspex-pg-restart-{uuid.uuid4().hex[:12]}")

    def pg_sh(*args: str) -> str:
        return subprocess.run(["bash", str(ROOT / "scripts" / "pg.sh"), *args], env=env, check=True,
                              capture_output=True, text=True, timeout=120).stdout.strip()

    url = pg_sh("start")
    try:
        yield url, pg_sh
    finally:
        pg_sh("stop")


def _run_through_restart(url: str, name: str, restart) -> tuple:
    study = dspex.create_study(study_name=name, storage=url, sampler=dspex.samplers.RandomSampler(seed=0))
    seen: Dict[int, str] = {}
    errors: List[BaseException] = []

    def objective(trial: dspex.Trial) -> float:
        time.sleep(0.005)
        return trial.suggest_float("x", 0, 1)

    def run() -> None:
        try:
            study.optimize(objective, n_trials=400, concurrency=4, callbacks=[lambda s, t: seen.__setitem__(t.number, t.state.name)])
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 60
    while len(seen) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    restart()
    th.join(120)
    assert not th.is_alive(), "the study hung after the restart"
    return seen, errors


def _lost(url: str, name: str, seen: Dict[int, str]) -> List[int]:
    stored = {t.number: t.state.name for t in dspex.load_study(study_name=name, storage=url).trials}
    return sorted(n for n, s in seen.items() if stored.get(n) != s)


@pytest.mark.parametrize("down_s", [0, 3])
def test_a_restart_loses_no_finished_trial_and_the_study_resumes(pg, down_s: int) -> None:
    """The study either rides the restart through (the pool replaces broken connections) or
    stops with a StorageError saying which write met the dead server; writes are not retried
    (a write whose commit was acknowledged into a broken connection could be applied twice)."""
    url, pg_sh = pg
    name = f"down-{down_s}"
    seen, errors = _run_through_restart(url, name, lambda: pg_sh("restart", str(down_s)))
    if errors:
        assert isinstance(errors[0], dspex.exceptions.StorageError), errors
        assert str(errors[0]).startswith("storage error: cannot "), errors[0]
    else:
        assert len(seen) == 400
    assert _lost(url, name, seen) == []
    # The server is back: the study loads and goes on.
    again = dspex.load_study(study_name=name, storage=url)
    before = len(again.trials)
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10)
    assert len(again.trials) == before + 10
