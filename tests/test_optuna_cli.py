"""Optuna's CLI commands under `dspex`: the same command lines give the same output as
Optuna 5.0's `optuna` command (timestamps masked), on a real SQLite file each."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

SPACE = json.dumps(
    {
        "c": {"name": "CategoricalDistribution", "attributes": {"choices": ["only"]}},
        "n": {"name": "IntDistribution", "attributes": {"low": 3, "high": 3, "log": False, "step": 1}},
    }
)

# (arguments after the storage, whether the exit status must be 0)
SCRIPT = [
    (["create-study", "--study-name", "s1", "--direction", "maximize"], True),
    (["create-study", "--study-name", "s2", "--directions", "minimize", "maximize"], True),
    (["create-study", "--study-name", "s1", "--skip-if-exists"], True),
    (["ask", "--study-name", "s1", "--search-space", SPACE], True),
    (["ask", "--study-name", "s1", "--search-space", SPACE, "-f", "yaml", "--flatten"], True),
    (["ask", "--study-name", "s1", "--search-space", SPACE, "-f", "table"], True),
    (["tell", "--study-name", "s1", "--trial-number", "0", "--values", "1.5"], True),
    (["tell", "--study-name", "s1", "--trial-number", "1", "--values", "2.5"], True),
    (["tell", "--study-name", "s1", "--trial-number", "2", "--state", "pruned"], True),
    (["tell", "--study-name", "s1", "--trial-number", "1", "--values", "9"], False),
    (["tell", "--study-name", "s1", "--trial-number", "1", "--values", "9", "--skip-if-finished"], True),
    (["studies"], True),
    (["studies", "-f", "json"], True),
    (["trials", "--study-name", "s1"], True),
    (["trials", "--study-name", "s1", "-f", "json"], True),
    (["trials", "--study-name", "s1", "-f", "yaml", "--flatten"], True),
    (["best-trial", "--study-name", "s1"], True),
    (["best-trial", "--study-name", "s1", "-f", "json", "--flatten"], True),
    (["best-trials", "--study-name", "s1", "-f", "yaml"], True),
    (["study", "set-user-attr", "--study-name", "s1", "--key", "owner", "--value", "team a"], True),
    (["studies", "-f", "yaml"], True),
    (["delete-study", "--study-name", "s2"], True),
    (["studies", "-f", "json"], True),
    (["storage", "upgrade"], True),
]


def _mask(text: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<datetime>", text)
    text = re.sub(r"\d+:\d\d:\d\d\.\d+", "<duration>", text)
    # Table columns widen with the masked cells; compare the cells, not the padding.
    return "\n".join(re.sub(r"[ -]+", " ", line).strip() for line in text.splitlines())


def test_optunas_commands_print_what_optuna_prints(tmp_path):
    optuna_cli = shutil.which("optuna", path=os.path.dirname(sys.executable))
    dspex_cli = shutil.which("dspex", path=os.path.dirname(sys.executable))
    assert optuna_cli and dspex_cli
    outputs = {}
    for name, exe in (("optuna", optuna_cli), ("dspex", dspex_cli)):
        url = f"sqlite:///{tmp_path / name}.db"
        got = []
        for args, ok in SCRIPT:
            r = subprocess.run([exe, *args, "--storage", url], capture_output=True, text=True, timeout=120)
            assert (r.returncode == 0) == ok, (name, args, r.stdout, r.stderr)
            if not ok:
                assert "Cannot tell a COMPLETE trial" in r.stderr, (name, r.stderr)
            got.append(_mask(r.stdout))
        outputs[name] = got
    for (args, _), a, b in zip(SCRIPT, outputs["optuna"], outputs["dspex"]):
        assert a == b, (args, a, b)
    # What dspex wrote is Optuna's to read: the asked parameters survived the asking process.
    study = optuna.load_study(study_name="s1", storage=f"sqlite:///{tmp_path / 'dspex'}.db")
    assert [t.params for t in study.trials] == [{"c": "only", "n": 3}] * 3
    assert study.user_attrs == {"owner": "team a"} and study.best_trial.number == 1


DSPEX = [sys.executable, "-m", "dspex.cli"]  # the venv's bin need not be on PATH


def test_every_command_is_listed_and_bad_use_says_what_is_wrong(tmp_path):
    helptext = subprocess.run([*DSPEX, "--help"], capture_output=True, text=True, timeout=60).stdout
    for cmd in ("create-study", "delete-study", "study", "studies", "trials", "best-trial", "best-trials", "ask", "tell", "storage"):
        assert re.search(rf"^\s+{cmd}\s", helptext, re.M), cmd
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE"}
    r = subprocess.run([*DSPEX, "trials", "--study-name", "x"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "give --storage URL (or set OPTUNA_STORAGE)" in r.stderr
    url = f"sqlite:///{tmp_path / 'e.db'}"
    r = subprocess.run([*DSPEX, "trials", "--study-name", "nope"], capture_output=True, text=True, env={**env, "OPTUNA_STORAGE": url}, timeout=60)
    assert r.returncode == 1 and "nope" in r.stderr
    r = subprocess.run([*DSPEX, "ask", "--storage", url, "--study-name", "a", "--sampler", "NoSuchSampler"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "NoSuchSampler" in r.stderr
    # dspex's own `studies` subcommands are still there beside Optuna's listing.
    r = subprocess.run([*DSPEX, "studies", "list", "--storage", url, "--format", "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == []
