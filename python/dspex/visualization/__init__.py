"""Plots of a study with Optuna's functions and signatures (``optuna.visualization``), drawn
with plotly; :mod:`dspex.visualization.matplotlib` draws the same with matplotlib.

plotly is an optional extra (``pip install "dspex[plot]"``); importing this module does not
need it, calling a plot function does. Each function returns a ``plotly.graph_objects.Figure``.

There: optimization history, intermediate values, slice, parameter importances, EDF,
timeline, parallel coordinate, contour, rank, Pareto front, hypervolume history and terminator
improvement.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, List, Optional, Sequence

from dspex._experimental import experimental_func
from dspex.trial import FrozenTrial
from dspex.visualization import _info
from dspex.visualization import matplotlib as matplotlib  # noqa: PLC0414  (Optuna's layout)
from dspex.visualization._info import Studies, Target


def _scale(colors: List[str]) -> List[list]:
    return [[i / (len(colors) - 1), c] for i, c in enumerate(colors)]


# ColorBrewer's Blues (all trials) and Reds (the best ones), as plotly names them.
COLOR_SCALE = _scale(["rgb(247,251,255)", "rgb(222,235,247)", "rgb(198,219,239)", "rgb(158,202,225)", "rgb(107,174,214)", "rgb(66,146,198)", "rgb(33,113,181)", "rgb(8,81,156)", "rgb(8,48,107)"])
BEST_COLOR_SCALE = _scale(["rgb(255,245,240)", "rgb(254,224,210)", "rgb(252,187,161)", "rgb(252,146,114)", "rgb(251,106,74)", "rgb(239,59,44)", "rgb(203,24,29)", "rgb(165,15,21)", "rgb(103,0,13)"])


def is_available() -> bool:
    """Whether plotly can be imported (the plot functions need it)."""
    return _info.available("plotly")


def _go() -> Any:
    return _info.require("plotly.graph_objects")


def plot_optimization_history(study: Studies, *, target: Target = None, target_name: str = "Objective Value", error_bar: bool = False) -> Any:
    """Objective value of each completed trial and the best value so far (one study, or several
    side by side; ``error_bar`` draws their mean and standard deviation instead)."""
    go = _go()
    layout = go.Layout(title="Optimization History Plot", xaxis={"title": "Trial"}, yaxis={"title": target_name})
    traces = []
    for h in _info.history(study, target, target_name, error_bar):
        error_y = None if h.values.stds is None else {"type": "data", "array": h.values.stds, "visible": True}
        traces.append(go.Scatter(x=h.values.numbers, y=h.values.values, error_y=error_y, mode="markers", name=h.values.label))
        if h.best is not None:
            traces.append(go.Scatter(x=h.best.numbers, y=h.best.values, name=h.best.label, mode="lines"))
            if h.best.stds is not None:
                upper = [v + s for v, s in zip(h.best.values, h.best.stds)]
                lower = [v - s for v, s in zip(h.best.values, h.best.stds)]
                traces.append(go.Scatter(x=h.best.numbers, y=upper, mode="lines", line={"width": 0.01}, showlegend=False))
                traces.append(go.Scatter(x=h.best.numbers, y=lower, mode="none", showlegend=False, fill="tonexty", fillcolor="rgba(255,0,0,0.2)"))
        traces.append(go.Scatter(x=h.infeasible.numbers, y=h.infeasible.values, mode="markers", name="Infeasible Trial", marker={"color": "#cccccc"}, showlegend=False))
    return go.Figure(data=traces, layout=layout)


def plot_intermediate_values(study: Any) -> Any:
    """The values each trial reported (``trial.report``) over its steps."""
    go = _go()
    layout = go.Layout(title="Intermediate Values Plot", xaxis={"title": "Step"}, yaxis={"title": "Intermediate Value"}, showlegend=False)
    marker = {"maxdisplayed": 10}
    traces = [
        go.Scatter(x=tuple(c.steps), y=tuple(c.values), mode="lines+markers", marker=marker if c.feasible else {**marker, "color": "#CCCCCC"}, name=f"Trial{c.number}")
        for c in _info.intermediate(study)
    ]
    return go.Figure(data=traces, layout=layout)


def _slice_traces(go: Any, ax: _info.SliceAxis) -> list:
    marker = {"line": {"width": 0.5, "color": "Grey"}, "color": ax.numbers, "colorscale": COLOR_SCALE, "colorbar": {"title": "Trial", "x": 1.0, "xpad": 40}}
    traces = [go.Scatter(x=ax.x, y=ax.y, mode="markers", name="Feasible Trial", marker=marker, showlegend=False)]
    if ax.infeasible_x:
        traces.append(go.Scatter(x=ax.infeasible_x, y=ax.infeasible_y, mode="markers", name="Infeasible Trial", marker={"color": "#cccccc"}, showlegend=False))
    return traces


def plot_slice(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """The objective value against each parameter, one panel per parameter (coloured by trial
    number); trials without a parameter are left out of its panel."""
    go = _go()
    axes = _info.slices(study, params, target, target_name)
    layout = go.Layout(title="Slice Plot")
    if not axes:
        return go.Figure(data=[], layout=layout)
    if len(axes) == 1:
        fig = go.Figure(data=_slice_traces(go, axes[0]), layout=layout)
        fig.update_xaxes(title_text=axes[0].param)
        fig.update_yaxes(title_text=target_name)
        _slice_axis(fig, axes[0])
        return fig
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(axes), shared_yaxes=True)
    fig.update_layout(layout)
    for col, ax in enumerate(axes, start=1):
        traces = _slice_traces(go, ax)
        traces[0].update(marker={"showscale": col == 1})
        for tr in traces:
            fig.add_trace(tr, row=1, col=col)
        fig.update_xaxes(title_text=ax.param, row=1, col=col)
        if col == 1:
            fig.update_yaxes(title_text=target_name, row=1, col=col)
        _slice_axis(fig, ax, row=1, col=col)
    fig.update_layout(width=300 * len(axes))
    return fig


def _slice_axis(fig: Any, ax: _info.SliceAxis, **where: int) -> None:
    if ax.categorical:
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=ax.labels, **where)
    elif ax.log:
        fig.update_xaxes(type="log", **where)


def plot_param_importances(
    study: Any, evaluator: Any = None, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value"
) -> Any:
    """Horizontal bars of :func:`dspex.importance.get_param_importances` (one set per objective
    of a multi-objective study without a target), the most important at the top."""
    go = _go()
    layout = go.Layout(title="Hyperparameter Importances", xaxis={"title": "Hyperparameter Importance"}, yaxis={"title": "Hyperparameter"})
    groups = _info.importances(study, evaluator, params, target, target_name)
    traces = []
    for label, imp in groups:
        names = list(reversed(list(imp)))
        values = [imp[n] for n in names]
        traces.append(
            go.Bar(
                x=values,
                y=names,
                name=label,
                text=[_info.importance_label(v) for v in values],
                textposition="outside",
                cliponaxis=False,
                hovertemplate=[f"{n} ({_param_kind(study, n)}): {v}<extra></extra>" for n, v in zip(names, values)],
                orientation="h",
            )
        )
    return go.Figure(data=traces, layout=layout)


def _param_kind(study: Any, name: str) -> str:
    for t in study.get_trials(deepcopy=False):
        if name in t.distributions:
            return type(t.distributions[name]).__name__
    return ""


def plot_edf(study: Studies, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """Empirical distribution function of the objective values of one or several studies."""
    go = _go()
    layout = go.Layout(title="Empirical Distribution Function Plot", xaxis={"title": target_name}, yaxis={"title": "Cumulative Probability", "range": [0, 1]})
    grid, lines = _info.edf(study, target, target_name)
    return go.Figure(data=[go.Scatter(x=grid, y=y, name=name, mode="lines") for name, y in lines], layout=layout)


def plot_timeline(study: Any, n_recent_trials: Optional[int] = None) -> Any:
    """Each trial as a bar from its start to its end (now for a running one), coloured by state."""
    go = _go()
    bars = _info.timeline(study, n_recent_trials)
    layout = go.Layout(title="Timeline Plot", xaxis={"title": "Datetime", "type": "date"}, yaxis={"title": "Trial"}, showlegend=True)
    traces = []
    for state, color in _info.TIMELINE_COLORS.items():
        mine = [b for b in bars if b.state == state]
        if not mine:
            continue
        traces.append(
            go.Bar(
                name=state,
                x=[(b.end - b.start).total_seconds() * 1000 for b in mine],
                y=[b.number for b in mine],
                base=[b.start.isoformat() for b in mine],
                text=[b.text for b in mine],
                hovertemplate="%{text}<extra>" + state + "</extra>",
                orientation="h",
                marker={"color": color},
                textposition="none",
            )
        )
    fig = go.Figure(data=traces, layout=layout)
    if bars:
        fig.update_xaxes(range=[min(b.start for b in bars).isoformat(), max(b.end for b in bars).isoformat()])
    return fig


def plot_pareto_front(
    study: Any,
    *,
    target_names: Optional[List[str]] = None,
    include_dominated_trials: bool = True,
    constraints_func: Optional[Callable[[FrozenTrial], Sequence[float]]] = None,
    targets: Optional[Callable[[FrozenTrial], Sequence[float]]] = None,
) -> Any:
    """The completed trials in objective space (2 or 3 objectives), the Pareto-optimal ones
    in red, the dominated ones in blue, infeasible ones in grey."""
    go = _go()
    front = _info.pareto(study, target_names, include_dominated_trials, constraints_func, targets)
    three = len(front.names) == 3

    def scatter(points: list, colorscale: Any, title: str, extra: Optional[dict] = None) -> Any:
        coords = {k: [p[0][i] for p in points] for i, k in enumerate(["x", "y", "z"][: len(front.names)])}
        marker: dict = {"line": {"width": 0.5, "color": "Grey"}, "color": [p[1].number for p in points], "colorscale": colorscale, "colorbar": {"title": title, **(extra or {})}}
        cls = go.Scatter3d if three else go.Scatter
        return cls(**coords, mode="markers", showlegend=False, text=[_info.hover_text(p[1]) for p in points], hovertemplate="%{text}<extra>" + title + "</extra>", marker=marker)

    traces = []
    if front.infeasible:
        t = scatter(front.infeasible, COLOR_SCALE, "Infeasible Trial")
        t.update(marker={"color": "#cccccc", "colorscale": None, "colorbar": None, "showscale": False})
        traces.append(t)
    traces.append(scatter(front.others, COLOR_SCALE, "Trial"))
    traces.append(scatter(front.best, BEST_COLOR_SCALE, "Best Trial", {"x": 1.1, "xpad": 40}))
    names = front.names
    if three:
        layout = go.Layout(title="Pareto-front Plot", scene={"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]})
    else:
        layout = go.Layout(title="Pareto-front Plot", xaxis_title=names[0], yaxis_title=names[1])
    return go.Figure(data=traces, layout=layout)


def _contour_traces(go: Any, panel: _info.ContourPanel, reverse: bool, target_name: str) -> list:
    """The contour of one pair of parameters (values at the trials' points, plotly fills the
    gaps), and the feasible and infeasible trials as points."""
    if len(panel.x.indices) < 2 or len(panel.y.indices) < 2 or not panel.z:
        if panel.x.name != panel.y.name and len(panel.x.indices) >= 2 and len(panel.y.indices) >= 2:
            warnings.warn(f"Contour plot will not be displayed because `{panel.x.name}` and `{panel.y.name}` cannot co-exist in `trial.params`.", UserWarning, stacklevel=3)
        return [go.Contour(), go.Scatter(), go.Scatter()]
    z: List[List[Optional[float]]] = [[None] * len(panel.x.indices) for _ in panel.y.indices]
    for (xi, yi), v in panel.z.items():
        z[yi][xi] = v
    points: dict = {True: ([], []), False: ([], [])}
    for xv, yv, ok in zip(panel.x.values, panel.y.values, panel.feasible):
        if xv is not None and yv is not None:
            points[ok][0].append(xv)
            points[ok][1].append(yv)
    contour = go.Contour(
        x=panel.x.indices, y=panel.y.indices, z=z, colorbar={"title": target_name}, colorscale=COLOR_SCALE, connectgaps=True,
        contours_coloring="heatmap", hoverinfo="none", line_smoothing=1.3, reversescale=reverse,
    )
    scatters = [
        go.Scatter(x=points[ok][0], y=points[ok][1], marker={"line": {"width": 2.0, "color": "Gray"}, "color": "black" if ok else "#cccccc"}, mode="markers", name=name, showlegend=False)
        for ok, name in ((True, "Feasible Trial"), (False, "Infeasible Trial"))
    ]
    return [contour, *scatters]


def _contour_axes(fig: Any, panel: _info.ContourPanel, **where: int) -> None:
    fig.update_xaxes(range=panel.x.range, **where)
    fig.update_yaxes(range=panel.y.range, **where)
    for update, axis in ((fig.update_xaxes, panel.x), (fig.update_yaxes, panel.y)):
        if axis.categorical:
            update(type="category", **where)
        if axis.log:
            update(range=[math.log10(p) for p in axis.range], type="log", **where)


def plot_contour(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """The objective value over each pair of parameters (one panel per pair, or a single one
    for two parameters), with the trials as points."""
    go = _go()
    info = _info.contour(study, params, target, target_name)
    layout = go.Layout(title="Contour Plot")
    names = info.params
    if len(names) <= 1:
        return go.Figure(data=[], layout=layout)
    if len(names) == 2:
        panel = info.panels[0][0]
        fig = go.Figure(data=_contour_traces(go, panel, info.reverse_scale, target_name), layout=layout)
        fig.update_xaxes(title_text=names[0])
        fig.update_yaxes(title_text=names[1])
        _contour_axes(fig, panel)
        return fig
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(names), cols=len(names), shared_xaxes=True, shared_yaxes=True)
    fig.update_layout(layout)
    first = True
    for xi, xp in enumerate(names):
        for yi, yp in enumerate(names):
            where = {"row": yi + 1, "col": xi + 1}
            panel = info.panels[yi][xi]
            if xp == yp:
                fig.add_trace(go.Scatter(), **where)
            else:
                contour, feasible_points, _ = _contour_traces(go, panel, info.reverse_scale, target_name)
                contour.update(showscale=first)
                first = False
                fig.add_trace(contour, **where)
                fig.add_trace(feasible_points, **where)
            _contour_axes(fig, panel, **where)
            if xi == 0:
                fig.update_yaxes(title_text=yp, **where)
            if yi == len(names) - 1:
                fig.update_xaxes(title_text=xp, **where)
    return fig


def _rank_trace(go: Any, panel: _info.RankPanel, target_name: str, raw_objectives: bool) -> Any:
    from plotly.colors import sample_colorscale

    colors = [("rgb(204, 204, 204)" if s is None else sample_colorscale("RdYlBu_r", [s])[0]) for s in panel.shades]

    def hover(trial: FrozenTrial, z: float) -> str:
        lines = [f"Trial #{trial.number}", *(f"{k}: {v}" for k, v in trial.params.items()), f"<b>{target_name}: {z}</b>"]
        if raw_objectives:
            lines += [f"Objective #{i}: {v}" for i, v in enumerate(trial.values or [])]
        return "<br>".join(lines)

    return go.Scatter(
        x=[str(v) for v in panel.xs] if panel.x.categorical else panel.xs,
        y=[str(v) for v in panel.ys] if panel.y.categorical else panel.ys,
        marker={"color": colors, "line": {"width": 0.5, "color": "Grey"}},
        mode="markers",
        showlegend=False,
        hovertemplate="%{hovertext}<extra></extra>",
        hovertext=[hover(t, z) for t, z in zip(panel.trials, panel.zs)],
    )


def plot_rank(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """Each pair of parameters with the trials as points coloured by how their objective
    value ranks (red high, blue low; infeasible grey)."""
    go = _go()
    info = _info.rank(study, params, target, target_name)
    layout = go.Layout(title=f"Rank ({target_name})")
    names = info.params
    if not names:
        return go.Figure(data=[], layout=layout)
    if len(names) == 2:
        panel = info.panels[0][0]
        fig = go.Figure(data=[_rank_trace(go, panel, target_name, info.custom_target)], layout=layout)
        fig.update_xaxes(title_text=names[0])
        fig.update_yaxes(title_text=names[1])
        _contour_axes(fig, _info.ContourPanel(panel.x, panel.y, {}, []))
    else:
        from plotly.subplots import make_subplots

        n = len(names)
        fig = make_subplots(rows=n, cols=n, shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.08 / n, vertical_spacing=0.08 / n)
        fig.update_layout(layout)
        for xi, xp in enumerate(names):
            for yi, yp in enumerate(names):
                where = {"row": yi + 1, "col": xi + 1}
                panel = info.panels[yi][xi]
                fig.add_trace(_rank_trace(go, panel, target_name, info.custom_target), **where)
                _contour_axes(fig, _info.ContourPanel(panel.x, panel.y, {}, []), **where)
                if xi == 0:
                    fig.update_yaxes(title_text=yp, **where)
                if yi == n - 1:
                    fig.update_xaxes(title_text=xp, **where)
    ordered = sorted(info.zs)
    qs = [0, 0.25, 0.5, 0.75, 1]
    text = [f"{label} ({_info.quantile(ordered, q):3g})" for label, q in zip(["min.", "25%", "50%", "75%", "max."], qs)]
    fig.add_trace(
        go.Scatter(
            x=[None], y=[None], mode="markers", hoverinfo="none", showlegend=False,
            marker={"colorscale": "RdYlBu_r", "showscale": True, "cmin": 0, "cmax": 1, "colorbar": {"thickness": 10, "tickvals": qs, "ticktext": text}},
        )
    )
    return fig


def plot_parallel_coordinate(study: Any, params: Optional[List[str]] = None, *, target: Target = None, target_name: str = "Objective Value") -> Any:
    """Each completed trial as a line across one axis per objective and per parameter (log
    parameters on a log axis, categorical ones by choice, missing values below each axis),
    coloured by its objective value (by Pareto rank for several objectives), infeasible ones
    dotted."""
    go = _go()
    from plotly.colors import sample_colorscale

    info = _info.parallel(study, params, target, target_name)
    layout = go.Layout(title={"text": "Parallel Coordinate Plot", "y": 1, "yanchor": "bottom", "yref": "paper"})
    if len(info.axes) == info.n_objective_axes or not info.axes[0].values:
        return go.Figure(data=[], layout=layout)
    lo, hi = (-0.5, max(info.colors) + 0.5) if info.rank_colors else (min(info.colors), max(info.colors))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    shade = [(c - lo) / (hi - lo) for c in info.colors]
    if info.reverse_scale:
        shade = [1.0 - c for c in shade]
    colors = sample_colorscale(COLOR_SCALE, shade)
    xs = list(range(len(info.axes)))
    normalized = [ax.normalized() for ax in info.axes]
    traces = []
    for i in info.draw_order:
        ok = info.feasible is None or info.feasible[i]
        traces.append(
            go.Scatter(
                x=xs,
                y=[n[i] for n in normalized],
                customdata=[[ax.label, ax.format(ax.values[i])] for ax in info.axes],
                mode="lines",
                line={"color": colors[i], "dash": "solid" if ok else "dot", "width": 1.2},
                opacity=0.5,
                showlegend=False,
                hovertemplate="%{customdata[0]}: %{customdata[1]}<extra></extra>",
            )
        )
    if info.feasible is not None:
        for name, dash in (("Feasible", "solid"), ("Infeasible", "dot")):
            traces.append(go.Scatter(x=[None], y=[None], mode="lines", line={"color": "#2F3B52", "dash": dash, "width": 2}, name=name, showlegend=True, hoverinfo="skip"))
    colorbar: dict = {"title": info.colorbar_title}
    if info.rank_colors:
        colorbar["tickvals"] = list(range(int(max(info.colors)) + 1))
    marker = {"color": [lo, hi], "cmin": lo, "cmax": hi, "colorscale": COLOR_SCALE, "reversescale": info.reverse_scale, "showscale": True, "colorbar": colorbar}
    traces.append(go.Scatter(x=[None, None], y=[None, None], mode="markers", marker=marker, showlegend=False, hoverinfo="skip"))
    annotations = []
    for x, ax in enumerate(info.axes):
        if ax.tickvals:
            ticks, text = ax.tickvals, ax.ticktext or [f"{v:.3g}" for v in ax.tickvals]
        elif ax.range[0] == ax.range[1]:
            ticks, text = [ax.range[0]], [f"{ax.range[0]:.3g}"]
        else:
            ticks = [ax.range[0] + (ax.range[1] - ax.range[0]) * k / 4 for k in range(5)]
            text = [f"{v:.3g}" for v in ticks]
        for y, t in zip(ax.normalized(ticks), text):
            annotations.append({"x": x, "y": y, "text": t, "showarrow": False, "xanchor": "right", "xshift": -4, "font": {"size": 10, "color": "#555"}})
    layout.update(
        xaxis={"tickmode": "array", "tickvals": xs, "ticktext": [ax.label for ax in info.axes], "range": (-0.2, len(xs) - 0.8), "showgrid": False, "zeroline": False},
        yaxis={"range": (-0.08, 1.08), "visible": False, "fixedrange": True},
        annotations=annotations,
        shapes=[{"type": "line", "x0": x, "x1": x, "y0": 0, "y1": 1, "line": {"color": "#888", "width": 1}, "layer": "below"} for x in xs],
        hovermode="closest",
        plot_bgcolor="white",
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1, "yanchor": "bottom"},
    )
    return go.Figure(data=traces, layout=layout)


def plot_hypervolume_history(study: Any, reference_point: Sequence[float]) -> Any:
    """Hypervolume of the feasible trials so far (up to ``reference_point``) after each
    completed trial of a multi-objective study."""
    go = _go()
    numbers, volumes = _info.hypervolume_history(study, reference_point)
    layout = go.Layout(title="Hypervolume History Plot", xaxis={"title": "Trial"}, yaxis={"title": "Hypervolume"})
    return go.Figure(data=[go.Scatter(x=numbers, y=volumes, mode="lines+markers")], layout=layout)


@experimental_func("3.2.0")
def plot_terminator_improvement(study: Any, plot_error: bool = False, improvement_evaluator: Any = None, error_evaluator: Any = None, min_n_trials: int = 20) -> Any:
    """How much the study could still improve after each trial (``improvement_evaluator``,
    default :class:`~dspex.terminator.RegretBoundEvaluator`), lighter for the first
    ``min_n_trials``; with ``plot_error``, the objective's error too (``error_evaluator``,
    default :class:`~dspex.terminator.CrossValidationErrorEvaluator`)."""
    go = _go()
    info = _info.terminator_improvement(study, plot_error, improvement_evaluator, error_evaluator)
    layout = go.Layout(title="Terminator Improvement Plot", xaxis={"title": "Trial"}, yaxis={"title": "Terminator Improvement"})
    fig = go.Figure(layout=layout)
    if not info.numbers:
        warnings.warn("There are no complete trials.", UserWarning, stacklevel=2)
        return fig

    def scatter(xs: List[int], ys: List[float], opacity: float, legend: bool) -> Any:
        color = f"rgba(99, 110, 250, {opacity})"
        return go.Scatter(x=xs, y=ys, mode="markers+lines", marker={"color": color}, line={"color": color}, name="Terminator Improvement", showlegend=legend, legendgroup="improvement")

    n = len(info.numbers)
    fig.add_trace(scatter(info.numbers[: min_n_trials + 1], info.improvements[: min_n_trials + 1], 0.25, n <= min_n_trials))
    if n > min_n_trials:
        fig.add_trace(scatter(info.numbers[min_n_trials:], info.improvements[min_n_trials:], 1.0, True))
    if info.errors is None:
        fig.add_trace(go.Scatter())
    else:
        red = "rgb(239, 85, 59)"
        fig.add_trace(go.Scatter(x=info.numbers, y=info.errors, mode="markers+lines", name="Error", marker={"color": red}, line={"color": red}))
    fig.update_yaxes(range=info.y_range(min_n_trials))
    return fig


__all__ = [
    "is_available",
    "matplotlib",
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
