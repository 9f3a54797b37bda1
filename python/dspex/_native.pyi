"""Type stubs of ``dspex._native``, the PyO3 extension built from ``crates/pysdk``.

What the ``_native`` pymodule function of ``crates/pysdk/src/lib.rs`` registers: the exceptions
and the samplers, pruners, storage and distribution helpers (``lib.rs``), ``Study``, ``Run``
and the record classes (``study.rs``), ``RemoteClient`` (``remote.rs``), ``EmbeddedServer``,
``WorkerPool``, ``cli_main``, ``serve_embedded`` and ``serve_sessions`` (``server.rs``). Keep
it in step with those files (``tests/test_native_stubs.py`` checks it with mypy's stubtest): the signatures are their
``#[pyo3(signature = ...)]``s (without one, every parameter is required), ``#[new]`` is
``__new__``, and classes without one cannot be built from Python. Every call into the engine
releases the GIL; engine errors are raised as ValueError (invalid argument, trial not RUNNING),
KeyError (no such study or trial), RuntimeError, NotImplementedError,
:class:`DuplicatedStudyError` or :class:`StorageError`, and a remote engine's transport
failures as :class:`RemoteError`.
"""

from typing import Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, Union, final

# In the order the module registers them.
__all__ = [
    "__version__",
    "DSpexError",
    "DuplicatedStudyError",
    "StorageError",
    "InMemoryStorage",
    "Sampler",
    "Pruner",
    "GaussianProcess",
    "RemoteError",
    "ToolError",
    "ToolTimeout",
    "ToolUnavailable",
    "LMError",
    "BudgetExceeded",
    "LM",
    "ToolInbox",
    "Study",
    "Run",
    "TrialRecord",
    "Told",
    "RunSummary",
    "RemoteClient",
    "EmbeddedServer",
    "WorkerPool",
    "Session",
    "VariableWatch",
    "tokenize",
    "cli_main",
    "serve_embedded",
    "serve_sessions",
    "sampler",
    "pruner",
    "forest_importances",
    "best_of",
    "hypervolume",
    "flush_storages",
    "check_distribution_compatibility",
    "check_float_distribution",
    "check_int_distribution",
    "check_categorical_distribution",
    "distribution_to_json",
    "distribution_from_json",
]

__version__: str

#: A parameter value as Python sees it.
_ParamValue = Union[None, bool, int, float, str]
#: A distribution: ("float", low, high, log, step), ("int", low, high, log, step) or
#: ("categorical", choices).
_DistributionTuple = Union[
    Tuple[Literal["float"], float, float, bool, Optional[float]],
    Tuple[Literal["int"], int, int, bool, int],
    Tuple[Literal["categorical"], Tuple[_ParamValue, ...]],
]

# ------------------------------------------------------------------ exceptions

class DSpexError(Exception):
    """Base class of dspex's own errors."""

class DuplicatedStudyError(DSpexError):
    """A study with this name already exists."""

class StorageError(DSpexError):
    """A storage backend failed (unreachable database, unknown schema, corrupted rows, read-only file)."""

class RemoteError(DSpexError):
    """The remote engine cannot be reached, refused the call (UNAUTHENTICATED...) or the stream broke."""

class ToolError(DSpexError):
    """A tool call failed: the tool raised (`.kind` is the type name of its exception, `.remote_traceback` its traceback)."""

    kind: str
    remote_traceback: str

class ToolTimeout(ToolError):
    """A tool did not answer within its timeout."""

class ToolUnavailable(ToolError):
    """The process that registered a tool is gone."""

class LMError(DSpexError):
    """An LM call failed: the server answered an error (`.status` is the HTTP status), gave no answer after the retries (`.status` is None), or answered something that is not the API's JSON."""

    status: Optional[int]

class BudgetExceeded(LMError):
    """A budget of the LM (max_calls, max_total_tokens, max_cost) is exhausted: the call was not made."""

