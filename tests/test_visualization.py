"""dspex.visualization: each figure's data against Optuna 5.0's on the same trials, figures
rendered to HTML and screenshotted in headless Chromium, and the matplotlib versions drawn to
PNG files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import pytest

import dspex
import dspex.visualization as dv

optuna = pytest.importorskip("optuna")
pytest.importorskip("plotly")
pytest.importorskip("matplotlib")
import optuna.visualization as ov  # noqa: E402


def _convert(d):
    return dspex.distributions.json_to_distribution(optuna.distributions.distribution_to_json(d))


def _copy(theirs, **kw):
    """A dspex study holding an Optuna study's trials (values, states, reports, constraints)."""
    ours = dspex.create_study(**kw)
    for t in theirs.trials:
        ours.add_trial(
            dspex.create_trial(
                state=dspex.TrialState[t.state.name],
                params=t.params,
                distributions={k: _convert(d) for k, d in t.distributions.items()},
                values=t.values,
                intermediate_values=t.intermediate_values,
                system_attrs=t.system_attrs,
            )
        )
    return ours


def single_objective(trial):
    x = trial.suggest_float("x", -3, 3)
    y = trial.suggest_int("y", 1, 10, log=True)
    c = trial.suggest_categorical("c", ["a", "b", None])
    for step in range(3):
        trial.report(x * x + step, step)
    trial.set_constraint("c0", x - 2)
    if trial.number == 4:
        raise optuna.TrialPruned()
    return x * x + y + (c == "b")


def two_objectives(trial):
    a = trial.suggest_float("a", 0, 1)
    b = trial.suggest_float("b", 0, 1)
    trial.set_constraint("k", a - 0.9)
    return a, b * b


def conditional(trial):
    kind = trial.suggest_categorical("kind", ["lin", "sq"])
    width = trial.suggest_categorical("width", [64, 16, 32])
    lr = trial.suggest_float("learning_rate_of_the_model", 1e-4, 1e-1, log=True)
    x = trial.suggest_float("x", -1, 1) if kind == "lin" else 0.5
    return x + width / 64 + lr


@pytest.fixture(scope="module")
def studies():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    so = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    so.optimize(single_objective, n_trials=15)
    mo = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1))
    mo.optimize(two_objectives, n_trials=30)
    mo3 = optuna.create_study(directions=["minimize"] * 3, sampler=optuna.samplers.RandomSampler(seed=2))
    mo3.optimize(lambda t: (t.suggest_float("p", 0, 1), t.suggest_float("q", 0, 1), t.suggest_float("r", 0, 1)), n_trials=20)
    cond = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    cond.optimize(conditional, n_trials=25)
    return {
        "cond": (cond, _copy(cond)),
        "so": (so, _copy(so)),
        "mo": (mo, _copy(mo, directions=["minimize", "maximize"])),
        "mo3": (mo3, _copy(mo3, directions=["minimize"] * 3)),
    }


def _plain(v):
    """Trace data as lists (plotly keeps arrays as tuples or NumPy arrays; NaN as None)."""
    if v is None or isinstance(v, (str, int, float)):
        return None if isinstance(v, float) and v != v else v
    return [_plain(x) for x in v]


def _traces(fig):
    return [{k: _plain(tr.to_plotly_json().get(k)) if k in ("x", "y", "z") else tr.to_plotly_json().get(k) for k in ("type", "name", "mode", "x", "y", "z", "showlegend")} for tr in fig.data]


def _same(a, b):
    """Figures with the same traces (numbers equal to rounding)."""
    ta, tb = _traces(a), _traces(b)
    assert len(ta) == len(tb), (ta, tb)
    for x, y in zip(ta, tb):
        for k in x:
            if k in ("x", "y") and x[k] and isinstance(x[k][0], float):
                assert y[k] == pytest.approx(x[k], rel=1e-9, abs=1e-12), k
            else:
                assert x[k] == y[k], (k, x[k], y[k])
    assert a.layout.title.text == b.layout.title.text


