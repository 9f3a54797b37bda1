"""Trials: the live :class:`Trial` an objective receives, read-only :class:`FrozenTrial`
records, :class:`FixedTrial` (an objective run on given parameters), their :class:`BaseTrial`,
:class:`TrialState` and :func:`create_trial`."""

from __future__ import annotations

import abc
import datetime
import enum
import math
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, TypeVar

from dspex.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    _from_native,
)
from dspex.pruners import _is_python_pruner
from dspex.samplers import _is_python_sampler

if TYPE_CHECKING:
    from dspex.study import Study

C = TypeVar("C", bound=CategoricalChoiceType)


class TrialState(enum.IntEnum):
    """Lifecycle state of a trial (Optuna's values)."""

    RUNNING = 0
    COMPLETE = 1
    PRUNED = 2
    FAIL = 3
    WAITING = 4

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"TrialState.{self.name}"

    def is_finished(self) -> bool:
        return self in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class BaseTrial(abc.ABC):
    """What :class:`Trial`, :class:`FrozenTrial` and :class:`FixedTrial` have in common: an
    objective written against it runs with any of them. Also carries Optuna's deprecated
    ``suggest_uniform``, ``suggest_loguniform`` and ``suggest_discrete_uniform`` (they warn and
    call :meth:`suggest_float`)."""

    @abc.abstractmethod
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float: ...

    @abc.abstractmethod
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    @abc.abstractmethod
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    @abc.abstractmethod
    def report(self, value: float, step: int) -> None: ...

    @abc.abstractmethod
    def should_prune(self) -> bool: ...

    @abc.abstractmethod
    def set_user_attr(self, key: str, value: Any) -> None: ...

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        """Deprecated (Optuna 3.0): ``suggest_float(name, low, high)``."""
        _deprecated("suggest_uniform", "suggest_float(name, low, high)")
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        """Deprecated (Optuna 3.0): ``suggest_float(name, low, high, log=True)``."""
        _deprecated("suggest_loguniform", "suggest_float(name, low, high, log=True)")
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        """Deprecated (Optuna 3.0): ``suggest_float(name, low, high, step=q)``."""
        _deprecated("suggest_discrete_uniform", "suggest_float(name, low, high, step=q)")
        return self.suggest_float(name, low, high, step=q)


_CONSTRAINT_PREFIX = "constraints:"  # a named constraint's system attribute, as Optuna


def _constraint_value(key: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"a constraint value must be a float, got {type(value).__name__} ({value!r}) for {key!r}") from None
    if math.isnan(v):
        raise ValueError(f"Attempted to set a constraint for {key!r}, but NaN is not allowed.")
    return v


def _constraints_of(system_attrs: Dict[str, Any]) -> Dict[str, float]:
    """The constraint values in a trial's system attributes: those of ``constraints_func``
    (named "0", "1", ...) and those set by name."""
    out = {str(i): float(v) for i, v in enumerate(system_attrs.get("constraints") or [])}
    out.update({k[len(_CONSTRAINT_PREFIX):]: float(v) for k, v in system_attrs.items() if k.startswith(_CONSTRAINT_PREFIX)})
    return out


class _NotRunning(BaseTrial):
    """A trial no study runs (:class:`FrozenTrial`, :class:`FixedTrial`): ``report`` does
    nothing, ``should_prune`` is False, attributes are kept on the object."""

    _user_attrs: Dict[str, Any]
    _system_attrs: Dict[str, Any]

    @property
    def constraints(self) -> Dict[str, float]:
        """The trial's constraint values by name (feasible when all are <= 0)."""
        return _constraints_of(self._system_attrs)

    def set_constraint(self, key: str, value: float) -> None:
        self._system_attrs[_CONSTRAINT_PREFIX + key] = _constraint_value(key, value)

    def report(self, value: float, step: int) -> None:
        """Does nothing: no study runs this trial."""

    def should_prune(self) -> bool:
        return False

    def set_user_attr(self, key: str, value: Any) -> None:
        self._user_attrs[key] = value

    def set_system_attr(self, key: str, value: Any) -> None:
        self._system_attrs[key] = value