# ------------------------------------------------------------------ storage, samplers, pruners

@final
class InMemoryStorage:
    """A storage shared by the studies created on it: in memory, or SQL with :meth:`from_url`."""

    def __new__(cls) -> InMemoryStorage: ...
    @staticmethod
    def from_url(
        url: str,
        heartbeat_interval: Optional[float] = None,
        grace_period: Optional[float] = None,
        retry: bool = False,
        retry_max: Optional[int] = None,
        retry_inherit_intermediate_values: bool = False,
    ) -> InMemoryStorage:
        """A SQLite / PostgreSQL storage in Optuna's schema; durations in seconds."""
    def summaries(self) -> List[Tuple[int, str, List[str], int, Dict[str, Any], Dict[str, Any], Optional[float]]]:
        """(study_id, name, directions, n_trials, user_attrs, system_attrs, datetime_start seconds or None) per study."""
    def study_names(self) -> List[str]: ...
    def fail_stale_trials(self, name: str) -> List[int]:
        """Fails the stale RUNNING trials of study ``name``; their numbers."""
    def delete_study(self, name: str) -> None: ...

@final
class Sampler:
    """A sampler built by the engine (see ``dspex.samplers``)."""

    @property
    def kind(self) -> str: ...
    def infer_relative_space(self, study: Study, trial: int) -> list[tuple[str, str]]:
        """Optuna's ``infer_relative_search_space`` on the study's trials read now: (name, distribution JSON) pairs."""
    def sample_relative_params(self, study: Study, trial: int, space: list[tuple[str, str]]) -> list[tuple[str, float]]:
        """Optuna's ``sample_relative``: internal values by name."""
    def sample_independent_param(self, study: Study, trial: int, name: str, distribution_json: str) -> float:
        """Optuna's ``sample_independent``: the internal value."""

@final
class Pruner:
    """A pruner built by the engine (see ``dspex.pruners``)."""

    @property
    def kind(self) -> str: ...
    def prune_trial(self, study: Study, trial: int) -> bool:
        """Optuna's ``prune(study, trial)`` on the study's trials read now."""

@final
class GaussianProcess:
    """The GP sampler's Gaussian process on its own (Optuna's terminator evaluators use it)."""

    def __new__(cls, x: list[list[float]], y: list[float], is_categorical: list[bool], deterministic: bool = False, start: Optional[GaussianProcess] = None) -> GaussianProcess: ...
    def posterior(self, xs: list[list[float]]) -> list[tuple[float, float]]:
        """(mean, variance) of the latent function at each point."""
    def covariance(self, a: list[float], b: list[float]) -> float:
        """The posterior covariance between two points."""

def sampler(kind: str, options_json: str) -> Sampler:
    """Builds a sampler from its kind and constructor keywords (JSON; null means not given)."""

def pruner(kind: str, options_json: str) -> Pruner:
    """Builds a pruner from its kind and constructor keywords (JSON; null means not given)."""

def forest_importances(
    x: List[List[float]], y: List[float], space: List[Tuple[float, float]], groups: List[List[int]], method: str, n_trees: int, max_depth: int, seed: Optional[int]
) -> Optional[List[float]]:
    """Importances of column groups from a random forest ("fanova" or "mdi")."""
    ...

def hypervolume(points: List[List[float]], reference: List[float]) -> float:
    """Hypervolume of points (to minimise) up to the reference point."""
    ...

def flush_storages() -> None:
    """Writes the batched updates of running trials of every open SQL storage."""
    ...

def check_distribution_compatibility(old: _DistributionTuple, new: _DistributionTuple) -> None:
    """ValueError when a parameter recorded with ``old`` cannot be suggested with ``new``."""
    ...

def best_of(losses: List[List[float]], k: int) -> List[bool]:
    """The k best loss vectors by non-domination rank and hypervolume tie-break."""
    ...

