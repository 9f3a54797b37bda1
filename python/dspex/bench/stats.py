"""Statistics of the harness: Wilcoxon signed-rank (scipy when installed, else an exact/normal
implementation), 2-D hypervolume, summaries."""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .common import quantile


def _rank_abs(d: Sequence[float]) -> List[float]:
    order = sorted(range(len(d)), key=lambda i: abs(d[i]))
    ranks = [0.0] * len(d)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        r = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = r
        i = j + 1
    return ranks


def wilcoxon_fallback(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of the paired samples a, b (zero
    differences dropped; exact distribution for n <= 25 without ties, else normal approximation
    with tie correction)."""
    d = [x - y for x, y in zip(a, b) if x != y]
    n = len(d)
    if n == 0:
        return 1.0
    ranks = _rank_abs(d)
    w_plus = sum(r for r, x in zip(ranks, d) if x > 0)
    total = n * (n + 1) / 2.0
    ties = len(set(abs(x) for x in d)) != n
    if n <= 25 and not ties:
        counts = [0] * (int(total) + 1)  # number of sign assignments with W+ = w
        counts[0] = 1
        for r in range(1, n + 1):
            for w in range(int(total), r - 1, -1):
                counts[w] += counts[w - r]
        k = min(w_plus, total - w_plus)
        p = 2.0 * sum(counts[: int(math.floor(k)) + 1]) / 2.0**n
        return min(1.0, p)
    mean = total / 2.0
    tie_groups: Dict[float, int] = {}
    for rank in ranks:
        tie_groups[rank] = tie_groups.get(rank, 0) + 1
    var = n * (n + 1) * (2 * n + 1) / 24.0 - sum(t**3 - t for t in tie_groups.values()) / 48.0
    if var <= 0:
        return 1.0
    z = (abs(w_plus - mean) - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0)))


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> Tuple[float, str]:
    """(two-sided p, implementation) for paired samples a and b."""
    if all(x == y for x, y in zip(a, b)):
        return 1.0, "identical"
    try:
        from scipy.stats import wilcoxon

        return float(wilcoxon(a, b, zero_method="wilcox").pvalue), "scipy"
    except ImportError:
        return wilcoxon_fallback(a, b), "builtin"
    except ValueError:
        return wilcoxon_fallback(a, b), "builtin"


def verdict(ours: Sequence[float], theirs: Sequence[float], alpha: float = 0.05) -> Dict[str, Any]:
    """Paired comparison of regrets (lower is better), seed i against seed i."""
    n = min(len(ours), len(theirs))
    a, b = list(ours[:n]), list(theirs[:n])
    if n < 2:
        return {"verdict": "n/a", "p": None, "n": n}
    p, impl = wilcoxon_p(a, b)
    med_diff = statistics.median(x - y for x, y in zip(a, b))
    wins = sum(1 for x, y in zip(a, b) if x < y)
    losses = sum(1 for x, y in zip(a, b) if x > y)
    if p < alpha and med_diff != 0:
        v = "better" if med_diff < 0 else "worse"
    elif p < alpha:
        v = "better" if wins > losses else "worse" if losses > wins else "tie"
    else:
        v = "tie"
    return {"verdict": v, "p": p, "n": n, "median_diff": med_diff, "wins": wins, "losses": losses, "impl": impl}


def holm(ps: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm-Bonferroni adjusted p-values for a family of tests (None stays None): the i-th
    smallest of m is multiplied by m - i, then made monotone, capped at 1."""
    order = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])  # type: ignore[arg-type,return-value]
    m = len(order)
    out: List[Optional[float]] = [None] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(ps[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def pareto_front_2d(points: Sequence[Sequence[float]]) -> List[Tuple[float, float]]:
    pts = sorted((float(p[0]), float(p[1])) for p in points)
    front: List[Tuple[float, float]] = []
    best2 = math.inf
    for f1, f2 in pts:
        if f2 < best2:
            front.append((f1, f2))
            best2 = f2
    return front


def hypervolume_2d(points: Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """Area dominated by ``points`` (minimisation) inside the box bounded by ``ref``."""
    r1, r2 = float(ref[0]), float(ref[1])
    inside = [p for p in points if p[0] < r1 and p[1] < r2]
    hv = 0.0
    prev = r2
    for f1, f2 in pareto_front_2d(inside):
        hv += (r1 - f1) * (prev - f2)
        prev = f2
    return hv


def hypervolume(points: Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """Volume dominated by ``points`` (minimisation) inside the box bounded by ``ref``, for any
    number of objectives (three and more by the engine's exact algorithm, on the front)."""
    if len(ref) == 2:
        return hypervolume_2d(points, ref)
    front: List[Sequence[float]] = []
    for p in points:
        front = _add_to_front(front, p, ref)
    return _hv_nd(front, ref)


def _add_to_front(front: List[Sequence[float]], p: Sequence[float], ref: Sequence[float]) -> List[Sequence[float]]:
    """``front`` with ``p`` added when it is inside the box and not dominated."""
    if not all(x < r for x, r in zip(p, ref)):
        return front
    if any(all(a <= b for a, b in zip(q, p)) for q in front):
        return front
    return [q for q in front if not all(a <= b for a, b in zip(p, q))] + [p]


def _hv_nd(front: List[Sequence[float]], ref: Sequence[float]) -> float:
    from dspex import _native

    return _native.hypervolume([list(map(float, p)) for p in front], [float(r) for r in ref]) if front else 0.0


def hypervolume_curve(values: Sequence[Sequence[float]], points: Sequence[int], ref: Sequence[float]) -> List[Optional[float]]:
    """The hypervolume of the first ``p`` of ``values`` for each ``p`` of ``points`` (ascending)."""
    out: List[Optional[float]] = []
    if len(ref) == 2:
        return [hypervolume_2d(values[:p], ref) if values else None for p in points]
    front: List[Sequence[float]] = []
    it = 0
    for p in points:
        while it < min(p, len(values)):
            front = _add_to_front(front, values[it], ref)
            it += 1
        out.append(_hv_nd(front, ref) if values else None)
    return out


def summarize(xs: Sequence[float]) -> Dict[str, float]:
    return {
        "median": statistics.median(xs),
        "q25": quantile(xs, 0.25),
        "q75": quantile(xs, 0.75),
        "min": min(xs),
        "max": max(xs),
        "mean": statistics.fmean(xs),
    }
