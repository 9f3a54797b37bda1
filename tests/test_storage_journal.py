"""JournalStorage: Optuna's journal file format. Round trips with Optuna are in
test_storage_sql.py (its `journal` backend); here: Optuna and dspex processes appending to one
file at once, scripts that use Optuna's journal classes run as Optuna, and bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_storage_sql import optuna_dump, optuna_python  # noqa: F401  (fixture)

import dspex
from dspex.exceptions import StorageInternalError
from dspex.storages import JournalFileStorage, JournalStorage
from dspex.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalRedisBackend

dspex.logging.set_verbosity(dspex.logging.WARNING)


def storage(path: Path, **lock: object) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)) if lock else None))


WORKER = """
import sys, time
n, name, path, who = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if who == "optuna":
    import optuna
    from optuna.storages.journal import JournalFileBackend
    optuna.logging.set_verbosity(optuna.logging.WARNING)
else:
    import dspex as optuna
    from dspex.storages.journal import JournalFileBackend
    optuna.logging.set_verbosity(optuna.logging.WARNING)
st = optuna.storages.JournalStorage(JournalFileBackend(path))
s = optuna.create_study(study_name=name, storage=st, load_if_exists=True)
def obj(t):
    x = t.suggest_float("x", -5, 5)
    t.set_user_attr("who", who)
    time.sleep(0.005)
    return x * x
s.optimize(obj, n_trials=n)
"""


def test_optuna_and_dspex_processes_append_to_one_journal_at_once(tmp_path, optuna_python):  # noqa: F811
    path = tmp_path / "shared.log"
    procs = [
        subprocess.Popen([py, "-c", WORKER, "40", "shared", str(path), who], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for py, who in ((optuna_python, "optuna"), (sys.executable, "dspex"), (sys.executable, "dspex"))
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    s = dspex.load_study(study_name="shared", storage=storage(path))
    trials = s.trials
    assert [t.number for t in trials] == list(range(120))
    assert all(t.state == dspex.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["who"] for t in trials) == ["dspex"] * 80 + ["optuna"] * 40
    # Optuna replays the same file into the same study.
    theirs = optuna_dump(optuna_python, f"journal:{path}", "shared")
    assert [(t["number"], t["params"], t["values"], t["user_attrs"]) for t in theirs["trials"]] == [
        (t.number, t.params, t.values, t.user_attrs) for t in trials
    ]
    assert not (tmp_path / "shared.log.lock").exists()


def test_an_optuna_script_with_journal_classes_runs_as_optuna(tmp_path):
    script = tmp_path / "journal_script.py"
    script.write_text(textwrap.dedent("""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        path = "./optuna_journal_storage.log"
        storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        study = optuna.create_study(storage=storage, study_name="j")
        study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=15)
        again = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(path)))
        print(type(storage).__module__, len(again.trials), again.best_value == study.best_value)
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.run", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dspex.storages.journal", "15", "True"]
    lines = (tmp_path / "optuna_journal_storage.log").read_text().splitlines()
    assert json.loads(lines[0])["op_code"] == 0 and json.loads(lines[0])["study_name"] == "j"


def test_a_study_in_a_journal_pickles_as_its_file(tmp_path):
    s = dspex.create_study(study_name="p", storage=storage(tmp_path / "p.log", lock="open"))
    s.optimize(lambda t: t.suggest_int("k", 0, 9), n_trials=5)
    s2 = pickle.loads(pickle.dumps(s))
    assert isinstance(s2._storage, JournalStorage) and s2._storage is not s._storage
    assert [t.params for t in s2.trials] == [t.params for t in s.trials]
    s2.optimize(lambda t: t.suggest_int("k", 0, 9), n_trials=2)
    assert len(s.trials) == 7  # the first handle reads what the second appended


def test_a_corrupted_line_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "c.log"
    s = dspex.create_study(study_name="c", storage=storage(path))
    s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"op_code": 5, "trial_id": \n'
    path.write_text("".join(lines))
    with pytest.raises(StorageInternalError, match=r"c\.log line 3: not JSON"):
        dspex.load_study(study_name="c", storage=storage(path))
    # A line being written (no newline yet) is not read, and not an error.
    path.write_text(lines[0] + '{"op_code": 4, "worker_id": "w", "stu')
    assert dspex.load_study(study_name="c", storage=storage(path)).trials == []


def test_bad_journal_arguments_say_what_is_wrong(tmp_path):
    with pytest.raises(NotImplementedError, match="Redis"):
        JournalRedisBackend("redis://localhost")
    with pytest.raises(ValueError, match="not the journal file"):
        JournalFileBackend(str(tmp_path / "a.log"), lock_obj=JournalFileOpenLock(str(tmp_path / "b.log")))
    with pytest.raises(ValueError, match="grace_period"):
        JournalFileOpenLock(str(tmp_path / "a.log"), grace_period=0)
    with pytest.raises(TypeError, match="JournalFileBackend"):
        JournalStorage(str(tmp_path / "a.log"))  # type: ignore[arg-type]
    with pytest.raises(StorageInternalError, match="cannot open journal file"):
        JournalStorage(JournalFileBackend(str(tmp_path / "no" / "dir" / "a.log")))
    with pytest.warns(FutureWarning, match="JournalFileBackend"):
        st = JournalStorage(JournalFileStorage(str(tmp_path / "old.log")))
    assert os.path.exists(tmp_path / "old.log") and st.get_all_study_names() == []