def _deprecated(name: str, instead: str) -> None:
    warnings.warn(f"{name} has been deprecated in Optuna v3.0.0 and will be removed in v6.0.0; use {instead} instead.", FutureWarning, stacklevel=3)


def _ts(seconds: Optional[float]) -> Optional[datetime.datetime]:
    return None if seconds is None else datetime.datetime.fromtimestamp(seconds)


class FrozenTrial(_NotRunning):
    """A finished (or snapshotted) trial: params, values, state, attributes and times.

    ``suggest_*`` return the recorded parameter values, so an objective can be re-run on
    ``study.best_trial``.
    """

    def __init__(
        self,
        number: int,
        state: TrialState,
        value: Optional[float],
        datetime_start: Optional[datetime.datetime],
        datetime_complete: Optional[datetime.datetime],
        params: Dict[str, Any],
        distributions: Dict[str, BaseDistribution],
        user_attrs: Dict[str, Any],
        system_attrs: Dict[str, Any],
        intermediate_values: Dict[int, float],
        trial_id: int,
        *,
        values: Optional[Sequence[float]] = None,
    ) -> None:
        if value is not None and values is not None:
            raise ValueError("Specify only one of `value` and `values`.")
        self.number = number
        self.state = TrialState(state)
        self._values: Optional[List[float]] = (
            [value] if value is not None else (list(values) if values is not None else None)
        )
        self.datetime_start = datetime_start
        self.datetime_complete = datetime_complete
        self._params = dict(params)
        self._distributions = dict(distributions)
        self._user_attrs = dict(user_attrs)
        self._system_attrs = dict(system_attrs)
        self.intermediate_values = dict(intermediate_values)
        self._trial_id = trial_id

    @classmethod
    def _from_native(cls, t: Any) -> "FrozenTrial":
        """From a ``dspex._native.TrialRecord``."""
        ft = cls.__new__(cls)
        ft.number = t.number
        ft.state = TrialState[t.state]
        ft._values = t.values
        ft.datetime_start = _ts(t.datetime_start)
        ft.datetime_complete = _ts(t.datetime_complete)
        ft._params = t.params
        ft._distributions = {k: _from_native(d) for k, d in t.distributions.items()}
        ft._user_attrs = t.user_attrs
        ft._system_attrs = t.system_attrs
        ft.intermediate_values = t.intermediate_values
        ft._trial_id = t.number
        return ft

    # -- values
    @property
    def value(self) -> Optional[float]:
        """The objective value (single-objective studies)."""
        if self._values is None:
            return None
        if len(self._values) > 1:
            raise RuntimeError("This attribute is not available during multi-objective optimization; use values.")
        return self._values[0]

    @value.setter
    def value(self, v: Optional[float]) -> None:
        self._values = None if v is None else [v]

    @property
    def values(self) -> Optional[List[float]]:
        return self._values

    @values.setter
    def values(self, v: Optional[Sequence[float]]) -> None:
        self._values = None if v is None else list(v)

    @property
    def params(self) -> Dict[str, Any]:
        return self._params

    @property
    def distributions(self) -> Dict[str, BaseDistribution]:
        return self._distributions

    @property
    def user_attrs(self) -> Dict[str, Any]:
        return self._user_attrs

    @property
    def system_attrs(self) -> Dict[str, Any]:
        return self._system_attrs

    @property
    def duration(self) -> Optional[datetime.timedelta]:
        if self.datetime_start is not None and self.datetime_complete is not None:
            return self.datetime_complete - self.datetime_start
        return None

    @property
    def last_step(self) -> Optional[int]:
        return max(self.intermediate_values) if self.intermediate_values else None

    # -- the Trial interface, answering from the record
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return self._recorded(name)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._recorded(name)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._recorded(name)

    def _recorded(self, name: str) -> Any:
        if name not in self._params:
            raise ValueError(f"The value of the parameter '{name}' is not found. Please set it at the construction of the FrozenTrial object.")
        return self._params[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrozenTrial) and vars(self) == vars(other)

    def __lt__(self, other: "FrozenTrial") -> bool:
        return self.number < other.number

    def __hash__(self) -> int:
        return hash((self.number, self.state))

    def __repr__(self) -> str:
        return (
            f"FrozenTrial(number={self.number}, state={self.state!r}, values={self._values}, "
            f"datetime_start={self.datetime_start!r}, datetime_complete={self.datetime_complete!r}, "
            f"params={self._params}, user_attrs={self._user_attrs}, "
            f"intermediate_values={self.intermediate_values})"
        )


