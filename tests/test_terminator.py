"""dspex.terminator: the evaluators, the Gaussian-process ones against Optuna's figures, the
callback that stops a study, plot_terminator_improvement, and Optuna's OptunaSearchCV (which
reports cross-validation scores) running on dspex."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

import dspex
from dspex.terminator import (
    BestValueStagnationEvaluator,
    CrossValidationErrorEvaluator,
    EMMREvaluator,
    MedianErrorEvaluator,
    RegretBoundEvaluator,
    StaticErrorEvaluator,
    Terminator,
    TerminatorCallback,
    report_cross_validation_scores,
)


def test_the_callback_stops_a_stagnant_study():
    study = dspex.create_study()
    # Better for 6 trials, then no better: stops once 4 trials brought nothing.
    objective = lambda t: max(6 - t.number, 0) + 0 * t.suggest_float("x", 0, 1)  # noqa: E731
    with pytest.warns(FutureWarning, match="deprecated"):
        callback = TerminatorCallback(Terminator(BestValueStagnationEvaluator(max_stagnation_trials=3), min_n_trials=5))
    study.optimize(objective, n_trials=50, callbacks=[callback])
    assert len(study.trials) == 11


def test_cross_validation_error_is_the_standard_error_of_the_best_trials_scores():
    study = dspex.create_study(direction="maximize")

    def objective(trial):
        scores = [0.8, 0.9, 1.0] if trial.number == 1 else [0.1, 0.5]
        with pytest.warns(FutureWarning):
            report_cross_validation_scores(trial, scores)
        return sum(scores) / len(scores)

    study.optimize(objective, n_trials=3)
    mean, k = 0.9, 3
    want = math.sqrt((1 / k + 1 / (k - 1)) * sum((s - mean) ** 2 for s in [0.8, 0.9, 1.0]) / k)
    assert CrossValidationErrorEvaluator().evaluate(study.trials, study.direction) == pytest.approx(want)
    assert StaticErrorEvaluator(0.5).evaluate(study.trials, study.direction) == 0.5
    with pytest.raises(ValueError, match="greater than one"), pytest.warns(FutureWarning):
        report_cross_validation_scores(study.ask(), [1.0])
    with pytest.raises(ValueError, match="have not been reported"):
        other = dspex.create_study()
        other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        CrossValidationErrorEvaluator().evaluate(other.trials, other.direction)


def test_the_median_error_and_bad_arguments():
    study = dspex.create_study()
    study.optimize(lambda t: 10.0 - t.number, n_trials=6)
    median = MedianErrorEvaluator(BestValueStagnationEvaluator(max_stagnation_trials=2), warm_up_trials=1, n_initial_trials=3, threshold_ratio=0.5)
    assert median.evaluate(study.trials[:3], study.direction) < 0  # too early: never stops
    assert median.evaluate(study.trials, study.direction) == pytest.approx(1.0)  # median 2, times 0.5
    with pytest.raises(ValueError, match="min_n_trials"):
        Terminator(BestValueStagnationEvaluator(), min_n_trials=0)
    with pytest.raises(ValueError, match="min_n_trials"):
        EMMREvaluator(min_n_trials=1)
    with pytest.raises(ValueError, match="no trial has been completed"):
        RegretBoundEvaluator().evaluate([], study.direction)
    with pytest.raises(ValueError, match="intersection search space is empty"):
        RegretBoundEvaluator().evaluate(study.trials, study.direction)  # the trials have no params


def _fixed_trials(n):
    """Trials of (x-1)^2 + (y+2)^2 + [c == "b"]: 20 spread over the space, then closing in."""
    dists = {"x": dspex.distributions.FloatDistribution(-5, 5), "y": dspex.distributions.IntDistribution(-5, 5), "c": dspex.distributions.CategoricalDistribution(["a", "b"])}
    out = []
    for i in range(n):
        x = ((i * 37) % 101) / 10.1 - 5 if i < 20 else 1 + ((i * 13) % 17 - 8) / (i / 4)
        y = (i * 7) % 11 - 5 if i < 20 else -2 + (i % 3) - 1
        c = "ab"[(i * 5) % 3 == 0]
        out.append(dspex.trial.create_trial(params={"x": x, "y": y, "c": c}, distributions=dists, value=(x - 1) ** 2 + (y + 2) ** 2 + (c == "b")))
    return out


#: Optuna 5.0's RegretBoundEvaluator and EMMREvaluator on `_fixed_trials`' first 20, 40 and 60
#: trials, seeds 0-4 (with torch; run `test_gp_evaluators_side_by_side_with_optunas` to see
#: them again): the range of the five seeds.
OPTUNA_REGRET_BOUND = {20: (7.315, 7.5627), 40: (2.4413, 2.4467), 60: (2.4776, 2.4791)}
OPTUNA_EMMR = {20: (0.175415, 0.180669), 40: (0.000539, 0.00057), 60: (0.000161, 0.000161)}


def _within(v, lo_hi, rel):
    lo, hi = lo_hi
    return lo * (1 - rel) <= v <= hi * (1 + rel)


def test_gp_evaluators_give_optunas_figures():
    trials = _fixed_trials(60)
    for n in (20, 40, 60):
        rb = [RegretBoundEvaluator(seed=s).evaluate(trials[:n], dspex.StudyDirection.MINIMIZE) for s in range(3)]
        em = [EMMREvaluator(seed=s).evaluate(trials[:n], dspex.StudyDirection.MINIMIZE) for s in range(3)]
        assert all(_within(v, OPTUNA_REGRET_BOUND[n], 0.03) for v in rb), (n, rb)
        assert all(_within(v, OPTUNA_EMMR[n], 0.1) for v in em), (n, em)
    # Maximising the negated objective is the same problem.
    flipped = [dspex.trial.create_trial(params=t.params, distributions=t.distributions, value=-t.value) for t in trials[:40]]
    assert _within(RegretBoundEvaluator(seed=0).evaluate(flipped, dspex.StudyDirection.MAXIMIZE), OPTUNA_REGRET_BOUND[40], 0.03)
    # Too few trials for EMMR: it never lets the study stop.
    assert EMMREvaluator().evaluate(trials[:1], dspex.StudyDirection.MINIMIZE) > 1e300


def test_gp_evaluators_side_by_side_with_optunas():
    """Where torch is installed (Optuna's GP needs it; CI does not install it): dspex's figures
    against Optuna's computed now, on the same trials."""
    pytest.importorskip("torch")
    optuna = pytest.importorskip("optuna")
    from optuna.terminator import EMMREvaluator as OptunaEMMR
    from optuna.terminator import RegretBoundEvaluator as OptunaRB

    ours = _fixed_trials(60)
    convert = optuna.distributions.json_to_distribution
    theirs = [
        optuna.trial.create_trial(params=t.params, distributions={k: convert(dspex.distributions.distribution_to_json(d)) for k, d in t.distributions.items()}, value=t.value)
        for t in ours
    ]
    for n in (20, 40, 60):
        with pytest.warns():  # Optuna's experimental warnings
            o_rb = [float(OptunaRB(seed=s).evaluate(theirs[:n], optuna.study.StudyDirection.MINIMIZE)) for s in range(5)]
            o_em = [float(OptunaEMMR(seed=s).evaluate(theirs[:n], optuna.study.StudyDirection.MINIMIZE)) for s in range(5)]
        print(n, "Optuna", [round(v, 4) for v in o_rb], [round(v, 6) for v in o_em])
        assert _within(RegretBoundEvaluator(seed=0).evaluate(ours[:n], dspex.StudyDirection.MINIMIZE), (min(o_rb), max(o_rb)), 0.03)
        assert _within(EMMREvaluator(seed=0).evaluate(ours[:n], dspex.StudyDirection.MINIMIZE), (min(o_em), max(o_em)), 0.1)


def test_the_default_terminator_stops_a_converged_study_and_the_improvement_plot_draws_it(tmp_path):
    study = dspex.create_study(sampler=dspex.samplers.TPESampler(seed=1))
    for t in _fixed_trials(60):
        study.add_trial(t)
    terminator = Terminator(error_evaluator=StaticErrorEvaluator(3.0))  # the regret bound by default
    assert terminator.should_terminate(study)  # bound ~2.5 < 3
    assert not Terminator(error_evaluator=StaticErrorEvaluator(1.0)).should_terminate(study)
    pytest.importorskip("plotly")
    from dspex.visualization import plot_terminator_improvement

    with pytest.warns(Warning):  # experimental, as in Optuna
        fig = plot_terminator_improvement(study, plot_error=True, error_evaluator=StaticErrorEvaluator(3.0), improvement_evaluator=RegretBoundEvaluator(seed=0), min_n_trials=20)
    light, full, error = fig.data
    assert list(light.x) == list(range(21)) and list(full.x) == list(range(20, 60))
    assert list(error.y) == [3.0] * 60
    assert full.y[-1] == pytest.approx(RegretBoundEvaluator(seed=0).evaluate(study.trials, study.direction), rel=0.03)
    assert full.y[-1] < 0.5 * light.y[19]  # the bound shrinks as the study converges (20 trials: ~7.4)
    fig.write_html(str(tmp_path / "terminator.html"))
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from dspex.visualization.matplotlib import plot_terminator_improvement as mpl_plot

    with pytest.warns(Warning):
        ax = mpl_plot(study, improvement_evaluator=BestValueStagnationEvaluator(max_stagnation_trials=5))
    ax.figure.savefig(tmp_path / "terminator.png")
    assert (tmp_path / "terminator.png").stat().st_size > 1000


def test_optuna_search_cv_runs_on_dspex(tmp_path):
    pytest.importorskip("optuna_integration")
    pytest.importorskip("sklearn")
    script = tmp_path / "search.py"
    script.write_text(
        textwrap.dedent(
            """
            import optuna
            from optuna_integration import OptunaSearchCV
            from sklearn.datasets import load_iris
            from sklearn.svm import SVC

            X, y = load_iris(return_X_y=True)
            search = OptunaSearchCV(SVC(gamma="auto"), {"C": optuna.distributions.FloatDistribution(1e-3, 1e3, log=True)}, n_trials=6, random_state=0, verbose=0)
            search.fit(X, y)
            trials = search.study_.trials
            print(type(search.study_).__module__, len(trials), "terminator:cv_scores" in trials[0].system_attrs, search.best_score_ > 0.3)
            """
        )
    )
    out = subprocess.run([sys.executable, "-m", "dspex.run", str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["dspex.study", "6", "True", "True"]


def test_optunas_terminator_module_paths_resolve_as_optuna(tmp_path):
    script = tmp_path / "paths.py"
    script.write_text(textwrap.dedent("""
        from optuna.terminator.callback import TerminatorCallback
        from optuna.terminator.erroreval import report_cross_validation_scores, StaticErrorEvaluator
        from optuna.terminator.median_erroreval import MedianErrorEvaluator
        from optuna.terminator.terminator import Terminator
        from optuna.terminator.improvement.evaluator import RegretBoundEvaluator, DEFAULT_MIN_N_TRIALS
        from optuna.terminator.improvement.emmr import EMMREvaluator
        import optuna.terminator as t
        assert t.TerminatorCallback is TerminatorCallback and t.EMMREvaluator is EMMREvaluator
        print(TerminatorCallback.__module__, DEFAULT_MIN_N_TRIALS)
    """))
    out = subprocess.run([sys.executable, "-m", "dspex.run", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dspex.terminator", "20"]