CASES = [
    ("so", "plot_optimization_history", {}),
    ("so", "plot_optimization_history", {"target": lambda t: t.params["x"], "target_name": "x"}),
    ("so", "plot_intermediate_values", {}),
    ("so", "plot_slice", {"params": ["x", "y"]}),
    ("so", "plot_slice", {"params": ["x"]}),
    ("mo", "plot_pareto_front", {}),
    ("mo", "plot_pareto_front", {"include_dominated_trials": False}),
    ("mo", "plot_pareto_front", {"target_names": ["cost", "gain"]}),
    ("mo3", "plot_pareto_front", {}),
    ("mo", "plot_hypervolume_history", {"reference_point": [1.0, 0.0]}),
    ("mo3", "plot_hypervolume_history", {"reference_point": [1.0, 1.0, 1.0]}),
    ("so", "plot_parallel_coordinate", {}),
    ("so", "plot_parallel_coordinate", {"params": ["x", "c"]}),
    ("so", "plot_parallel_coordinate", {"target": lambda t: t.params["x"], "target_name": "x"}),
    ("mo", "plot_parallel_coordinate", {}),
    ("cond", "plot_parallel_coordinate", {}),
    ("so", "plot_contour", {}),
    ("so", "plot_contour", {"params": ["x", "y"]}),
    ("so", "plot_contour", {"params": ["c", "x"]}),
    ("cond", "plot_contour", {"params": ["width", "x"]}),
    ("cond", "plot_contour", {"params": ["kind", "learning_rate_of_the_model"], "target": lambda t: t.params["width"], "target_name": "w"}),
    ("so", "plot_rank", {}),
    ("so", "plot_rank", {"params": ["x", "c"]}),
    ("cond", "plot_rank", {"params": ["kind", "x"]}),
    ("mo", "plot_rank", {"target": lambda t: t.values[1], "target_name": "b2"}),
    ("so", "plot_param_importances", {}),
    ("mo", "plot_param_importances", {}),
]


@pytest.mark.parametrize("which, name, kw", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_figures_hold_optunas_data(studies, which, name, kw):
    theirs, ours = studies[which]
    a, b = getattr(ov, name)(theirs, **kw), getattr(dv, name)(ours, **kw)
    if name == "plot_parallel_coordinate" and which == "mo":
        # Lines of equal Pareto rank are drawn in an order NumPy's unstable argsort picks:
        # compare the set of lines, then the rest.
        def lines(fig):
            return sorted(tuple(round(v, 12) for v in t.y) for t in fig.data if t.customdata is not None)

        assert lines(a) == lines(b)
        return
    _same(a, b)


def test_a_categorical_slice_shows_infeasible_trials_too(studies):
    # Optuna 5.0 drops the infeasible points of a categorical parameter's panel; dspex shows
    # them (grey), and otherwise draws the same.
    theirs, ours = studies["so"]
    a, b = ov.plot_slice(theirs, params=["c"]), dv.plot_slice(ours, params=["c"])
    assert [t.name for t in a.data] == ["Feasible Trial"]
    assert [t.name for t in b.data] == ["Feasible Trial", "Infeasible Trial"]
    assert list(a.data[0].x) == list(b.data[0].x) and list(a.data[0].y) == list(b.data[0].y)
    assert list(b.data[1].x) == [repr(t.params["c"]) for t in ours.trials if t.state.name == "COMPLETE" and t.constraints["c0"] > 0]


def test_edf_and_several_studies_side_by_side(studies):
    theirs, ours = studies["so"]
    a, b = ov.plot_edf(theirs), dv.plot_edf(ours)
    assert list(b.data[0].x) == pytest.approx(list(a.data[0].x))
    assert list(b.data[0].y) == pytest.approx(list(a.data[0].y))
    # Two studies: a series each, named after the study.
    other = dspex.create_study(study_name="other")
    other.optimize(lambda t: t.suggest_float("x", 0, 30), n_trials=10)
    two = dv.plot_edf([ours, other])
    assert [t.name for t in two.data] == [ours.study_name, "other"]
    hist = dv.plot_optimization_history([ours, other])
    assert f"Best Value of {ours.study_name}" in [t.name for t in hist.data]
    bars = dv.plot_optimization_history([ours, ours], error_bar=True)
    assert bars.data[0].error_y.array is not None and all(s == 0.0 for s in bars.data[0].error_y.array)


def test_timeline_shows_every_trial_by_state(studies):
    _, ours = studies["so"]
    states = {t.name: list(t.y) for t in dv.plot_timeline(ours).data}
    assert states["PRUNED"] == [4]
    assert sorted(n for ys in states.values() for n in ys) == list(range(15))
    ours2 = dspex.create_study()
    ours2.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    fig = dv.plot_timeline(ours2)
    assert [t.name for t in fig.data] == ["COMPLETE"] and list(fig.data[0].y) == [0, 1, 2, 3, 4]
    assert all(x >= 0 for x in fig.data[0].x)
    assert list(dv.plot_timeline(ours2, n_recent_trials=2).data[0].y) == [3, 4]
    with pytest.raises(ValueError, match="n_recent_trials"):
        dv.plot_timeline(ours2, n_recent_trials=0)


def test_bad_arguments_say_what_is_wrong(studies):
    _, mo = studies["mo"]
    _, so = studies["so"]
    with pytest.raises(ValueError, match="specify the `target`"):
        dv.plot_optimization_history(mo)
    with pytest.raises(ValueError, match="does not exist"):
        dv.plot_slice(so, params=["nope"])
    with pytest.raises(ValueError, match="single-objective"):
        dv.plot_pareto_front(so)
    with pytest.raises(ValueError, match="multi-objective"):
        dv.plot_hypervolume_history(so, reference_point=[1.0])
    with pytest.raises(ValueError, match="dimension of the reference point"):
        dv.plot_hypervolume_history(mo, reference_point=[1.0])
    with pytest.raises(ValueError, match="target_names"):
        dv.plot_pareto_front(mo, target_names=["one"])


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _colours(png: str) -> int:
    import matplotlib.image

    img = matplotlib.image.imread(png)
    return len({tuple(p) for p in img.reshape(-1, img.shape[-1])[::7].tolist()})


def _all_figures(studies):
    _, so = studies["so"]
    _, mo = studies["mo"]
    return {
        "optimization_history": lambda m: m.plot_optimization_history(so),
        "intermediate_values": lambda m: m.plot_intermediate_values(so),
        "slice": lambda m: m.plot_slice(so),
        "param_importances": lambda m: m.plot_param_importances(so),
        "edf": lambda m: m.plot_edf(so),
        "timeline": lambda m: m.plot_timeline(so),
        "pareto_front": lambda m: m.plot_pareto_front(mo),
        "hypervolume_history": lambda m: m.plot_hypervolume_history(mo, reference_point=[1.0, 0.0]),
        "parallel_coordinate": lambda m: m.plot_parallel_coordinate(so),
        "contour": lambda m: m.plot_contour(so, params=["x", "y"]),
        "rank": lambda m: m.plot_rank(so),
        "terminator_improvement": lambda m: m.plot_terminator_improvement(so, improvement_evaluator=dspex.terminator.RegretBoundEvaluator(seed=0), min_n_trials=5),
    }


def test_each_plotly_figure_renders_in_headless_chromium(studies, tmp_path):
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is missing (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    pages = {"blank": blank}
    for kind, draw in _all_figures(studies).items():
        page = tmp_path / f"{kind}.html"
        draw(dv).write_html(str(page), include_plotlyjs=True)  # inline: no network
        pages[kind] = page
    colours = {}
    for kind, page in pages.items():
        png = tmp_path / f"{kind}.png"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=" + str(tmp_path / "chromium"),
             "--window-size=900,600", "--virtual-time-budget=3000", f"--screenshot={png}", page.as_uri()],
            capture_output=True, timeout=120, check=True,
        )
        colours[kind] = _colours(str(png))
    # A drawn plot has axes, markers and text in many colours; the blank page has one.
    assert colours["blank"] <= 2
    assert all(n > 20 for k, n in colours.items() if k != "blank"), colours


