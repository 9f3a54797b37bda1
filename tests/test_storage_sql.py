"""Durable studies: SQLite / PostgreSQL in Optuna 5.0's schema.

Optuna runs in a subprocess (``/opt/peers/bin/python`` when it exists, else the test
interpreter, where the ``test`` extra installs optuna==5.0.0). PostgreSQL tests use
``DSPEX_TEST_PG_URL`` (``bash scripts/pg.sh start`` prints one); with ``CI=true`` they fail
instead of skipping when it is missing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import dspex
from dspex.exceptions import DuplicatedStudyError, StorageInternalError
from dspex.storages import RDBStorage, RetryFailedTrialCallback

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="session")
def optuna_python() -> str:
    """A Python interpreter that imports optuna 5.0."""
    for cand in ("/opt/peers/bin/python", sys.executable):
        if not os.path.exists(cand):
            continue
        r = subprocess.run([cand, "-c", "import optuna; print(optuna.__version__)"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip().startswith("5."):
            return cand
    if os.environ.get("CI") == "true":
        pytest.fail("optuna 5 is not installed (pip install '.[test]')")
    pytest.skip("optuna 5 is not installed")


def run_py(python: str, code: str, *args: str, timeout: float = 120) -> str:
    r = subprocess.run(
        [python, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"subprocess failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture()
def pg_url() -> str:
    url = os.environ.get("DSPEX_TEST_PG_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but DSPEX_TEST_PG_URL is not set (scripts/test.sh starts PostgreSQL)")
        pytest.skip("DSPEX_TEST_PG_URL is not set (bash scripts/pg.sh start)")
    return url


def sqlite_url(tmp_path: Path, name: str = "s.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def journal_url(tmp_path: Path) -> str:
    """This file's notation for a journal file: ``journal:PATH`` (Optuna's journal backend in
    Optuna, dspex's JournalStorage in dspex)."""
    return f"journal:{tmp_path / 'journal.log'}"


#: Optuna's storage for a URL of these tests (prepended to the Optuna scripts).
OPTUNA_STORAGE = """
import optuna
def storage_of(url):
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return url
"""


def storage_of(url: str) -> object:
    if url.startswith("journal:"):
        from dspex.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return url


def backend_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return sqlite_url(tmp_path)
    if backend == "journal":
        return journal_url(tmp_path)
    return request.getfixturevalue("pg_url")


OPTUNA_DUMP = OPTUNA_STORAGE + """
import json, math, sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name=sys.argv[2], storage=storage_of(sys.argv[1]))
def num(v):
    if v is None: return None
    if isinstance(v, float) and math.isinf(v): return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v): return "nan"
    return v
out = {
    "directions": [d.name for d in s.directions],
    "user_attrs": s.user_attrs,
    "trials": [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "distributions": {k: optuna.distributions.distribution_to_json(d) for k, d in t.distributions.items()},
            "values": None if t.values is None else [num(v) for v in t.values],
            "intermediate_values": {str(k): num(v) for k, v in t.intermediate_values.items()},
            "user_attrs": t.user_attrs,
            "system_attrs": t.system_attrs,
            "datetime_start": None if t.datetime_start is None else t.datetime_start.isoformat(),
        }
        for t in s.trials
    ],
}
print(json.dumps(out))
"""


def num(v):
    if v is None:
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


def dspex_dump(url: str, name: str) -> dict:
    s = dspex.load_study(study_name=name, storage=storage_of(url))
    return {
        "directions": [d.name for d in s.directions],
        "user_attrs": s.user_attrs,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "distributions": {k: json.loads(dspex.distributions.distribution_to_json(d)) for k, d in t.distributions.items()},
                "values": None if t.values is None else [num(v) for v in t.values],
                "intermediate_values": {str(k): num(v) for k, v in t.intermediate_values.items()},
                "user_attrs": t.user_attrs,
                "system_attrs": t.system_attrs,
                "datetime_start": None if t.datetime_start is None else t.datetime_start.isoformat(),
            }
            for t in s.trials
        ],
    }


def optuna_dump(python: str, url: str, name: str) -> dict:
    d = json.loads(run_py(python, OPTUNA_DUMP, url, name))
    for t in d["trials"]:
        t["distributions"] = {k: json.loads(v) for k, v in t["distributions"].items()}
    return d


def objective(trial):
    x = trial.suggest_float("x", 1e-3, 10.0, log=True)
    i = trial.suggest_int("i", 0, 10, step=2)
    c = trial.suggest_categorical("c", ["a", None, 2, 1.5, True])
    trial.set_user_attr("u", {"x": [1, "two"]})
    trial.report(x, 0)
    trial.report(float("inf"), 1)
    if trial.number % 4 == 3:
        raise dspex.TrialPruned()
    if trial.number % 5 == 4:
        raise RuntimeError("boom")
    return (x - 1.0) ** 2 + i + (0 if c is None else 1)


