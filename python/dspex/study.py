"""Studies: create, load, copy and optimize (Optuna-compatible)."""

from __future__ import annotations

import datetime
import enum
import threading
from typing import TYPE_CHECKING, Any, Callable, Container, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

from dspex import _native, remote
from dspex import storages as _storages
from dspex._optimize import convert_values, run_optimize, run_optimize_async
from dspex.distributions import BaseDistribution
from dspex.logging import get_logger
from dspex.pruners import BasePruner, MedianPruner, NopPruner, _is_python_pruner
from dspex.samplers import BaseSampler, RandomSampler, TPESampler, _is_python_sampler
from dspex.trial import FrozenTrial, Trial, TrialState, _validate

if TYPE_CHECKING:
    from dspex.launchers import Launcher

_logger = get_logger("dspex.study")

ObjectiveFuncType = Callable[[Trial], Union[float, Sequence[float]]]


class StudyDirection(enum.IntEnum):
    """Whether a study minimizes or maximizes an objective (Optuna's values)."""

    NOT_SET = 0
    MINIMIZE = 1
    MAXIMIZE = 2

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"StudyDirection.{self.name}"


def _direction_name(d: Any) -> str:
    if isinstance(d, StudyDirection):
        if d == StudyDirection.NOT_SET:
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {d!r}")
        return d.name.lower()
    if isinstance(d, str) and d.lower() in ("minimize", "maximize"):
        return d.lower()
    raise ValueError(f"direction must be 'minimize' or 'maximize', got {d!r}")