class Trial(BaseTrial):
    """A running trial: the objective asks it for parameters (define-by-run) and reports to it.

    Every call goes to the engine with the GIL released; sampling happens there. The
    properties read the trial as the engine has it at that moment (one call each), since
    ``suggest_*`` and ``set_*_attr`` change it; ``datetime_start``, set once the trial runs, is
    read once.
    """

    def __init__(self, study: "Study", number: int) -> None:
        self.study = study
        self._number = number
        self._native = study._native
        self._datetime_start: Optional[datetime.datetime] = None
        # a sampler written in Python: what it sampled for the whole trial as it started
        self._custom = _is_python_sampler(study.sampler)
        self._relative: Dict[str, Any] = {}
        self._relative_space: Dict[str, BaseDistribution] = {}
        if self._custom:
            sampler, frozen = study.sampler, self._frozen()
            sampler.before_trial(study, frozen)
            self._relative_space = dict(sampler.infer_relative_search_space(study, frozen) or {})
            if self._relative_space:
                self._relative = dict(sampler.sample_relative(study, frozen, self._relative_space) or {})

    def _frozen(self) -> "FrozenTrial":
        return FrozenTrial._from_native(self._native.trial(self._number))

    @property
    def relative_params(self) -> Dict[str, Any]:
        """What a sampler written in Python chose by ``sample_relative`` as this trial started
        (empty for the engine's samplers, which sample in the engine as each parameter is
        suggested)."""
        return dict(self._relative)

    @property
    def relative_search_space(self) -> Dict[str, BaseDistribution]:
        """The search space a sampler written in Python sampled relatively (see
        :attr:`relative_params`)."""
        return dict(self._relative_space)

    def _given(self, name: str, distribution: BaseDistribution) -> Any:
        """What the Python sampler chooses for ``name`` (its relative sample when ``name`` is in
        the relative search space with this distribution, else an independent one)."""
        if name in self._relative and self._relative_space.get(name) == distribution:
            return self._relative[name]
        frozen = self._frozen()
        if name in frozen.params:
            return frozen.params[name]  # suggested before: the engine keeps the first value
        return self.study.sampler.sample_independent(self.study, frozen, name, distribution)

    def _suggest_custom(self, name: str, distribution: BaseDistribution) -> Any:
        given = self._given(name, distribution)
        return self._native.suggest(self._number, name, distribution._to_native(), given)

    @property
    def number(self) -> int:
        return self._number

    @property
    def _trial_id(self) -> int:
        return self._number

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        """A float in ``[low, high]`` (log-scaled with ``log=True``, on a grid with ``step``)."""
        if self._custom:
            return float(self._suggest_custom(name, FloatDistribution(low, high, log=log, step=step)))
        return self._native.suggest_float(self._number, name, float(low), float(high), bool(log), None if step is None else float(step))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        """An integer in ``[low, high]``."""
        if self._custom:
            return int(self._suggest_custom(name, IntDistribution(_as_int("low", low), _as_int("high", high), log=log, step=_as_int("step", step))))
        return self._native.suggest_int(self._number, name, _as_int("low", low), _as_int("high", high), _as_int("step", step), bool(log))

    def suggest_categorical(self, name: str, choices: Sequence[C]) -> C:
        """One of ``choices`` (None, bool, int, float or str)."""
        values = tuple(choices)
        if self._custom:
            return self._suggest_custom(name, CategoricalDistribution(values))
        return values[self._native.suggest_categorical(self._number, name, values)]

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if self._custom:
            return self._suggest_custom(name, distribution)
        if isinstance(distribution, CategoricalDistribution):
            return distribution.choices[self._native.suggest_categorical(self._number, name, distribution.choices)]
        return self._native.suggest(self._number, name, distribution._to_native())

    def report(self, value: float, step: int) -> None:
        """Records an intermediate value at ``step`` (for pruners)."""
        if len(self.study.directions) > 1:
            raise NotImplementedError("Trial.report is not supported for multi-objective optimization.")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"The `value` argument is of type '{type(value).__name__}' but supposed to be a float.") from None
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                step = int(step.__index__())  # numpy ints
            except (AttributeError, TypeError):
                raise TypeError(f"The `step` argument is of type '{type(step).__name__}' but supposed to be an int.") from None
        if step < 0:
            raise ValueError(f"The `step` argument is {step} but cannot be negative.")
        if not self._native.report(self._number, step, value):
            warnings.warn(f"The reported value is ignored because this `step` {step} is already reported.", stacklevel=2)

    def should_prune(self) -> bool:
        """Whether the pruner says this trial should stop now (raise ``TrialPruned`` then)."""
        if len(self.study.directions) > 1:
            raise NotImplementedError("Trial.should_prune is not supported for multi-objective optimization.")
        pruner = self.study.pruner
        if _is_python_pruner(pruner):
            return bool(pruner.prune(self.study, self._frozen()))
        return self._native.should_prune(self._number)

    def set_user_attr(self, key: str, value: Any) -> None:
        self._native.set_trial_user_attr(self._number, key, value)

    def set_system_attr(self, key: str, value: Any) -> None:
        self._native.set_trial_system_attr(self._number, key, value)

    def set_constraint(self, key: str, value: float) -> None:
        """Sets the constraint ``key`` of this trial: it is feasible when all its constraint
        values are <= 0 (TPE learns from feasible trials first; the best trial is a feasible
        one)."""
        self._native.set_trial_system_attr(self._number, _CONSTRAINT_PREFIX + key, _constraint_value(key, value))

    @property
    def constraints(self) -> Dict[str, float]:
        """The constraint values set so far, by name."""
        return _constraints_of(self.system_attrs)

    @property
    def storage(self) -> "_TrialStorage":
        """The trial attributes' part of Optuna's storage interface (``trial.storage.
        set_trial_system_attr(trial._trial_id, key, value)``), which integrations use."""
        return _TrialStorage(self.study)

    def _record(self) -> Any:
        """The trial's record in the engine now (a ``dspex._native.TrialRecord``): one call."""
        return self._native.trial(self._number)

    @property
    def params(self) -> Dict[str, Any]:
        return self._native.trial_params(self._number)

    @property
    def distributions(self) -> Dict[str, BaseDistribution]:
        return {k: _from_native(d) for k, d in self._record().distributions.items()}

    @property
    def user_attrs(self) -> Dict[str, Any]:
        return self._record().user_attrs

    @property
    def system_attrs(self) -> Dict[str, Any]:
        return self._record().system_attrs

    @property
    def datetime_start(self) -> Optional[datetime.datetime]:
        if self._datetime_start is None:
            self._datetime_start = _ts(self._record().datetime_start)
        return self._datetime_start

    def __repr__(self) -> str:
        return f"Trial(number={self._number})"


