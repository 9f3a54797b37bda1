"""Parameter distributions with Optuna's constructor signatures.

Validation is done by the engine: invalid ranges raise :class:`ValueError`, and a range that
the step does not divide is shrunk with a :class:`UserWarning` (as Optuna does).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Sequence, Tuple, Union

from dspex import _native

CategoricalChoiceType = Union[None, bool, int, float, str]


class BaseDistribution:
    """Base class of the distributions."""

    def _to_native(self) -> tuple:
        raise NotImplementedError

    def to_external_repr(self, param_value_in_internal_repr: float) -> Any:
        """The value an objective sees for this internal (float) value (Optuna's method)."""
        return float(param_value_in_internal_repr)

    def to_internal_repr(self, param_value_in_external_repr: Any) -> float:
        """The internal (float) value samplers work with (Optuna's method)."""
        try:
            return float(param_value_in_external_repr)
        except (TypeError, ValueError):
            raise ValueError(f"{param_value_in_external_repr!r} is not a value of {self!r}") from None

    def single(self) -> bool:
        """True when the distribution admits a single value."""
        raise NotImplementedError

    def _asdict(self) -> Dict[str, Any]:
        return dict(vars(self))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._asdict() == other._asdict()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self._asdict().items(), key=lambda kv: kv[0]))))

    def __repr__(self) -> str:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(self._asdict().items()))
        return f"{type(self).__name__}({kwargs})"


class FloatDistribution(BaseDistribution):
    """A float range ``[low, high]``, optionally log-scaled or discretized by ``step``."""

    def __init__(self, low: float, high: float, log: bool = False, step: float | None = None) -> None:
        high2, note = _native.check_float_distribution(float(low), float(high), bool(log), None if step is None else float(step))
        if note is not None:
            warnings.warn(note, UserWarning, stacklevel=2)
        self.low = float(low)
        self.high = float(high2)
        self.log = bool(log)
        self.step = None if step is None else float(step)

    def _to_native(self) -> tuple:
        return ("float", self.low, self.high, self.log, self.step)

    def single(self) -> bool:
        if self.step is None:
            return self.low == self.high
        return self.low == self.high or (self.high - self.low) < self.step

    def _contains(self, value: float) -> bool:
        return self.low <= value <= self.high


class IntDistribution(BaseDistribution):
    """An integer range ``[low, high]``, optionally log-scaled or with a ``step``."""

    def __init__(self, low: int, high: int, log: bool = False, step: int = 1) -> None:
        high2, note = _native.check_int_distribution(int(low), int(high), bool(log), int(step))
        if note is not None:
            warnings.warn(note, UserWarning, stacklevel=2)
        self.low = int(low)
        self.high = int(high2)
        self.log = bool(log)
        self.step = int(step)

    def _to_native(self) -> tuple:
        return ("int", self.low, self.high, self.log, self.step)

    def to_external_repr(self, param_value_in_internal_repr: float) -> int:
        return int(param_value_in_internal_repr)

    def single(self) -> bool:
        return self.low == self.high or (not self.log and self.high - self.low < self.step)

    def _contains(self, value: float) -> bool:
        return self.low <= value <= self.high


class CategoricalDistribution(BaseDistribution):
    """A finite set of choices (None, bool, int, float or str)."""

    def __init__(self, choices: Sequence[CategoricalChoiceType]) -> None:
        _native.check_categorical_distribution(list(choices))
        self.choices: Tuple[CategoricalChoiceType, ...] = tuple(choices)

    def _to_native(self) -> tuple:
        return ("categorical", self.choices)

    def to_external_repr(self, param_value_in_internal_repr: float) -> CategoricalChoiceType:
        return self.choices[int(param_value_in_internal_repr)]

    def to_internal_repr(self, param_value_in_external_repr: CategoricalChoiceType) -> float:
        for i, c in enumerate(self.choices):
            if c == param_value_in_external_repr and type(c) is type(param_value_in_external_repr):
                return float(i)
        for i, c in enumerate(self.choices):  # 1 == 1.0 == True, as Optuna's index lookup
            if c == param_value_in_external_repr:
                return float(i)
        raise ValueError(f"{param_value_in_external_repr!r} is not among the choices {self.choices!r}")

    def single(self) -> bool:
        return len(self.choices) == 1

    def _asdict(self) -> Dict[str, Any]:
        return {"choices": self.choices}


