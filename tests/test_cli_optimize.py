"""`dspex optimize study.toml`: the engine in the CLI process, a supervised pool of real
worker processes, SIGKILLed workers, and the errors of a bad study file."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable


def _dspex(*args, cwd=ROOT, timeout=120, env=None):
    return subprocess.run([PY, "-m", "dspex.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_example_study_toml_runs():
    out = _dspex("optimize", "examples/study.toml", "--output", "json", "--n-trials", "20")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["complete"] == 20 and r["reason"] == "n_trials"
    assert set(r["best_params"]) == {"x", "y", "scale"}
    text = _dspex("optimize", "examples/study.toml", "--n-trials", "5", "--no-progress")
    assert text.returncode == 0, text.stderr
    assert "best value" in text.stdout and "5 complete" in text.stdout


def test_sigkill_workers_mid_trial(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "killme.py").write_text(textwrap.dedent(f"""
        import os, time
        MARKS = {str(marks)!r}
        def f(trial):
            x = trial.suggest_float("x", -1, 1)
            path = os.path.join(MARKS, "run-%d" % os.getpid())
            open(path, "w").close()
            time.sleep(0.15)
            os.unlink(path)
            return x * x
    """))
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        name = "kill"
        objective = "killme:f"
        n_trials = 45
        concurrency = 3
        [workers]
        processes = 3
        max_retries = 3
        heartbeat_ms = 200
        [sampler]
        kind = "random"
        seed = 1
    """))
    cli = subprocess.Popen([PY, "-m", "dspex.cli", "optimize", str(tmp_path / "study.toml"), "--output", "json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = 0
    try:
        deadline = time.time() + 60
        while kills < 3 and time.time() < deadline:
            running = list(marks.glob("run-*"))
            if running:
                pid = int(running[0].name.split("-")[1])
                try:
                    os.kill(pid, 9)
                    kills += 1
                except ProcessLookupError:
                    pass
                running[0].unlink(missing_ok=True)
                time.sleep(0.6)
            else:
                time.sleep(0.01)
        out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert kills == 3
    assert cli.returncode == 0, err
    r = json.loads(out)
    assert r["running"] == 0
    assert r["complete"] == 45
    assert r["trials"] == r["complete"] + r["pruned"] + r["fail"]
    assert r["fail"] >= 3
    assert r["worker_restarts"] >= 3
    lost = {x["trial"]: x for x in r["lost"]}
    assert len(lost) == r["fail"]
    assert all(x["state"] == "COMPLETE" for x in lost.values())
    # The engine's warnings reach stderr (the JSON report alone is on stdout).
    assert err.count("trial lost") >= 3, err


def test_declared_parameters_are_answered_by_the_worker_as_the_engine_recorded_them(tmp_path):
    """`[search_space]` parameters are sampled by the engine before a trial is sent; the
    worker answers the objective's suggest of one of them without asking again, with the value
    the engine recorded. Asking a declared name with another kind still goes to the engine,
    which refuses it (that trial fails)."""
    import dspex

    (tmp_path / "declobj.py").write_text(textwrap.dedent("""
        def f(trial):
            x = trial.suggest_float("x", -2.0, 2.0)
            c = trial.suggest_categorical("c", ["a", "b"])
            if trial.number == 3:
                trial.suggest_int("x", 0, 3)
            return x * x + (1.0 if c == "b" else 0.0)
    """))
    db = tmp_path / "d.db"
    (tmp_path / "study.toml").write_text(textwrap.dedent(f"""
        name = "declared"
        objective = "declobj:f"
        n_trials = 10
        storage = "sqlite:///{db}"
        [workers]
        processes = 1
        max_retries = 0
        [sampler]
        kind = "random"
        seed = 1
        [search_space]
        x = {{ type = "float", low = -2.0, high = 2.0 }}
        c = {{ type = "categorical", choices = ["a", "b"] }}
    """))
    out = _dspex("optimize", str(tmp_path / "study.toml"), "--output", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    trials = dspex.load_study(study_name="declared", storage=f"sqlite:///{db}").trials
    done = [t for t in trials if t.state == dspex.TrialState.COMPLETE]
    assert len(done) == 9
    for t in done:
        assert t.value == t.params["x"] ** 2 + (1.0 if t.params["c"] == "b" else 0.0)
    failed = [t for t in trials if t.state == dspex.TrialState.FAIL]
    assert [t.number for t in failed] == [3]
    assert "distribution" in failed[0].system_attrs.get("fail_reason", ""), failed[0].system_attrs


def test_study_toml_with_sqlite_storage(tmp_path):
    """`storage = "sqlite:///..."`: the trials land in the database (Optuna's schema), a second
    run continues the same study, and `dspex.load_study(storage=...)` reads them back."""
    import dspex

    (tmp_path / "sqobj.py").write_text("def f(trial):\n    return trial.suggest_float('x', -1, 1) ** 2 + trial.suggest_int('k', 0, 3)\n")
    db = tmp_path / "runs" / "s.db"
    db.parent.mkdir()
    (tmp_path / "study.toml").write_text(textwrap.dedent(f"""
        name = "persisted"
        objective = "sqobj:f"
        n_trials = 12
        concurrency = 2
        storage = "sqlite:///{db}"
        [workers]
        processes = 1
        [sampler]
        kind = "random"
        seed = 3
    """))
    for run in (1, 2):
        out = _dspex("optimize", str(tmp_path / "study.toml"), "--output", "json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        assert r["complete"] == 12 * run and r["trials"] == 12 * run, r
    assert db.exists()
    study = dspex.load_study(study_name="persisted", storage=f"sqlite:///{db}")
    trials = study.trials
    assert len(trials) == 24 and [t.number for t in trials] == list(range(24))
    assert all(t.state == dspex.TrialState.COMPLETE for t in trials)
    assert study.best_value == min(t.value for t in trials)
    assert set(study.best_params) == {"x", "k"}
    listed = _dspex("studies", "list", "--storage", f"sqlite:///{db}", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert "persisted" in listed.stdout
    # A storage that cannot be opened: the file, the line and the field, before any trial.
    (tmp_path / "bad.toml").write_text('objective = "sqobj:f"\nn_trials = 3\nstorage = "sqlite:////nonexistent-dir-dspex/x/y.db"\n')
    out = _dspex("optimize", str(tmp_path / "bad.toml"), cwd=tmp_path)
    assert out.returncode != 0
    assert "bad.toml:3" in out.stderr and "storage" in out.stderr, out.stderr
    (tmp_path / "bad.toml").write_text('objective = "sqobj:f"\nstorage = "mysql://u@h/db"\n')
    out = _dspex("optimize", str(tmp_path / "bad.toml"), cwd=tmp_path)
    assert out.returncode != 0
    assert "bad.toml:2" in out.stderr and "mysql" in out.stderr, out.stderr


def test_objective_that_does_not_import_fails_before_any_trial(tmp_path):
    (tmp_path / "s.toml").write_text('objective = "no_such_module_abc:f"\nn_trials = 3\n')
    out = _dspex("optimize", str(tmp_path / "s.toml"), cwd=tmp_path)
    assert out.returncode != 0
    assert "cannot load the objective" in out.stderr and "no_such_module_abc" in out.stderr


def test_bad_study_files_name_file_line_and_field(tmp_path):
    cases = {
        'objective = "m:f"\nn_trials = 3\nbogus = 1\n': ["bad.toml:3", "bogus"],
        'objective = "m:f"\nn_trials = [\n': ["bad.toml:"],
        'objective = "m:f"\n[search_space]\nx = { type = "float", low = 2.0, high = 1.0 }\n': ["bad.toml:3", "search_space.x"],
        'objective = "m:f"\n[search_space]\nx = { type = "normal", low = 0.0 }\n': ["bad.toml:3", "normal"],
        'objective = "m:f"\n[sampler]\nkind = "tpe"\nseeed = 1\n': ["bad.toml:", "seeed"],
        'objective = "m:f"\n[workers]\nprocesses = 2\nmax_retry = 1\n': ["bad.toml:4", "max_retry"],
    }
    for text, expected in cases.items():
        (tmp_path / "bad.toml").write_text(text)
        out = _dspex("optimize", str(tmp_path / "bad.toml"), cwd=tmp_path)
        assert out.returncode != 0, text
        for e in expected:
            assert e in out.stderr, (text, out.stderr)


def test_help_and_version():
    out = _dspex("--version")
    assert out.returncode == 0 and "dspex" in out.stdout
    for sub in ("serve", "optimize", "worker"):
        out = _dspex(sub, "--help")
        assert out.returncode == 0 and "Usage: dspex" in out.stdout


def test_a_program_file_runs_a_program_study():
    out = _dspex("optimize", "examples/program.toml", "--output", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["complete"] == 25 and 0 < result["score"] <= 1
    assert set(result["params"]) == {"retrieve.k1", "retrieve.b", "retrieve.stem"}


def test_a_program_file_with_workers_scores_in_worker_processes(tmp_path):
    import shutil

    for f in ("program_bm25.py", "tune_retrieval.py"):
        shutil.copy(f"examples/{f}", tmp_path)
    text = open("examples/program.toml").read().replace("n_trials = 25", "n_trials = 6")
    (tmp_path / "program.toml").write_text(text + "\n[workers]\nprocesses = 2\n")
    out = _dspex("optimize", str(tmp_path / "program.toml"), "--output", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["complete"] == 6 and result["failed"] == 0 and 0 < result["score"] <= 1


def test_program_file_mistakes_name_the_file_and_line(tmp_path):
    (tmp_path / "m.py").write_text("def metric(example, prediction, trace=None):\n    return 1.0\n")
    (tmp_path / "train.jsonl").write_text('{"question": "a b"}\n{"question": "c"}\n')
    head = '[data]\ntrainset = "train.jsonl"\ncorpus = "docs.txt"\n\n[metric]\nfunction = "m:metric"\n\n'
    (tmp_path / "docs.txt").write_text("a b c\nd e f\n")
    cases = [
        ('[[steps]]\nmodule = "rerank"\n', "p.toml:9: unknown module 'rerank'"),
        ('[[steps]]\nmodule = "retrieve"\ndepth = 3\n', "p.toml:10: retrieve has no argument 'depth'"),
        ('[[steps]]\nmodule = "retrieve"\nk = { int = [5, 1] }\n', "p.toml:10:"),
        ('[[steps]]\nmodule = "retrieve"\nk = { ints = [1, 5] }\n', "p.toml:10: a tunable value is"),
        ('[[steps]]\nmodule = "predict"\nsignature = "question -> answer"\nlm = "main"\n', "p.toml:11: lm must name an [lm.NAME] table"),
        ('[workers]\nprocesses = 0\n\n[[steps]]\nmodule = "retrieve"\n', "p.toml:9: processes must be an int >= 1"),
        ('[workers]\nthreads = 2\n\n[[steps]]\nmodule = "retrieve"\n', "p.toml:9: [workers] has no key 'threads'"),
    ]
    for body, says in cases:
        (tmp_path / "p.toml").write_text(head + body)
        out = _dspex("optimize", str(tmp_path / "p.toml"))
        assert out.returncode == 2 and says in out.stderr, (body, out.stderr)
    (tmp_path / "p.toml").write_text(head.replace("m:metric", "m:nope") + '[[steps]]\nmodule = "retrieve"\nk = { int = [1, 2] }\n')
    out = _dspex("optimize", str(tmp_path / "p.toml"))
    assert out.returncode == 2 and "p.toml:6: cannot load 'm:nope'" in out.stderr, out.stderr
