"""The search space shared by a study's finished trials (``optuna.search_space``), for samplers
written in Python."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional

from dspex.distributions import BaseDistribution
from dspex.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from dspex.study import Study


def intersection_search_space(trials: Iterable[FrozenTrial], include_pruned: bool = False) -> Dict[str, BaseDistribution]:
    """The parameters every COMPLETE trial (and PRUNED one with ``include_pruned``) has, each
    with the same distribution in all of them, sorted by name; empty before any such trial."""
    states = (TrialState.COMPLETE, TrialState.PRUNED) if include_pruned else (TrialState.COMPLETE,)
    space: Optional[Dict[str, BaseDistribution]] = None
    for t in trials:
        if t.state not in states:
            continue
        if space is None:
            space = dict(t.distributions)
        else:
            space = {k: d for k, d in space.items() if t.distributions.get(k) == d}
    return dict(sorted((space or {}).items()))


class IntersectionSearchSpace:
    """:func:`intersection_search_space` of a study's trials (``calculate(study)``)."""

    def __init__(self, include_pruned: bool = False) -> None:
        self._include_pruned = include_pruned

    def calculate(self, study: "Study") -> Dict[str, Any]:
        return intersection_search_space(study.get_trials(deepcopy=False), self._include_pruned)


__all__ = ["IntersectionSearchSpace", "intersection_search_space"]
