"""What each plot shows, computed from a study's trials without any plotting library; the
plotly and matplotlib renderers draw the same data."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from dspex import _native
from dspex.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from dspex.logging import get_logger
from dspex.trial import FrozenTrial, TrialState

_logger = get_logger(__name__)

Target = Optional[Callable[[FrozenTrial], float]]
Studies = Union[Any, Sequence[Any]]


def available(package: str) -> bool:
    """Whether the plotting library ``package`` can be imported."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError, AttributeError):  # a module set to None in sys.modules
        return False


def require(module: str) -> Any:
    """Imports ``module`` of a plotting library, or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = module.split(".")[0]
        raise ImportError(f'Tried to import {package}, which dspex draws these plots with; install it with `pip install "dspex[plot]"` (or `pip install {package}`).') from e


def _studies(study: Studies) -> List[Any]:
    return list(study) if isinstance(study, (list, tuple)) else [study]


def check_target(study: Studies, target: Target, target_name: str = "Objective Value") -> None:
    """A multi-objective study needs a target (which objective to plot)."""
    if target is None and any(s._is_multi_objective() for s in _studies(study)):
        raise ValueError("If the `study` is being used for multi-objective optimization, please specify the `target`.")


def feasible(trial: FrozenTrial) -> bool:
    """Whether a trial satisfies its constraints (a trial without constraints does)."""
    return all(c <= 0.0 for c in trial.constraints.values())


def value_of(trial: FrozenTrial, target: Target) -> float:
    return float(target(trial)) if target is not None else float(trial.value)  # type: ignore[arg-type]


def finite(trials: List[FrozenTrial], target: Target) -> List[FrozenTrial]:
    """The trials whose plotted value is finite (others are left out, with a warning)."""
    kept = [t for t in trials if math.isfinite(value_of(t, target))]
    if len(kept) < len(trials):
        _logger.warning(f"Trial(s) {[t.number for t in trials if t not in kept]} have non-finite values and are not plotted.")
    return kept


def completed(study: Any) -> List[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def hover_text(trial: FrozenTrial) -> str:
    """The JSON of a trial's number, values and params, with HTML line breaks (hover labels)."""
    body = {"number": trial.number, "values": trial.values, "params": trial.params}
    return json.dumps(body, indent=2, default=str).replace("\n", "<br>")


# ----------------------------------------------------------------------- optimization history


@dataclass
class Series:
    """One line or scatter of values over trial numbers."""

    label: str
    numbers: List[int]
    values: List[float]
    stds: Optional[List[float]] = None


@dataclass
class History:
    """Per study: its feasible values, its best-so-far line (None with a target) and its
    infeasible values."""

    values: Series
    best: Optional[Series]
    infeasible: Series


def history(study: Studies, target: Target, target_name: str, error_bar: bool) -> List[History]:
    check_target(study, target, target_name)
    studies = _studies(study)
    out: List[History] = []
    runs = []
    for s in studies:
        trials = s.get_trials(deepcopy=False)
        label = target_name if len(studies) == 1 else f"{target_name} of {s.study_name}"
        state = ["incomplete" if t.state != TrialState.COMPLETE else "feasible" if feasible(t) else "infeasible" for t in trials]
        values = [value_of(t, target) if st != "incomplete" else math.nan for t, st in zip(trials, state)]
        best: Optional[List[float]] = None
        if target is None:
            sign = 1.0 if s.direction.name == "MINIMIZE" else -1.0
            best, running = [], math.inf
            for v, st in zip(values, state):
                if st == "feasible":
                    running = min(running, sign * v)
                best.append(sign * running)
        numbers = [t.number for t in trials]
        runs.append((numbers, values, state, best))
        pick = lambda which: ([n for n, st in zip(numbers, state) if st == which], [v for v, st in zip(values, state) if st == which])  # noqa: E731
        fx, fy = pick("feasible")
        ix, iy = pick("infeasible")
        best_label = "Best Value" if len(studies) == 1 else f"Best Value of {s.study_name}"
        out.append(History(Series(label, fx, fy), None if best is None else Series(best_label, numbers, best), Series("Infeasible Trial", ix, iy)))
    if not any(r[2].count("feasible") + r[2].count("infeasible") for r in runs):
        _logger.warning("There are no complete trials.")
        return []
    if not error_bar:
        return out
    # Mean and standard deviation over the studies, per trial number with a feasible value.
    n = max(max(r[0], default=-1) for r in runs) + 1
    per: List[List[float]] = [[] for _ in range(n)]
    per_best: List[List[float]] = [[] for _ in range(n)]
    for numbers, values, state, best in runs:
        for i, (num, v, st) in enumerate(zip(numbers, values, state)):
            if st == "feasible":
                per[num].append(v)
            if best is not None and math.isfinite(best[i]):
                per_best[num].append(best[i])
    xs = [i for i in range(n) if per[i]]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    std = lambda v: math.sqrt(sum((x - mean(v)) ** 2 for x in v) / len(v))  # noqa: E731
    values_series = Series(target_name, xs, [mean(per[i]) for i in xs], [std(per[i]) for i in xs])
    best_series = None
    if target is None:
        best_series = Series("Best Value", xs, [mean(per_best[i]) for i in xs], [std(per_best[i]) for i in xs])
    return [History(values_series, best_series, Series("Infeasible Trial", [], []))]


