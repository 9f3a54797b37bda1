"""Parameter importance side by side with Optuna 5.0 on the same trials: wall time of each
evaluator, and how far dspex's importances are from Optuna's compared with how far Optuna's
own differ from one forest seed to the next. Needs the bench extra (optuna, scikit-learn):

    pip install "dspex[bench]"
    python benches/importance.py [--trials 1000] [--seeds 3] [--json]

The study: 10 parameters (8 floats with quadratic effects of growing weight, a log-scaled
int, a categorical), sampled at random by Optuna, copied into an in-memory dspex study.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import dspex


def objective(trial):
    x = [trial.suggest_float(f"x{i}", -5, 5) for i in range(8)]
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    n = trial.suggest_int("n", 1, 100, log=True)
    return sum((i + 1) ** 2 * x[i] ** 2 / 30 for i in range(8)) + {"a": 0.0, "b": 5.0, "c": 30.0}[c] + n / 10


def studies(n_trials: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ours = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ours.optimize(objective, n_trials=n_trials)
    copy = dspex.create_study()
    for t in ours.trials:
        dists = {k: dspex.distributions.json_to_distribution(optuna.distributions.distribution_to_json(d)) for k, d in t.distributions.items()}
        copy.add_trial(dspex.create_trial(params=t.params, distributions=dists, value=t.value))
    return ours, copy


def run(n_trials: int, seeds: int) -> dict:
    import optuna

    warnings.simplefilter("ignore")
    theirs, ours = studies(n_trials)
    kinds = {
        "fanova": (optuna.importance.FanovaImportanceEvaluator, dspex.importance.FanovaImportanceEvaluator),
        "mean_decrease_impurity": (optuna.importance.MeanDecreaseImpurityImportanceEvaluator, dspex.importance.MeanDecreaseImpurityImportanceEvaluator),
        "ped_anova": (optuna.importance.PedAnovaImportanceEvaluator, dspex.importance.PedAnovaImportanceEvaluator),
    }
    out = {"trials": n_trials, "seeds": seeds, "evaluators": {}}
    for name, (theirs_cls, ours_cls) in kinds.items():
        seeded = name != "ped_anova"
        runs = {"optuna": [], "dspex": []}
        times = {"optuna": [], "dspex": []}
        for s in range(seeds if seeded else 1):
            kw = {"seed": s} if seeded else {}
            for who, study, cls, mod in (("optuna", theirs, theirs_cls, optuna.importance), ("dspex", ours, ours_cls, dspex.importance)):
                t0 = time.perf_counter()
                runs[who].append(mod.get_param_importances(study, evaluator=cls(**kw)))
                times[who].append(time.perf_counter() - t0)
        params = list(runs["optuna"][0])
        # Largest difference of one parameter's importance: Optuna against itself (seed to seed)
        # and dspex against Optuna (every pair of runs).
        spread = max((abs(a[p] - b[p]) for a in runs["optuna"] for b in runs["optuna"] for p in params), default=0.0)
        gap = max(abs(a[p] - b[p]) for a in runs["optuna"] for b in runs["dspex"] for p in params)
        out["evaluators"][name] = {
            "optuna_s": min(times["optuna"]),
            "dspex_s": min(times["dspex"]),
            "speedup": min(times["optuna"]) / min(times["dspex"]),
            "optuna_seed_spread": spread,
            "max_gap_to_optuna": gap,
            "importances": {p: {"optuna": runs["optuna"][0][p], "dspex": runs["dspex"][0][p]} for p in params},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    res = run(args.trials, args.seeds)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{args.trials} trials, 10 parameters; forest seeds 0..{args.seeds - 1}")
    for name, r in res["evaluators"].items():
        print(
            f"{name:24s} optuna {r['optuna_s']:7.3f} s  dspex {r['dspex_s']:6.3f} s  ({r['speedup']:.0f}x)  "
            f"largest gap to optuna {r['max_gap_to_optuna']:.4f}, optuna seed-to-seed {r['optuna_seed_spread']:.4f}"
        )


if __name__ == "__main__":
    main()
