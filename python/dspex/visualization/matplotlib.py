"""The plots of :mod:`dspex.visualization` drawn with matplotlib (``optuna.visualization.
matplotlib``): the same data, each function returning the ``matplotlib.axes.Axes`` it drew on
(an array of them for a slice plot of several parameters). matplotlib is an optional extra.
As in Optuna, these functions are experimental (each call warns)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

from dspex._experimental import experimental_func
from dspex.trial import FrozenTrial
from dspex.visualization import _info
from dspex.visualization._info import Studies, Target


def is_available() -> bool:
    """Whether matplotlib can be imported (the plot functions need it)."""
    return _info.available("matplotlib")


def _plt() -> Any:
    plt = _info.require("matplotlib.pyplot")
    plt.style.use("ggplot")
    return plt


def _axes(title: str, xlabel: str, ylabel: str) -> Any:
    _, ax = _plt().subplots()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


@experimental_func("2.2.0")
def plot_optimization_history(study: Studies, *, target: Target = None, target_name: str = "Objective Value", error_bar: bool = False) -> Any:
    """See :func:`dspex.visualization.plot_optimization_history`."""
    ax = _axes("Optimization History Plot", "Trial", target_name)
    for h in _info.history(study, target, target_name, error_bar):
        if h.values.stds is None:
            ax.scatter(h.values.numbers, h.values.values, label=h.values.label)
        else:
            ax.errorbar(h.values.numbers, h.values.values, yerr=h.values.stds, fmt="o", label=h.values.label)
        if h.best is not None:
            ax.plot(h.best.numbers, h.best.values, label=h.best.label)
            if h.best.stds is not None:
                lo = [v - s for v, s in zip(h.best.values, h.best.stds)]
                hi = [v + s for v, s in zip(h.best.values, h.best.stds)]
                ax.fill_between(h.best.numbers, lo, hi, alpha=0.2, color="red")
        if h.infeasible.numbers:
            ax.scatter(h.infeasible.numbers, h.infeasible.values, color="#cccccc")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return ax


@experimental_func("2.2.0")
def plot_intermediate_values(study: Any) -> Any:
    """See :func:`dspex.visualization.plot_intermediate_values`."""
    ax = _axes("Intermediate Values Plot", "Step", "Intermediate Value")
    for c in _info.intermediate(study):
        ax.plot(c.steps, c.values, marker=".", alpha=0.7, label=f"Trial{c.number}", color=None if c.feasible else "#CCCCCC")
    return ax


@experimental_func("2.2.0")
def plot_slice(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """See :func:`dspex.visualization.plot_slice`."""
    plt = _plt()
    axes_info = _info.slices(study, params, target, target_name)
    if not axes_info:
        _, ax = plt.subplots()
        ax.set_title("Slice Plot")
        return ax
    fig, axes = plt.subplots(1, len(axes_info), sharey=True, squeeze=False, figsize=(max(6.4, 3.2 * len(axes_info)), 4.8))
    fig.suptitle("Slice Plot")
    last = None
    for i, (ax, info) in enumerate(zip(axes[0], axes_info)):
        if info.categorical:
            pos = {label: k for k, label in enumerate(info.labels or [])}
            xs = [pos[x] for x in info.x]
            ax.set_xticks(range(len(pos)), list(pos))
            ixs = [pos[x] for x in info.infeasible_x]
        else:
            xs, ixs = info.x, info.infeasible_x
            if info.log:
                ax.set_xscale("log")
        last = ax.scatter(xs, info.y, c=info.numbers, cmap="Blues", edgecolors="grey")
        if ixs:
            ax.scatter(ixs, info.infeasible_y, color="#cccccc")
        ax.set_xlabel(info.param)
        if i == 0:
            ax.set_ylabel(target_name)
    if last is not None:
        fig.colorbar(last, ax=axes[0].tolist(), label="Trial")
    return axes[0] if len(axes_info) > 1 else axes[0][0]


@experimental_func("2.2.0")
def plot_param_importances(study: Any, evaluator: Any = None, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """See :func:`dspex.visualization.plot_param_importances`."""
    ax = _axes("Hyperparameter Importances", "Hyperparameter Importance", "Hyperparameter")
    groups = _info.importances(study, evaluator, params, target, target_name)
    height = 0.8 / max(1, len(groups))
    for g, (label, imp) in enumerate(groups):
        names = list(reversed(list(imp)))
        values = [imp[n] for n in names]
        pos = [i + g * height for i in range(len(names))]
        bars = ax.barh(pos, values, height=height, label=label)
        ax.bar_label(bars, labels=[_info.importance_label(v) for v in values], padding=3)
        if g == 0:
            ax.set_yticks(pos, names)
    if len(groups) > 1:
        ax.legend()
    return ax


@experimental_func("2.2.0")
def plot_edf(study: Studies, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """See :func:`dspex.visualization.plot_edf`."""
    ax = _axes("Empirical Distribution Function Plot", target_name, "Cumulative Probability")
    grid, lines = _info.edf(study, target, target_name)
    for name, y in lines:
        ax.plot(grid, y, drawstyle="steps-post", label=name)
    ax.set_ylim(0, 1)
    if lines:
        ax.legend()
    return ax


@experimental_func("3.2.0")
def plot_timeline(study: Any, n_recent_trials: Optional[int] = None) -> Any:
    """See :func:`dspex.visualization.plot_timeline`."""
    ax = _axes("Timeline Plot", "Datetime", "Trial")
    bars = _info.timeline(study, n_recent_trials)
    for state, color in _info.TIMELINE_COLORS.items():
        mine = [b for b in bars if b.state == state]
        if mine:
            import matplotlib.dates as mdates

            ax.barh([b.number for b in mine], [(b.end - b.start).total_seconds() / 86400 for b in mine], left=[mdates.date2num(b.start) for b in mine], color=color, label=state)
    if bars:
        ax.xaxis_date()
        ax.legend()
    return ax


def _contour_panel(ax: Any, panel: _info.ContourPanel, reverse: bool) -> Any:
    """Filled contours through the trials' points (categorical values at their index), with the
    points on top; None when there is nothing to draw."""
    if panel.x.name == panel.y.name or not panel.z:
        return None
    def position(axis: _info.ContourAxis, v: Any) -> float:
        return float(axis.indices.index(v)) if axis.categorical else float(v)
    pts = [(position(panel.x, x), position(panel.y, y), ok) for x, y, ok in zip(panel.x.values, panel.y.values, panel.feasible) if x is not None and y is not None]
    xs = [panel.x.indices[i] for i, _ in panel.z]
    ys = [panel.y.indices[j] for _, j in panel.z]
    px = [position(panel.x, v) for v in xs]
    py = [position(panel.y, v) for v in ys]
    filled = None
    if len(set(zip(px, py))) >= 3 and len(set(px)) > 1 and len(set(py)) > 1:
        try:
            filled = ax.tricontourf(px, py, list(panel.z.values()), levels=20, cmap="Blues_r" if reverse else "Blues")
        except (ValueError, RuntimeError):  # points on a line: no triangulation
            filled = None
    ax.scatter([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]], color="black", edgecolors="grey", s=12)
    ax.scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], color="#cccccc", s=12)
    for axis, set_ticks, set_scale in ((panel.x, ax.set_xticks, ax.set_xscale), (panel.y, ax.set_yticks, ax.set_yscale)):
        if axis.categorical:
            set_ticks(range(len(axis.indices)), axis.indices)
        elif axis.log:
            set_scale("log")
    return filled


@experimental_func("2.2.0")
def plot_contour(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """See :func:`dspex.visualization.plot_contour`."""
    plt = _plt()
    info = _info.contour(study, params, target, target_name)
    n = len(info.params)
    if n <= 1:
        _, ax = plt.subplots()
        ax.set_title("Contour Plot")
        return ax
    if n == 2:
        fig, ax = plt.subplots()
        ax.set_title("Contour Plot")
        filled = _contour_panel(ax, info.panels[0][0], info.reverse_scale)
        ax.set_xlabel(info.params[0])
        ax.set_ylabel(info.params[1])
        if filled is not None:
            fig.colorbar(filled, ax=ax, label=target_name)
        return ax
    fig, axes = plt.subplots(n, n, figsize=(3 * n, 3 * n), squeeze=False)
    fig.suptitle("Contour Plot")
    for yi, yp in enumerate(info.params):
        for xi, xp in enumerate(info.params):
            ax = axes[yi][xi]
            _contour_panel(ax, info.panels[yi][xi], info.reverse_scale)
            if xi == 0:
                ax.set_ylabel(yp)
            if yi == n - 1:
                ax.set_xlabel(xp)
    return axes


@experimental_func("3.2.0")
def plot_rank(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """See :func:`dspex.visualization.plot_rank`."""
    plt = _plt()
    info = _info.rank(study, params, target, target_name)
    n = len(info.params)
    cmap = plt.get_cmap("RdYlBu_r")

    def draw(ax: Any, panel: _info.RankPanel) -> None:
        colors = ["#cccccc" if s is None else cmap(s) for s in panel.shades]
        xs = [str(v) for v in panel.xs] if panel.x.categorical else panel.xs
        ys = [str(v) for v in panel.ys] if panel.y.categorical else panel.ys
        ax.scatter(xs, ys, c=colors, edgecolors="grey")
        if panel.x.log:
            ax.set_xscale("log")
        if panel.y.log:
            ax.set_yscale("log")

    if n == 0:
        _, ax = plt.subplots()
        ax.set_title(f"Rank ({target_name})")
        return ax
    if n == 2:
        _, ax = plt.subplots()
        ax.set_title(f"Rank ({target_name})")
        draw(ax, info.panels[0][0])
        ax.set_xlabel(info.params[0])
        ax.set_ylabel(info.params[1])
        return ax
    fig, axes = plt.subplots(n, n, figsize=(3 * n, 3 * n), squeeze=False)
    fig.suptitle(f"Rank ({target_name})")
    for yi, yp in enumerate(info.params):
        for xi, xp in enumerate(info.params):
            draw(axes[yi][xi], info.panels[yi][xi])
            if xi == 0:
                axes[yi][xi].set_ylabel(yp)
            if yi == n - 1:
                axes[yi][xi].set_xlabel(xp)
    return axes


@experimental_func("2.2.0")
def plot_parallel_coordinate(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """See :func:`dspex.visualization.plot_parallel_coordinate`."""
    plt = _plt()
    info = _info.parallel(study, params, target, target_name)
    _, ax = plt.subplots()
    ax.set_title("Parallel Coordinate Plot")
    if len(info.axes) == info.n_objective_axes or not info.axes[0].values:
        return ax
    lo, hi = min(info.colors), max(info.colors)
    cmap = plt.get_cmap("Blues_r" if info.reverse_scale else "Blues")
    xs = list(range(len(info.axes)))
    normalized = [a.normalized() for a in info.axes]
    for i in info.draw_order:
        shade = 0.5 if lo == hi else (info.colors[i] - lo) / (hi - lo)
        dotted = info.feasible is not None and not info.feasible[i]
        ax.plot(xs, [n[i] for n in normalized], color=cmap(shade), alpha=0.5, linestyle=":" if dotted else "-")
    ax.set_xticks(xs, [a.label for a in info.axes])
    ax.set_yticks([])
    for x in xs:
        ax.axvline(x, color="#888", linewidth=1)
    return ax


@experimental_func("2.8.0")
def plot_pareto_front(
    study: Any,
    *,
    target_names: Optional[List[str]] = None,
    include_dominated_trials: bool = True,
    constraints_func: Optional[Callable[[FrozenTrial], Sequence[float]]] = None,
    targets: Optional[Callable[[FrozenTrial], Sequence[float]]] = None,
) -> Any:
    """See :func:`dspex.visualization.plot_pareto_front`."""
    plt = _plt()
    front = _info.pareto(study, target_names, include_dominated_trials, constraints_func, targets)
    o = range(len(front.names))
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d" if len(o) == 3 else None)
    ax.set_title("Pareto-front Plot")
    for points, color, label in ((front.others, "tab:blue", "Trial"), (front.best, "tab:red", "Best Trial"), (front.infeasible, "#cccccc", "Infeasible Trial")):
        if points:
            ax.scatter(*[[p[0][i] for p in points] for i in o], color=color, label=label)
    ax.set_xlabel(front.names[o[0]])
    ax.set_ylabel(front.names[o[1]])
    if len(o) == 3:
        ax.set_zlabel(front.names[o[2]])
    ax.legend()
    return ax


@experimental_func("3.3.0")
def plot_hypervolume_history(study: Any, reference_point: Sequence[float]) -> Any:
    """See :func:`dspex.visualization.plot_hypervolume_history`."""
    ax = _axes("Hypervolume History Plot", "Trial", "Hypervolume")
    numbers, volumes = _info.hypervolume_history(study, reference_point)
    ax.plot(numbers, volumes, marker="o")
    return ax


@experimental_func("3.2.0")
def plot_terminator_improvement(study: Any, plot_error: bool = False, improvement_evaluator: Any = None, error_evaluator: Any = None, min_n_trials: int = 20) -> Any:
    """See :func:`dspex.visualization.plot_terminator_improvement`."""
    ax = _axes("Terminator Improvement Plot", "Trial", "Terminator Improvement")
    info = _info.terminator_improvement(study, plot_error, improvement_evaluator, error_evaluator)
    if not info.numbers:
        return ax
    blue, red = "#636efa", "#ef553b"
    ax.plot(info.numbers[: min_n_trials + 1], info.improvements[: min_n_trials + 1], marker="o", color=blue, alpha=0.25, label="Terminator Improvement" if len(info.numbers) <= min_n_trials else None)
    if len(info.numbers) > min_n_trials:
        ax.plot(info.numbers[min_n_trials:], info.improvements[min_n_trials:], marker="o", color=blue, label="Terminator Improvement")
    if info.errors is not None:
        ax.plot(info.numbers, info.errors, marker="o", color=red, label="Error")
    ax.set_ylim(*info.y_range(min_n_trials))
    ax.legend()
    return ax


__all__ = [
    "is_available",
    "plot_contour",
    "plot_edf",
    "plot_hypervolume_history",
    "plot_intermediate_values",
    "plot_optimization_history",
    "plot_parallel_coordinate",
    "plot_param_importances",
    "plot_pareto_front",
    "plot_rank",
    "plot_slice",
    "plot_terminator_improvement",
    "plot_timeline",
]