def _as_int(name: str, v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    try:
        return int(v.__index__())
    except (AttributeError, TypeError):
        raise TypeError(f"{name} must be an int, got {v!r}") from None


def create_trial(
    *,
    state: TrialState = TrialState.COMPLETE,
    value: float | None = None,
    values: Sequence[float] | None = None,
    params: Dict[str, Any] | None = None,
    distributions: Dict[str, BaseDistribution] | None = None,
    user_attrs: Dict[str, Any] | None = None,
    system_attrs: Dict[str, Any] | None = None,
    intermediate_values: Dict[int, float] | None = None,
    constraints: Dict[str, float] | None = None,
) -> FrozenTrial:
    """Builds a :class:`FrozenTrial` to pass to :meth:`Study.add_trial` (``constraints``: its
    constraint values by name, as :meth:`Trial.set_constraint` sets them)."""
    if value is not None and values is not None:
        raise ValueError("Specify only one of `value` and `values`.")
    system_attrs = dict(system_attrs or {})
    for key, v in (constraints or {}).items():
        system_attrs[_CONSTRAINT_PREFIX + key] = _constraint_value(key, v)
    now = datetime.datetime.now()
    state = TrialState(state)
    ft = FrozenTrial(
        number=-1,
        state=state,
        value=value,
        values=values,
        datetime_start=now if state != TrialState.WAITING else None,
        datetime_complete=now if state.is_finished() else None,
        params=params or {},
        distributions=distributions or {},
        user_attrs=user_attrs or {},
        system_attrs=system_attrs,
        intermediate_values=intermediate_values or {},
        trial_id=-1,
    )
    _validate(ft)
    return ft


def _validate(ft: FrozenTrial) -> None:
    if set(ft.params) != set(ft.distributions):
        raise ValueError(f"params {sorted(ft.params)} and distributions {sorted(ft.distributions)} must have the same keys")
    if ft.state == TrialState.COMPLETE:
        if ft.values is None:
            raise ValueError("a COMPLETE trial needs a value (or values)")
        for v in ft.values:
            if not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
                raise ValueError(f"a COMPLETE trial needs finite values, got {v!r}")
    elif ft.state == TrialState.FAIL and ft.values is not None:
        raise ValueError("a FAIL trial cannot have values")


class _TrialStorage:
    """Optuna's ``BaseStorage`` methods on a study's trials that integrations call through
    ``trial.storage`` (a trial id is its number in dspex)."""

    def __init__(self, study: "Study") -> None:
        self._native = study._native

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._native.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._native.set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return FrozenTrial._from_native(self._native.trial(trial_id))


class FixedTrial(_NotRunning):
    """A trial whose parameters are given: ``objective(FixedTrial({"x": 1.0}))`` runs the
    objective on those values (to check it, or to re-run the best trial's configuration). A
    ``suggest_*`` of a name not given raises ValueError; a value outside the suggested range
    warns. ``report`` does nothing and ``should_prune`` is False."""

    def __init__(self, params: Dict[str, Any], number: int = 0) -> None:
        self._params = dict(params)
        self._suggested: Dict[str, Any] = {}
        self._distributions: Dict[str, BaseDistribution] = {}
        self._user_attrs: Dict[str, Any] = {}
        self._system_attrs: Dict[str, Any] = {}
        self._datetime_start = datetime.datetime.now()
        self._number = number

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return float(self._suggest(name, FloatDistribution(low, high, log=log, step=step)))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._suggest(name, IntDistribution(low, high, log=log, step=step)))

    def suggest_categorical(self, name: str, choices: Sequence[C]) -> C:
        return self._suggest(name, CategoricalDistribution(tuple(choices)))

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self._params:
            raise ValueError(f"The value of the parameter '{name}' is not found. Please set it at the construction of the FixedTrial object.")
        value = self._params[name]
        if isinstance(distribution, CategoricalDistribution):
            inside = value in distribution.choices
        else:
            inside = distribution._contains(value)  # type: ignore[attr-defined]
        if not inside:
            warnings.warn(f"The value {value!r} of the parameter '{name}' is out of the range of the distribution {distribution!r}.", stacklevel=3)
        self._suggested[name] = value
        self._distributions[name] = distribution
        return value

    @property
    def params(self) -> Dict[str, Any]:
        """The parameters suggested so far."""
        return dict(self._suggested)

    @property
    def distributions(self) -> Dict[str, BaseDistribution]:
        return dict(self._distributions)

    @property
    def user_attrs(self) -> Dict[str, Any]:
        return dict(self._user_attrs)

    @property
    def system_attrs(self) -> Dict[str, Any]:
        return dict(self._system_attrs)

    @property
    def datetime_start(self) -> Optional[datetime.datetime]:
        return self._datetime_start

    @property
    def number(self) -> int:
        return self._number


__all__ = ["BaseTrial", "FixedTrial", "FrozenTrial", "Trial", "TrialState", "create_trial"]
