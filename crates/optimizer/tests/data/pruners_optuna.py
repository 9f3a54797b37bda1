"""Records Optuna's pruning decisions on scripted studies, for the Rust pruner tests.

Run with the Optuna 5.0 environment (scipy 1.17, numpy 2.4):

    /opt/peers/bin/python crates/optimizer/tests/data/pruners_optuna.py

It writes pruners_optuna.json next to this file. Each scenario is a study (name, direction,
pruner spec) and a list of operations replayed in order:

- ``add``: ``study.add_trial(create_trial(state, value, intermediate_values))``;
- ``run``: ``study.ask()``, then for each (step, value): ``trial.report`` and
  ``trial.should_prune()``; the decisions are stored in ``expect``. With ``obey`` (default) the
  trial is told PRUNED at the first True; otherwise it ends in ``state`` (COMPLETE with
  ``value``, FAIL, or stays RUNNING).

Intermediate values: JSON null is NaN, the strings "inf"/"-inf" are infinities. Values are
rounded to a few decimals so that every JSON parser reads them back exactly.

The file also stores p-values of ``scipy.stats.wilcoxon(d, alternative, zero_method="zsplit")``.
Successive-halving and Hyperband scenarios use ``run`` operations only: Optuna keeps their rung
values in system attributes written by ``should_prune``, which the Rust pruners rebuild from the
reported values.
"""

import copy
import json
import math
import pathlib
import random
import warnings

import optuna
import scipy.stats
from optuna.trial import TrialState, create_trial

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.simplefilter("ignore")


def dec(v):
    if v is None:
        return math.nan
    if isinstance(v, str):
        return float(v)
    return v


def make_pruner(spec):
    kind, args = spec["kind"], spec.get("args", {})
    if kind == "median":
        return optuna.pruners.MedianPruner(**args)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**args)
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**args)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**args)
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(**args)
    if kind == "patient":
        inner = make_pruner(spec["inner"]) if spec.get("inner") else None
        return optuna.pruners.PatientPruner(inner, **args)
    if kind == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(**args)
    raise ValueError(kind)


def play(scn):
    study = optuna.create_study(
        study_name=scn["study_name"], direction=scn["direction"], pruner=make_pruner(scn["pruner"])
    )
    for op in scn["ops"]:
        iv = [(s, dec(v)) for s, v in op["iv"]]
        if op["op"] == "add":
            study.add_trial(
                create_trial(
                    state=TrialState[op["state"]],
                    value=op.get("value"),
                    intermediate_values=dict(iv),
                )
            )
            continue
        trial = study.ask()
        decisions, pruned = [], False
        for s, v in iv:
            trial.report(v, s)
            d = bool(trial.should_prune())
            decisions.append(d)
            if d and op.get("obey", True):
                study.tell(trial, state=TrialState.PRUNED)
                pruned = True
                break
        op["expect"] = decisions
        if not pruned:
            if op["state"] == "COMPLETE":
                study.tell(trial, op["value"])
            elif op["state"] == "FAIL":
                study.tell(trial, state=TrialState.FAIL)
    return scn