# ------------------------------------------------------------------------- intermediate values


@dataclass
class Curve:
    number: int
    steps: List[int]
    values: List[float]
    feasible: bool


def intermediate(study: Any) -> List[Curve]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.COMPLETE, TrialState.RUNNING))
    curves = [Curve(t.number, [k for k, _ in sorted(t.intermediate_values.items())], [v for _, v in sorted(t.intermediate_values.items())], feasible(t)) for t in trials if t.intermediate_values]
    if not trials:
        _logger.warning("Study instance does not contain trials.")
    elif not curves:
        _logger.warning("You need to set up the pruning feature to utilize `plot_intermediate_values()`")
    return curves


# ------------------------------------------------------------------------------------- slice


@dataclass
class SliceAxis:
    """One parameter's panel: x (labels of a categorical's choices in choice order), y, colour
    (trial number), and the infeasible points apart."""

    param: str
    log: bool
    categorical: bool
    labels: Optional[List[str]]
    x: List[Any] = field(default_factory=list)
    y: List[float] = field(default_factory=list)
    numbers: List[int] = field(default_factory=list)
    infeasible_x: List[Any] = field(default_factory=list)
    infeasible_y: List[float] = field(default_factory=list)


def _first_distributions(trials: List[FrozenTrial]) -> Dict[str, Any]:
    dists: Dict[str, Any] = {}
    for t in trials:
        for k, d in t.distributions.items():
            dists.setdefault(k, d)
    return dists


def slices(study: Any, params: Optional[List[str]], target: Target, target_name: str) -> List[SliceAxis]:
    check_target(study, target, target_name)
    trials = finite(completed(study), target)
    if not trials:
        _logger.warning("Your study does not have any completed trials.")
        return []
    dists = _first_distributions(trials)
    if params is None:
        names = sorted(dists)
    else:
        for p in params:
            if p not in dists:
                raise ValueError(f"Parameter {p} does not exist in your study.")
        names = sorted(set(params))
    out = []
    for name in names:
        d = dists[name]
        cat = isinstance(d, CategoricalDistribution)
        ax = SliceAxis(name, isinstance(d, (FloatDistribution, IntDistribution)) and d.log, cat, [repr(c) for c in d.choices] if cat else None)
        rows = [(t.params[name], value_of(t, target), t.number, feasible(t)) for t in trials if name in t.params]
        if cat:
            # Grouped by choice, in the order of the choices.
            order = {repr(c): i for i, c in enumerate(d.choices)}
            rows = sorted(((repr(x), y, n, f) for x, y, n, f in rows), key=lambda r: order.get(r[0], len(order)))
        for x, y, n, ok in rows:
            if ok:
                ax.x.append(x)
                ax.y.append(y)
                ax.numbers.append(n)
            else:
                ax.infeasible_x.append(x)
                ax.infeasible_y.append(y)
        out.append(ax)
    return out


# ------------------------------------------------------------------------- param importances


