"""Pruners: whether a running trial should stop early. The built-in ones run in the Rust engine,
with Optuna's constructor signatures and defaults (bad arguments raise ``ValueError`` naming
them); a :class:`BasePruner` subclass written in Python runs where the trial is evaluated."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from dspex import _native
from dspex._component import EngineComponent


def _int(cls: str, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{cls}({name}={v!r}): must be an int")
    return v


def _num(cls: str, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{cls}({name}={v!r}): must be a number")
    return float(v)


class BasePruner(EngineComponent):
    """Base class of the pruners. A subclass written in Python implements Optuna's
    ``prune(study, trial) -> bool`` (``trial``: a :class:`~dspex.trial.FrozenTrial` of the
    running trial, with its intermediate values); ``trial.should_prune()`` calls it in the
    evaluating process. The built-in pruners run in the engine."""

    @staticmethod
    def _engine_factory() -> Callable[[str, str], Any]:
        return _native.pruner

    def prune(self, study: Any, trial: Any) -> bool:
        """Whether ``trial`` should stop: what a subclass written in Python decides; a built-in
        pruner decides in the engine, on the study's trials read at the call."""
        native = getattr(self, "_native", None)
        if native is None:
            raise NotImplementedError(f"{type(self).__name__}.prune: a pruner written in Python implements it")
        if not isinstance(getattr(study, "_native", None), _native.Study):
            raise TypeError(f"{type(self).__name__} prunes trials of a dspex study, got {study!r}")
        return bool(native.prune_trial(study._native, trial.number))


def _is_python_pruner(pruner: Any) -> bool:
    """Whether ``pruner`` decides in Python: a subclass without an engine pruner, or an object
    with Optuna's ``prune`` (a pruner written against the real Optuna)."""
    return getattr(pruner, "_native", None) is None and callable(getattr(pruner, "prune", None))


class NopPruner(BasePruner):
    """Never prunes."""

    def __init__(self) -> None:
        self._build("nop", {})


class PercentilePruner(BasePruner):
    """Prunes when the trial's best intermediate value is worse than the given percentile of
    the other trials' values at the same step."""

    def __init__(self, percentile: float, n_startup_trials: int = 5, n_warmup_steps: int = 0, interval_steps: int = 1, *, n_min_trials: int = 1) -> None:
        c = "PercentilePruner"
        self._build(
            "percentile",
            dict(
                percentile=_num(c, "percentile", percentile), n_startup_trials=_int(c, "n_startup_trials", n_startup_trials),
                n_warmup_steps=_int(c, "n_warmup_steps", n_warmup_steps), interval_steps=_int(c, "interval_steps", interval_steps),
                n_min_trials=_int(c, "n_min_trials", n_min_trials),
            ),
        )


class MedianPruner(BasePruner):
    """Prunes when the trial's best intermediate value is worse than the median of the other
    trials' values at the same step."""

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0, interval_steps: int = 1, *, n_min_trials: int = 1) -> None:
        c = "MedianPruner"
        self._build(
            "median",
            dict(
                n_startup_trials=_int(c, "n_startup_trials", n_startup_trials), n_warmup_steps=_int(c, "n_warmup_steps", n_warmup_steps),
                interval_steps=_int(c, "interval_steps", interval_steps), n_min_trials=_int(c, "n_min_trials", n_min_trials),
            ),
        )


class SuccessiveHalvingPruner(BasePruner):
    """Asynchronous successive halving."""

    def __init__(self, min_resource: Union[str, int] = "auto", reduction_factor: int = 4, min_early_stopping_rate: int = 0, bootstrap_count: int = 0) -> None:
        c = "SuccessiveHalvingPruner"
        if min_resource == "auto":
            mr: Optional[int] = None
        else:
            mr = _int(c, "min_resource", min_resource)
        self._build(
            "successive_halving",
            dict(
                min_resource=mr, reduction_factor=_int(c, "reduction_factor", reduction_factor),
                min_early_stopping_rate=_int(c, "min_early_stopping_rate", min_early_stopping_rate), bootstrap_count=_int(c, "bootstrap_count", bootstrap_count),
            ),
        )


class HyperbandPruner(BasePruner):
    """Hyperband: several successive-halving brackets."""

    def __init__(self, min_resource: int = 1, max_resource: Union[str, int] = "auto", reduction_factor: int = 3, bootstrap_count: int = 0) -> None:
        c = "HyperbandPruner"
        if max_resource == "auto":
            mx: Optional[int] = None
        else:
            mx = _int(c, "max_resource", max_resource)
        self._build(
            "hyperband",
            dict(
                min_resource=_int(c, "min_resource", min_resource), max_resource=mx,
                reduction_factor=_int(c, "reduction_factor", reduction_factor), bootstrap_count=_int(c, "bootstrap_count", bootstrap_count),
            ),
        )


class ThresholdPruner(BasePruner):
    """Prunes when an intermediate value leaves ``[lower, upper]`` (or is NaN)."""

    def __init__(self, lower: Optional[float] = None, upper: Optional[float] = None, n_warmup_steps: int = 0, interval_steps: int = 1) -> None:
        c = "ThresholdPruner"
        self._build(
            "threshold",
            dict(
                lower=None if lower is None else _num(c, "lower", lower), upper=None if upper is None else _num(c, "upper", upper),
                n_warmup_steps=_int(c, "n_warmup_steps", n_warmup_steps), interval_steps=_int(c, "interval_steps", interval_steps),
            ),
        )


class PatientPruner(BasePruner):
    """Prunes when the intermediate values stopped improving for ``patience`` steps, then asks
    ``wrapped_pruner`` (if any)."""

    def __init__(self, wrapped_pruner: Optional[BasePruner], patience: int, min_delta: float = 0.0) -> None:
        c = "PatientPruner"
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise ValueError(f"{c}(wrapped_pruner={wrapped_pruner!r}): must be a dspex pruner or None")
        wrapped = None if wrapped_pruner is None else dict(kind=wrapped_pruner._spec[0], **wrapped_pruner._spec[1])
        self._build("patient", dict(wrapped=wrapped, patience=_int(c, "patience", patience), min_delta=_num(c, "min_delta", min_delta)))


class WilcoxonPruner(BasePruner):
    """Prunes by a Wilcoxon signed-rank test against the best trial's values at the same steps."""

    def __init__(self, *, p_threshold: float = 0.1, n_startup_steps: int = 2) -> None:
        c = "WilcoxonPruner"
        self._build("wilcoxon", dict(p_threshold=_num(c, "p_threshold", p_threshold), n_startup_steps=_int(c, "n_startup_steps", n_startup_steps)))


__all__ = [
    "BasePruner",
    "HyperbandPruner",
    "MedianPruner",
    "NopPruner",
    "PatientPruner",
    "PercentilePruner",
    "SuccessiveHalvingPruner",
    "ThresholdPruner",
    "WilcoxonPruner",
]
