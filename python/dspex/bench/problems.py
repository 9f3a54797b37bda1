"""Benchmark problems. Every problem is a define-by-run objective ``objective(trial)`` that uses
only ``trial.suggest_float / suggest_int / suggest_categorical`` (so it runs unchanged on dspex,
Optuna and rustuna), plus a flat static description of its space (``space``) for libraries that
need one (hyperopt).

Single-objective problems are minimised and have a known global minimum (``optimum``) except the
scikit-learn task (``optimum=None``: the regret there is against the best value any run found).
Multi-objective problems (ZDT1-4, DTLZ1-2 with 3 objectives, the constrained CONSTR) are
scored by the hypervolume of the non-dominated (feasible) trials with respect to ``ref_point``;
their ``optimum`` is the hypervolume of the true Pareto front. A constrained problem's
objective stores its constraint values (feasible when all <= 0) in the trial's user attribute
``"constraints"``, which the solvers hand to the sampler as ``constraints_func``.
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
    ref_point: Optional[Tuple[float, ...]] = None
    constrained: bool = False
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


def _zdt(shape: Callable[[float], float], rastrigin: bool = False) -> Callable[[Any], Tuple[float, float]]:
    """ZDT with front shape f2 = g * shape(f1 / g); ``rastrigin`` (ZDT4): x1.. in [-5, 5] and a
    multimodal g."""

    def objective(trial: Any) -> Tuple[float, float]:
        x = [trial.suggest_float(f"x{i}", *((-5.0, 5.0) if rastrigin and i else (0.0, 1.0))) for i in range(ZDT_DIM)]
        if rastrigin:
            g = 1.0 + 10.0 * (ZDT_DIM - 1) + sum(v * v - 10.0 * math.cos(4.0 * math.pi * v) for v in x[1:])
        else:
            g = 1.0 + 9.0 * sum(x[1:]) / (ZDT_DIM - 1)
        f1 = x[0]
        return f1, g * shape(f1 / g)

    return objective


def _front_hv(front: Callable[[float], Tuple[float, ...]], ref: Sequence[float], n: int = 20001) -> float:
    """Hypervolume of a two-objective front given as f(t), t in [0, 1], sampled densely (its
    dominated part drops out)."""
    from .stats import hypervolume

    return hypervolume([front(i / (n - 1)) for i in range(n)], ref)


def _zdt3_shape(r: float) -> float:
    return 1.0 - math.sqrt(max(r, 0.0)) - r * math.sin(10.0 * math.pi * r)


def _zdt_hv_opt(front_integral: float) -> float:
    # Area of [0, r1] x [0, r2] dominated by the true front f2 = shape(f1), f1 in [0, 1].
    r1, r2 = ZDT_REF
    return r1 * r2 - front_integral


ZDT4_REF = (1.1, 250.0)  # g <= 1 + 10 * 5 + 5 * (25 + 10) = 226


# Three objectives (DTLZ) --------------------------------------------------------------------------

DTLZ1_DIM, DTLZ2_DIM = 6, 8
DTLZ1_REF = (50.0, 50.0, 50.0)  # g is rarely below 20 within 1,000 trials
DTLZ2_REF = (1.1, 1.1, 1.1)


def _dtlz1(trial: Any) -> Tuple[float, float, float]:
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(DTLZ1_DIM)]
    tail = x[2:]
    g = 100.0 * (len(tail) + sum((v - 0.5) ** 2 - math.cos(20.0 * math.pi * (v - 0.5)) for v in tail))
    h = 0.5 * (1.0 + g)
    return h * x[0] * x[1], h * x[0] * (1.0 - x[1]), h * (1.0 - x[0])


def _dtlz2(trial: Any) -> Tuple[float, float, float]:
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(DTLZ2_DIM)]
    g = sum((v - 0.5) ** 2 for v in x[2:])
    a, b = x[0] * math.pi / 2.0, x[1] * math.pi / 2.0
    return (1.0 + g) * math.cos(a) * math.cos(b), (1.0 + g) * math.cos(a) * math.sin(b), (1.0 + g) * math.sin(a)


# Constrained (Deb's CONSTR) ---------------------------------------------------------------------

CONSTR_REF = (1.1, 11.0)


def _constr(trial: Any) -> Tuple[float, float]:
    x1 = trial.suggest_float("x1", 0.1, 1.0)
    x2 = trial.suggest_float("x2", 0.0, 5.0)
    trial.set_user_attr("constraints", [6.0 - x2 - 9.0 * x1, 1.0 + x2 - 9.0 * x1])
    return x1, (1.0 + x2) / x1


def _constr_front(t: float) -> Tuple[float, float]:
    # x2 = max(0, 6 - 9 x1) on the front, x1 from 7/18 to 1.
    x1 = 7.0 / 18.0 + t * (1.0 - 7.0 / 18.0)
    return x1, (1.0 + max(0.0, 6.0 - 9.0 * x1)) / x1


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
    zdt3_opt = _front_hv(lambda t: (t, _zdt3_shape(t)), ZDT_REF)
    P.append(Problem("zdt3", "multi", _zdt(_zdt3_shape), zdt_space, zdt3_opt, f"ZDT3 (disconnected front), {zdt_desc}", n_objectives=2, ref_point=ZDT_REF, tags=["multi"]))
    zdt4_space: List[Param] = [("float", "x0", 0.0, 1.0, False)] + [("float", f"x{i}", -5.0, 5.0, False) for i in range(1, ZDT_DIM)]
    P.append(
        Problem(
            "zdt4", "multi", _zdt(lambda r: 1.0 - math.sqrt(max(r, 0.0)), rastrigin=True), zdt4_space, ZDT4_REF[0] * ZDT4_REF[1] - 1.0 / 3.0,
            f"ZDT4 (multimodal), x0 in [0, 1], {ZDT_DIM - 1} in [-5, 5], hypervolume w.r.t. {ZDT4_REF}", n_objectives=2, ref_point=ZDT4_REF, tags=["multi"],
        )
    )
    unit = lambda n: [("float", f"x{i}", 0.0, 1.0, False) for i in range(n)]  # noqa: E731
    P.append(
        Problem(
            "dtlz1", "multi", _dtlz1, unit(DTLZ1_DIM), DTLZ1_REF[0] ** 3 - 0.5**3 / 6.0,
            f"DTLZ1 (linear front, multimodal), 3 objectives, {DTLZ1_DIM} variables, hypervolume w.r.t. {DTLZ1_REF}", n_objectives=3, ref_point=DTLZ1_REF, tags=["multi"],
        )
    )
    P.append(
        Problem(
            "dtlz2", "multi", _dtlz2, unit(DTLZ2_DIM), 1.1**3 - math.pi / 6.0,
            f"DTLZ2 (spherical front), 3 objectives, {DTLZ2_DIM} variables, hypervolume w.r.t. {DTLZ2_REF}", n_objectives=3, ref_point=DTLZ2_REF, tags=["multi"],
        )
    )
    P.append(
        Problem(
            "constr", "multi", _constr, [("float", "x1", 0.1, 1.0, False), ("float", "x2", 0.0, 5.0, False)], _front_hv(_constr_front, CONSTR_REF),
            f"Deb's CONSTR: 2 variables, 2 constraints, hypervolume of the feasible trials w.r.t. {CONSTR_REF}", n_objectives=2, ref_point=CONSTR_REF, constrained=True, tags=["multi", "constrained"],
        )
    )
    P.append(
        Problem(
            "svc_breast_cancer", "single", _svc_breast_cancer, _SVC_SPACE, None,
            "scikit-learn SVC (C, gamma log; kernel rbf/sigmoid) on load_breast_cancer, 1 - 3-fold CV accuracy",
            budget_scale=0.5, tags=["sklearn"],
        )
    )
    return {p.name: p for p in P}


PROBLEMS = all_problems()