# ------------------------------------------------------------------ Optuna round trips


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "journal"])
def test_dspex_writes_optuna_reads(backend, tmp_path, optuna_python, request):
    url = backend_url(backend, tmp_path, request)
    name = f"dx-{uuid.uuid4().hex[:8]}"
    s = dspex.create_study(study_name=name, storage=storage_of(url), sampler=dspex.samplers.TPESampler(seed=1, n_startup_trials=4))
    s.set_user_attr("owner", {"team": ["a", 1]})
    s.optimize(objective, n_trials=12, catch=(RuntimeError,))
    s.enqueue_trial({"x": 0.5, "i": 4})
    s.add_trial(
        dspex.trial.create_trial(
            params={"x": 2.0},
            distributions={"x": dspex.distributions.FloatDistribution(1e-3, 10.0, log=True)},
            values=[-5.0],
        )
    )
    ours = dspex_dump(url, name)
    theirs = optuna_dump(optuna_python, url, name)
    assert theirs == ours
    states = {t["state"] for t in theirs["trials"]}
    assert states == {"COMPLETE", "PRUNED", "FAIL", "WAITING"}
    assert theirs["trials"][-1]["values"] == [-5.0]
    assert theirs["trials"][4]["system_attrs"]["fail_reason"].startswith("Traceback") or "boom" in theirs["trials"][4]["system_attrs"]["fail_reason"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "journal"])
def test_optuna_writes_dspex_continues(backend, tmp_path, optuna_python, request):
    url = backend_url(backend, tmp_path, request)
    name = f"ox-{uuid.uuid4().hex[:8]}"
    run_py(
        optuna_python,
        OPTUNA_STORAGE
        + textwrap.dedent("""
        import sys, optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = optuna.create_study(study_name=sys.argv[2], storage=storage_of(sys.argv[1]), sampler=optuna.samplers.TPESampler(seed=0))
        s.set_user_attr("from", "optuna")
        def obj(t):
            x = t.suggest_float("x", 1e-3, 10.0, log=True)
            i = t.suggest_int("i", 0, 10, step=2)
            c = t.suggest_categorical("c", ["a", None, 2, 1.5, True])
            t.set_user_attr("u", {"x": [1, "two"]})
            t.report(x, 0)
            t.report(float("-inf"), 1)
            if t.number == 3:
                raise optuna.TrialPruned()
            if t.number == 5:
                return float("inf")
            return (x - 1.0) ** 2 + i
        s.optimize(obj, n_trials=8)
        s.enqueue_trial({"x": 0.25})
        """),
        url,
        name,
    )
    theirs = optuna_dump(optuna_python, url, name)
    ours = dspex_dump(url, name)
    assert ours == theirs
    # dspex continues the study (the enqueued trial first), Optuna sees the continuation.
    s = dspex.load_study(study_name=name, storage=storage_of(url), sampler=dspex.samplers.TPESampler(seed=2))
    s.optimize(objective, n_trials=6, catch=(RuntimeError,))
    assert len(s.trials) == 14
    assert s.trials[8].params["x"] == 0.25
    assert [t.number for t in s.trials] == list(range(14))
    after = optuna_dump(optuna_python, url, name)
    assert after == dspex_dump(url, name)
    assert after["trials"][:8] == theirs["trials"][:8]
    assert after["trials"][5]["values"] == ["inf"]


# ------------------------------------------------------------------ durability


KILL_WORKER = """
import sys, time, dspex
from dspex.storages import RDBStorage
dspex.logging.set_verbosity(dspex.logging.WARNING)
url, name, marker = sys.argv[1], sys.argv[2], sys.argv[3]
st = RDBStorage(url, heartbeat_interval=0.2)
s = dspex.create_study(study_name=name, storage=st, load_if_exists=True, sampler=dspex.samplers.RandomSampler(seed=0))
def obj(t):
    x = t.suggest_float("x", 0.0, 1.0)
    t.report(x, 0)
    if t.number >= 5:
        open(marker, "a").write(f"{t.number}\\n")
        time.sleep(600)   # killed here
    return x
s.optimize(obj, n_trials=100, n_jobs=2)
"""


