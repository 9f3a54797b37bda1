"""Benchmark problems. Every problem is a define-by-run objective ``objective(trial)`` that uses
only ``trial.suggest_float / suggest_int / suggest_categorical`` (so it runs unchanged on dspex,
Optuna and rustuna), plus a flat static description of its space (``space``) for libraries that
need one (hyperopt).

Single-objective problems are minimised and have a known global minimum (``optimum``) except the
scikit-learn task (``optimum=None``: the regret there is against the best value any run found).
Multi-objective problems (ZDT1, ZDT2) are scored by the hypervolume of the non-dominated trials
with respect to ``ref_point``; their ``optimum`` is the hypervolume of the true Pareto front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# A parameter of the static space: ("float", name, low, high, log) | ("int", name, low, high, log)
# | ("cat", name, choices)
Param = Tuple[Any, ...]

# --------------------------------------------------------------------------------------------
# Standard functions (x: a sequence of floats)
# --------------------------------------------------------------------------------------------


def sphere(x: Sequence[float]) -> float:
    return sum(v * v for v in x)


def rosenbrock(x: Sequence[float]) -> float:
    return sum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2 for i in range(len(x) - 1))


def rastrigin(x: Sequence[float]) -> float:
    return 10.0 * len(x) + sum(v * v - 10.0 * math.cos(2.0 * math.pi * v) for v in x)


def ackley(x: Sequence[float]) -> float:
    d = len(x)
    s1 = sum(v * v for v in x) / d
    s2 = sum(math.cos(2.0 * math.pi * v) for v in x) / d
    return -20.0 * math.exp(-0.2 * math.sqrt(s1)) - math.exp(s2) + 20.0 + math.e


def styblinski_tang(x: Sequence[float]) -> float:
    return 0.5 * sum(v**4 - 16.0 * v * v + 5.0 * v for v in x)


ST_MIN_PER_DIM = -39.16616570377142


def levy(x: Sequence[float]) -> float:
    w = [1.0 + (v - 1.0) / 4.0 for v in x]
    total = math.sin(math.pi * w[0]) ** 2
    for wi in w[:-1]:
        total += (wi - 1.0) ** 2 * (1.0 + 10.0 * math.sin(math.pi * wi + 1.0) ** 2)
    wd = w[-1]
    return total + (wd - 1.0) ** 2 * (1.0 + math.sin(2.0 * math.pi * wd) ** 2)


def griewank(x: Sequence[float]) -> float:
    s = sum(v * v for v in x) / 4000.0
    p = 1.0
    for i, v in enumerate(x):
        p *= math.cos(v / math.sqrt(i + 1.0))
    return 1.0 + s - p


def branin(x: Sequence[float]) -> float:
    x1, x2 = x
    b = 5.1 / (4.0 * math.pi**2)
    c = 5.0 / math.pi
    t = 1.0 / (8.0 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * math.cos(x1) + 10.0


_H_ALPHA = (1.0, 1.2, 3.0, 3.2)
_H3_A = ((3.0, 10.0, 30.0), (0.1, 10.0, 35.0), (3.0, 10.0, 30.0), (0.1, 10.0, 35.0))
_H3_P = tuple(
    tuple(v * 1e-4 for v in row)
    for row in ((3689, 1170, 2673), (4699, 4387, 7470), (1091, 8732, 5547), (381, 5743, 8828))
)
_H6_A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
_H6_P = tuple(
    tuple(v * 1e-4 for v in row)
    for row in (
        (1312, 1696, 5569, 124, 8283, 5886),
        (2329, 4135, 8307, 3736, 1004, 9991),
        (2348, 1451, 3522, 2883, 3047, 6650),
        (4047, 8828, 8732, 5743, 1091, 381),
    )
)


def _hartmann(x: Sequence[float], a: Any, p: Any) -> float:
    total = 0.0
    for i in range(4):
        inner = sum(a[i][j] * (x[j] - p[i][j]) ** 2 for j in range(len(x)))
        total += _H_ALPHA[i] * math.exp(-inner)
    return -total


def hartmann3(x: Sequence[float]) -> float:
    return _hartmann(x, _H3_A, _H3_P)


def hartmann6(x: Sequence[float]) -> float:
    return _hartmann(x, _H6_A, _H6_P)


# --------------------------------------------------------------------------------------------
# Problem objects
# --------------------------------------------------------------------------------------------


@dataclass
class Problem:
    name: str
    kind: str  # "single" (minimise the value) or "multi" (maximise the hypervolume)
    objective: Callable[[Any], Any]
    space: List[Param]
    optimum: Optional[float]
    description: str
    n_objectives: int = 1
    ref_point: Optional[Tuple[float, float]] = None
    budget_scale: float = 1.0  # fraction of the suite's budget (expensive problems)
    hyperopt_note: str = ""
    tags: List[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return len(self.space)

    @property
    def directions(self) -> List[str]:
        return ["minimize"] * self.n_objectives


def _suggest(trial: Any, p: Param) -> Any:
    kind, name = p[0], p[1]
    if kind == "float":
        return trial.suggest_float(name, p[2], p[3], log=p[4])
    if kind == "int":
        return trial.suggest_int(name, p[2], p[3], log=p[4])
    return trial.suggest_categorical(name, list(p[2]))


def box(name: str, fn: Callable[[Sequence[float]], float], bounds: List[Tuple[float, float]], optimum: float, desc: str) -> Problem:
    space: List[Param] = [("float", f"x{i}", lo, hi, False) for i, (lo, hi) in enumerate(bounds)]

    def objective(trial: Any) -> float:
        return fn([trial.suggest_float(p[1], p[2], p[3]) for p in space])

    return Problem(name, "single", objective, space, optimum, desc, tags=["box"])


# Mixed integer / categorical -----------------------------------------------------------------

_MIXED_SPACE: List[Param] = [
    ("float", "x0", -5.0, 5.0, False),
    ("float", "x1", -5.0, 5.0, False),
    ("int", "n0", 0, 10, False),
    ("int", "n1", 0, 10, False),
    ("cat", "op", ("a", "b", "c", "d")),
    ("cat", "flag", (True, False)),
]
_MIXED_OFF = {"a": 2.0, "b": 0.0, "c": 1.0, "d": 3.0}


def _mixed(trial: Any) -> float:
    v = {p[1]: _suggest(trial, p) for p in _MIXED_SPACE}
    return (
        v["x0"] ** 2
        + (v["x1"] - 1.0) ** 2
        + (v["n0"] - 7) ** 2 / 4.0
        + (v["n1"] - 3) ** 2 / 4.0
        + _MIXED_OFF[v["op"]]
        + (0.0 if v["flag"] else 0.5)
    )


# Log-scaled ----------------------------------------------------------------------------------

_LOG_TARGETS = {"lr": 1e-3, "wd": 3e-5, "dropout": 0.5, "scale": 10.0}
_LOG_SPACE: List[Param] = [("float", n, 1e-6, 1e2, True) for n in _LOG_TARGETS] + [("int", "batch", 16, 1024, True)]


def _log_scaled(trial: Any) -> float:
    v = {p[1]: _suggest(trial, p) for p in _LOG_SPACE}
    s = sum((math.log10(v[n]) - math.log10(t)) ** 2 for n, t in _LOG_TARGETS.items())
    return s + (math.log2(v["batch"]) - 7.0) ** 2 / 4.0


# Conditional ---------------------------------------------------------------------------------

_COND_SPACE: List[Param] = [
    ("cat", "model", ("linear", "tree", "knn")),
    ("float", "alpha", 1e-4, 10.0, True),
    ("float", "l1_ratio", 0.0, 1.0, False),
    ("int", "depth", 1, 12, False),
    ("int", "min_leaf", 1, 50, True),
    ("int", "k", 1, 50, False),
    ("cat", "weights", ("uniform", "distance")),
]


def _conditional(trial: Any) -> float:
    model = trial.suggest_categorical("model", ["linear", "tree", "knn"])
    if model == "linear":
        alpha = trial.suggest_float("alpha", 1e-4, 10.0, log=True)
        l1 = trial.suggest_float("l1_ratio", 0.0, 1.0)
        return 1.0 + (math.log10(alpha) + 2.0) ** 2 / 4.0 + (l1 - 0.3) ** 2
    if model == "tree":
        depth = trial.suggest_int("depth", 1, 12)
        leaf = trial.suggest_int("min_leaf", 1, 50, log=True)
        return ((depth - 6) / 3.0) ** 2 + math.log(leaf / 5.0) ** 2 / 4.0
    k = trial.suggest_int("k", 1, 50)
    w = trial.suggest_categorical("weights", ["uniform", "distance"])
    return 0.5 + ((k - 15) / 10.0) ** 2 + (0.0 if w == "distance" else 0.3)


# Multi-objective (ZDT, 6 variables in [0, 1]) ---------------------------------------------------

ZDT_DIM = 6
ZDT_REF = (1.1, 11.0)  # f1 <= 1 and f2 <= g <= 10: every trial lies inside the reference box


def _zdt(shape: Callable[[float], float]) -> Callable[[Any], Tuple[float, float]]:
    def objective(trial: Any) -> Tuple[float, float]:
        x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(ZDT_DIM)]
        g = 1.0 + 9.0 * sum(x[1:]) / (ZDT_DIM - 1)
        f1 = x[0]
        return f1, g * shape(f1 / g)

    return objective


def _zdt_hv_opt(front_integral: float) -> float:
    # Area of [0, r1] x [0, r2] dominated by the true front f2 = shape(f1), f1 in [0, 1].
    r1, r2 = ZDT_REF
    return r1 * r2 - front_integral


# scikit-learn ---------------------------------------------------------------------------------

_SK_DATA: Dict[str, Any] = {}
_SVC_SPACE: List[Param] = [
    ("float", "C", 1e-2, 1e3, True),
    ("float", "gamma", 1e-5, 1.0, True),
    ("cat", "kernel", ("rbf", "sigmoid")),
]


def _svc_breast_cancer(trial: Any) -> float:
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if "bc" not in _SK_DATA:
        from sklearn.datasets import load_breast_cancer

        _SK_DATA["bc"] = load_breast_cancer(return_X_y=True)
    X, y = _SK_DATA["bc"]
    c = trial.suggest_float("C", 1e-2, 1e3, log=True)
    gamma = trial.suggest_float("gamma", 1e-5, 1.0, log=True)
    kernel = trial.suggest_categorical("kernel", ["rbf", "sigmoid"])
    model = make_pipeline(StandardScaler(), SVC(C=c, gamma=gamma, kernel=kernel))
    return 1.0 - float(cross_val_score(model, X, y, cv=3).mean())


def sklearn_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def all_problems() -> Dict[str, Problem]:
    P: List[Problem] = []
    for d in (5, 10, 20):
        P.append(box(f"sphere{d}", sphere, [(-5.12, 5.12)] * d, 0.0, f"sum x_i^2 on [-5.12, 5.12]^{d}"))
    for d in (5, 10):
        P.append(box(f"rosenbrock{d}", rosenbrock, [(-5.0, 10.0)] * d, 0.0, f"Rosenbrock on [-5, 10]^{d}"))
        P.append(box(f"rastrigin{d}", rastrigin, [(-5.12, 5.12)] * d, 0.0, f"Rastrigin on [-5.12, 5.12]^{d}"))
        P.append(box(f"ackley{d}", ackley, [(-32.768, 32.768)] * d, 0.0, f"Ackley on [-32.768, 32.768]^{d}"))
        P.append(box(f"styblinski_tang{d}", styblinski_tang, [(-5.0, 5.0)] * d, ST_MIN_PER_DIM * d, f"Styblinski-Tang on [-5, 5]^{d}"))
        P.append(box(f"levy{d}", levy, [(-10.0, 10.0)] * d, 0.0, f"Levy on [-10, 10]^{d}"))
        P.append(box(f"griewank{d}", griewank, [(-600.0, 600.0)] * d, 0.0, f"Griewank on [-600, 600]^{d}"))
    P.append(box("branin", branin, [(-5.0, 10.0), (0.0, 15.0)], 0.397887, "Branin, x1 in [-5, 10], x2 in [0, 15]"))
    P.append(box("hartmann3", hartmann3, [(0.0, 1.0)] * 3, -3.86278, "Hartmann3 on [0, 1]^3"))
    P.append(box("hartmann6", hartmann6, [(0.0, 1.0)] * 6, -3.32237, "Hartmann6 on [0, 1]^6"))
    P.append(Problem("mixed_int_cat", "single", _mixed, _MIXED_SPACE, 0.0, "2 floats, 2 ints in [0, 10], categoricals of 4 and 2 (bool) choices", tags=["mixed"]))
    P.append(Problem("log_scaled", "single", _log_scaled, _LOG_SPACE, 0.0, "4 floats in [1e-6, 1e2] log and a log int in [16, 1024]; targets spread over decades", tags=["log"]))
    P.append(
        Problem(
            "conditional", "single", _conditional, _COND_SPACE, 0.0,
            "model in {linear, tree, knn}, each with its own 2 params (float/log float, int/log int, int/categorical)",
            hyperopt_note="hyperopt samples the flat union of the branches' parameters",
            tags=["conditional"],
        )
    )
    zdt_space: List[Param] = [("float", f"x{i}", 0.0, 1.0, False) for i in range(ZDT_DIM)]
    zdt_desc = f"{ZDT_DIM} variables, hypervolume w.r.t. {ZDT_REF}"
    P.append(Problem("zdt1", "multi", _zdt(lambda r: 1.0 - math.sqrt(max(r, 0.0))), zdt_space, _zdt_hv_opt(1.0 / 3.0), f"ZDT1, {zdt_desc}", n_objectives=2, ref_point=ZDT_REF, tags=["multi"]))
    P.append(Problem("zdt2", "multi", _zdt(lambda r: 1.0 - r * r), zdt_space, _zdt_hv_opt(2.0 / 3.0), f"ZDT2, {zdt_desc}", n_objectives=2, ref_point=ZDT_REF, tags=["multi"]))
    P.append(
        Problem(
            "svc_breast_cancer", "single", _svc_breast_cancer, _SVC_SPACE, None,
            "scikit-learn SVC (C, gamma log; kernel rbf/sigmoid) on load_breast_cancer, 1 - 3-fold CV accuracy",
            budget_scale=0.5, tags=["sklearn"],
        )
    )
    return {p.name: p for p in P}


PROBLEMS = all_problems()