def check_float_distribution(low: float, high: float, log: bool, step: Optional[float]) -> Tuple[float, Optional[str]]:
    """Checks a float distribution; returns the (possibly adjusted) high and the adjustment note."""

def check_int_distribution(low: int, high: int, log: bool, step: int) -> Tuple[int, Optional[str]]:
    """Checks an int distribution; returns the (possibly adjusted) high and the adjustment note."""

def check_categorical_distribution(choices: Iterable[_ParamValue]) -> None: ...
def distribution_to_json(dist: _DistributionTuple) -> str:
    """Optuna's JSON form of a distribution tuple."""

def distribution_from_json(text: str) -> _DistributionTuple: ...

# ------------------------------------------------------------------ records

@final
class TrialRecord:
    """A trial as Python reads it (``dspex.FrozenTrial`` is built from it)."""

    @property
    def number(self) -> int: ...
    @property
    def state(self) -> str:
        """RUNNING, COMPLETE, PRUNED, FAIL or WAITING."""
    @property
    def params(self) -> Dict[str, _ParamValue]: ...
    @property
    def distributions(self) -> Dict[str, _DistributionTuple]: ...
    @property
    def values(self) -> Optional[List[float]]: ...
    @property
    def intermediate_values(self) -> Dict[int, float]: ...
    @property
    def user_attrs(self) -> Dict[str, Any]: ...
    @property
    def system_attrs(self) -> Dict[str, Any]: ...
    @property
    def datetime_start(self) -> Optional[float]:
        """Unix seconds."""
    @property
    def datetime_complete(self) -> Optional[float]:
        """Unix seconds."""

@final
class Told:
    """What ``tell`` / ``finish`` recorded."""

    @property
    def state(self) -> str: ...
    @property
    def values(self) -> Optional[List[float]]: ...
    @property
    def fail_reason(self) -> Optional[str]: ...
    @property
    def trial(self) -> Optional[TrialRecord]:
        """The finished trial, when ``tell`` was asked for it (``record=True``)."""

@final
class RunSummary:
    """How a run ended."""

    @property
    def started(self) -> int: ...
    @property
    def finished(self) -> int: ...
    @property
    def reason(self) -> str:
        """n_trials, timeout, stopped, exhausted, aborted, interrupted or error."""
    @property
    def detail(self) -> Optional[str]: ...
    @property
    def timed_out(self) -> List[int]:
        """Trials failed by the per-trial timeout."""

# ------------------------------------------------------------------ study and run

