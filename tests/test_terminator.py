"""dspex.terminator: the evaluators that need no Gaussian process, the callback that stops a
study, and Optuna's OptunaSearchCV (which reports cross-validation scores) running on dspex."""

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


def test_the_median_error_and_what_is_not_there_yet():
    study = dspex.create_study()
    study.optimize(lambda t: 10.0 - t.number, n_trials=6)
    median = MedianErrorEvaluator(BestValueStagnationEvaluator(max_stagnation_trials=2), warm_up_trials=1, n_initial_trials=3, threshold_ratio=0.5)
    assert median.evaluate(study.trials[:3], study.direction) < 0  # too early: never stops
    assert median.evaluate(study.trials, study.direction) == pytest.approx(1.0)  # median 2, times 0.5
    with pytest.raises(NotImplementedError, match="Gaussian process"):
        RegretBoundEvaluator()
    with pytest.raises(NotImplementedError, match="Gaussian process"):
        Terminator()  # Optuna's default evaluator is the GP regret bound
    with pytest.raises(ValueError, match="min_n_trials"):
        Terminator(BestValueStagnationEvaluator(), min_n_trials=0)


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