def test_sigkill_then_resume_with_heartbeat_retry(tmp_path):
    url = sqlite_url(tmp_path)
    marker = tmp_path / "running"
    p = subprocess.Popen([sys.executable, "-c", KILL_WORKER, url, "k", str(marker)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if marker.exists() and len(marker.read_text().split()) >= 2:
                time.sleep(1.0)  # running trials' params are written within 0.5 s (batched)
                break
            assert p.poll() is None, "the worker died on its own"
            time.sleep(0.05)
        else:
            pytest.fail("the worker never reached its long trials")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    stuck = sorted(int(n) for n in marker.read_text().split())
    before = dspex.load_study(study_name="k", storage=url)
    complete = [t for t in before.trials if t.state == dspex.trial.TrialState.COMPLETE]
    assert len(complete) == 5  # every finished trial survived the kill
    running = [t.number for t in before.trials if t.state == dspex.trial.TrialState.RUNNING]
    assert running == stuck
    old_params = {t.number: t.params for t in before.trials}
    n_before = len(before.trials)

    # Resume: heartbeats are stale after the grace period; the dead trials fail and are retried.
    time.sleep(1.2)
    st = RDBStorage(url, heartbeat_interval=0.2, grace_period=1.0, failed_trial_callback=RetryFailedTrialCallback(max_retry=1))
    s = dspex.load_study(study_name="k", storage=st, sampler=dspex.samplers.RandomSampler(seed=1))
    s.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=4)
    trials = s.trials
    for n in stuck:
        assert trials[n].state == dspex.trial.TrialState.FAIL
        assert "heartbeat" in trials[n].system_attrs["fail_reason"]
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == stuck
    for t in retries:
        assert t.state == dspex.trial.TrialState.COMPLETE
        assert t.params == old_params[t.system_attrs["failed_trial"]]
        assert t.system_attrs["retry_history"] == [t.system_attrs["failed_trial"]]
    assert len(trials) == n_before + 4
    assert [t.number for t in trials] == list(range(len(trials)))


ENGINE_WORKER = """
import sys, dspex
dspex.logging.set_verbosity(dspex.logging.WARNING)
url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = dspex.load_study(study_name=name, storage=url)
s.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_int("k", 0, 3), n_trials=n, n_jobs=2)
"""


def test_two_engines_on_one_postgresql_study(pg_url):
    name = f"two-{uuid.uuid4().hex[:8]}"
    dspex.create_study(study_name=name, storage=pg_url)
    procs = [
        subprocess.Popen([sys.executable, "-c", ENGINE_WORKER, pg_url, name, "40"], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    s = dspex.load_study(study_name=name, storage=pg_url)
    trials = s.trials
    assert len(trials) == 80
    assert sorted(t.number for t in trials) == list(range(80))
    assert all(t.state == dspex.trial.TrialState.COMPLETE for t in trials)
    dspex.delete_study(study_name=name, storage=pg_url)


# ------------------------------------------------------------------ bad input


def test_duplicate_study_name_and_load_if_exists(tmp_path):
    url = sqlite_url(tmp_path)
    dspex.create_study(study_name="dup", storage=url)
    with pytest.raises(DuplicatedStudyError, match="dup"):
        dspex.create_study(study_name="dup", storage=url)
    assert dspex.create_study(study_name="dup", storage=url, load_if_exists=True).study_name == "dup"
    assert dspex.get_all_study_names(url) == ["dup"]


def test_unknown_schema_version_is_refused(tmp_path, optuna_python):
    url = sqlite_url(tmp_path)
    dspex.create_study(study_name="v", storage=url)
    con = sqlite3.connect(tmp_path / "s.db")
    con.execute("UPDATE version_info SET schema_version = 99")
    con.execute("UPDATE alembic_version SET version_num = 'v9.9.9'")
    con.commit()
    con.close()
    with pytest.raises(StorageInternalError, match=r"schema version 99 \(alembic v9.9.9\).*Optuna 5.0"):
        dspex.load_study(study_name="v", storage=url)
    # A database with unrelated tables is not taken over either.
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE studies (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StorageInternalError, match="not an Optuna storage"):
        dspex.create_study(storage=f"sqlite:///{other}")


@pytest.mark.parametrize(
    "corruption, match",
    [
        ("UPDATE trials SET state = 'BOGUS' WHERE number = 1", "unknown trial state"),
        ("UPDATE trial_params SET distribution_json = '{oops' WHERE trial_id = 2", "distribution"),
        ("UPDATE trial_user_attributes SET value_json = 'not json' WHERE trial_id = 1", "not JSON"),
        ("DELETE FROM trial_values WHERE trial_id = 3", "COMPLETE"),
        ("UPDATE trials SET number = 7 WHERE number = 2", "jump"),
        ("UPDATE trials SET datetime_start = 'yesterday' WHERE number = 0", "datetime"),
    ],
)
def test_corrupted_rows_give_clear_errors(tmp_path, corruption, match):
    url = sqlite_url(tmp_path)
    s = dspex.create_study(study_name="c", storage=url, sampler=dspex.samplers.RandomSampler(seed=0))

    def obj(t):
        t.set_user_attr("u", 1)
        return t.suggest_float("x", 0, 1)

    s.optimize(obj, n_trials=4)
    con = sqlite3.connect(tmp_path / "s.db")
    con.execute(corruption)
    con.commit()
    con.close()
    with pytest.raises(StorageInternalError, match=match):
        dspex.load_study(study_name="c", storage=url).trials


def test_read_only_database_writes_nothing(tmp_path):
    url = sqlite_url(tmp_path)
    dspex.create_study(study_name="ro", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    ro = url + "?mode=ro"
    s = dspex.load_study(study_name="ro", storage=ro)
    assert len(s.trials) == 2
    with pytest.raises(StorageInternalError, match="read-only"):
        dspex.create_study(study_name="new", storage=ro)
    with pytest.raises(StorageInternalError, match="read-only"):
        s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert dspex.get_all_study_names(url) == ["ro"]
    assert len(dspex.load_study(study_name="ro", storage=url).trials) == 2
    if os.geteuid() != 0:  # root ignores file permissions
        os.chmod(tmp_path / "s.db", 0o444)
        with pytest.raises(StorageInternalError, match="read-only"):
            dspex.create_study(study_name="new2", storage=url)


def test_unreachable_database_and_bad_urls(tmp_path):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    t0 = time.time()
    with pytest.raises(StorageInternalError, match="cannot connect to PostgreSQL"):
        dspex.create_study(storage=f"postgresql://postgres@127.0.0.1:{port}/postgres")
    assert time.time() - t0 < 10
    with pytest.raises(StorageInternalError, match="cannot open SQLite"):
        dspex.create_study(storage=f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(ValueError, match="unsupported scheme"):
        dspex.create_study(storage="mysql://localhost/db")
    with pytest.raises(ValueError, match="heartbeat_interval"):
        RDBStorage(sqlite_url(tmp_path), heartbeat_interval=0)


# ------------------------------------------------------------------ CLI storages


def test_dspex_optimize_study_toml_on_sqlite_continues(tmp_path):
    (tmp_path / "obj.py").write_text("def f(trial):\n    return trial.suggest_float('x', -1, 1) ** 2\n")
    db = tmp_path / "toml.db"
    (tmp_path / "study.toml").write_text(
        textwrap.dedent(
            f"""
            name = "toml"
            objective = "obj:f"
            storage = "sqlite:///{db}"
            n_trials = 6
            [workers]
            processes = 1
            [sampler]
            kind = "random"
            seed = 1
            """
        )
    )
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-m", "dspex.cli", "optimize", str(tmp_path / "study.toml"), "--output", "json"],
            cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )
        assert r.returncode == 0, r.stderr
    s = dspex.load_study(study_name="toml", storage=f"sqlite:///{db}")
    assert len(s.trials) == 12
    assert all(t.state == dspex.trial.TrialState.COMPLETE for t in s.trials)


def test_dspex_serve_bad_storage_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "dspex.cli", "serve", "--addr", "127.0.0.1:0", "--storage", f"sqlite:///{tmp_path}/no/such/dir.db"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
    assert "cannot open SQLite" in r.stderr


# ------------------------------------------------------------------ optuna-dashboard in a browser


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_optuna_dashboard_in_headless_chromium_shows_a_dspex_study(tmp_path, optuna_python):
    """optuna-dashboard (from the package registry) serves a SQLite file dspex wrote; headless
    Chromium (Debian's package) renders the page, which shows the study and its trial count."""
    import re
    import socket
    import urllib.request

    chromium = _chromium()
    has_dashboard = subprocess.run([optuna_python, "-c", "import optuna_dashboard"], capture_output=True).returncode == 0
    if chromium is None or not has_dashboard:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium or optuna-dashboard is missing (.ci/run installs them)")
        pytest.skip("chromium or optuna-dashboard is not installed")
    url = sqlite_url(tmp_path, "dash.db")
    s = dspex.create_study(study_name="dashboard-study", storage=url)
    s.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=17)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [optuna_python, "-c", "import sys; from optuna_dashboard._cli import main; sys.exit(main())", url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    assert "dashboard-study" in r.read().decode()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else "dashboard died"
                assert time.time() < deadline, "optuna-dashboard did not start"
                time.sleep(0.2)

        def render(path: str) -> str:
            r = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--user-data-dir=" + str(tmp_path / "chromium"), "--virtual-time-budget=20000",
                 "--dump-dom", f"http://127.0.0.1:{port}/dashboard/{path}"],
                capture_output=True, text=True, timeout=120,
            )
            html = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", r.stdout, flags=re.S)
            return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))

        home = render("")
        assert "dashboard-study" in home, home[:2000]
        trials = render("studies/1/trials")
        assert "17 Trials" in trials, trials[:2000]
        assert "Trial 0 Complete" in trials
    finally:
        server.terminate()
        server.wait(timeout=10)