def importances(study: Any, evaluator: Any, params: Optional[List[str]], target: Target, target_name: str) -> List[Tuple[str, Dict[str, float]]]:
    """(label, importances) per objective plotted: one for a target or a single objective, one
    per objective of a multi-objective study."""
    from dspex.importance import get_param_importances

    if target is None and study._is_multi_objective():
        names = study.metric_names or [f"{target_name} {i}" for i in range(len(study.directions))]
        def objective(i: int) -> Callable[[FrozenTrial], float]:
            return lambda t: (t.values or [])[i]

        return [(names[i], get_param_importances(study, evaluator=evaluator, params=params, target=objective(i))) for i in range(len(study.directions))]
    return [(target_name, get_param_importances(study, evaluator=evaluator, params=params, target=target))]


def importance_label(v: float) -> str:
    return "<0.01" if v < 0.01 else f"{v:.2f}"


# ------------------------------------------------------------------------------------- EDF


def edf(study: Studies, target: Target, target_name: str) -> Tuple[List[float], List[Tuple[str, List[float]]]]:
    """The grid of 100 values between the smallest and largest value of every study, and per
    study the share of its (finite) values at or below each grid point."""
    check_target(study, target, target_name)
    studies = _studies(study)
    per = []
    for s in studies:
        vals = sorted(value_of(t, target) for t in finite(completed(s), target))
        per.append((s.study_name, vals))
    every = [v for _, vals in per for v in vals]
    if not every:
        _logger.warning("There are no complete trials.")
        return [], []
    lo, hi = min(every), max(every)
    grid = [lo + (hi - lo) * i / 99 for i in range(100)]
    import bisect

    return grid, [(name, [bisect.bisect_right(vals, x) / len(vals) if vals else 0.0 for x in grid]) for name, vals in per]


# ---------------------------------------------------------------------------------- timeline


@dataclass
class Bar:
    number: int
    start: datetime.datetime
    end: datetime.datetime
    state: str
    text: str


TIMELINE_COLORS = {"COMPLETE": "blue", "FAIL": "red", "PRUNED": "orange", "RUNNING": "green", "WAITING": "gray", "INFEASIBLE": "#cccccc"}


def timeline(study: Any, n_recent_trials: Optional[int] = None) -> List[Bar]:
    if n_recent_trials is not None and n_recent_trials <= 0:
        raise ValueError("n_recent_trials must be a positive integer or None.")
    trials = study.get_trials(deepcopy=False)
    if n_recent_trials is not None:
        trials = trials[-n_recent_trials:]
    now = datetime.datetime.now()
    bars = []
    for t in trials:
        if t.datetime_start is None:
            continue
        state = t.state.name
        if t.state == TrialState.COMPLETE and not feasible(t):
            state = "INFEASIBLE"
        bars.append(Bar(t.number, t.datetime_start, t.datetime_complete or now, state, hover_text(t)))
    if not bars:
        _logger.warning("Your study does not have any trials.")
    return bars


# ------------------------------------------------------------------------------ pareto front


@dataclass
class Front:
    names: List[str]
    best: List[Tuple[List[float], FrozenTrial]]
    others: List[Tuple[List[float], FrozenTrial]]
    infeasible: List[Tuple[List[float], FrozenTrial]]