@final
class Study:
    """A study, in this process's engine or in a remote one."""

    @staticmethod
    def create(
        storage: InMemoryStorage,
        name: Optional[str],
        directions: Sequence[str],
        sampler: Optional[Sampler] = None,
        pruner: Optional[Pruner] = None,
        load_if_exists: bool = False,
    ) -> Study: ...
    @staticmethod
    def load(storage: InMemoryStorage, name: str, sampler: Optional[Sampler] = None, pruner: Optional[Pruner] = None) -> Study: ...
    @property
    def name(self) -> str: ...
    @property
    def directions(self) -> List[str]:
        """"minimize" / "maximize" per objective."""
    @property
    def client(self) -> Optional[RemoteClient]:
        """The connection of a remote study; None for an embedded one."""
    @property
    def is_remote(self) -> bool: ...
    def ask(self) -> int: ...
    def suggest_float(self, number: int, name: str, low: float, high: float, log: bool = False, step: Optional[float] = None) -> float: ...
    def suggest_int(self, number: int, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, number: int, name: str, choices: Iterable[_ParamValue]) -> int:
        """The index of the chosen value in ``choices``."""
    def suggest(self, number: int, name: str, dist: _DistributionTuple, given: Optional[_ParamValue] = None) -> _ParamValue: ...
    def report(self, number: int, step: int, value: float) -> bool:
        """False when ``step`` was reported already."""
    def should_prune(self, number: int) -> bool: ...
    def tell(
        self,
        number: int,
        values: Optional[Sequence[float]] = None,
        state: Optional[str] = None,
        fail_reason: Optional[str] = None,
        strict: bool = False,
        record: bool = False,
    ) -> Told:
        """Finishes a RUNNING trial: ``values`` (COMPLETE if valid; ``strict``: invalid values
        raise instead of failing the trial), or ``state`` "PRUNED"/"FAIL"; ``record``: the answer
        carries the finished trial (``Told.trial``)."""
    def enqueue(self, params: Mapping[str, _ParamValue], user_attrs: Optional[Mapping[str, Any]] = None, skip_if_exists: bool = False) -> Optional[int]: ...
    def add_trial(
        self,
        state: str,
        params: Mapping[str, _ParamValue],
        distributions: Mapping[str, _DistributionTuple],
        values: Optional[Sequence[float]],
        intermediate_values: Mapping[int, float],
        user_attrs: Optional[Mapping[str, Any]],
        system_attrs: Optional[Mapping[str, Any]],
        datetime_start: Optional[float] = None,
        datetime_complete: Optional[float] = None,
    ) -> int: ...
    def trial(self, number: int) -> TrialRecord: ...
    def trial_params(self, number: int) -> Dict[str, _ParamValue]: ...
    def trial_state(self, number: int) -> str: ...
    def trials(self, states: Optional[Sequence[str]] = None) -> List[TrialRecord]: ...
    def n_trials(self, states: Optional[Sequence[str]] = None) -> int: ...
    def best_trial(self) -> TrialRecord:
        """Raises ValueError when no trial is COMPLETE, RuntimeError for a multi-objective study."""
    def best_trials(self) -> List[TrialRecord]: ...
    def set_user_attr(self, key: str, value: Any) -> None: ...
    def set_system_attr(self, key: str, value: Any) -> None: ...
    def user_attrs(self) -> Dict[str, Any]: ...
    def system_attrs(self) -> Dict[str, Any]: ...
    def set_trial_user_attr(self, number: int, key: str, value: Any) -> None: ...
    def set_trial_system_attr(self, number: int, key: str, value: Any) -> None: ...
    def stop(self) -> int:
        """Stops the active runs of this study; returns how many there were."""
    def start_run(
        self,
        n_trials: Optional[int] = None,
        timeout: Optional[float] = None,
        concurrency: int = 1,
        trial_timeout: Optional[float] = None,
        max_retries: int = 0,
        max_concurrency: Optional[int] = None,
        evaluators_ask: bool = False,
        heartbeat_ms: int = 1000,
        worker: Optional[str] = None,
    ) -> Run:
        """Starts a run that this process evaluates, ``concurrency`` trials at once (0: it only owns the run)."""
    def attach(self, capacity: int = 1, heartbeat_ms: int = 1000, worker: Optional[str] = None) -> Run:
        """Joins the study's active run (remote: waiting for one) as an evaluator of ``capacity`` trials at once."""

@final
class Run:
    """One ``optimize`` run: evaluators pull trial numbers and answer with ``finish`` (or ``tell`` then ``done``)."""

    def pull(self, max: int = 1, timeout: Optional[float] = None) -> Optional[List[int]]:
        """Up to ``max`` trial numbers; [] when none came within ``timeout`` seconds, None when the run is over."""
    def finish(
        self,
        number: int,
        values: Optional[Sequence[float]] = None,
        state: Optional[str] = None,
        fail_reason: Optional[str] = None,
        abort: Optional[str] = None,
        wait: bool = True,
    ) -> Optional[Told]:
        """``tell`` then ``done`` in one crossing; None when the engine had finished the trial already. ``wait=False``: may be recorded in the background."""
    def done(self, number: int, abort: Optional[str] = None) -> None: ...
    def stop(self) -> None: ...
    def interrupt(self, reason: str) -> None: ...
    @property
    def finished(self) -> bool: ...
    def wakeup_fd(self) -> int:
        """A descriptor that becomes readable when trials are queued or the run ends: read it empty, then ``pull(max, 0)``."""
    def wait(self, timeout: Optional[float] = None) -> Optional[RunSummary]:
        """The summary once the run is over; None after ``timeout`` seconds."""

