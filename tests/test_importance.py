"""dspex.importance against Optuna 5.0's on the same trials, and its edge cases."""

from __future__ import annotations

import math
import warnings

import pytest

import dspex
from dspex.importance import (
    FanovaImportanceEvaluator,
    MeanDecreaseImpurityImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)

optuna = pytest.importorskip("optuna")


def objective(trial):
    x = [trial.suggest_float(f"x{i}", -5, 5) for i in range(4)]
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    n = trial.suggest_int("n", 1, 100, log=True)
    return sum((i + 1) ** 2 * x[i] ** 2 for i in range(4)) + {"a": 0.0, "b": 20.0, "c": 200.0}[c] + n / 100


@pytest.fixture(scope="module")
def pair():
    """An Optuna study of random trials and a dspex study holding the same trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    theirs = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    theirs.optimize(objective, n_trials=200)
    ours = dspex.create_study()
    for t in theirs.trials:
        dists = {k: dspex.distributions.json_to_distribution(optuna.distributions.distribution_to_json(d)) for k, d in t.distributions.items()}
        ours.add_trial(dspex.create_trial(params=t.params, distributions=dists, value=t.value))
    return theirs, ours


def test_ped_anova_is_the_default_and_equals_optunas(pair):
    theirs, ours = pair
    a = optuna.importance.get_param_importances(theirs)
    b = get_param_importances(ours)
    assert list(a) == list(b)
    for k in a:
        assert b[k] == pytest.approx(a[k], abs=1e-9)
    for kw in ({"target_quantile": 0.2, "region_quantile": 0.5}, {"evaluate_on_local": False}):
        a = optuna.importance.get_param_importances(theirs, evaluator=optuna.importance.PedAnovaImportanceEvaluator(**kw))
        b = get_param_importances(ours, evaluator=PedAnovaImportanceEvaluator(**kw))
        assert {k: round(v, 9) for k, v in a.items()} == {k: round(v, 9) for k, v in b.items()}


@pytest.mark.parametrize(
    "theirs_cls, ours_cls",
    [
        ("FanovaImportanceEvaluator", FanovaImportanceEvaluator),
        ("MeanDecreaseImpurityImportanceEvaluator", MeanDecreaseImpurityImportanceEvaluator),
    ],
)
def test_forest_importances_agree_with_optunas_within_its_seed_spread(pair, theirs_cls, ours_cls):
    theirs, ours = pair
    cls = getattr(optuna.importance, theirs_cls)
    runs = [optuna.importance.get_param_importances(theirs, evaluator=cls(seed=s)) for s in range(2)]
    got = get_param_importances(ours, evaluator=ours_cls(seed=0))
    assert set(got) == set(runs[0])
    assert sum(got.values()) == pytest.approx(1.0)
    spread = max(abs(runs[0][k] - runs[1][k]) for k in got)
    for k in got:
        assert abs(got[k] - runs[0][k]) <= max(3 * spread, 0.03), (k, got[k], runs[0][k])
    # The parameters that matter most come first, as in Optuna.
    assert list(got)[:2] == list(runs[0])[:2]
    # A seed fixes the forest.
    assert get_param_importances(ours, evaluator=ours_cls(seed=0)) == got


def test_arguments_targets_and_parameter_subsets(pair):
    _, ours = pair
    ev = FanovaImportanceEvaluator(seed=1)
    sub = get_param_importances(ours, evaluator=ev, params=["x0", "c"])
    assert set(sub) == {"x0", "c"} and sub["c"] > sub["x0"]
    # A target replaces the objective: here only n matters.
    by_n = get_param_importances(ours, evaluator=ev, target=lambda t: t.params["n"])
    assert next(iter(by_n)) == "n"
    with pytest.warns(dspex.exceptions.ExperimentalWarning):
        raw = get_param_importances(ours, evaluator=ev, normalize=False)
    assert sum(raw.values()) < 1.0 + 1e-9
    with pytest.raises(TypeError, match="BaseImportanceEvaluator"):
        get_param_importances(ours, evaluator=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list"):
        get_param_importances(ours, evaluator=ev, params="x0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="completed trials with all specified parameters"):
        get_param_importances(ours, evaluator=ev, params=["nope"])
    with pytest.raises(ValueError, match="Missing parameters"):
        get_param_importances(ours, params=["nope"])
    with pytest.raises(ValueError, match="target_quantile"):
        PedAnovaImportanceEvaluator(target_quantile=0.5, region_quantile=0.4)
    with pytest.raises(ValueError, match="n_trees"):
        FanovaImportanceEvaluator(n_trees=0)


def test_multi_objective_studies_need_a_target_for_forests_and_rank_by_pareto_for_ped_anova():
    study = dspex.create_study(directions=["minimize", "maximize"], sampler=dspex.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("a", 0, 1) ** 2, t.suggest_float("b", 0, 1) + 0.01 * t.suggest_float("z", 0, 1)), n_trials=120)
    with pytest.raises(ValueError, match="specify the `target`"):
        get_param_importances(study, evaluator=FanovaImportanceEvaluator())
    by_a = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), target=lambda t: t.values[0])
    assert next(iter(by_a)) == "a"
    pareto = get_param_importances(study)
    assert pareto["z"] < pareto["a"] and pareto["z"] < pareto["b"]


def test_conditional_single_and_degenerate_studies():
    study = dspex.create_study(sampler=dspex.samplers.RandomSampler(seed=1))

    def conditional(trial):
        kind = trial.suggest_categorical("kind", ["lin", "sq"])
        trial.suggest_int("fixed", 3, 3)
        x = trial.suggest_float("x" if kind == "lin" else "y", -1, 1)
        return x if kind == "lin" else 5 * x * x

    study.optimize(conditional, n_trials=80)
    # Forests use the parameters every trial has; a single-valued one gets 0.
    fan = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    assert set(fan) == {"kind", "fixed"} and fan["fixed"] == 0.0
    # PED-ANOVA weighs each parameter within the trials that have it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ped = get_param_importances(study)
    assert set(ped) == {"kind", "fixed", "x", "y"} and ped["fixed"] == 0.0

    flat = dspex.create_study()
    flat.optimize(lambda t: t.suggest_float("x", 0, 1) * 0 + 1.0, n_trials=10)
    with pytest.raises(RuntimeError, match="zero total variance"):
        get_param_importances(flat, evaluator=FanovaImportanceEvaluator(seed=0))
    one = dspex.create_study()
    one.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=1)
    assert get_param_importances(one, evaluator=FanovaImportanceEvaluator()) == {"x": 0.5, "y": 0.5}
    # Trials whose target is not finite are left out, not fed to the forest.
    half = get_param_importances(study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=0), target=lambda t: math.inf if t.number % 2 else t.value)
    assert set(half) == {"kind", "fixed"} and half["kind"] > 0.9

def test_the_engine_rejects_malformed_rows():
    with pytest.raises(ValueError, match="not finite"):
        dspex._native.forest_importances([[math.nan], [1.0]], [1.0, 2.0], [(0.0, 1.0)], [[0]], "fanova", 4, 4, 0)
    with pytest.raises(ValueError, match="columns"):
        dspex._native.forest_importances([[0.5, 1.0], [1.0]], [1.0, 2.0], [(0.0, 1.0)], [[0]], "fanova", 4, 4, 0)
    with pytest.raises(ValueError, match="unknown importance method"):
        dspex._native.forest_importances([[0.5], [1.0]], [1.0, 2.0], [(0.0, 1.0)], [[0]], "shap", 4, 4, 0)


def test_optuna_scripts_get_dspex_importances_through_the_alias(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "imp.py"
    script.write_text(
        "import optuna\n"
        "study = optuna.create_study()\n"
        "study.optimize(lambda t: t.suggest_float('x', -3, 3) ** 2 + 0.01 * t.suggest_float('y', -3, 3), n_trials=40)\n"
        "imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))\n"
        "print(type(study).__module__, list(imp))\n"
    )
    out = subprocess.run([sys.executable, "-m", "dspex.run", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dspex.study", "['x',", "'y']"]