class Study:
    """A study: a set of trials optimizing one or more objectives. Create it with
    :func:`create_study` or :func:`load_study`; ``Study(study_name, storage, sampler=None,
    pruner=None)`` loads a stored study as Optuna's constructor does."""

    def __init__(self, study_name: Any, storage: Any = None, sampler: Optional[BaseSampler] = None, pruner: Optional[BasePruner] = None) -> None:
        # (internally: the engine's study, its storage, sampler and pruner)
        if not isinstance(study_name, _native.Study):  # Optuna's Study(study_name, storage, ...)
            loaded = load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
            study_name, sampler, pruner, storage = loaded._native, loaded.sampler, loaded.pruner, loaded._storage
        self._native: _native.Study = study_name
        self.sampler: BaseSampler = sampler  # type: ignore[assignment]  # set either way above
        self.pruner: BasePruner = pruner  # type: ignore[assignment]
        self._storage: Union[_storages.InMemoryStorage, _storages.RDBStorage, _storages.JournalStorage, remote.RemoteStorage] = storage
        self._optimizing = 0
        self._lock = threading.Lock()

    def __reduce__(self) -> Tuple[Any, ...]:
        # Pickled as Optuna pickles a study: one in a database or journal file as its storage
        # and name (loaded again when unpickled, in this process or another), one in memory as a
        # copy of its trials and attributes (unpickled into a new in-memory storage); one of a
        # remote engine as the engine's address and its name. Samplers and pruners pickle as
        # their settings; a seeded sampler goes on as the original would.
        if isinstance(self._storage, _storages._PERSISTENT):
            return (_unpickle_study, (self._storage, self.study_name, self.sampler, self.pruner, None))
        if isinstance(self._storage, _storages.InMemoryStorage):
            copy = {
                "directions": [d.name.lower() for d in self.directions],
                "trials": self.get_trials(deepcopy=False),
                "user_attrs": self.user_attrs,
                "system_attrs": self.system_attrs,
                "metric_names": self.metric_names,
            }
            return (_unpickle_study, (None, self.study_name, self.sampler, self.pruner, copy))
        st = self._storage
        return (_unpickle_remote_study, (st.engine, st.token, st.tls_ca, self.study_name, self.sampler, self.pruner))

    # ---------------------------------------------------------------- properties
    @property
    def study_name(self) -> str:
        return self._native.name

    @property
    def directions(self) -> List[StudyDirection]:
        return [StudyDirection[d.upper()] for d in self._native.directions]

    @property
    def direction(self) -> StudyDirection:
        dirs = self.directions
        if len(dirs) > 1:
            raise RuntimeError("This attribute is not available during multi-objective optimization; use directions.")
        return dirs[0]

    def _is_multi_objective(self) -> bool:
        return len(self._native.directions) > 1

    @property
    def trials(self) -> List[FrozenTrial]:
        """All trials (a snapshot)."""
        return self.get_trials(deepcopy=True)

    def get_trials(self, deepcopy: bool = True, states: Optional[Container[TrialState]] = None) -> List[FrozenTrial]:
        """Trials, optionally only those whose state is in ``states``. Records are always fresh
        copies, so ``deepcopy`` has no effect on isolation."""
        names = None
        if states is not None:
            names = [s.name for s in TrialState if s in states]
        return [FrozenTrial._from_native(t) for t in self._native.trials(names)]

    def _get_trials(self, deepcopy: bool = True, states: Optional[Container[TrialState]] = None, use_cache: bool = False) -> List[FrozenTrial]:
        """:meth:`get_trials` without a subclass's override (as Optuna's private method)."""
        return Study.get_trials(self, deepcopy, states)

    @property
    def best_trial(self) -> FrozenTrial:
        """The best COMPLETE trial (single-objective studies)."""
        if self._is_multi_objective():
            raise RuntimeError("A single best trial cannot be retrieved from a multi-objective study. Consider using Study.best_trials.")
        return FrozenTrial._from_native(self._native.best_trial())

    @property
    def best_params(self) -> Dict[str, Any]:
        return self.best_trial.params

    @property
    def best_value(self) -> float:
        v = self.best_trial.value
        assert v is not None
        return v

    @property
    def best_trials(self) -> List[FrozenTrial]:
        """The Pareto-optimal COMPLETE trials."""
        return [FrozenTrial._from_native(t) for t in self._native.best_trials()]

    @property
    def user_attrs(self) -> Dict[str, Any]:
        return self._native.user_attrs()

    @property
    def system_attrs(self) -> Dict[str, Any]:
        return self._native.system_attrs()

    def set_user_attr(self, key: str, value: Any) -> None:
        """Stores a JSON-serializable value on the study."""
        self._native.set_user_attr(key, value)

    def set_system_attr(self, key: str, value: Any) -> None:
        self._native.set_system_attr(key, value)

    @property
    def metric_names(self) -> Optional[List[str]]:
        """The objectives' names set by :meth:`set_metric_names` (None before)."""
        names = self.system_attrs.get(_METRIC_NAMES)
        return list(names) if names is not None else None

    def set_metric_names(self, metric_names: List[str]) -> None:
        """Names the objectives, one name per direction (kept in the storage, as Optuna does)."""
        if len(metric_names) != len(self.directions):
            raise ValueError("The number of objectives must match the length of the metric names.")
        self.set_system_attr(_METRIC_NAMES, list(metric_names))

    # ---------------------------------------------------------------- optimize
    def optimize(
        self,
        func: ObjectiveFuncType,
        n_trials: Optional[int] = None,
        timeout: Optional[float] = None,
        n_jobs: int = 1,
        catch: Union[Iterable[Type[Exception]], Type[Exception]] = (),
        callbacks: Optional[Iterable[Callable[["Study", FrozenTrial], None]]] = None,
        gc_after_trial: bool = False,
        show_progress_bar: bool = False,
        concurrency: Optional[int] = None,
        trial_timeout: Optional[float] = None,
        processes: Optional[int] = None,
        max_retries: int = 2,
        max_concurrency: Optional[int] = None,
        workers: Optional["Launcher"] = None,
    ) -> None:
        """Runs trials of ``func`` until ``n_trials`` trials ran, ``timeout`` seconds passed,
        :meth:`stop` was called or the sampler is exhausted.

        This process evaluates ``concurrency`` trials at once (``n_jobs`` is an alias; -1 means
        one per CPU): sync objectives on threads, ``async def`` objectives as tasks on one event
        loop. The run keeps as many trials in flight as its evaluators take at once: this
        process's ``concurrency`` plus that of every process attached to a remote study with
        :func:`dspex.attach` (growing and shrinking as they join and leave), at most
        ``max_concurrency`` when given. An exception
        in ``catch`` fails its trial and the study goes on; any other exception fails the trial,
        stops the study and is re-raised here. Ctrl-C fails the trials in flight, keeps the
        finished ones and raises ``KeyboardInterrupt``.

        ``processes=N`` evaluates in N worker processes instead (``func`` given as
        ``"module:function"``, an importable function or a picklable callable), so CPU-bound
        objectives use every core; ``concurrency`` (default N) is then split among them. On a
        remote study (``engine=...``) ``optimize`` attaches this process to the engine as an
        evaluator. ``workers=`` a :mod:`dspex.launchers` launcher (``dspex.launchers.Ray(
        num_workers=8)``) evaluates in workers it starts elsewhere (Ray actors), the same way.

        A trial is *lost* when its evaluator goes away before answering (a worker process or
        an attached process crashed, was killed, or went silent past its heartbeat) or when it
        ran past ``trial_timeout``: it is failed, and re-run with the same parameters as a new
        trial (not counted in ``n_trials``) up to ``max_retries`` times. A trial whose
        objective raised is not lost: it fails and is not re-run.
        """
        if max_concurrency is not None and (isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1):
            raise ValueError(f"max_concurrency must be None or an int >= 1, got {max_concurrency!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if workers is not None:
            from dspex.launchers import Launcher

            if not isinstance(workers, Launcher):
                raise TypeError(f"workers must be a dspex.launchers launcher (e.g. Ray(num_workers=4)), got {workers!r}")
            if processes is not None:
                raise ValueError("give processes=N or workers=..., not both")
            workers.optimize(self, func, n_trials, timeout, concurrency, trial_timeout, max_retries, max_concurrency)
            return
        if processes is not None:
            remote.optimize_processes(self, func, n_trials, timeout, processes, concurrency, trial_timeout, max_retries, catch, max_concurrency)
            return
        run_optimize(self, func, n_trials, timeout, n_jobs, catch, callbacks, gc_after_trial, show_progress_bar, concurrency, trial_timeout, max_retries, max_concurrency)

    async def optimize_async(
        self,
        func: Callable[[Trial], Any],
        n_trials: Optional[int] = None,
        timeout: Optional[float] = None,
        concurrency: int = 1,
        catch: Union[Iterable[Type[Exception]], Type[Exception]] = (),
        callbacks: Optional[Iterable[Callable[["Study", FrozenTrial], None]]] = None,
        show_progress_bar: bool = False,
        trial_timeout: Optional[float] = None,
        max_retries: int = 2,
        max_concurrency: Optional[int] = None,
    ) -> None:
        """Like :meth:`optimize` for an ``async def`` objective, from inside a running event loop."""
        await run_optimize_async(self, func, n_trials, timeout, concurrency, catch, callbacks, show_progress_bar, trial_timeout, max_retries, max_concurrency)

    def stop(self) -> None:
        """Starts no more trials in the running :meth:`optimize` (running trials finish)."""
        if self._optimizing == 0:
            raise RuntimeError("`Study.stop` is supposed to be invoked inside an objective function or a callback.")
        self._native.stop()

    # ---------------------------------------------------------------- ask and tell
    def ask(self, fixed_distributions: Optional[Dict[str, BaseDistribution]] = None) -> Trial:
        """Starts a trial (an enqueued one first) for the ask-and-tell interface."""
        trial = Trial(self, self._native.ask())
        for name, dist in (fixed_distributions or {}).items():
            trial._suggest(name, dist)
        return trial

    def tell(
        self,
        trial: Union[Trial, int],
        values: Optional[Union[float, Sequence[float]]] = None,
        state: Optional[TrialState] = None,
        skip_if_finished: bool = False,
    ) -> FrozenTrial:
        """Finishes ``trial`` with ``values`` (COMPLETE) or ``state`` (PRUNED / FAIL)."""
        number = trial.number if isinstance(trial, (Trial, FrozenTrial)) else trial
        if not isinstance(number, int) or isinstance(number, bool):
            raise TypeError(f"trial must be a Trial or a trial number, got {trial!r}")
        # One crossing to the engine for the outcome and the record returned. The engine
        # refuses to tell a trial that is not RUNNING (ValueError) or does not exist (KeyError);
        # the trial's state is asked only then, for Optuna's answer (skip_if_finished, or
        # "Cannot tell a COMPLETE trial." rather than a complaint about the arguments).
        try:
            told = self._native.tell(number, record=True, **_tell_arguments(values, state))
        except ValueError as e:
            refused = e
        else:
            if told.state == "FAIL" and state != TrialState.FAIL:  # values that are not numbers, NaN...
                _logger.warning(f"Trial {number} failed because of the following error: {told.fail_reason}")
            return FrozenTrial._from_native(told.trial)
        current = TrialState[self._native.trial_state(number)]
        if current == TrialState.RUNNING:
            raise refused  # about the arguments
        if current.is_finished() and skip_if_finished:
            return FrozenTrial._from_native(self._native.trial(number))
        raise ValueError(f"Cannot tell a {current.name} trial.")

    def enqueue_trial(self, params: Dict[str, Any], user_attrs: Optional[Dict[str, Any]] = None, skip_if_exists: bool = False) -> None:
        """Adds a WAITING trial that will use ``params`` when it runs."""
        self._native.enqueue(dict(params), dict(user_attrs or {}), skip_if_exists)

    def add_trial(self, trial: FrozenTrial) -> None:
        """Adds a trial made elsewhere (see :func:`dspex.trial.create_trial`)."""
        _validate(trial)
        self._native.add_trial(
            trial.state.name,
            dict(trial.params),
            {k: d._to_native() for k, d in trial.distributions.items()},
            None if trial.values is None else [float(v) for v in trial.values],
            {int(k): float(v) for k, v in trial.intermediate_values.items()},
            dict(trial.user_attrs),
            dict(trial.system_attrs),
            None if trial.datetime_start is None else trial.datetime_start.timestamp(),
            None if trial.datetime_complete is None else trial.datetime_complete.timestamp(),
        )

    def add_trials(self, trials: Iterable[FrozenTrial]) -> None:
        for t in trials:
            self.add_trial(t)

    # ---------------------------------------------------------------- export
    def trials_dataframe(
        self,
        attrs: Tuple[str, ...] = ("number", "value", "datetime_start", "datetime_complete", "duration", "params", "user_attrs", "system_attrs", "state"),
        multi_index: bool = False,
    ) -> Any:
        """The trials as a ``pandas.DataFrame`` (needs pandas: ``pip install dspex[pandas]``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Study.trials_dataframe() needs pandas, which is not installed. Install it with `pip install pandas` (or `pip install dspex[pandas]`)."
            ) from None
        trials = self.get_trials(deepcopy=False)
        multi = self._is_multi_objective()
        rows = []
        for t in trials:
            row: Dict[Any, Any] = {}
            for a in attrs:
                if a == "value" or a == "values":
                    if multi:
                        for i in range(len(self._native.directions)):
                            row[("values", i)] = None if t.values is None else t.values[i]
                    else:
                        row[("value", "")] = None if t.values is None else t.values[0]
                elif a in ("params", "user_attrs", "system_attrs"):
                    for k, v in getattr(t, a).items():
                        row[(a, k)] = v
                elif a == "state":
                    row[("state", "")] = t.state.name
                else:
                    row[(a, "")] = getattr(t, a)
            rows.append(row)
        columns: List[Any] = []
        for r in rows:
            for c in r:
                if c not in columns:
                    columns.append(c)
        df = pd.DataFrame(rows, columns=pd.MultiIndex.from_tuples(columns) if columns else None)
        if not multi_index and columns:
            df.columns = ["_".join(str(x) for x in c if x != "") for c in columns]
        return df


def create_study(
    storage: Any = None,
    sampler: Optional[BaseSampler] = None,
    pruner: Optional[BasePruner] = None,
    study_name: Optional[str] = None,
    direction: Optional[Union[str, StudyDirection]] = None,
    load_if_exists: bool = False,
    *,
    directions: Optional[Sequence[Union[str, StudyDirection]]] = None,
    engine: Optional[str] = None,
    token: Optional[str] = None,
    tls_ca: Optional[str] = None,
) -> Study:
    """Creates a study (default, as in Optuna: minimize one objective with TPE, MedianPruner, in
    memory).

    With ``engine="host:port"`` the study lives in a remote engine (``dspex serve``); ``token``
    (default: ``$DSPEX_TOKEN``) authenticates, ``tls_ca`` is the CA of an ``https://`` engine.
    """
    if direction is not None and directions is not None:
        raise ValueError("Specify only one of `direction` and `directions`.")
    if directions is not None:
        if isinstance(directions, str) or len(directions) == 0:
            raise ValueError(f"directions must be a non-empty list of 'minimize' / 'maximize', got {directions!r}")
        names = [_direction_name(d) for d in directions]
    else:
        names = [_direction_name(direction if direction is not None else "minimize")]
    if engine is not None:
        if storage is not None:
            raise ValueError("give storage or engine, not both (the engine owns the storage)")
        client = remote.connect(engine, token, tls_ca)
        given_sampler = sampler
        sampler, pruner = _resolve_sampler_pruner(sampler, pruner)
        engine_sampler = None if _is_python_sampler(given_sampler) else given_sampler
        engine_pruner = None if _is_python_pruner(pruner) else pruner
        native = client.create_study(study_name, names, remote.component_spec(engine_sampler, "sampler"), remote.component_spec(engine_pruner, "pruner"), load_if_exists)
        return Study(native, remote.RemoteStorage(client, engine, token, tls_ca), sampler, pruner)
    st = _storages._resolve(storage)
    sampler, pruner = _resolve_sampler_pruner(sampler, pruner)
    native = _native.Study.create(st._native, study_name, names, _engine_sampler(sampler), _engine_pruner(pruner), load_if_exists)
    return Study(native, st, sampler, pruner)


def load_study(
    *,
    study_name: Optional[str],
    storage: Any = None,
    sampler: Optional[BaseSampler] = None,
    pruner: Optional[BasePruner] = None,
    engine: Optional[str] = None,
    token: Optional[str] = None,
    tls_ca: Optional[str] = None,
) -> Study:
    """Loads a study by name from ``storage`` (an :class:`~dspex.storages.InMemoryStorage`),
    or from the remote engine at ``engine``."""
    if engine is not None:
        if study_name is None:
            raise ValueError("load_study(engine=...) needs the study_name")
        return _load_remote_study(engine, token, tls_ca, study_name)
    st = _storages._resolve(storage)
    if storage is None:
        raise ValueError("load_study needs the storage the study was created in")
    if study_name is None:
        names = st.get_all_study_names()
        if len(names) != 1:
            raise ValueError(f"study_name is None but the storage has {len(names)} studies; give the name")
        study_name = names[0]
    sampler, pruner = _resolve_sampler_pruner(sampler, pruner)
    native = _native.Study.load(st._native, study_name, _engine_sampler(sampler), _engine_pruner(pruner))
    return Study(native, st, sampler, pruner)


def _load_remote_study(engine: str, token: Optional[str], tls_ca: Optional[str], study_name: str) -> Study:
    client = remote.connect(engine, token, tls_ca)
    sampler, pruner = _resolve_sampler_pruner(None, None)
    return Study(client.load_study(study_name), remote.RemoteStorage(client, engine, token, tls_ca), sampler, pruner)


# dspex.remote.attach opens the study it joins with this (dspex.remote cannot import this module).
remote.set_study_loader(_load_remote_study)


def delete_study(*, study_name: str, storage: Any) -> None:
    """Deletes a study from ``storage``."""
    _storages._resolve(storage)._native.delete_study(study_name)


def get_all_study_names(storage: Any) -> List[str]:
    return _storages._resolve(storage).get_all_study_names()


_METRIC_NAMES = "study:metric_names"  # the study system attribute Optuna keeps them in


class MaxTrialsCallback:
    """Stops the study once ``n_trials`` of its trials are in ``states`` (default: COMPLETE),
    counting the trials of every process that shares the study (a callback of ``optimize``)."""

    def __init__(self, n_trials: int, states: Optional[Container[TrialState]] = (TrialState.COMPLETE,)) -> None:
        self._n_trials = n_trials
        self._states = states

    def __call__(self, study: Study, trial: FrozenTrial) -> None:
        if len(study.get_trials(deepcopy=False, states=self._states)) >= self._n_trials:
            study.stop()


class StudySummary:
    """What :func:`get_all_study_summaries` says about a study."""

    def __init__(self, study_name: str, direction: Optional[StudyDirection], best_trial: Optional[FrozenTrial], user_attrs: Dict[str, Any], n_trials: int,
                 datetime_start: Optional[datetime.datetime], study_id: int, *, directions: Optional[Sequence[StudyDirection]] = None) -> None:
        if (direction is None) == (directions is None):
            raise ValueError("Specify one of `direction` and `directions`.")
        self.study_name = study_name
        self._directions = list(directions) if directions is not None else [direction]
        self.best_trial = best_trial
        self.user_attrs = user_attrs
        self.n_trials = n_trials
        self.datetime_start = datetime_start
        self._study_id = study_id

    @property
    def direction(self) -> StudyDirection:
        if len(self._directions) > 1:
            raise RuntimeError("This attribute is not available during multi-objective optimization.")
        d = self._directions[0]
        assert d is not None
        return d

    @property
    def directions(self) -> List[StudyDirection]:
        return [d for d in self._directions if d is not None]

    def __repr__(self) -> str:
        return f"StudySummary(study_name={self.study_name!r}, n_trials={self.n_trials})"


def get_all_study_summaries(storage: Any, include_best_trial: bool = True) -> List[StudySummary]:
    """A :class:`StudySummary` of every study of ``storage`` (``study_id``: the study's position
    in the storage's list)."""
    out = []
    for i, name in enumerate(get_all_study_names(storage)):
        study = load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        best = None
        if include_best_trial and len(study.directions) == 1 and any(t.state == TrialState.COMPLETE for t in trials):
            best = study.best_trial
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        multi = len(study.directions) > 1
        out.append(StudySummary(name, None if multi else study.direction, best, study.user_attrs, len(trials), min(starts) if starts else None, i,
                                directions=study.directions if multi else None))
    return out


def copy_study(*, from_study_name: str, from_storage: Any, to_storage: Any, to_study_name: Optional[str] = None) -> None:
    """Copies a study (its directions, attributes and every trial) to another storage, or under
    another name. Trial numbers are given anew in the copy, as in Optuna."""
    src = load_study(study_name=from_study_name, storage=from_storage)
    dst = create_study(study_name=to_study_name or from_study_name, storage=to_storage, directions=src.directions)
    for k, v in src.system_attrs.items():
        dst.set_system_attr(k, v)
    for k, v in src.user_attrs.items():
        dst.set_user_attr(k, v)
    dst.add_trials(src.get_trials(deepcopy=False))


def _tell_arguments(values: Any, state: Optional[TrialState]) -> Dict[str, Any]:
    """The keyword arguments of the engine's ``tell`` for ``Study.tell(trial, values, state)``.
    Raises ValueError for arguments Optuna refuses."""
    if state is not None:
        state = TrialState(state)
        if state in (TrialState.RUNNING, TrialState.WAITING):
            raise ValueError(f"Cannot tell with state {state.name}.")
        if state in (TrialState.PRUNED, TrialState.FAIL) and values is not None:
            raise ValueError(f"values must be None when state is {state.name}, got {values!r}")
    if state == TrialState.PRUNED:
        return {"state": "PRUNED"}
    if state == TrialState.FAIL:
        return {"state": "FAIL", "fail_reason": "told FAIL"}
    vals, reason = convert_values(values)
    if reason is not None:
        if state == TrialState.COMPLETE:
            raise ValueError(reason)
        return {"state": "FAIL", "fail_reason": reason}
    # COMPLETE given: values the engine refuses (NaN, a wrong count) raise instead of failing
    # the trial.
    return {"values": vals, "strict": state == TrialState.COMPLETE}


def _unpickle_study(storage: Any, name: str, sampler: Any, pruner: Any, copy: Optional[Dict[str, Any]]) -> "Study":
    """The study a pickle holds (see ``Study.__reduce__``)."""
    if copy is None:
        return load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study = create_study(study_name=name, directions=copy["directions"], sampler=sampler, pruner=pruner)
    for k, v in copy["user_attrs"].items():
        study.set_user_attr(k, v)
    for k, v in copy["system_attrs"].items():
        study._native.set_system_attr(k, v)
    if copy["metric_names"] is not None:
        study.set_metric_names(copy["metric_names"])
    study.add_trials(copy["trials"])
    return study


def _unpickle_remote_study(engine: str, token: Optional[str], tls_ca: Optional[str], name: str, sampler: Any, pruner: Any) -> "Study":
    """A pickled study of a remote engine: connected again, with the Python side's sampler and
    pruner (the engine keeps its own)."""
    study = _load_remote_study(engine, token, tls_ca, name)
    study.sampler, study.pruner = sampler, pruner
    return study


def _engine_sampler(sampler: Any) -> Any:
    """The engine's sampler of a study: the sampler itself, or for one written in Python (which
    samples in the evaluating process) a random sampler that the engine never asks."""
    return RandomSampler()._native if _is_python_sampler(sampler) else sampler._native


def _engine_pruner(pruner: Any) -> Any:
    """The engine's pruner of a study: the pruner itself, or for one written in Python (asked
    by ``trial.should_prune`` in the evaluating process) one that never prunes."""
    return NopPruner()._native if _is_python_pruner(pruner) else pruner._native


def _resolve_sampler_pruner(sampler: Any, pruner: Any) -> Tuple[BaseSampler, BasePruner]:
    if sampler is None:
        sampler = TPESampler()
    elif not isinstance(sampler, BaseSampler) and not _is_python_sampler(sampler):
        raise ValueError(f"sampler must be a dspex sampler (dspex.samplers.*) or implement Optuna's sampler interface (sample_independent...), got {sampler!r}")
    if pruner is None:
        pruner = MedianPruner()  # Optuna's default
    elif not isinstance(pruner, BasePruner) and not _is_python_pruner(pruner):
        raise ValueError(f"pruner must be a dspex pruner (dspex.pruners.*) or implement Optuna's prune(study, trial), got {pruner!r}")
    return sampler, pruner


__all__ = [
    "MaxTrialsCallback",
    "Study",
    "StudyDirection",
    "StudySummary",
    "copy_study",
    "create_study",
    "delete_study",
    "get_all_study_names",
    "get_all_study_summaries",
    "load_study",
]