def enc(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


# ---------------------------------------------------------------- scenario generators

def trial_values(rng, steps, nan_p=0.0, scale=1.0, drift=0.0, inf_p=0.0):
    base = rng.uniform(0, scale)
    out = []
    for s in steps:
        r = rng.random()
        if r < nan_p:
            v = math.nan
        elif r < nan_p + inf_p:
            v = math.inf if rng.random() < 0.5 else -math.inf
        else:
            v = round(base + rng.gauss(0, 0.2 * scale) + drift * s, 3)
        out.append([s, enc(v)])
    return out


def finite_last(iv):
    vals = [dec(v) for _, v in iv if not math.isnan(dec(v)) and not math.isinf(dec(v))]
    return vals[-1] if vals else 0.5


def run_op(rng, iv, obey=True, fail_p=0.05, running_p=0.05):
    r = rng.random()
    state = "FAIL" if r < fail_p else "RUNNING" if r < fail_p + running_p else "COMPLETE"
    return {"op": "run", "iv": iv, "obey": obey, "state": state, "value": finite_last(iv)}


def random_steps(rng, max_step, sparse_p, keep_last):
    steps = [s for s in range(max_step) if rng.random() >= sparse_p]
    if keep_last and (not steps or steps[-1] != max_step - 1):
        steps.append(max_step - 1)
    return steps or [0]


def percentile_scenarios(rng):
    out = []
    # Hand-built histories: 5 COMPLETE trials at 1..5 on steps 0, 1, a PRUNED one, probes.
    for direction in ("minimize", "maximize"):
        for probe in ([[0, 9.0], [1, 3.5]], [[0, 9.0], [1, 2.5]], [[0, 2.0], [1, 3.5]],
                      [[0, None], [1, None]], [[0, None], [1, 3.5]]):
            ops = [{"op": "add", "state": "COMPLETE", "value": v, "iv": [[0, v], [1, v]]}
                   for v in (1.0, 2.0, 3.0, 4.0, 5.0)]
            ops.append({"op": "add", "state": "PRUNED", "iv": [[0, 0.0]]})
            ops.append({"op": "run", "iv": probe, "obey": False, "state": "RUNNING"})
            out.append({"name": f"median_hand_{direction}_{len(out)}", "direction": direction,
                        "pruner": {"kind": "median"}, "ops": ops})
    # Warmup / interval with sparse steps, fixed history.
    ops = [{"op": "add", "state": "COMPLETE", "value": float(v),
            "iv": [[s, float(v)] for s in range(12)]} for v in range(4)]
    for probe in ([[s, 10.0] for s in range(12)], [[0, 10.0], [5, 10.0], [6, 10.0], [9, 10.0]],
                  [[2, 0.0], [3, 10.0], [4, 10.0], [7, 10.0], [8, 10.0], [11, 10.0]]):
        ops.append({"op": "run", "iv": probe, "obey": False, "state": "RUNNING"})
    out.append({"name": "median_warmup_interval", "direction": "minimize",
                "pruner": {"kind": "median", "args": {"n_startup_trials": 2, "n_warmup_steps": 3,
                                                      "interval_steps": 2}}, "ops": ops})
    # n_min_trials with trials missing steps, NaN in completed trials.
    ops = [{"op": "add", "state": "COMPLETE", "value": 1.0, "iv": [[0, 1.0], [1, 1.0], [2, 1.0]]},
           {"op": "add", "state": "COMPLETE", "value": 1.0, "iv": [[0, 1.0], [1, None]]},
           {"op": "add", "state": "COMPLETE", "value": 1.0, "iv": [[0, 1.0]]},
           {"op": "add", "state": "RUNNING", "iv": [[0, 1.0], [1, 1.0], [2, 1.0]]},
           {"op": "add", "state": "FAIL", "iv": [[0, 1.0], [1, 1.0], [2, 1.0]]}]
    for probe in ([[0, 2.0], [1, 2.0], [2, 2.0]], [[0, 0.5], [1, 2.0], [2, 2.0]]):
        ops.append({"op": "run", "iv": probe, "obey": False, "state": "RUNNING"})
    for n_min in (1, 2, 3):
        out.append({"name": f"median_n_min_trials_{n_min}", "direction": "minimize",
                    "pruner": {"kind": "median", "args": {"n_startup_trials": 0,
                                                          "n_min_trials": n_min}}, "ops": ops})
    # Random sequential studies.
    for i in range(40):
        kind = rng.choice(["median", "percentile"])
        args = {"n_startup_trials": rng.choice([0, 1, 3, 5]), "n_warmup_steps": rng.choice([0, 0, 2, 5]),
                "interval_steps": rng.choice([1, 1, 2, 3]), "n_min_trials": rng.choice([1, 1, 2, 4])}
        if kind == "percentile":
            args["percentile"] = rng.choice([0.0, 10.0, 25.0, 33.3, 75.0, 90.0, 100.0])
        ops = []
        for _ in range(rng.randint(4, 16)):
            steps = random_steps(rng, rng.randint(1, 12), rng.choice([0.0, 0.0, 0.3]), False)
            iv = trial_values(rng, steps, nan_p=rng.choice([0.0, 0.0, 0.1, 0.5]), drift=-0.02)
            ops.append(run_op(rng, iv, obey=rng.random() < 0.7))
        out.append({"name": f"{kind}_random_{i}", "direction": rng.choice(["minimize", "maximize"]),
                    "pruner": {"kind": kind, "args": args}, "ops": ops})
    return out


def sh_scenarios(rng):
    out = []
    for i in range(40):
        auto = rng.random() < 0.25
        args = {"reduction_factor": rng.choice([2, 3, 4]),
                "min_early_stopping_rate": rng.choice([0, 0, 1, 2])}
        max_step = rng.choice([9, 20, 40]) if not auto else rng.choice([150, 320])
        if not auto:
            args["min_resource"] = rng.choice([1, 1, 2, 3])
            args["bootstrap_count"] = rng.choice([0, 0, 0, 1, 3])
        # Long "auto" trials report sparsely to keep the file small.
        sparse = rng.choice([0.6, 0.85]) if auto else rng.choice([0.0, 0.0, 0.5, 0.85])
        ops = []
        for _ in range(rng.randint(6, 14) if auto else rng.randint(6, 30)):
            steps = random_steps(rng, max_step, sparse, keep_last=auto)
            iv = trial_values(rng, steps, nan_p=rng.choice([0.0, 0.0, 0.02]), drift=-0.01)
            op = run_op(rng, iv, fail_p=0.0 if auto else 0.05, running_p=0.0 if auto else 0.05)
            ops.append(op)
        out.append({"name": f"sh_random_{i}", "direction": rng.choice(["minimize", "maximize"]),
                    "pruner": {"kind": "successive_halving", "args": args}, "ops": ops})
    # Reports every 100 steps: one report crosses several rungs (min_resource 1).
    for direction in ("minimize", "maximize"):
        ops = [run_op(rng, trial_values(rng, list(range(100, 1001, 100))), fail_p=0, running_p=0)
               for _ in range(25)]
        out.append({"name": f"sh_jumps_{direction}", "direction": direction,
                    "pruner": {"kind": "successive_halving",
                               "args": {"min_resource": 1, "reduction_factor": 3}}, "ops": ops})
    return out


def hyperband_scenarios(rng):
    out = []
    for i in range(25):
        auto = rng.random() < 0.3
        args = {"min_resource": rng.choice([1, 1, 2]), "reduction_factor": rng.choice([2, 3, 4])}
        max_step = rng.choice([9, 27, 60])
        if not auto:
            args["max_resource"] = rng.choice([9, 27, 81, max_step])
            args["bootstrap_count"] = rng.choice([0, 0, 2])
        sparse = rng.choice([0.0, 0.0, 0.5])
        ops = []
        for _ in range(rng.randint(8, 25)):
            steps = random_steps(rng, max_step, sparse, keep_last=auto)
            iv = trial_values(rng, steps, nan_p=rng.choice([0.0, 0.0, 0.02]), drift=-0.01)
            ops.append(run_op(rng, iv, fail_p=0.0 if auto else 0.05, running_p=0.0))
        out.append({"name": f"hyperband_random_{i}", "direction": rng.choice(["minimize", "maximize"]),
                    "pruner": {"kind": "hyperband", "args": args}, "ops": ops})
    return out


def threshold_scenarios(rng):
    out = []
    for i in range(20):
        args = {"n_warmup_steps": rng.choice([0, 0, 3]), "interval_steps": rng.choice([1, 2, 4])}
        which = rng.choice(["lower", "upper", "both"])
        if which in ("lower", "both"):
            args["lower"] = rng.choice([0.1, 0.3])
        if which in ("upper", "both"):
            args["upper"] = rng.choice([0.7, 0.9])
        ops = []
        for _ in range(rng.randint(2, 8)):
            steps = random_steps(rng, rng.randint(1, 15), rng.choice([0.0, 0.4]), False)
            iv = trial_values(rng, steps, nan_p=0.05, drift=rng.choice([-0.03, 0.0, 0.03]))
            ops.append(run_op(rng, iv, obey=rng.random() < 0.5))
        out.append({"name": f"threshold_random_{i}", "direction": rng.choice(["minimize", "maximize"]),
                    "pruner": {"kind": "threshold", "args": args}, "ops": ops})
    return out


def patient_scenarios(rng):
    out = []
    for i in range(24):
        args = {"patience": rng.choice([0, 1, 2, 4]), "min_delta": rng.choice([0.0, 0.0, 0.05])}
        inner = None
        if i % 3 == 1:
            inner = {"kind": "median", "args": {"n_startup_trials": 1}}
        elif i % 3 == 2:
            inner = {"kind": "threshold", "args": {"upper": 0.6}}
        ops = []
        for _ in range(rng.randint(3, 10)):
            steps = random_steps(rng, rng.randint(2, 15), rng.choice([0.0, 0.3]), False)
            iv = trial_values(rng, steps, nan_p=rng.choice([0.0, 0.1, 0.4]),
                              drift=rng.choice([-0.03, 0.0, 0.03]))
            ops.append(run_op(rng, iv, obey=rng.random() < 0.5))
        out.append({"name": f"patient_random_{i}", "direction": rng.choice(["minimize", "maximize"]),
                    "pruner": {"kind": "patient", "args": args, "inner": inner}, "ops": ops})
    return out


def wilcoxon_scenarios(rng):
    out = []
    # Clear cases: per-instance scores; the best trial is COMPLETE first.
    for direction in ("minimize", "maximize"):
        best = [[s, round(0.5 + 0.01 * s, 3)] for s in range(30)]
        ops = [{"op": "run", "iv": best, "obey": False, "state": "COMPLETE", "value": 0.5}]
        ops.append({"op": "run", "iv": [[s, round(0.9 + 0.013 * s, 3)] for s in range(30)],
                    "obey": False, "state": "COMPLETE", "value": 0.9})
        ops.append({"op": "run", "iv": [[s, round(0.1 + 0.011 * s, 3)] for s in range(30)],
                    "obey": False, "state": "COMPLETE", "value": 0.1})
        out.append({"name": f"wilcoxon_clear_{direction}", "direction": direction,
                    "pruner": {"kind": "wilcoxon"}, "ops": ops})
    for i in range(30):
        args = {"p_threshold": rng.choice([0.05, 0.1, 0.3]), "n_startup_steps": rng.choice([0, 2, 5])}
        n_steps = rng.choice([5, 12, 20, 60])
        ops = []
        for _ in range(rng.randint(3, 10)):
            steps = random_steps(rng, n_steps, rng.choice([0.0, 0.0, 0.3]), False)
            steps = rng.sample(steps, len(steps)) if rng.random() < 0.2 else steps
            iv = trial_values(rng, steps, nan_p=rng.choice([0.0, 0.0, 0.01]), inf_p=0.002)
            if rng.random() < 0.3:  # coarse values: ties and zero differences
                iv = [[s, v if v is None or isinstance(v, str) else round(v, 1)] for s, v in iv]
            op = run_op(rng, iv, obey=rng.random() < 0.8, fail_p=0.05, running_p=0.05)
            op["value"] = round(rng.uniform(0, 1), 3)
            ops.append(op)
        out.append({"name": f"wilcoxon_random_{i}", "direction": rng.choice(["minimize", "maximize"]),
                    "pruner": {"kind": "wilcoxon", "args": args}, "ops": ops})
    return out


def wilcoxon_p_values(rng):
    cases = []
    for n in [1, 2, 3, 5, 8, 10, 13, 14, 20, 30, 50, 51, 70]:
        for coarse in (False, True):
            d = [round(rng.gauss(0.2, 1.0), 1 if coarse else 4) for _ in range(n)]
            case = {"d": d}
            for alt in ("less", "greater", "two-sided"):
                case[alt] = float(scipy.stats.wilcoxon(d, alternative=alt, zero_method="zsplit").pvalue)
            cases.append(case)
    for d in ([0.0, 0.0, 0.0], [0.0, 1.0, -1.0, 2.0], [0.5] * 20, [0.0] * 16 + [1.0, 2.0]):
        case = {"d": d}
        for alt in ("less", "greater", "two-sided"):
            case[alt] = float(scipy.stats.wilcoxon(d, alternative=alt, zero_method="zsplit").pvalue)
        cases.append(case)
    return cases


def main():
    rng = random.Random(20261105)
    scenarios = (percentile_scenarios(rng) + sh_scenarios(rng) + hyperband_scenarios(rng)
                 + threshold_scenarios(rng) + patient_scenarios(rng) + wilcoxon_scenarios(rng))
    # Scenarios may share operation lists: give each its own copy before recording decisions.
    scenarios = [copy.deepcopy(scn) for scn in scenarios]
    for scn in scenarios:
        scn.setdefault("study_name", scn["name"])
        play(scn)
    n_true = sum(sum(op.get("expect", [])) for s in scenarios for op in s["ops"])
    n_all = sum(len(op.get("expect", [])) for s in scenarios for op in s["ops"])
    data = {
        "generator": f"pruners_optuna.py, optuna {optuna.__version__}, scipy {scipy.__version__}",
        "scenarios": scenarios,
        "wilcoxon_p_values": wilcoxon_p_values(rng),
    }
    path = pathlib.Path(__file__).with_name("pruners_optuna.json")
    path.write_text(json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n")
    print(f"{len(scenarios)} scenarios, {n_all} decisions ({n_true} prune) -> {path}")


if __name__ == "__main__":
    main()
