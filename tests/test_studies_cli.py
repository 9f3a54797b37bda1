"""`dspex studies list|show|delete|export --storage URL`."""

from __future__ import annotations

import csv
import io
import json

import pytest

import dspex
from dspex.cli import main


@pytest.fixture()
def url(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    s = dspex.create_study(study_name="alpha", storage=url, sampler=dspex.samplers.RandomSampler(seed=0))
    s.set_user_attr("owner", "me")

    def obj(t):
        t.set_user_attr("tag", {"k": 1})
        x = t.suggest_float("x", 0, 1)
        if t.number == 2:
            raise dspex.TrialPruned()
        return x

    s.optimize(obj, n_trials=4)
    dspex.create_study(study_name="beta", storage=url, directions=["minimize", "maximize"])
    return url


def test_list(url, capsys):
    assert main(["studies", "list", "--storage", url, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["n_trials"], r["directions"]) for r in rows] == [
        ("alpha", 4, ["MINIMIZE"]),
        ("beta", 0, ["MINIMIZE", "MAXIMIZE"]),
    ]
    assert rows[0]["user_attrs"] == {"owner": "me"}
    assert main(["studies", "list", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "MINIMIZE,MAXIMIZE" in out
    assert main(["studies", "list", "--storage", url, "--format", "csv"]) == 0
    assert list(csv.DictReader(io.StringIO(capsys.readouterr().out)))[1]["name"] == "beta"


def test_show_and_export(url, capsys, tmp_path):
    assert main(["studies", "show", "--storage", url, "--study", "alpha"]) == 0
    out = capsys.readouterr().out
    assert "trials     4 (COMPLETE 3, PRUNED 1)" in out
    assert main(["studies", "show", "--storage", url, "--study", "alpha", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [t["state"] for t in info["trials"]] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert main(["studies", "export", "--storage", url, "--study", "alpha", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 4
    assert {"number", "value", "params_x", "user_attrs_tag", "state", "datetime_start"} <= set(rows[0])
    s = dspex.load_study(study_name="alpha", storage=url)
    assert float(rows[0]["params_x"]) == s.trials[0].params["x"]
    assert json.loads(rows[0]["user_attrs_tag"]) == {"k": 1}
    out_file = tmp_path / "t.json"
    assert main(["studies", "export", "--storage", url, "--study", "alpha", "--format", "json", "-o", str(out_file)]) == 0
    trials = json.loads(out_file.read_text())
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert trials[1]["values"] == [s.trials[1].value]


def test_delete_and_errors(url, capsys, tmp_path):
    assert main(["studies", "delete", "--storage", url, "--study", "beta", "--yes"]) == 0
    assert dspex.get_all_study_names(url) == ["alpha"]
    capsys.readouterr()
    assert main(["studies", "show", "--storage", url, "--study", "nope"]) == 1
    assert "no study 'nope'" in capsys.readouterr().err
    assert main(["studies", "list", "--storage", f"sqlite:///{tmp_path}/missing/x.db"]) == 1
    assert "cannot open SQLite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["studies", "export", "--storage", url, "--study", "alpha", "--format", "xml"])
