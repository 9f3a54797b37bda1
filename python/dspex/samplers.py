"""Samplers: how trial parameters are chosen. All of them run in the Rust engine."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomSampler(BaseSampler):
    """Samples every parameter independently and uniformly (log-uniformly for ``log=True``)."""

    def __init__(self, seed: int | None = None) -> None:
        self._native = _native.random_sampler(_check_seed(seed))
        self._spec = ("random", {"seed": seed})


class TPESampler(BaseSampler):
    """Tree-structured Parzen Estimator, with Optuna 5.0's keyword names and defaults.

    ``gamma``, ``weights``, ``categorical_distance_func`` and ``constraints_func`` (Python
    callables) are not supported by the engine and must be left to None.

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
            ("constraints_func", constraints_func),
            ("categorical_distance_func", categorical_distance_func),
        ):
            if value is not None:
                raise ValueError(f"TPESampler({name}={value!r}): custom {name} is not supported by dspex")
        if consider_prior is False:
            raise ValueError("TPESampler(consider_prior=False) is not supported (Optuna 5 always uses the prior)")
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or n_startup_trials < 0:
            raise ValueError(f"TPESampler(n_startup_trials={n_startup_trials!r}): must be an int >= 0")
        if isinstance(n_ei_candidates, bool) or not isinstance(n_ei_candidates, int) or n_ei_candidates < 1:
            raise ValueError(f"TPESampler(n_ei_candidates={n_ei_candidates!r}): must be an int >= 1")
        pw = 1.0 if prior_weight is None else prior_weight
        if not isinstance(pw, (int, float)) or not pw > 0 or pw != pw or pw == float("inf"):
            raise ValueError(f"TPESampler(prior_weight={prior_weight!r}): must be a finite number > 0")
        bcf = below_clip_factor
        if isinstance(bcf, bool) or not isinstance(bcf, (int, float)) or not 1.0 <= bcf < float("inf"):
            raise ValueError(f"TPESampler(below_clip_factor={below_clip_factor!r}): must be a finite number >= 1 (1 is Optuna's rule)")
        if group and multivariate is False:
            raise ValueError("TPESampler(group=True) requires multivariate=True")
        kwargs = dict(
            n_startup_trials=n_startup_trials,
            n_ei_candidates=n_ei_candidates,
            multivariate=multivariate,
            group=bool(group),
            constant_liar=bool(constant_liar),
            seed=_check_seed(seed),
            prior_weight=float(pw),
            consider_magic_clip=True if consider_magic_clip is None else bool(consider_magic_clip),
            consider_endpoints=False if consider_endpoints is None else bool(consider_endpoints),
            below_clip_factor=float(bcf),
        )
        self._native = _native.tpe_sampler(**kwargs)
        self._spec = ("tpe", kwargs)  # what a remote engine builds (dspex.remote)


class GridSampler(BaseSampler):
    """Visits every point of the Cartesian product of ``search_space`` once, in random order.

    When every point has been evaluated, ``optimize`` stops.
    """

    def __init__(self, search_space: Mapping[str, Sequence[Any]], seed: int | None = None) -> None:
        if not isinstance(search_space, Mapping):
            raise TypeError(f"search_space must be a mapping of name -> values, got {search_space!r}")
        self._search_space = {k: list(v) for k, v in search_space.items()}
        self._native = _native.grid_sampler(self._search_space, _check_seed(seed))
        self._spec = ("grid", {"search_space": self._search_space, "seed": seed})


__all__ = ["BaseSampler", "GridSampler", "RandomSampler", "TPESampler"]