def _from_native(t: tuple) -> BaseDistribution:
    """Builds a distribution object from the engine's tuple form (no re-validation)."""
    kind = t[0]
    d: BaseDistribution
    if kind == "float":
        d = FloatDistribution.__new__(FloatDistribution)
        d.low, d.high, d.log, d.step = t[1], t[2], t[3], t[4]
    elif kind == "int":
        d = IntDistribution.__new__(IntDistribution)
        d.low, d.high, d.log, d.step = t[1], t[2], t[3], t[4]
    else:
        d = CategoricalDistribution.__new__(CategoricalDistribution)
        d.choices = tuple(t[1])
    return d


def _old(name: str, instead: str) -> None:
    warnings.warn(f"{name} has been deprecated in Optuna v3.0.0 and will be removed in v6.0.0; use {instead} instead.", FutureWarning, stacklevel=3)


class UniformDistribution(FloatDistribution):
    """Deprecated (Optuna 3.0): ``FloatDistribution(low, high)``."""

    def __init__(self, low: float, high: float) -> None:
        _old("UniformDistribution", "FloatDistribution(low, high)")
        super().__init__(low, high)


class LogUniformDistribution(FloatDistribution):
    """Deprecated (Optuna 3.0): ``FloatDistribution(low, high, log=True)``."""

    def __init__(self, low: float, high: float) -> None:
        _old("LogUniformDistribution", "FloatDistribution(low, high, log=True)")
        super().__init__(low, high, log=True)


class DiscreteUniformDistribution(FloatDistribution):
    """Deprecated (Optuna 3.0): ``FloatDistribution(low, high, step=q)``."""

    def __init__(self, low: float, high: float, q: float) -> None:
        _old("DiscreteUniformDistribution", "FloatDistribution(low, high, step=q)")
        super().__init__(low, high, step=q)

    @property
    def q(self) -> float:
        assert self.step is not None
        return self.step


class IntUniformDistribution(IntDistribution):
    """Deprecated (Optuna 3.0): ``IntDistribution(low, high, step=step)``."""

    def __init__(self, low: int, high: int, step: int = 1) -> None:
        _old("IntUniformDistribution", "IntDistribution(low, high, step=step)")
        super().__init__(low, high, step=step)


class IntLogUniformDistribution(IntDistribution):
    """Deprecated (Optuna 3.0): ``IntDistribution(low, high, log=True)``."""

    def __init__(self, low: int, high: int, step: int = 1) -> None:
        _old("IntLogUniformDistribution", "IntDistribution(low, high, log=True)")
        super().__init__(low, high, log=True, step=step)


def _convert_old_distribution_to_new_distribution(distribution: BaseDistribution, suppress_warning: bool = False) -> BaseDistribution:
    """A deprecated distribution as the Float/IntDistribution it stands for (others as given)."""
    if isinstance(distribution, (FloatDistribution, IntDistribution)) and type(distribution) not in (FloatDistribution, IntDistribution):
        return _from_native(distribution._to_native())
    return distribution


def check_distribution_compatibility(dist_old: BaseDistribution, dist_new: BaseDistribution) -> None:
    """Raises ``ValueError`` when a parameter recorded with ``dist_old`` cannot be suggested
    again with ``dist_new``: another kind of distribution, another log setting, or other
    categorical choices (ranges may differ)."""
    _native.check_distribution_compatibility(dist_old._to_native(), dist_new._to_native())


def distribution_to_json(dist: BaseDistribution) -> str:
    """Optuna's JSON form of ``dist``."""
    return _native.distribution_to_json(dist._to_native())


def json_to_distribution(json_str: str) -> BaseDistribution:
    """Parses Optuna's JSON form (including pre-3.0 distribution names)."""
    return _from_native(_native.distribution_from_json(json_str))


__all__ = [
    "BaseDistribution",
    "CategoricalChoiceType",
    "CategoricalDistribution",
    "DiscreteUniformDistribution",
    "FloatDistribution",
    "IntDistribution",
    "IntLogUniformDistribution",
    "IntUniformDistribution",
    "LogUniformDistribution",
    "UniformDistribution",
    "check_distribution_compatibility",
    "distribution_to_json",
    "json_to_distribution",
]