def _dominates(a: List[float], b: List[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto(
    study: Any,
    target_names: Optional[List[str]],
    include_dominated_trials: bool,
    constraints_func: Optional[Callable[[FrozenTrial], Sequence[float]]],
    targets: Optional[Callable[[FrozenTrial], Sequence[float]]],
) -> Front:
    if not study._is_multi_objective() and targets is None:
        raise ValueError("If the `study` is being used for single-objective optimization, please specify the `targets`.")
    trials = completed(study)
    points = [(list(targets(t)) if targets is not None else list(t.values or []), t) for t in trials]
    n = len(points[0][0]) if points else (len(study.directions) if targets is None else 0)
    if targets is None:
        n = len(study.directions)
    if n not in (2, 3):
        raise ValueError(
            "`plot_pareto_front` function only supports 2 or 3 objective studies when using `targets` is `None`. "
            "Please use `targets` if your objective studies have more than 3 objectives."
        )
    if target_names is None:
        target_names = study.metric_names or [f"Objective {i}" for i in range(n)]
    elif len(target_names) != n:
        raise ValueError(f"The length of `target_names` is supposed to be {n}.")
    ok = (lambda t: all(c <= 0.0 for c in constraints_func(t))) if constraints_func is not None else feasible
    good = [(v, t) for v, t in points if ok(t)]
    bad = [(v, t) for v, t in points if not ok(t)]
    signs = [1.0 if d.name == "MINIMIZE" else -1.0 for d in study.directions] if len(study.directions) == n else [1.0] * n
    loss = [[s * x for s, x in zip(signs, v)] for v, _ in good]
    is_best = [not any(_dominates(o, loss[i]) for o in loss) for i in range(len(good))]
    best = [p for p, b in zip(good, is_best) if b]
    others = [p for p, b in zip(good, is_best) if not b] if include_dominated_trials else []
    if not good:
        _logger.warning("Your study does not have any completed and feasible trials.")
    return Front(list(target_names), best, others, bad)


# ----------------------------------------------------------------------- hypervolume history


@dataclass
class Improvement:
    """What a terminator improvement plot draws: after each trial from the first complete one,
    the improvement (and the error, when asked for) over the complete trials so far."""

    numbers: List[int]
    improvements: List[float]
    errors: Optional[List[float]]

    def y_range(self, min_n_trials: int) -> Tuple[float, float]:
        """Optuna's range: the first ``min_n_trials`` points may run above it."""
        lo = min(self.improvements + (self.errors or []))
        tail = self.improvements[min_n_trials:] if len(self.numbers) > min_n_trials else self.improvements
        hi = max(tail + (self.errors or []))
        pad = (hi - lo) * 0.05
        return lo - pad, hi + pad


def terminator_improvement(study: Any, plot_error: bool, improvement_evaluator: Any, error_evaluator: Any) -> Improvement:
    from dspex.terminator import BestValueStagnationEvaluator, CrossValidationErrorEvaluator, RegretBoundEvaluator, StaticErrorEvaluator

    if study._is_multi_objective():
        raise ValueError("This function does not support multi-objective optimization study.")
    improvement_evaluator = improvement_evaluator or RegretBoundEvaluator()
    if error_evaluator is None:
        stagnation = isinstance(improvement_evaluator, BestValueStagnationEvaluator)
        error_evaluator = StaticErrorEvaluator(constant=0) if stagnation else CrossValidationErrorEvaluator()
    out = Improvement([], [], [] if plot_error else None)
    done: List[FrozenTrial] = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            done.append(t)
        if not done:
            continue
        out.numbers.append(t.number)
        out.improvements.append(improvement_evaluator.evaluate(trials=list(done), study_direction=study.direction))
        if out.errors is not None:
            out.errors.append(error_evaluator.evaluate(trials=list(done), study_direction=study.direction))
    return out


def hypervolume_history(study: Any, reference_point: Sequence[float]) -> Tuple[List[int], List[float]]:
    """Per completed trial, the hypervolume of the feasible trials up to it (minimisation
    signs applied to the values and the reference point alike)."""
    if not study._is_multi_objective():
        raise ValueError("Study must be multi-objective. For single-objective optimization, please use plot_optimization_history instead.")
    ref = [float(v) for v in reference_point]
    if len(ref) != len(study.directions):
        raise ValueError("The dimension of the reference point must be the same as the number of objectives.")
    signs = [1.0 if d.name == "MINIMIZE" else -1.0 for d in study.directions]
    ref_min = [s * r for s, r in zip(signs, ref)]
    numbers: List[int] = []
    volumes: List[float] = []
    front: List[List[float]] = []
    hv = 0.0
    trials = completed(study)
    if not trials:
        _logger.warning("Your study does not have any completed trials.")
    for t in trials:
        numbers.append(t.number)
        if feasible(t):
            p = [s * v for s, v in zip(signs, t.values or [])]
            if all(x <= r for x, r in zip(p, ref_min)) and not any(all(a <= b for a, b in zip(q, p)) for q in front):
                front = [q for q in front if not all(a <= b for a, b in zip(p, q))] + [p]
                hv = _native.hypervolume(front, ref_min)
        volumes.append(hv)
    return numbers, volumes


# ----------------------------------------------------------------------- parallel coordinate

MISSING_LABEL = "None"


@dataclass
class Axis:
    """One vertical axis: its label, each trial's value on it (log10 for a log parameter, the
    index for a categorical one), its range and tick marks."""

    label: str
    values: List[float]
    range: Tuple[float, float]
    log: bool = False
    categorical: bool = False
    tickvals: List[float] = field(default_factory=list)
    ticktext: List[str] = field(default_factory=list)

    def normalized(self, values: Optional[List[float]] = None) -> List[float]:
        lo, hi = self.range
        vals = self.values if values is None else values
        return [0.5] * len(vals) if lo == hi else [(v - lo) / (hi - lo) for v in vals]

    def format(self, value: float) -> str:
        for tv, tt in zip(self.tickvals, self.ticktext):
            if math.isclose(value, tv):
                return tt
        return f"{10**value:.3g}" if self.log else f"{value:.3g}"


@dataclass
class Parallel:
    axes: List[Axis]
    n_objective_axes: int
    colors: List[float]
    colorbar_title: str
    reverse_scale: bool
    rank_colors: bool
    draw_order: List[int]
    feasible: Optional[List[bool]]


def _label(name: str) -> str:
    return name if len(name) < 20 else f"{name[:17]}..."


def _missing_at(lo: float, hi: float) -> float:
    # Missing values get a place just below the range (an eighth of the axis).
    return lo - 1.0 if lo == hi else lo - (hi - lo) * 0.12 / 0.88


def _numeric_axis(label: str, values: List[float]) -> Axis:
    return Axis(label, list(values), (min(values), max(values)) if values else (0.0, 0.0))


def _pareto_ranks(losses: List[List[float]]) -> List[int]:
    ranks = [-1] * len(losses)
    left = set(range(len(losses)))
    rank = 0
    while left:
        front = {i for i in left if not any(_dominates(losses[j], losses[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def parallel(study: Any, params: Optional[List[str]], target: Target, target_name: str) -> Parallel:
    multi = target is None and study._is_multi_objective()
    if not multi:
        check_target(study, target, target_name)
    trials = completed(study)
    if multi:
        trials = [t for t in trials if t.values is not None and all(math.isfinite(v) for v in t.values)]
    else:
        trials = finite(trials, target)
    names = sorted({p for t in trials for p in t.params})
    if params is not None:
        for p in params:
            if p not in names:
                raise ValueError(f"Parameter {p} does not exist in your study.")
        names = sorted(set(params))
    if multi:
        labels = study.metric_names or [f"Objective {i}" for i in range(len(study.directions))]
        objective_axes = [_numeric_axis(label, [float((t.values or [])[i]) for t in trials]) for i, label in enumerate(labels)]
        losses = [[-v if d.name == "MAXIMIZE" else v for v, d in zip(t.values or [], study.directions)] for t in trials]
        ranks = _pareto_ranks(losses)
        colors = [float(r) for r in ranks]
        order = sorted(range(len(trials)), key=lambda i: (ranks[i], i), reverse=True)  # worst rank drawn first
        title, reverse = "Pareto Rank", True
    else:
        values = [value_of(t, target) for t in trials]
        objective_axes = [_numeric_axis(target_name, values)]
        colors, order, title = list(values), list(range(len(trials))), target_name
        reverse = target is not None or study.direction.name == "MINIMIZE"
    if not trials:
        _logger.warning("Your study does not have any completed trials.")
        return Parallel(objective_axes, len(objective_axes), colors, title, reverse, multi, order, None)
    feas = [bool(t.constraints) and feasible(t) for t in trials] if any(t.constraints for t in trials) else None
    axes: List[Axis] = []
    numeric_categorical: List[int] = []
    for name in names:
        raw = [t.params.get(name, _MISSING) for t in trials]
        missing = any(v is _MISSING for v in raw)
        given = [v for v in raw if v is not _MISSING]
        dists = [t.distributions[name] for t in trials if name in t.params]
        categorical = any(isinstance(d, CategoricalDistribution) for d in dists)
        log = isinstance(dists[0], (FloatDistribution, IntDistribution)) and dists[0].log
        if log:
            logs = [math.log10(v) for v in given]
            lo, hi = min(logs), max(logs)
            ticks: List[float] = list(range(math.ceil(lo), math.floor(hi) + 1))
            ticks = ([lo] if lo not in ticks else []) + ticks + ([hi] if hi not in ticks else [])
            m = _missing_at(lo, hi)
            vals = [m if v is _MISSING else math.log10(v) for v in raw]
            text = [f"{10**x:.3g}" for x in ticks]
            if missing:
                ticks, text = [m] + ticks, [MISSING_LABEL] + text
            axes.append(Axis(_label(name), vals, (m if missing else lo, hi), True, False, ticks, text))
        elif categorical:
            numeric = _is_numerical(trials, name)
            vocab: Dict[Any, int] = {}
            for v in sorted(given) if numeric else given:
                vocab.setdefault(v, len(vocab))
            labels_ = [str(v) for v in vocab]
            if numeric:
                numeric_categorical.append(len(objective_axes) + len(axes))
            off = 1 if missing else 0
            vals = [0.0 if v is _MISSING else float(vocab[v] + off) for v in raw]
            if missing:
                labels_ = [f"{x} (value)" if x == MISSING_LABEL else x for x in labels_]
            axes.append(Axis(_label(name), vals, (min(vals), max(vals)), False, True, [float(i) for i in range(len(vocab) + off)], ([MISSING_LABEL] if missing else []) + labels_))
        else:
            lo, hi = min(given), max(given)
            m = _missing_at(lo, hi)
            vals = [m if v is _MISSING else float(v) for v in raw]
            ticks = [float(lo)] if lo == hi else [lo + (hi - lo) * i / 4 for i in range(5)]
            axes.append(
                Axis(_label(name), vals, (m if missing else lo, hi), False, False, [m] + ticks if missing else [], [MISSING_LABEL] + [f"{x:.3g}" for x in ticks] if missing else [])
            )
    every = objective_axes + axes
    if numeric_categorical:
        # Trials sorted by their numeric categorical values (the last such axis first).
        idx = sorted(range(len(trials)), key=lambda i: tuple(every[a].values[i] for a in numeric_categorical))
        for ax in every:
            ax.values = [ax.values[i] for i in idx]
        colors = [colors[i] for i in idx]
        if feas is not None:
            feas = [feas[i] for i in idx]
        if multi:
            order = sorted(range(len(trials)), key=lambda i: (colors[i], i), reverse=True)
    return Parallel(every, len(objective_axes), colors, title, reverse, multi, order, feas)


class _Missing:
    pass


_MISSING = _Missing()


# ----------------------------------------------------------------------------------- contour

PADDING = 0.05


@dataclass
class ContourAxis:
    """One parameter on a contour axis: each trial's value (None without it; a categorical one
    as text), the sorted distinct values (numeric ones padded with the range ends) and range."""

    name: str
    values: List[Any]
    indices: List[Any]
    range: Tuple[float, float]
    log: bool
    categorical: bool


@dataclass
class ContourPanel:
    x: ContourAxis
    y: ContourAxis
    z: Dict[Tuple[int, int], float]
    feasible: List[bool]


@dataclass
class Contour:
    params: List[str]
    panels: List[List[ContourPanel]]  # [row: y param][column: x param]
    reverse_scale: bool


def _is_numerical(trials: List[FrozenTrial], name: str) -> bool:
    """Whether a parameter is drawn on a numeric axis: a numeric distribution, or categorical
    choices that are all numbers (the first trial with the parameter decides, as in Optuna)."""
    for t in trials:
        if name in t.params:
            d = t.distributions[name]
            return not isinstance(d, CategoricalDistribution) or all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices)
    return True


def _contour_axis(trials: List[FrozenTrial], name: str) -> ContourAxis:
    numerical = _is_numerical(trials, name)
    values: List[Any] = [t.params.get(name) for t in trials] if numerical else [str(t.params[name]) if name in t.params else None for t in trials]
    given = [v for v in values if v is not None]
    first = next(t.distributions[name] for t in trials if name in t.params)
    log = isinstance(first, (FloatDistribution, IntDistribution)) and first.log
    if log:
        lo, hi = math.log10(min(given)), math.log10(max(given))
        pad = (hi - lo) * PADDING
        rng = (10 ** (lo - pad), 10 ** (hi + pad))
    elif numerical:
        lo, hi = float(min(given)), float(max(given))
        pad = (hi - lo) * PADDING
        rng = (lo - pad, hi + pad)
    else:
        span = len(set(values)) - 1 - (1 if None in values else 0)
        rng = (-span * PADDING, span + span * PADDING)
    indices = sorted(set(given))
    if numerical and len(indices) >= 2:
        indices = [rng[0]] + indices + [rng[1]]
    return ContourAxis(name, values, indices, rng, log, not numerical)


def _pairs_params(trials: List[FrozenTrial], params: Optional[List[str]], keep_order: bool) -> List[str]:
    """The parameters of a pairwise plot: every one the trials have (sorted), or ``params``
    (each must exist; sorted and deduplicated unless ``keep_order``)."""
    known = {p for t in trials for p in t.params}
    if not trials:
        _logger.warning("Your study does not have any completed trials.")
        return []
    if params is None:
        return sorted(known)
    for p in params:
        if p not in known:
            raise ValueError(f"Parameter {p} does not exist in your study.")
    return list(params) if keep_order else sorted(set(params))


def contour(study: Any, params: Optional[List[str]], target: Target, target_name: str) -> Contour:
    check_target(study, target, target_name)
    trials = finite(completed(study), target)
    if params is not None and len(params) <= 1:
        _logger.warning("The length of params must be greater than 1.")
    names = _pairs_params(trials, params, keep_order=False)
    reverse = target is not None or study.direction.name == "MINIMIZE"

    def panel(xp: str, yp: str) -> ContourPanel:
        xa, ya = _contour_axis(trials, xp), _contour_axis(trials, yp)
        z: Dict[Tuple[int, int], float] = {}
        if xp != yp and len(xa.indices) >= 2 and len(ya.indices) >= 2:
            for i, t in enumerate(trials):
                if xp not in t.params or yp not in t.params:
                    continue
                key = (xa.indices.index(xa.values[i]), ya.indices.index(ya.values[i]))
                v = value_of(t, target)
                old = z.get(key)
                # Several trials at one point: the best value (the last one with a target).
                z[key] = v if old is None or target is not None else (min(old, v) if study.direction.name == "MINIMIZE" else max(old, v))
        return ContourPanel(xa, ya, z, [feasible(t) for t in trials])

    if len(names) == 2:
        panels = [[panel(names[0], names[1])]]
    else:
        panels = [[panel(xp, yp) for xp in names] for yp in names]
    return Contour(names, panels, reverse)


# -------------------------------------------------------------------------------------- rank


@dataclass
class RankPanel:
    x: ContourAxis
    y: ContourAxis
    trials: List[FrozenTrial]
    xs: List[Any]
    ys: List[Any]
    zs: List[float]
    shades: List[Optional[float]]  # where the trial's value ranks (0 best-or-worst .. 1); None: infeasible


@dataclass
class Rank:
    params: List[str]
    panels: List[List[RankPanel]]
    target_name: str
    zs: List[float]
    custom_target: bool


def rank(study: Any, params: Optional[List[str]], target: Target, target_name: str) -> Rank:
    check_target(study, target, target_name)
    trials = completed(study)
    names = _pairs_params(trials, params, keep_order=True)
    if not names:
        _logger.warning("params is an empty list.")
    zs = [value_of(t, target) for t in trials]
    ordered = sorted(zs)
    # A value's rank among all (ties share their mean rank), scaled to 0..1.
    positions: Dict[float, List[int]] = {}
    for i, v in enumerate(ordered):
        positions.setdefault(v, []).append(i)
    raw = [sum(positions[v]) / len(positions[v]) for v in zs]
    shades: List[Optional[float]] = [r / (len(trials) - 1) for r in raw] if len(trials) >= 2 else [0.5] * len(trials)
    shades = [None if not feasible(t) else s for t, s in zip(trials, shades)]

    def panel(xp: str, yp: str) -> RankPanel:
        keep = [i for i, t in enumerate(trials) if xp in t.params and yp in t.params]
        return RankPanel(
            _contour_axis(trials, xp), _contour_axis(trials, yp), [trials[i] for i in keep],
            [trials[i].params[xp] for i in keep], [trials[i].params[yp] for i in keep], [zs[i] for i in keep], [shades[i] for i in keep],
        )

    panels = [[panel(names[0], names[1])]] if len(names) == 2 else [[panel(xp, yp) for xp in names] for yp in names]
    return Rank(names, panels, target_name, zs, target is not None)


def quantile(sorted_values: List[float], q: float) -> float:
    """The q-quantile with linear interpolation (NumPy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