# ------------------------------------------------------------------ remote engines and servers

@final
class RemoteClient:
    """A connection to an engine."""

    @staticmethod
    def connect(address: str, token: Optional[str] = None, tls_ca: Optional[str] = None) -> RemoteClient:
        """Connects to ``address`` ("host:port", "http://host:port" or "https://host:port")."""
    @property
    def address(self) -> str: ...
    def list_sessions(self) -> List[Tuple[str, float, float, int, List[str], List[str]]]:
        """The engine's open sessions: (id, idle seconds, ttl seconds, variables, registered tools, indexes)."""
    def close_session(self, session_id: str) -> None:
        """Closes the engine's session ``session_id`` (KeyError when it is not open)."""
    def create_study(
        self,
        name: Optional[str],
        directions: Sequence[str],
        sampler: Optional[Tuple[str, str]] = None,
        pruner: Optional[Tuple[str, str]] = None,
        load_if_exists: bool = False,
    ) -> Study:
        """``sampler`` / ``pruner``: (kind, options_json)."""
    def load_study(self, name: str) -> Study: ...
    def study_names(self) -> List[str]: ...
    def delete_study(self, name: str) -> None: ...

@final
class EmbeddedServer:
    """An in-process engine server on a loopback port serving one embedded study."""

    @property
    def address(self) -> str: ...
    @property
    def token(self) -> str: ...
    def start_run(
        self,
        n_trials: Optional[int] = None,
        timeout: Optional[float] = None,
        max_concurrency: Optional[int] = None,
        trial_timeout: Optional[float] = None,
        max_retries: int = 0,
    ) -> Run:
        """Starts a run of the study that attached workers evaluate."""
    def close(self) -> None:
        """Stops the server (open streams end)."""

@final
class WorkerPool:
    """``n`` worker processes running ``argv`` (each with ``--name <name_prefix>-<i>``) with the
    extra environment ``env``; crashed ones are restarted with backoff, ``max_restarts`` times
    each at most."""

    def __new__(
        cls,
        argv: Sequence[str],
        env: Dict[str, str],
        n: int,
        max_restarts: int = 10,
        name_prefix: str = ...,  # "worker"
        quiet_stdout: bool = False,
    ) -> WorkerPool: ...
    def supervise(self) -> int:
        """Restarts the workers that exited (after their backoff); returns how many are alive."""
    @property
    def exhausted(self) -> bool:
        """True when every worker crashed too often to be restarted."""
    @property
    def restarts(self) -> int: ...
    def close(self, grace: float = 5.0) -> None:
        """Waits up to ``grace`` seconds for the workers to exit, then kills the rest."""

