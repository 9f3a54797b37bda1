"""`dspex bench --suite quick` runs end to end with dspex alone and writes a readable report.

The peers (Optuna, rustuna, hyperopt) are hidden behind packages that fail to import, so the run
measures only dspex whatever is installed, and the report must name them as missing. Also checks
the statistics helpers against known values.
"""

import json
import math
import os
import random
import subprocess
import sys

import pytest

from dspex.bench.problems import PROBLEMS
from dspex.bench.stats import holm, hypervolume, hypervolume_2d, verdict, wilcoxon_fallback

PEERS = ("optuna", "rustuna", "hyperopt")


def test_quick_suite_dspex_only(tmp_path):
    shim = tmp_path / "shim"
    for peer in PEERS:
        (shim / peer).mkdir(parents=True)
        (shim / peer / "__init__.py").write_text(f"raise ImportError('{peer} hidden by the test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(shim) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from dspex.cli import main; sys.exit(main(sys.argv[1:]))",
         "bench", "--suite", "quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("report.md", "results.json", "quality.json", "speed.json", "headline.md"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    report = json.loads((out / "results.json").read_text())

    assert report["meta"]["missing"] == list(PEERS)
    for peer in PEERS:
        assert f"{peer}: **MISSING**" in md
    assert report["solvers"] == ["dspex-tpe", "dspex-random"]
    assert "dspex-tpe vs dspex-random" in md

    q = report["quality"]
    assert len(q["seeds"]) == 6 and q["budgets"] == [20, 40]
    assert len(q["problems"]) >= 10
    for name, pr in q["problems"].items():
        assert f"| {name} (" in md
        for solver in ("dspex-tpe", "dspex-random"):
            s = pr["solvers"][solver]
            assert s["errors"] == [], (name, solver, s["errors"])
            assert len(s["runs"]) == 6
            final = s["at"][str(pr["budgets"][-1])]
            assert math.isfinite(final["median"]) and final["median"] >= 0
            assert final["q25"] <= final["median"] <= final["q75"]
            for run in s["runs"]:
                assert run["n"] == pr["budgets"][-1]
                assert all(a >= b - 1e-12 for a, b in zip(run["regret"], run["regret"][1:]))  # best-so-far
        assert pr["verdicts"][str(pr["budgets"][-1])]["dspex-random"]["verdict"] in ("better", "tie", "worse")
    # The optimizer beats random search on the smooth problems even at 40 trials.
    assert q["problems"]["sphere10"]["solvers"]["dspex-tpe"]["at"]["40"]["median"] < q["problems"]["sphere10"]["solvers"]["dspex-random"]["at"]["40"]["median"]

    sp = report["speed"]
    assert list(sp["trials"]) == ["dspex"]
    t = sp["trials"]["dspex"]
    assert "error" not in t, t
    assert set(t["ms_at"]) == {"100", "300", "1000"} and t["rss_mb"] > 10
    assert set(sp["dims"]["dspex"]["ms_by_dim"]) == {"2", "10", "40"}
    assert sp["e2e"]["dspex"]["trials_per_s"] > 0
    for key in ("dspex/async", "dspex/threads"):
        rows = sp["conc"][key]["rows"]
        for r in rows.values():
            assert r["complete"] == r["n_trials"] and r["seconds"] >= 0.9 * r["ideal"]
    assert "### ms per trial vs number of trials" in md and "| dspex |" in md
    if report.get("plots"):
        for p in report["plots"]:
            assert (out / "plots" / p).stat().st_size > 1000


def test_wilcoxon_fallback_matches_exact_values():
    # n = 6, all differences of one sign: the exact two-sided p is 2 / 2^6.
    assert wilcoxon_fallback([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12]) == pytest.approx(2 / 64)
    assert wilcoxon_fallback([1.0, 2.0], [1.0, 2.0]) == 1.0
    r = random.Random(0)
    a = [r.random() for _ in range(40)]
    b = [x + 0.3 for x in a]
    assert wilcoxon_fallback(a, b) < 1e-6  # normal approximation, large n
    v = verdict(a, b)
    assert v["verdict"] == "better" and v["wins"] == 40
    assert verdict([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["verdict"] == "tie"


def test_holm_adjusts_a_family_of_p_values():
    # Sorted 0.01, 0.02, 0.04 of m = 3: 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04.
    assert holm([0.04, 0.01, None, 0.02]) == [pytest.approx(0.04), pytest.approx(0.03), None, pytest.approx(0.04)]
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def test_hypervolume_and_problem_optima():
    assert hypervolume_2d([(0, 1), (1, 0), (0.5, 0.5)], (2, 2)) == pytest.approx(3.25)
    assert hypervolume_2d([(3, 3)], (2, 2)) == 0.0
    assert PROBLEMS["zdt1"].optimum == pytest.approx(1.1 * 11 - 1 / 3)

    class Fixed:
        def __init__(self, x):
            self.x = x

        def suggest_float(self, name, low, high, log=False):
            return self.x[int(name[1:])]

    for name, x in (("branin", [math.pi, 2.275]), ("hartmann3", [0.114614, 0.555649, 0.852547]), ("rosenbrock5", [1.0] * 5), ("styblinski_tang5", [-2.903534] * 5), ("levy10", [1.0] * 10)):
        p = PROBLEMS[name]
        assert p.objective(Fixed(x)) == pytest.approx(p.optimum, abs=1e-4), name


def test_multi_objective_problems_reach_their_optima_on_the_true_front():
    class Fixed:
        def __init__(self, x):
            self.x, self.user_attrs = x, {}

        def suggest_float(self, name, low, high, log=False):
            return self.x[int(name[1:])]

        def set_user_attr(self, key, value):
            self.user_attrs[key] = value

    # Points of each two-objective true front (the tail variables at their optimum): their
    # hypervolume is the problem's optimum, up to the gaps between the points.
    for name in ("zdt3", "zdt4"):
        p = PROBLEMS[name]
        values = [p.objective(Fixed([i / 2000] + [0.0] * 5)) for i in range(2001)]
        hv = hypervolume(values, p.ref_point)
        assert hv <= p.optimum + 1e-6 and hv == pytest.approx(p.optimum, rel=1e-3), name
    # DTLZ: the front is the simplex sum(f) = 0.5 (DTLZ1) or the sphere |f| = 1 (DTLZ2), and
    # the optimum is the reference box less what the front does not dominate.
    for t in (0.0, 0.3, 0.8):
        f1 = PROBLEMS["dtlz1"].objective(Fixed([t, 1 - t] + [0.5] * 4))
        f2 = PROBLEMS["dtlz2"].objective(Fixed([t, 1 - t] + [0.5] * 6))
        assert sum(f1) == pytest.approx(0.5) and sum(v * v for v in f2) == pytest.approx(1.0)
    assert PROBLEMS["dtlz1"].optimum == pytest.approx(50.0**3 - 0.5**3 / 6)
    assert PROBLEMS["dtlz2"].optimum == pytest.approx(1.1**3 - math.pi / 6)
    constr = PROBLEMS["constr"]
    trial = Fixed([None, 0.5, 1.5])
    assert constr.objective(trial) == pytest.approx((0.5, 5.0)) and all(c <= 0 for c in trial.user_attrs["constraints"])
    trial = Fixed([None, 0.2, 0.0])
    constr.objective(trial)
    assert trial.user_attrs["constraints"][0] > 0
    # Three objectives through the engine's hypervolume: a unit cube's corner.
    assert hypervolume([(0, 0, 0), (0.5, 0.5, 0.5)], (1, 1, 1)) == pytest.approx(1.0)
    assert hypervolume([(0.5, 0.5, 0.5)], (1, 1, 1)) == pytest.approx(0.125)
