"""Remote mode: studies that live in a dspex engine started with ``dspex serve`` (or by
``dspex optimize``), and processes that attach to it as evaluators.

The gRPC client is the one inside the extension module (no grpcio). A remote study has the
same API as an embedded one::

    study = dspex.create_study(study_name="s", engine="127.0.0.1:50051", token=...)
    study.optimize(objective, n_trials=100)          # this process evaluates
    dspex.attach("s", objective, engine="127.0.0.1:50051")   # another process joins

``study.optimize(objective, n_trials, processes=4)`` evaluates in four worker processes
(``python -m dspex.worker``) instead, so CPU-bound objectives use every core.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from dspex import _native
from dspex._optimize import check_args, evaluate

if TYPE_CHECKING:
    from dspex.study import Study

RemoteError = _native.RemoteError

_clients: dict = {}
_clients_lock = threading.Lock()


def _token(token: Optional[str]) -> Optional[str]:
    return token if token is not None else os.environ.get("DSPEX_TOKEN")


def connect(engine: str, token: Optional[str] = None, tls_ca: Optional[str] = None) -> Any:
    """A (cached) connection to the engine at ``engine`` ("host:port", "https://host:port").

    Over https, the client certificate named by ``DSPEX_TLS_CLIENT_CERT`` and
    ``DSPEX_TLS_CLIENT_KEY`` (PEM files) is presented when both are set: an engine served with
    ``--tls-client-ca`` admits only clients with a certificate from that CA."""
    if not isinstance(engine, str) or not engine:
        raise TypeError(f"engine must be a 'host:port' string, got {engine!r}")
    identity = (os.environ.get("DSPEX_TLS_CLIENT_CERT"), os.environ.get("DSPEX_TLS_CLIENT_KEY"))
    key = (engine, _token(token), tls_ca, identity)
    with _clients_lock:
        c = _clients.get(key)
        if c is None:
            c = _native.RemoteClient.connect(engine, _token(token), tls_ca)
            _clients[key] = c
        return c


class RemoteStorage:
    """What ``Study._storage`` holds for a remote study: the engine's client, and how it was
    reached (``engine``, ``token``, ``tls_ca``: a pickled study connects again with them; a
    token None is read from ``DSPEX_TOKEN`` there)."""

    def __init__(self, client: Any, engine: str, token: Optional[str], tls_ca: Optional[str]) -> None:
        self._client = client
        self.engine, self.token, self.tls_ca = engine, token, tls_ca

    def get_all_study_names(self) -> List[str]:
        return self._client.study_names()


def component_spec(obj: Any, what: str) -> Optional[Tuple[str, str]]:
    if obj is None:
        return None
    spec = getattr(obj, "_spec", None)
    if spec is None:
        raise ValueError(f"{what} {obj!r} cannot be sent to a remote engine")
    kind, options = spec
    return kind, json.dumps(options)


# A remote study is a dspex.study.Study, and dspex.study imports this module (``engine=...``,
# ``processes=N``), so this module does not import it: dspex.study hands over how it opens a
# remote study by name when it is imported, which is before any function here runs (importing
# dspex.remote imports the dspex package, which imports dspex.study).
_load_study: "Optional[Callable[[str, Optional[str], Optional[str], str], Study]]" = None


def set_study_loader(loader: "Callable[[str, Optional[str], Optional[str], str], Study]") -> None:
    """Called by dspex.study: ``loader(engine, token, tls_ca, study_name)`` is
    ``load_study(study_name=..., engine=..., token=..., tls_ca=...)``."""
    global _load_study
    _load_study = loader


def _is_remote(study: "Study") -> bool:
    return bool(study._native.is_remote)


def attach(
    study_name: str,
    objective: Callable,
    engine: str,
    token: Optional[str] = None,
    *,
    concurrency: int = 1,
    catch: Any = (Exception,),
    heartbeat_ms: int = 1000,
    tls_ca: Optional[str] = None,
    worker: Optional[str] = None,
    constraints_func: Optional[Callable] = None,
) -> Any:
    """Joins the active run of remote study ``study_name`` (waiting for one) and evaluates
    ``objective`` on the trials the engine sends, ``concurrency`` at once, until the run is
    over. An exception in ``catch`` (default: any) fails its trial only. ``constraints_func``
    (the sampler's, as Optuna's) is run after each trial that completes or is pruned and its
    values stored with the trial. Returns the run's
    summary, with ``started``, ``finished``, ``reason`` (``"n_trials"``, ``"timeout"``,
    ``"stopped"``, ``"exhausted"``, ``"aborted"``, ``"interrupted"`` or ``"error"``),
    ``detail`` and ``timed_out`` (trials failed by the per-trial timeout)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if _load_study is None:  # not through `import dspex...`, which imports dspex.study
        raise RuntimeError("dspex.remote.attach needs dspex.study imported (import dspex)")
    study = _load_study(engine, token, tls_ca, study_name)
    run = study._native.attach(concurrency, int(heartbeat_ms), worker)
    with study._lock:
        study._optimizing += 1
    try:
        evaluate(study, run, objective, concurrency, catch, constraints_func=constraints_func)
    finally:
        with study._lock:
            study._optimizing -= 1
    return run.wait(0.0)


# ------------------------------------------------------------------ process workers


