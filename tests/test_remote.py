"""Remote mode against a real `dspex serve` on a loopback port: the Study API, attached
evaluators, determinism against the embedded engine, tokens, heartbeats, process workers."""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dspex

PY = sys.executable


def _start_server(*extra, env=None, addr="127.0.0.1:0"):
    p = subprocess.Popen(
        [PY, "-m", "dspex.cli", "serve", "--addr", addr, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = p.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"the server did not start: {line!r} {p.stderr.read()}")
    return p, m.group(1)


def _stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def server():
    p, addr = _start_server("--heartbeat-ms", "200")
    yield addr
    _stop(p)
    assert p.returncode == 0, p.stderr.read()


def _objective(trial):
    x = trial.suggest_float("x", -5, 5)
    n = trial.suggest_int("n", 1, 4)
    c = trial.suggest_categorical("c", ["a", "b", None])
    trial.report(x, 0)
    trial.set_user_attr("n2", n * 2)
    return (x - 1) ** 2 + n + (0.5 if c == "a" else 0.0)


def _optimize_three(study):
    study.optimize(_objective, n_trials=3)
    return len(study.trials)


def test_a_remote_study_pickles_as_the_engine_and_its_name(server):
    import multiprocessing
    import pickle

    study = dspex.create_study(study_name="pickled", engine=server, sampler=dspex.samplers.RandomSampler(seed=1))
    study.optimize(_objective, n_trials=2)
    copy = pickle.loads(pickle.dumps(study))
    assert copy.study_name == "pickled" and copy._storage.engine == server
    assert [t.params for t in copy.trials] == [t.params for t in study.trials]
    # One process at a time: a remote study runs one optimize at once (others dspex.attach).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        counts = pool.map(_optimize_three, [study, study])
    assert counts == [5, 8]
    assert len(study.trials) == 8


def test_remote_study_api(server):
    study = dspex.create_study(study_name="api", engine=server, direction="minimize", sampler=dspex.samplers.RandomSampler(seed=1))
    assert study.study_name == "api"
    study.set_user_attr("k", {"a": [1, 2]})
    study.optimize(_objective, n_trials=20, concurrency=3)
    trials = study.trials
    assert len(trials) == 20
    assert all(t.state == dspex.TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs["n2"] == trials[0].params["n"] * 2
    assert trials[0].intermediate_values == {0: trials[0].params["x"]}
    assert study.best_value == min(t.value for t in trials)
    assert study.user_attrs == {"k": {"a": [1, 2]}}
    # ask and tell, enqueue, load_study, names
    study.enqueue_trial({"x": 0.5, "n": 2, "c": "b"})
    t = study.ask()
    assert t.suggest_float("x", -5, 5) == 0.5
    study.tell(t, 3.0)
    again = dspex.load_study(study_name="api", engine=server)
    assert len(again.trials) == 21
    assert "api" in again._storage.get_all_study_names()
    with pytest.raises(dspex.exceptions.DuplicatedStudyError):
        dspex.create_study(study_name="api", engine=server)
    with pytest.raises(KeyError):
        dspex.load_study(study_name="nope", engine=server)


def test_uncaught_error_stops_the_remote_study_and_is_raised(server):
    study = dspex.create_study(study_name="err", engine=server)

    def bad(trial):
        trial.suggest_float("x", 0, 1)
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        study.optimize(bad, n_trials=10)
    assert study.trials[0].state == dspex.TrialState.FAIL
    assert "boom" in study.trials[0].system_attrs.get("fail_reason", "")
    # catch= keeps going
    study.optimize(bad, n_trials=3, catch=(ZeroDivisionError,))
    assert len(study.trials) == 4


def test_stream_run_matches_embedded_run(server):
    """One evaluator, fixed seed, define-by-run: the same trials as the embedded engine."""

    def make(engine=None, name=None):
        return dspex.create_study(study_name=name, engine=engine, sampler=dspex.samplers.TPESampler(seed=3, n_startup_trials=5))

    embedded = make()
    embedded.optimize(_objective, n_trials=25)
    remote = make(server, "same")
    remote.optimize(_objective, n_trials=25)
    a = [(t.params, t.value) for t in embedded.trials]
    b = [(t.params, t.value) for t in remote.trials]
    assert a == b


def test_attach_from_other_processes(server, tmp_path):
    mod = tmp_path / "objmod.py"
    # 0.05 s a trial: one worker alone would need 1.5 s, time for the other to attach.
    mod.write_text(textwrap.dedent("""
        import os, time
        def f(trial):
            trial.set_user_attr("pid", os.getpid())
            time.sleep(0.05)
            return trial.suggest_float("x", 0, 1)
    """))
    study = dspex.create_study(study_name="shared", engine=server)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    workers = [
        subprocess.Popen([PY, "-m", "dspex.worker", "--engine", server, "--study", "shared", "--objective", "objmod:f"], env=env)
        for _ in range(2)
    ]
    try:
        # this process owns the run (capacity 0): only the two workers evaluate
        run = study._native.start_run(30, None, 0, None, 0)
        assert run.wait(60) is not None
        for w in workers:
            assert w.wait(30) == 0
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(study.trials) == 30 and len(pids) == 2 and os.getpid() not in pids


def test_token_required_and_checked():
    p, addr = _start_server("--token", "s3cret")
    try:
        for token in (None, "wrong"):
            with pytest.raises(dspex.remote.RemoteError, match="UNAUTHENTICATED"):
                dspex.create_study(study_name="t", engine=addr, token=token)
        study = dspex.create_study(study_name="t", engine=addr, token="s3cret")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        assert len(study.trials) == 3
    finally:
        _stop(p)


def _no_token_env():
    return {k: v for k, v in os.environ.items() if k != "DSPEX_TOKEN"}


def test_non_loopback_needs_a_token_and_tls_or_insecure(tmp_path):
    def serve(*extra):
        return subprocess.run([PY, "-m", "dspex.cli", "serve", "--addr", "0.0.0.0:0", *extra], capture_output=True, text=True, timeout=30, env=_no_token_env())

    out = serve()
    assert out.returncode != 0
    assert "requires a token" in out.stderr
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    out = serve("--token-file", str(token_file))
    assert out.returncode != 0
    assert "without TLS" in out.stderr and "--insecure" in out.stderr, out.stderr
    # --insecure says so explicitly: it serves (and the token file's token is checked).
    p, addr = _start_server("--token-file", str(token_file), "--insecure", addr="0.0.0.0:0", env=_no_token_env())
    try:
        local = "127.0.0.1:" + addr.rsplit(":", 1)[1]
        with pytest.raises(dspex.remote.RemoteError, match="UNAUTHENTICATED"):
            dspex.create_study(study_name="t", engine=local)
        study = dspex.create_study(study_name="t", engine=local, token="s3cret")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert len(study.trials) == 2
    finally:
        _stop(p)
    assert p.returncode == 0


def test_token_file_env_and_command_line(tmp_path):
    """--token-file (first line; a warning when others can read it), DSPEX_TOKEN, and a warning
    for --token (it shows in `ps`); an empty file or a bad token is refused with the reason."""
    token_file = tmp_path / "token"
    token_file.write_text("from-file\nignored second line\n")
    token_file.chmod(0o644)
    p, addr = _start_server("--token-file", str(token_file), env=_no_token_env())
    try:
        with pytest.raises(dspex.remote.RemoteError, match="UNAUTHENTICATED"):
            dspex.create_study(study_name="t", engine=addr, token="ignored second line")
        dspex.create_study(study_name="t", engine=addr, token="from-file")
    finally:
        _stop(p)
    err = p.stderr.read()
    assert "can be read by other users (chmod 600 it)" in err, err
    assert "from-file" not in err

    p, addr = _start_server(env=dict(_no_token_env(), DSPEX_TOKEN="from-env"))
    try:
        with pytest.raises(dspex.remote.RemoteError, match="UNAUTHENTICATED"):
            dspex.create_study(study_name="t", engine=addr)
        dspex.create_study(study_name="t", engine=addr, token="from-env")
    finally:
        _stop(p)
    assert "visible to every user" not in p.stderr.read()

    p, addr = _start_server("--token", "on-the-line", env=_no_token_env())
    try:
        dspex.create_study(study_name="t", engine=addr, token="on-the-line")
    finally:
        _stop(p)
    assert "visible to every user of this machine (ps)" in p.stderr.read()

    for text, why in (("\n\n", "the file is empty"), ("two words\n", "printable ASCII without spaces")):
        token_file.write_text(text)
        out = subprocess.run([PY, "-m", "dspex.cli", "serve", "--addr", "127.0.0.1:0", "--token-file", str(token_file)], capture_output=True, text=True, timeout=30, env=_no_token_env())
        assert out.returncode != 0 and why in out.stderr, out.stderr
    out = subprocess.run([PY, "-m", "dspex.cli", "serve", "--token-file", str(tmp_path / "missing")], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "missing" in out.stderr


def test_failed_authentication_is_logged_with_a_rate_limit():
    """Every wrong-token call is refused; the engine warns once per period with the peer's
    address and a count of the others, never the token it was given."""
    p, addr = _start_server(env=dict(_no_token_env(), DSPEX_TOKEN="right"))
    try:
        for _ in range(5):
            with pytest.raises(dspex.remote.RemoteError, match="UNAUTHENTICATED"):
                dspex.create_study(study_name="t", engine=addr, token="wrong-guess")
    finally:
        _stop(p)
    err = p.stderr.read()
    warnings = [line for line in err.splitlines() if "rejected a call from 127.0.0.1:" in line]
    assert len(warnings) == 1, err
    assert "missing or wrong token" in warnings[0]
    assert "wrong-guess" not in err


def test_unreachable_engine_is_a_clear_error():
    with pytest.raises(dspex.remote.RemoteError, match="cannot reach the engine"):
        dspex.create_study(engine="127.0.0.1:1")


def test_async_objective_keeps_many_evaluations_in_flight_over_a_stream(server):
    """Regression: with several `async def` evaluations in flight on one stream, a Reply the
    engine wrote right after an Evaluate waited for the client's delayed ACK (Nagle on the
    server socket, ~40 ms), which capped the stream at ~50 evaluations/s. 600 evaluations
    took 10 s or more then; they take well under a second now (debug build included). The
    run's timeout turns a regression into a quick failure instead of a slow test."""
    in_flight = 0
    peak = 0

    async def objective(trial):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        x = trial.suggest_float("x", 0.0, 1.0)
        await asyncio.sleep(0)
        in_flight -= 1
        return x

    study = dspex.create_study(study_name="async-inflight", engine=server, sampler=dspex.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=20, concurrency=16)  # warm-up (connection, imports)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=600, concurrency=16, timeout=4.0)
    elapsed = time.perf_counter() - t0
    trials = study.trials
    assert peak > 1, "the evaluations did not overlap"
    assert len(trials) == 620, f"only {len(trials) - 20} of 600 async evaluations in {elapsed:.1f} s"
    assert all(t.state == dspex.TrialState.COMPLETE for t in trials)


def _tls_files(tmp_path):
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")

    def run(*args):
        subprocess.run([openssl, *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=dspex test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (tmp_path / "ext.cnf").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    # A client certificate signed by the same CA, for mutual TLS.
    run("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=dspex test client")
    (tmp_path / "client.cnf").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.pem", "-days", "2", "-extfile", "client.cnf")
    return tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(tmp_path, monkeypatch):
    ca, cert, key = _tls_files(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _tls_files(other)
    p, addr = _start_server("--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(ca))
    engine = f"https://{addr}"
    try:
        monkeypatch.delenv("DSPEX_TLS_CLIENT_CERT", raising=False)
        monkeypatch.delenv("DSPEX_TLS_CLIENT_KEY", raising=False)
        # The engine's TLS alert or, when it closes first, the broken connection.
        with pytest.raises(dspex.remote.RemoteError, match="CertificateRequired|transport error"):
            dspex.create_study(study_name="m", engine=engine, tls_ca=str(ca))
        # A certificate from another CA is refused too.
        monkeypatch.setenv("DSPEX_TLS_CLIENT_CERT", str(other / "client.pem"))
        monkeypatch.setenv("DSPEX_TLS_CLIENT_KEY", str(other / "client.key"))
        with pytest.raises(dspex.remote.RemoteError, match="refused DSPEX_TLS_CLIENT_CERT|transport error"):
            dspex.create_study(study_name="m", engine=engine, tls_ca=str(ca))
        monkeypatch.setenv("DSPEX_TLS_CLIENT_CERT", str(tmp_path / "client.pem"))
        monkeypatch.setenv("DSPEX_TLS_CLIENT_KEY", str(tmp_path / "client.key"))
        study = dspex.create_study(study_name="m", engine=engine, tls_ca=str(ca), sampler=dspex.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=4)
        assert len(study.trials) == 4
        monkeypatch.delenv("DSPEX_TLS_CLIENT_KEY")
        with pytest.raises(ValueError, match="DSPEX_TLS_CLIENT_KEY is not"):
            dspex.load_study(study_name="m", engine=engine, tls_ca=str(ca))
    finally:
        _stop(p)
    assert p.returncode == 0, p.stderr.read()
    out = subprocess.run([PY, "-m", "dspex.cli", "serve", "--tls-client-ca", str(ca)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "--tls-cert" in out.stderr, out.stderr


def test_tls_with_a_self_signed_ca(tmp_path):
    ca, cert, key = _tls_files(tmp_path)
    p, addr = _start_server("--tls-cert", str(cert), "--tls-key", str(key))
    try:
        engine = f"https://{addr}"
        study = dspex.create_study(study_name="tls", engine=engine, tls_ca=str(ca), sampler=dspex.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=8, concurrency=2)
        again = dspex.load_study(study_name="tls", engine=engine, tls_ca=str(ca))
        assert len(again.trials) == 8
        assert all(t.state == dspex.TrialState.COMPLETE for t in again.trials)
        # Without the CA the server's certificate is not trusted: a clear error, no hang.
        with pytest.raises(dspex.remote.RemoteError, match=r"(?s)cannot reach the engine.*certificate.*tls_ca"):
            dspex.load_study(study_name="tls", engine=engine)
        # A CA that did not sign it is refused too.
        other = tmp_path / "other"
        other.mkdir()
        other_ca, _, _ = _tls_files(other)
        with pytest.raises(dspex.remote.RemoteError, match=r"(?s)certificate"):
            dspex.load_study(study_name="tls", engine=engine, tls_ca=str(other_ca))
        # Plain HTTP/2 against the TLS port fails instead of hanging.
        with pytest.raises(dspex.remote.RemoteError):
            dspex.load_study(study_name="tls", engine=addr)
    finally:
        _stop(p)
    assert p.returncode == 0, p.stderr.read()


def test_silent_worker_is_dropped_and_its_trial_retried(server, tmp_path):
    """A frozen worker (SIGSTOP: no heartbeat) loses its trial; another worker re-runs it."""
    mod = tmp_path / "slowmod.py"
    mod.write_text(textwrap.dedent(f"""
        import os, time
        def f(trial):
            x = trial.suggest_float("x", 0, 1)
            open(os.path.join({str(tmp_path)!r}, "started-%d" % os.getpid()), "w").close()
            time.sleep(0.3)
            return x
    """))
    study = dspex.create_study(study_name="hang", engine=server)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    cmd = [PY, "-m", "dspex.worker", "--engine", server, "--study", "hang", "--objective", "slowmod:f", "--heartbeat-ms", "100"]
    frozen = subprocess.Popen(cmd, env=env)
    healthy = None
    try:
        run = study._native.start_run(6, None, 0, None, 2, max_concurrency=1)
        deadline = time.time() + 30
        while not (tmp_path / f"started-{frozen.pid}").exists():
            assert time.time() < deadline
            time.sleep(0.02)
        frozen.send_signal(signal.SIGSTOP)
        healthy = subprocess.Popen(cmd, env=env)
        assert run.wait(60) is not None
    finally:
        frozen.kill()
        frozen.wait()
        if healthy is not None:
            healthy.wait(30)
    trials = study.trials
    failed = [t for t in trials if t.state == dspex.TrialState.FAIL]
    assert len(failed) == 1 and "heartbeat" in failed[0].system_attrs["fail_reason"]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == dspex.TrialState.COMPLETE
    assert retry[0].params == failed[0].params
    assert sum(t.state == dspex.TrialState.COMPLETE for t in trials) == 6


def _cpu_objective(trial):
    x = trial.suggest_float("x", -3, 3)
    return x * x + os.getpid() * 0.0


def test_processes_on_an_embedded_study():
    study = dspex.create_study(sampler=dspex.samplers.RandomSampler(seed=0))
    study.optimize(_cpu_objective, n_trials=24, processes=3)
    trials = study.trials
    assert len(trials) == 24
    assert all(t.state == dspex.TrialState.COMPLETE for t in trials)


def _x_at_most_one(frozen):
    return [frozen.params["x"] - 1.0]


def test_processes_run_the_samplers_constraints_func():
    with pytest.warns(FutureWarning, match="constraints_func"):
        sampler = dspex.samplers.TPESampler(seed=0, constraints_func=_x_at_most_one)
    study = dspex.create_study(sampler=sampler)
    study.optimize(_cpu_objective, n_trials=12, processes=2)
    trials = study.trials
    assert len(trials) == 12 and all(t.state == dspex.TrialState.COMPLETE for t in trials)
    assert all(t.constraints == {"0": pytest.approx(t.params["x"] - 1.0)} for t in trials)
    assert all(t.params["x"] <= 1.0 for t in study.best_trials)
    # A constraints_func the workers cannot load is refused before the run starts.
    with pytest.warns(FutureWarning):
        lam = dspex.create_study(sampler=dspex.samplers.TPESampler(constraints_func=lambda t: [0.0]))
    with pytest.raises(TypeError, match="picklable constraints_func"):
        lam.optimize(_cpu_objective, n_trials=2, processes=2)
    assert len(lam.trials) == 0


def test_processes_on_a_remote_study_with_a_module_path(server, tmp_path, monkeypatch):
    # Each trial takes 0.1 s, so one worker cannot run all 20 before the other has started
    # (an instant objective let the first process finish the study alone on a fast engine).
    (tmp_path / "pmod.py").write_text(
        "import os, time\ndef f(t):\n    t.set_user_attr('pid', os.getpid())\n    time.sleep(0.1)\n    return t.suggest_float('x', 0, 1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    study = dspex.create_study(study_name="procs", engine=server)
    study.optimize("pmod:f", n_trials=20, processes=2)
    assert len(study.trials) == 20
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2


def test_processes_with_an_objective_that_does_not_import():
    study = dspex.create_study()
    with pytest.raises(ValueError, match="cannot load the objective"):
        study.optimize("no_such_module_xyz:f", n_trials=5, processes=2)
    assert len(study.trials) == 0


def test_attached_workers_add_capacity_and_lost_trials_are_retried(server, tmp_path):
    # The owner (concurrency 1) and two attached workers (1 each): three trials in flight at
    # once over the run, none capped by the owner's own concurrency. One worker is SIGKILLed
    # mid-trial twice; its trials are re-run (max_retries) and the study ends with every
    # trial the owner asked for COMPLETE.
    (tmp_path / "capmod.py").write_text(textwrap.dedent(f"""
        import os, time
        def f(trial):
            x = trial.suggest_float("x", 0, 1)
            trial.set_user_attr("pid", os.getpid())
            open(os.path.join({str(tmp_path)!r}, "started-%d" % os.getpid()), "w").close()
            time.sleep(0.05)
            return x
    """))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    cmd = [PY, "-m", "dspex.worker", "--engine", server, "--study", "cap", "--objective", "capmod:f", "--heartbeat-ms", "200"]
    study = dspex.create_study(study_name="cap", engine=server)
    sys.path.insert(0, str(tmp_path))
    try:
        import capmod
    finally:
        sys.path.remove(str(tmp_path))
    stop_killing = False
    workers = []

    def killer():
        # The victim is killed twice, each time after it has started a trial, and restarted.
        for _ in range(2):
            victim = workers[0]
            marker = tmp_path / f"started-{victim.pid}"
            while not marker.exists() and not stop_killing:
                time.sleep(0.01)
            if stop_killing:
                return
            time.sleep(0.02)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            workers[0] = subprocess.Popen(cmd, env=env)

    import threading

    workers.extend(subprocess.Popen(cmd, env=env) for _ in range(2))
    t = threading.Thread(target=killer)
    try:
        t.start()
        study.optimize(capmod.f, n_trials=120, max_retries=2)
    finally:
        stop_killing = True
        t.join()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
    trials = study.trials
    states = [t.state for t in trials]
    assert sum(s == dspex.TrialState.COMPLETE for s in states) == 120
    assert dspex.TrialState.RUNNING not in states
    failed = [t for t in trials if t.state == dspex.TrialState.FAIL]
    assert 1 <= len(failed) <= 2, [t.system_attrs.get("fail_reason") for t in failed]
    for f in failed:
        retry = [t for t in trials if t.system_attrs.get("failed_trial") == f.number]
        assert len(retry) == 1 and retry[0].state == dspex.TrialState.COMPLETE and retry[0].params == f.params
    pids = [t.user_attrs.get("pid") for t in trials if t.state == dspex.TrialState.COMPLETE]
    assert os.getpid() in pids and len(set(pids)) >= 3
    # Three evaluators, one trial each at once: the 120 trials of 50 ms overlapped.
    starts = sorted((t.datetime_start, t.datetime_complete) for t in trials if t.state == dspex.TrialState.COMPLETE)
    peak = max(sum(1 for s, e in starts if s <= t0 < e) for t0, _ in starts)
    assert peak >= 2
    assert peak <= 3


def test_max_concurrency_caps_the_run_over_attached_workers(server, tmp_path):
    (tmp_path / "capmod2.py").write_text("import time\ndef f(t):\n    time.sleep(0.03)\n    return t.suggest_float('x', 0, 1)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    cmd = [PY, "-m", "dspex.worker", "--engine", server, "--study", "cap2", "--objective", "capmod2:f", "--concurrency", "3"]
    study = dspex.create_study(study_name="cap2", engine=server)
    workers = [subprocess.Popen(cmd, env=env) for _ in range(2)]
    try:
        run = study._native.start_run(30, None, 0, None, 0, max_concurrency=2)
        assert run.wait(60) is not None
    finally:
        for w in workers:
            w.wait(30)
    trials = study.trials
    spans = [(t.datetime_start, t.datetime_complete) for t in trials]
    peak = max(sum(1 for s, e in spans if s <= t0 < e) for t0, _ in spans)
    assert len(trials) == 30 and peak <= 2


def _mixed_outcomes(trial):
    x = trial.suggest_int("x", 0, 3)
    trial.report(float(x), 0)
    if trial.number % 4 == 1:
        return float("nan")
    if trial.number % 4 == 2:
        raise dspex.TrialPruned()
    if trial.number % 4 == 3:
        raise KeyError("caught")
    return float(x)


def test_outcomes_told_in_one_message_match_embedded(server, caplog):
    # Without callbacks, an evaluator tells the outcome and answers the run in one crossing
    # (one message remote): states, values, reasons and log lines as embedded.
    results = []
    for engine in (None, server):
        study = dspex.create_study(study_name="mixed" if engine else None, engine=engine, sampler=dspex.samplers.RandomSampler(seed=3))
        caplog.clear()
        with caplog.at_level("INFO", logger="dspex"):
            study.optimize(_mixed_outcomes, n_trials=8, catch=(KeyError,))
        lines = [r.getMessage().split(" ")[2] for r in caplog.records if r.getMessage().startswith("Trial ")]
        results.append(([(t.state, t.values, (t.system_attrs.get("fail_reason") or "").split("\n")[0]) for t in study.trials], lines))
    assert results[0] == results[1]
    states = [s for s, _, _ in results[0][0]]
    assert states.count(dspex.TrialState.FAIL) == 4 and states.count(dspex.TrialState.PRUNED) == 2
    assert len(results[0][1]) >= 8, results[0][1]


def _bad_calls(where):
    """Runs the same bad calls on studies from ``where(**create_study kwargs)`` and returns
    what each raised: (exception type, message)."""
    out = {}

    def attempt(name, f):
        try:
            f()
        except Exception as e:  # noqa: BLE001 - what is raised is what is compared
            out[name] = (type(e).__name__, str(e))
        else:
            out[name] = None

    s = where(create=True, study_name="errs")
    attempt("best_trial_of_an_empty_study", lambda: s.best_trial)
    attempt("duplicate_study", lambda: where(create=True, study_name="errs"))
    attempt("missing_study", lambda: where(create=False, study_name="nope"))
    multi = where(create=True, study_name="errs-multi", directions=["minimize", "maximize"])
    attempt("best_trial_of_a_multi_objective_study", lambda: multi.best_trial)
    t = s.ask()
    t.suggest_float("x", 0, 1)
    attempt("incompatible_distribution", lambda: t.suggest_int("x", 0, 3))
    big = t.suggest_int("big", -(2**63), 2**63 - 1)
    attempt("int_at_the_ends_of_int64", lambda: None if -(2**63) <= big <= 2**63 - 1 else 1 / 0)
    s.tell(t, 1.0)
    attempt("tell_a_finished_trial", lambda: s.tell(t, 2.0))
    attempt("report_on_a_finished_trial", lambda: t.report(1.0, 0))
    attempt("tell_a_trial_that_does_not_exist", lambda: s.tell(999, 1.0))
    # The engine's own check (the Python API answers this one before asking the engine).
    attempt("engine_best_trial_of_a_multi_objective_study", lambda: multi._native.best_trial())
    return out


def test_the_same_bad_calls_raise_the_same_errors_embedded_and_remote(server):
    storage = dspex.storages.InMemoryStorage()

    def embedded(create, **kw):
        if create:
            return dspex.create_study(storage=storage, **kw)
        return dspex.load_study(storage=storage, **kw)

    def remote(create, **kw):
        if create:
            return dspex.create_study(engine=server, **kw)
        return dspex.load_study(engine=server, **kw)

    here, there = _bad_calls(embedded), _bad_calls(remote)
    assert here == there
    assert here["best_trial_of_an_empty_study"][0] == "ValueError"
    assert here["duplicate_study"][0] == "DuplicatedStudyError"
    assert here["missing_study"][0] == "KeyError"
    assert here["best_trial_of_a_multi_objective_study"][0] == "RuntimeError"
    assert here["engine_best_trial_of_a_multi_objective_study"][0] == "RuntimeError"
    assert here["incompatible_distribution"][0] == "ValueError"
    assert here["int_at_the_ends_of_int64"] is None
    assert here["tell_a_finished_trial"][0] == "ValueError"
    assert here["report_on_a_finished_trial"][0] in ("ValueError", "RuntimeError")
    assert here["tell_a_trial_that_does_not_exist"][0] in ("KeyError", "ValueError")


def test_a_worker_reads_its_token_from_a_file(tmp_path):
    """As a cluster job runs it: `python -m dspex.worker --token-file` (a mounted secret), not
    a token on the command line; a wrong or missing file is a clear error."""
    p, addr = _start_server("--token", "s3cret")
    try:
        (tmp_path / "tokmod.py").write_text("def f(trial):\n    return trial.suggest_float('x', 0, 1)\n")
        (tmp_path / "token").write_text("s3cret\n")
        study = dspex.create_study(study_name="tok", engine=addr, token="s3cret")
        env = dict(os.environ, PYTHONPATH=str(tmp_path))
        env.pop("DSPEX_TOKEN", None)
        base = [PY, "-m", "dspex.worker", "--engine", addr, "--study", "tok", "--objective", "tokmod:f"]
        worker = subprocess.Popen([*base, "--token-file", str(tmp_path / "token")], env=env)
        try:
            run = study._native.start_run(10, None, 0, None, 0)
            assert run.wait(60) is not None
            assert worker.wait(30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
        assert len([t for t in study.trials if t.state == dspex.TrialState.COMPLETE]) == 10
        (tmp_path / "empty").write_text("\n")
        for extra, needle in ((["--token-file", str(tmp_path / "nope")], "No such file"), (["--token-file", str(tmp_path / "empty")], "is empty"),
                              (["--token-file", str(tmp_path / "token"), "--token", "x"], "not both")):
            out = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 2 and needle in out.stderr, out.stderr
    finally:
        _stop(p)


def test_idle_connections_are_closed_and_clients_reconnect():
    """With --idle-timeout, the engine closes a connection with no call in flight; a remote
    study goes on over a new one, and a run whose Attach stream outlives the timeout is not cut."""
    p, addr = _start_server("--idle-timeout", "0.3")
    try:
        study = dspex.create_study(study_name="idle", engine=addr)

        def objective(trial: dspex.Trial) -> float:
            time.sleep(0.1)
            return trial.suggest_float("x", 0, 1)

        study.optimize(objective, n_trials=8)  # 0.8 s on one Attach stream
        time.sleep(1.0)  # idle: the connection is closed
        trial = study.ask()
        study.tell(trial, 0.5)
        time.sleep(1.0)
        study.optimize(objective, n_trials=2)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 11
    finally:
        _stop(p)
    bad = subprocess.run([PY, "-m", "dspex.cli", "serve", "--idle-timeout=-1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "--idle-timeout" in bad.stderr, bad.stderr


def test_every_trial_of_a_remote_async_run_is_logged_with_its_parameters(server):
    """Regression: the log lines are built on a background thread, which read each trial's
    parameters over the run's stream; when the run ended first, that stream was closed and the
    lines still queued (hundreds of 800) were lost."""
    import logging

    async def objective(trial):
        x = trial.suggest_float("x", -10.0, 10.0)
        await asyncio.sleep(0.001)
        return x * x

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    handler = Lines()
    logger = logging.getLogger("dspex")
    logger.addHandler(handler)
    verbosity = dspex.logging.get_verbosity()
    dspex.logging.set_verbosity(dspex.logging.INFO)
    try:
        study = dspex.create_study(study_name="logged", engine=server, sampler=dspex.samplers.TPESampler(seed=0))
        study.optimize(objective, n_trials=800, concurrency=16)
    finally:
        dspex.logging.set_verbosity(verbosity)
        logger.removeHandler(handler)
    finished = [m for m in handler.messages if " finished with value" in m]
    assert len(finished) == 800
    assert all("parameters: {'x': " in m for m in finished)
