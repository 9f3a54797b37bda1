"""Samplers: how trial parameters are chosen. All of them run in the Rust engine."""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from dspex import _native


def _check_seed(seed: Any) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


class BaseSampler:
    """Base class of the engine's samplers (custom Python samplers are not supported yet)."""

    _native: Any
    #: (kind, constructor keywords): what the engine builds the sampler from, in this process
    #: or in a remote engine (the same validation as study.toml's ``[sampler]``).
    _spec: "tuple[str, Dict[str, Any]]"
    #: ``constraints_func(frozen_trial) -> constraint values``, run by the evaluator of each
    #: trial that completes or is pruned (see TPESampler).
    _constraints_func: Optional[Callable[[Any], Sequence[float]]] = None

    def _build(self, kind: str, options: Dict[str, Any]) -> None:
        try:
            self._native = _native.sampler(kind, json.dumps(options))
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None
        self._spec = (kind, options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomSampler(BaseSampler):
    """Samples every parameter independently and uniformly (log-uniformly for ``log=True``)."""

    def __init__(self, seed: int | None = None) -> None:
        self._build("random", {"seed": _check_seed(seed)})


class TPESampler(BaseSampler):
    """Tree-structured Parzen Estimator, with Optuna 5.0's keyword names and defaults.

    ``gamma``, ``weights`` and ``categorical_distance_func`` (Python callables) are not
    supported by the engine and must be left to None.

    Constraints, as Optuna: a trial is feasible when all its constraint values are <= 0. They
    come from ``trial.set_constraint(key, value)`` in the objective, or from
    ``constraints_func(frozen_trial)`` (deprecated in Optuna 5, still supported), which the
    evaluator calls after each trial that completes or is pruned (a ``constraints_func`` that
    raises fails the trial). TPE learns from feasible trials first, infeasible ones by least
    violation; ``best_trial`` and ``best_trials`` consider feasible trials only.

    One dspex keyword: ``below_clip_factor`` (default 4.0). The magic clip of the good trials'
    estimator counts that many kernels per observation, so their bandwidths may narrow as in a
    study four times as large: on dspex's benchmark suite the median result is better or equal
    on every problem (multimodal ones included), significantly better on half.
    ``below_clip_factor=1.0`` is Optuna 5.0's rule.
    """

    def __init__(
        self,
        *,
        consider_prior: bool | None = None,
        prior_weight: float | None = None,
        consider_magic_clip: bool | None = None,
        consider_endpoints: bool | None = None,
        n_startup_trials: int = 10,
        n_ei_candidates: int = 24,
        gamma: Any = None,
        weights: Any = None,
        seed: int | None = None,
        multivariate: bool | None = None,
        group: bool = False,
        warn_independent_sampling: bool | None = None,
        constant_liar: bool = True,
        constraints_func: Any = None,
        categorical_distance_func: Any = None,
        below_clip_factor: float = 4.0,
    ) -> None:
        for name, value in (
            ("gamma", gamma),
            ("weights", weights),
            ("categorical_distance_func", categorical_distance_func),
        ):
            if value is not None:
                raise ValueError(f"TPESampler({name}={value!r}): custom {name} is not supported by dspex")
        if constraints_func is not None:
            if not callable(constraints_func):
                raise TypeError(f"TPESampler(constraints_func={constraints_func!r}): must be a callable (frozen_trial) -> constraint values")
            warnings.warn("constraints_func has been deprecated in Optuna v5.0.0 and will be removed in v7.0.0; use trial.set_constraint instead.", FutureWarning, stacklevel=2)
            self._constraints_func = constraints_func
        if consider_prior is False:
            raise ValueError("TPESampler(consider_prior=False) is not supported (Optuna 5 always uses the prior)")
        self._build(
            "tpe",
            dict(
                n_startup_trials=_int("n_startup_trials", n_startup_trials),
                n_ei_candidates=_int("n_ei_candidates", n_ei_candidates),
                multivariate=multivariate,
                group=bool(group),
                constant_liar=bool(constant_liar),
                seed=_check_seed(seed),
                prior_weight=1.0 if prior_weight is None else _num("prior_weight", prior_weight),
                consider_magic_clip=True if consider_magic_clip is None else bool(consider_magic_clip),
                consider_endpoints=False if consider_endpoints is None else bool(consider_endpoints),
                below_clip_factor=_num("below_clip_factor", below_clip_factor),
            ),
        )


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name}={v!r}: must be an int")
    return v


def _num(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name}={v!r}: must be a number")
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        # JSON has no NaN or infinity: the engine would not see the value.
        raise ValueError(f"invalid argument {name}={v}: must be a finite number")
    return v


class GridSampler(BaseSampler):
    """Visits every point of the Cartesian product of ``search_space`` once, in random order.

    When every point has been evaluated, ``optimize`` stops.
    """

    def __init__(self, search_space: Mapping[str, Sequence[Any]], seed: int | None = None) -> None:
        if not isinstance(search_space, Mapping):
            raise TypeError(f"search_space must be a mapping of name -> values, got {search_space!r}")
        self._search_space = {k: list(v) for k, v in search_space.items()}
        for name, values in self._search_space.items():
            for v in values:
                if v is not None and not isinstance(v, (bool, int, float, str)):
                    raise TypeError(f"GridSampler: search_space[{name!r}] values must be None, bool, int, float or str, got {v!r}")
        self._build("grid", {"search_space": self._search_space, "seed": _check_seed(seed)})


__all__ = ["BaseSampler", "GridSampler", "RandomSampler", "TPESampler"]