def test_each_matplotlib_figure_is_drawn_to_png(studies, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dspex.visualization import matplotlib as dm

    for kind, draw in _all_figures(studies).items():
        with pytest.warns(dspex.exceptions.ExperimentalWarning):
            ax = draw(dm)
        first = ax.flat[0] if hasattr(ax, "flat") else ax
        png = tmp_path / f"{kind}.png"
        first.figure.savefig(png)
        assert _colours(str(png)) > 20, kind
        plt.close("all")


def test_optuna_scripts_plot_with_dspex_and_without_plotly_say_how_to_install(tmp_path):
    script = tmp_path / "plot.py"
    script.write_text(
        "import optuna\n"
        "study = optuna.create_study()\n"
        "study.optimize(lambda t: t.suggest_float('x', -3, 3) ** 2, n_trials=5)\n"
        "fig = optuna.visualization.plot_optimization_history(study)\n"
        "print(type(fig).__name__, optuna.visualization.is_available(), optuna.visualization.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-m", "dspex.run", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Figure", "True", "dspex.visualization"]
    hide = "import sys; sys.modules['plotly'] = None; import dspex, dspex.visualization as v; s = dspex.create_study(); v.plot_edf(s)"
    out = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and 'pip install "dspex[plot]"' in out.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dv.is_available()


def test_rank_colours_are_optunas(studies):
    import re

    def rgb(fig):
        return [[round(float(v)) for v in re.findall(r"[\d.]+", c)] for c in fig.data[0].marker.color]

    for which, kw in (("so", {"params": ["x", "y"]}), ("cond", {"params": ["kind", "x"]})):
        theirs, ours = studies[which]
        assert rgb(dv.plot_rank(ours, **kw)) == rgb(ov.plot_rank(theirs, **kw))