@final
class Session:
    """A session of this process's engine or of a served one, and its variables (``session.rs``)."""

    @staticmethod
    def open(session_id: Optional[str] = None, ttl: float = 3600.0) -> Session:
        """Joins session ``session_id`` or creates it (a generated id when None)."""
    @staticmethod
    def connect(client: RemoteClient, session_id: Optional[str] = None, ttl: float = 3600.0) -> Session:
        """Joins (or creates) session ``session_id`` of the served engine ``client`` is connected to."""
    @staticmethod
    def list_ids() -> List[str]: ...
    @property
    def id(self) -> str: ...
    @property
    def alive(self) -> bool: ...
    def close(self) -> None: ...
    def define(self, name: str, kind: str, value: Any, tunable: bool = False, **constraints: Any) -> int: ...
    def get(self, name: str) -> Tuple[Any, int]: ...
    def set(self, name: str, value: Any, expected_version: Optional[int] = None) -> int: ...
    def set_many(self, changes: Sequence[Tuple[str, Any, Optional[int]]]) -> List[int]: ...
    def delete(self, name: str) -> None: ...
    def list(self, pattern: Optional[str] = None) -> List[str]: ...
    def spec(self, name: str) -> Tuple[str, bool, Any]:
        """(type name, tunable, distribution tuple or None)."""
    def watch(self) -> VariableWatch: ...
    def index(self, name: str, texts: Sequence[str], ids: Optional[Sequence[Any]] = None, stop_words: bool = True, stem: bool = False) -> int: ...
    def tool_specs(self) -> Dict[str, Dict[str, Any]]: ...
    def add_lm(self, name: str, config_json: str, lm: LM) -> None: ...
    def program(self, action: str, spec_json: str) -> Any: ...
    def call_tool(self, name: str, kwargs: Dict[str, Any]) -> Any: ...
    def provide_tools(self) -> ToolInbox:
        """Starts serving tools of this process: the inbox registers them and receives their calls."""

@final
class ToolInbox:
    """The calls to the tools this process registered in a session, and their answers."""

    def register(self, spec: Dict[str, Any], timeout: float) -> None: ...
    def unregister(self, name: str) -> None: ...
    def next(self, max: int = 16, timeout: float = 0.2) -> Optional[List[Tuple[int, str, Dict[str, Any]]]]: ...
    def reply(self, call_id: int, value: Any) -> None: ...
    def fail(self, call_id: int, kind: str, message: str, traceback: str) -> None: ...
    def close(self) -> None: ...

@final
class VariableWatch:
    """Changes to a session's variables, in order."""

    def next(self, timeout: float = 1.0) -> Optional[Tuple[str, Any, int]]: ...

_CompletionTuple = Tuple[str, List[str], Optional[str], int, int, bool, float, str]

@final
class LM:
    """An engine-side LM client (``lm.rs``); ``dspex.native.LM`` wraps it."""

    def __new__(cls, config_json: str) -> LM: ...
    def with_tag(self, tag: str) -> LM: ...
    def call(self, messages: str, overrides: Optional[str] = None, rollout_id: Optional[str] = None) -> _CompletionTuple:
        """(text, choices, finish_reason, prompt_tokens, completion_tokens, cached, latency, model)."""
    def start(
        self, messages: str, done: Callable[[bool, Any], None], overrides: Optional[str] = None, rollout_id: Optional[str] = None
    ) -> None: ...
    def batch(
        self, requests: Sequence[Tuple[str, Optional[str], Optional[str]]], return_exceptions: bool = False
    ) -> List[Union[_CompletionTuple, BaseException]]: ...
    def embed(self, texts: Sequence[str]) -> Tuple[List[List[float]], int, bool]: ...
    def stats(self) -> str: ...

def tokenize(text: str, stop_words: bool = True, stem: bool = False) -> List[str]:
    """The terms BM25 indexes for ``text`` (the tokenizer of ``Session.index``)."""

def serve_embedded(study: Study, bind: Optional[str] = None, tls_cert: Optional[bytes] = None, tls_key: Optional[bytes] = None) -> EmbeddedServer:
    """Serves the embedded ``study`` with a fresh random token: on ``bind`` (``"ip:port"``;
    default 127.0.0.1 and a free port), over TLS with ``tls_cert``/``tls_key`` (PEM)."""

def serve_sessions(bind: Optional[str] = None, tls_cert: Optional[bytes] = None, tls_key: Optional[bytes] = None) -> EmbeddedServer:
    """Serves this process's sessions with a fresh random token: on ``bind`` (default 127.0.0.1
    and a free port), over TLS with ``tls_cert``/``tls_key`` (PEM)."""

def cli_main(argv: Sequence[str], python: Optional[str] = None) -> int:
    """Runs the ``dspex`` command line (the Rust CLI) with ``argv``; returns the exit code."""
