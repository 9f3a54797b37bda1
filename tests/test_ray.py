"""dspex.launchers.Ray: evaluation workers as actors of a real local Ray cluster (2 CPUs,
loopback), attached to the engine over the bidirectional stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

ray = pytest.importorskip("ray")

import dspex  # noqa: E402
from dspex.launchers import Ray  # noqa: E402

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # the actors import this directory's modules (ray_objective) as a worker would
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": TESTS}})
    yield
    ray.shutdown()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_ray_actors_evaluate_and_leave_nothing_running(cluster: None, tmp_path: Path) -> None:
    from ray_objective import Quadratic

    study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=0))
    study.optimize(Quadratic(str(tmp_path), together=2), n_trials=40, workers=Ray(num_workers=2))
    states = [t.state for t in study.trials]
    assert states.count(dspex.trial.TrialState.COMPLETE) == 40 and len(states) == 40
    pids = {int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()}
    assert len(pids) == 2 and os.getpid() not in pids  # two actors evaluated, not this process
    deadline = time.monotonic() + 20
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(p) for p in pids), "an actor process outlived the study"


def test_a_killed_actor_is_restarted_and_its_trial_re_run(cluster: None, tmp_path: Path) -> None:
    from ray_objective import Quadratic

    killed: list = []

    def kill_one() -> None:  # SIGKILL an actor while it evaluates, twice
        deadline = time.monotonic() + 60
        while len(killed) < 2 and time.monotonic() < deadline:
            busy = [int(p.name[5:]) for p in tmp_path.iterdir() if p.name.startswith("busy-")]
            live = [p for p in busy if p not in killed and not gone(p)]
            if live and len([p for p in tmp_path.iterdir() if p.name.isdigit()]) >= 2:
                os.kill(live[0], signal.SIGKILL)
                killed.append(live[0])
                time.sleep(1.0)
            time.sleep(0.05)

    study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=0))
    killer = threading.Thread(target=kill_one)
    killer.start()
    study.optimize(Quadratic(str(tmp_path), 0.1), n_trials=60, workers=Ray(num_workers=2), max_retries=3)
    killer.join()
    assert len(killed) == 2
    by_state: dict = {}
    for t in study.trials:
        by_state[t.state] = by_state.get(t.state, 0) + 1
    # the lost trials failed and were re-run with their params; the study has exactly 60 finished
    assert by_state[dspex.trial.TrialState.COMPLETE] == 60
    assert by_state.get(dspex.trial.TrialState.RUNNING, 0) == 0
    assert 1 <= by_state.get(dspex.trial.TrialState.FAIL, 0) <= 2


def test_an_objective_the_actors_cannot_import_stops_the_study_once(cluster: None, tmp_path: Path) -> None:
    (tmp_path / "only_here.py").write_text("def objective(trial):\n    return trial.suggest_float('x', 0, 1)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import only_here

        study = dspex.create_study()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="cannot load the objective.*only_here") as e:
            study.optimize(only_here.objective, n_trials=20, workers=Ray(num_workers=2))
        assert str(e.value).count("only_here") == 1 and time.monotonic() - t0 < 60
        assert not [t for t in study.trials if t.state == dspex.trial.TrialState.RUNNING]
    finally:
        sys.path.remove(str(tmp_path))


def test_bad_launcher_input() -> None:
    with pytest.raises(ValueError, match="num_workers"):
        Ray(num_workers=0)
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        Ray(tls_cert="cert.pem")
    with pytest.raises(TypeError, match="workers must be a dspex.launchers launcher"):
        dspex.create_study().optimize(lambda t: 0.0, n_trials=1, workers="ray")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        dspex.create_study().optimize(lambda t: 0.0, n_trials=1, workers=Ray(), processes=2)


def test_unreachable_cluster_and_missing_ray_are_clear() -> None:
    script = textwrap.dedent("""
        import sys, time, dspex
        from dspex.launchers import Ray
        t0 = time.monotonic()
        try:
            dspex.create_study().optimize(lambda t: 0.0, n_trials=1, workers=Ray(address="127.0.0.1:1", connect_timeout=2))
        except ConnectionError as e:
            print("ERR", e, round(time.monotonic() - t0))
        sys.modules["ray"] = None
        try:
            Ray()
        except ImportError as e:
            print("ERR", e)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "ERR the Ray cluster at 127.0.0.1:1 cannot be reached within 2 s" in out.stdout, out.stderr[-2000:]
    assert 'pip install "dspex[ray]"' in out.stdout



def test_when_the_engine_dies_the_study_stops_and_the_actors_go(cluster: None, tmp_path: Path) -> None:
    """A remote study on a `dspex serve` that is SIGKILLed mid-run: optimize raises within
    seconds (the actors lost their streams) and no actor is left running."""
    import re

    from ray_objective import Quadratic

    server = subprocess.Popen([sys.executable, "-m", "dspex.cli", "serve", "--addr", "127.0.0.1:0", "--heartbeat-ms", "200"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = re.search(r"listening on (\S+)", server.stdout.readline() if server.stdout else "")
        assert m, "the server did not start"
        study = dspex.create_study(study_name="dies", engine=m.group(1))
        failure: list = []

        def run() -> None:
            try:
                study.optimize(Quadratic(str(tmp_path), 0.2), n_trials=500, workers=Ray(num_workers=2))
            except BaseException as e:  # noqa: BLE001 - what the test looks at
                failure.append(e)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 60
        while len([p for p in tmp_path.iterdir() if p.name.isdigit()]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        t.join(60)
        assert not t.is_alive(), "optimize did not return after the engine died"
        assert failure and time.monotonic() - killed_at < 30, failure
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    pids = {int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()}
    deadline = time.monotonic() + 20
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids and all(gone(p) for p in pids)


def test_a_program_studys_metric_runs_in_ray_actors(cluster: None, lm: object, tmp_path: Path) -> None:
    """Program mode with workers=Ray(num_workers=2): the actors join the session and serve the
    metric as one shared tool; every prediction is scored there, none in this process."""
    import ray_objective
    from test_program import DOCS, TRAIN

    from dspex import DSpexSessionContext
    from dspex.native import LM, RAG
    from dspex.optimizer import Study, TPESampler

    metric = ray_objective.Contains(str(tmp_path))
    with DSpexSessionContext() as ctx:
        rag = RAG(context=ctx, corpus=DOCS, lm=LM("m-ray", base_url=lm.url))  # type: ignore[attr-defined]
        study = Study(rag, TPESampler(metric, n_trials=6, seed=0, num_candidates=1), TRAIN)
        best = study.optimize(concurrency=2, example_concurrency=4, workers=Ray(num_workers=2), show_progress_bar=False)
        assert best.score == 1.0 and study.summary["complete"] == 6 and not study.summary.get("errors")
        assert "__metric" not in " ".join(ctx._native.tool_specs())  # the actors left
    pids = {int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()}
    assert pids and os.getpid() not in pids


def test_over_tls_the_actors_trust_the_engines_certificate(cluster: None, tmp_path: Path) -> None:
    # The cluster is this machine alone: the engine is served on loopback with the given
    # certificate (self-signed for 127.0.0.1), which the actors are given to trust.
    import shutil

    from ray_objective import Quadratic

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=dspex ray test",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=0))
    launcher = Ray(num_workers=2, tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
    study.optimize(Quadratic(str(tmp_path), together=2), n_trials=20, workers=launcher)
    assert [t.state for t in study.trials].count(dspex.trial.TrialState.COMPLETE) == 20
    assert len({p.name for p in tmp_path.iterdir() if p.name.isdigit()}) == 2  # evaluated by the actors