def _objective_ref(func: Any) -> Tuple[List[str], Optional[str]]:
    """Worker arguments naming ``func``: ``module:function`` when importable, else a pickle file."""
    if isinstance(func, str):
        if ":" not in func:
            raise ValueError(f"an objective path must be 'module:function', got {func!r}")
        return ["--objective", func], None
    mod = getattr(func, "__module__", None)
    qual = getattr(func, "__qualname__", None)
    if mod and qual and mod != "__main__" and "<" not in qual:
        return ["--objective", f"{mod}:{qual}"], None
    path = _pickled(func, "processes=N needs an objective given as 'module:function' or a picklable callable")
    return ["--objective-pickle", path], path


def _pickled(obj: Any, what: str) -> str:
    """A temporary file holding ``obj`` pickled (the worker processes load it)."""
    try:
        data = pickle.dumps(obj)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{what}; {obj!r} is not ({e})") from None
    fd, path = tempfile.mkstemp(prefix="dspex-worker-", suffix=".pkl")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _check_objective(args: List[str], env: dict) -> None:
    out = subprocess.run([sys.executable, "-m", "dspex.worker", "--check", *args], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        raise ValueError(f"the worker processes cannot load the objective: {lines[-1] if lines else 'unknown error'}")


class ServedRun:
    """A run of ``study`` that worker processes (local, or a cluster's) attach to: on a remote
    study the engine's own run (this process owns it with no capacity); on an embedded one, a
    run of this process's engine served on ``bind`` (loopback by default, TLS with ``tls``:
    ``(cert PEM, key PEM)``) until :meth:`close`. ``address``, ``token`` (None: the
    environment's ``DSPEX_TOKEN``) and ``tls_ca`` are what the workers connect with."""

    def __init__(self, study: "Study", n_trials: Optional[int], timeout: Optional[float], trial_timeout: Optional[float],
                 max_retries: int, max_concurrency: Optional[int], bind: Optional[str] = None,
                 tls: Optional[Tuple[bytes, bytes]] = None) -> None:
        self._server = None
        self.tls_ca: Optional[str] = None
        if _is_remote(study):
            client = study._native.client
            assert client is not None
            self.address: str = client.address
            self.run = study._native.start_run(n_trials, timeout, 0, trial_timeout, max_retries, max_concurrency)
            self.token = _token(None)
        else:
            cert, key = tls if tls is not None else (None, None)
            self._server = _native.serve_embedded(study._native, bind, cert, key)
            self.address, self.token = self._server.address, self._server.token
            if tls is not None:
                self.address = f"https://{self.address}"
            self.run = self._server.start_run(n_trials, timeout, max_concurrency, trial_timeout, max_retries)

    def supervise(self, poll: Callable[[], Optional[str]]) -> None:
        """Waits for the run to end, calling ``poll`` every 0.1 s: a message it returns
        interrupts the run. Ctrl-C (any exception) interrupts it too, waits for it and is
        raised. Raises RuntimeError when the run ended in an error."""
        try:
            while self.run.wait(0.1) is None:
                why = poll()
                if why:
                    self.run.interrupt(why)
        except BaseException as e:
            self.run.interrupt(type(e).__name__)
            while self.run.wait(5.0) is None:
                pass
            raise
        summary = self.run.wait(0.0)
        if summary is not None and summary.reason == "error":
            raise RuntimeError(summary.detail or "the run failed")

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def optimize_processes(
    study: "Study",
    func: Any,
    n_trials: Optional[int],
    timeout: Optional[float],
    processes: int,
    concurrency: Optional[int] = None,
    trial_timeout: Optional[float] = None,
    max_retries: int = 2,
    catch: Any = (),
    max_concurrency: Optional[int] = None,
) -> None:
    """``study.optimize(func, n_trials, processes=N)``: N worker processes evaluate; this
    process owns the run and supervises them. An embedded study is served on a loopback port
    for the time of the run."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an int >= 1, got {processes!r}")
    conc = check_args(n_trials, timeout, 1, concurrency if concurrency is not None else processes, trial_timeout)
    args, pickle_path = _objective_ref(func)
    temp = [p for p in (pickle_path,) if p is not None]
    constraints_func = getattr(study.sampler, "_constraints_func", None)
    if constraints_func is not None:
        # The workers run the sampler's constraints_func after each trial, as this process would.
        temp.append(_pickled(constraints_func, "processes=N needs a picklable constraints_func (a function of an importable module)"))
        args += ["--constraints-pickle", temp[-1]]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *[p for p in sys.path if p], env.get("PYTHONPATH", "")])
    served = None
    try:
        _check_objective(args, env)
        served = ServedRun(study, n_trials, timeout, trial_timeout, max_retries, max_concurrency)
        if served.token:
            env["DSPEX_TOKEN"] = served.token
        per_worker = max(1, -(-conc // processes))
        cmd = [sys.executable, "-m", "dspex.worker", "--engine", served.address, "--study", study.study_name, "--concurrency", str(per_worker), *args]
        pool = _native.WorkerPool(cmd, env, processes)
        try:
            served.supervise(lambda: "every worker process crashed too often" if pool.supervise() == 0 and pool.exhausted else None)
        finally:
            pool.close()
    finally:
        if served is not None:
            served.close()
        for path in temp:
            try:
                os.unlink(path)
            except OSError:
                pass


__all__ = ["RemoteError", "attach", "connect"]
