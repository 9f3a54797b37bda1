"""Launchers: where a study's evaluation workers run when they are not this process's.

``study.optimize(objective, n_trials=400, workers=dspex.launchers.Ray(num_workers=8))`` runs
the objective in eight Ray actors, each a dspex worker attached to the engine over its
bidirectional stream, exactly as ``python -m dspex.worker`` processes attach: the engine (this
process's, served for the time of the run, or a ``dspex serve``) schedules trials to them, a
trial whose actor dies is re-run (``max_retries``), the actor is restarted by Ray, and every
actor is gone when ``optimize`` returns.

Ray is an optional dependency: ``pip install "dspex[ray]"``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from dspex._imports import optional
from dspex._metric_servers import _MetricServers

if TYPE_CHECKING:
    from dspex.study import Study

__all__ = ["Launcher", "Ray"]


class Launcher:
    """Starts and supervises a study's workers for the time of one ``optimize`` call."""

    def serve_metric(self, ctx: Any, scorer: Any, tool: str) -> Any:
        """Serves a program study's metric from the workers; an object with ``close()``."""
        raise NotImplementedError

    def optimize(self, study: "Study", func: Any, n_trials: Optional[int], timeout: Optional[float],
                 concurrency: Optional[int], trial_timeout: Optional[float], max_retries: int,
                 max_concurrency: Optional[int]) -> None:
        raise NotImplementedError


def _import_ray() -> Any:
    return optional("ray", "dspex.launchers.Ray", "ray")


def _check_reachable(address: str, timeout: float) -> None:
    """A cluster address ``host:port`` that takes no TCP connection within ``timeout`` is an
    error now (ray.init would wait much longer)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a Ray address is 'auto', 'local', 'host:port' or 'ray://host:port', got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"the Ray cluster at {address} cannot be reached within {timeout:g} s: {e}") from None


@contextlib.contextmanager
def _ca_file(tls_ca: Optional[bytes]) -> Iterator[Optional[str]]:
    """The engine's CA certificate (PEM bytes) as a file for the time of the block."""
    if tls_ca is None:
        yield None
        return
    import tempfile

    fd, path = tempfile.mkstemp(prefix="dspex-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(tls_ca)
        yield path
    finally:
        os.unlink(path)


class _Worker:
    """The actor: one dspex worker attached to the engine (its class is made a Ray actor
    class when a launcher first needs it). Its methods answer ``("done", detail)``, or
    ``("objective", why)`` when what they were sent cannot be loaded here, or ``("engine",
    why)`` when the engine cannot be reached or went away."""

    def run(self, objective: bytes, engine: str, study: str, token: Optional[str], tls_ca: Optional[bytes],
            concurrency: int, name: str = "ray") -> Tuple[str, str]:
        """Evaluates the objective on the trials of the study's run until it is over."""
        from ray import cloudpickle

        from dspex import logging as dlogging
        from dspex import remote

        try:
            func = cloudpickle.loads(objective)
        except BaseException as e:  # noqa: BLE001 - any import-time failure is the answer
            return "objective", f"{type(e).__name__}: {e}"
        if os.environ.get("DSPEX_WORKER_VERBOSE") != "1":
            dlogging.set_verbosity(dlogging.WARNING)
        with _ca_file(tls_ca) as ca_path:
            try:
                summary = remote.attach(study, func, engine, token, concurrency=concurrency, tls_ca=ca_path,
                                        worker=f"{name} actor pid {os.getpid()}")
            except (remote.RemoteError, RuntimeError) as e:
                return "engine", str(e)
        return "done", str(getattr(summary, "reason", ""))

    def serve_metric(self, scorer: bytes, engine: str, token: Optional[str], tls_ca: Optional[bytes], session: str,
                     tool: str, variable: str, tool_timeout: float) -> Tuple[str, str]:
        """Serves a program study's metric as the shared tool ``tool`` of ``session`` while
        the session variable ``variable`` is ``"open"`` (see ``dspex.worker``)."""
        from ray import cloudpickle

        from dspex.worker import serve_metric

        try:
            loaded = cloudpickle.loads(scorer)
        except BaseException as e:  # noqa: BLE001
            return "objective", f"{type(e).__name__}: {e}"
        with _ca_file(tls_ca) as ca_path:
            code = serve_metric(loaded, engine, token, ca_path, session, tool, variable, tool_timeout)
        return ("done", "") if code == 0 else ("engine", f"the metric worker exited with status {code}")


class _Actors:
    """``launcher.num_workers`` worker actors running ``_Worker.<method>(*args)``, supervised
    by :meth:`poll`."""

    def __init__(self, ray: Any, launcher: "Ray", args: Tuple[Any, ...], method: str = "run") -> None:
        self.ray = ray
        self.args = args
        self.method = method
        self.problem: Optional[str] = None
        self.actors: List[Any] = []
        self.calls: Dict[Any, Any] = {}
        actor_class = ray.remote(_Worker).options(
            num_cpus=launcher.num_cpus_per_worker, num_gpus=launcher.num_gpus_per_worker,
            resources=launcher.resources or None, max_restarts=-1, max_task_retries=0, runtime_env=launcher.runtime_env)
        try:
            for _ in range(launcher.num_workers):
                actor = actor_class.remote()
                self.actors.append(actor)
                self.calls[self._call(actor)] = actor
        except BaseException:
            self.kill()
            raise

    def _call(self, actor: Any) -> Any:
        return getattr(actor, self.method).remote(*self.args)

    def poll(self, again: bool) -> Optional[str]:
        """Looks at the actors that came back: one killed is run again (Ray restarted it); one
        that finished is run again when ``again`` (the run goes on); the first that could not
        load the objective or lost the engine is :attr:`problem`, returned from now on."""
        if self.problem is None:
            done, _ = self.ray.wait(list(self.calls), num_returns=len(self.calls), timeout=0)
            for ref in done:
                actor = self.calls.pop(ref)
                try:
                    kind, detail = self.ray.get(ref)
                except self.ray.exceptions.RayActorError:
                    self.calls[self._call(actor)] = actor
                    continue
                except self.ray.exceptions.RayError as e:
                    kind, detail = "error", str(e)
                if kind == "objective":
                    self.problem = self.problem or f"the Ray actors cannot load the objective: {detail}"
                elif kind != "done":
                    self.problem = self.problem or f"a Ray actor stopped: {detail}"
                elif again:
                    self.calls[self._call(actor)] = actor
        return self.problem

    @property
    def running(self) -> int:
        return len(self.calls)

    def wait(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for the calls under way to return."""
        if self.calls:
            self.ray.wait(list(self.calls), num_returns=len(self.calls), timeout=timeout)

    def kill(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


class Ray(Launcher):
    """Evaluation workers as Ray actors (see the module docs).

    ``num_workers`` actors, each taking ``num_cpus_per_worker`` CPUs, ``num_gpus_per_worker``
    GPUs and ``resources`` (custom Ray resources) and evaluating ``concurrency / num_workers``
    trials at once (at least one). ``address``: the cluster (``"auto"``: the one this machine
    belongs to, else a local one is started; ``"host:port"`` or ``"ray://host:port"``); an
    address that takes no connection within ``connect_timeout`` seconds is an error.
    ``runtime_env``: Ray's (e.g. ``{"pip": [...], "working_dir": "."}``) for the actors.

    An embedded study is served for the time of the run on this machine's address in the
    cluster (on loopback when the cluster is this machine alone), with a fresh token: over TLS
    with ``tls_cert``/``tls_key`` (PEM files; the actors trust the certificate, which must name
    that address), or in plain text only when the cluster is this machine alone or
    ``insecure=True`` says so. A remote study's engine is used as it is.

    The objective travels to the actors by value (Ray's cloudpickle): a function whose module
    the actors cannot import stops the study with that error, reported once. A dead actor's
    trial is re-run (``max_retries``) and Ray restarts the actor; the actors are killed when
    ``optimize`` returns.
    """

    def __init__(self, num_workers: int = 2, address: Optional[str] = "auto", num_cpus_per_worker: float = 1,
                 num_gpus_per_worker: float = 0, resources: Optional[Dict[str, float]] = None,
                 runtime_env: Optional[Dict[str, Any]] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, insecure: bool = False, connect_timeout: float = 10.0) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")
        for what, v in (("num_cpus_per_worker", num_cpus_per_worker), ("num_gpus_per_worker", num_gpus_per_worker),
                        ("connect_timeout", connect_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{what} must be a number >= 0, got {v!r}")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key (PEM files)")
        if resources is not None and not (isinstance(resources, dict) and all(isinstance(k, str) for k in resources)):
            raise TypeError(f"resources must be a dict of resource name -> amount, got {resources!r}")
        _import_ray()
        self.num_workers = num_workers
        self.address = address
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker
        self.resources = dict(resources or {})
        self.runtime_env = runtime_env
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.insecure = bool(insecure)
        self.connect_timeout = float(connect_timeout)

    def __repr__(self) -> str:
        return f"Ray(num_workers={self.num_workers}, address={self.address!r})"

    def serve_metric(self, ctx: Any, scorer: Any, tool: str) -> _RayMetricPool:
        """Program mode (``dspex.optimizer.Study.optimize(workers=...)``): the metric served by
        the actors as the shared tool ``tool`` of ``ctx``'s session; ``close()`` ends it."""
        return _RayMetricPool(self, ctx, scorer, tool)

    def _init(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            address = self.address
            if address not in (None, "auto", "local"):
                _check_reachable(address[len("ray://"):] if address.startswith("ray://") else address, self.connect_timeout)
            options = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            if address == "auto":
                try:
                    ray.init(address="auto", **options)
                except ConnectionError:  # no cluster here: start a local one
                    ray.init(**options)
            else:
                ray.init(address=None if address == "local" else address, **options)
        return ray

    def _bind(self, ray: Any) -> Tuple[str, Optional[Tuple[bytes, bytes]], Optional[bytes]]:
        """Where to serve an embedded study, its TLS identity and the CA the actors trust."""
        here = ray.util.get_node_ip_address()
        alone = all(n.get("NodeManagerAddress") == here for n in ray.nodes() if n.get("Alive"))
        if self.tls_cert is not None and self.tls_key is not None:
            with open(self.tls_cert, "rb") as f:
                cert = f.read()
            with open(self.tls_key, "rb") as f:
                key = f.read()
            return f"{'127.0.0.1' if alone else here}:0", (cert, key), cert
        if alone:
            return "127.0.0.1:0", None, None
        if not self.insecure:
            raise ValueError("the Ray cluster has other machines: serve the study over TLS (tls_cert=, tls_key=) "
                             "or say insecure=True to send trials and the token in plain text")
        return f"{here}:0", None, None

    def optimize(self, study: "Study", func: Any, n_trials: Optional[int], timeout: Optional[float],
                 concurrency: Optional[int], trial_timeout: Optional[float], max_retries: int,
                 max_concurrency: Optional[int]) -> None:
        from dspex import remote
        from dspex._optimize import check_args

        conc = check_args(n_trials, timeout, 1, concurrency if concurrency is not None else self.num_workers, trial_timeout)
        ray = self._init()
        try:
            objective = ray.cloudpickle.dumps(func)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"the objective cannot be sent to Ray actors: {e}") from None
        bind, tls, ca = (None, None, None) if remote._is_remote(study) else self._bind(ray)
        served = remote.ServedRun(study, n_trials, timeout, trial_timeout, max_retries, max_concurrency, bind, tls)
        per_worker = max(1, -(-conc // self.num_workers))
        actors: Optional[_Actors] = None
        try:
            actors = _Actors(ray, self, (objective, served.address, study.study_name, served.token, ca, per_worker))
            started = actors
            served.supervise(lambda: started.poll(again=served.run.wait(0.0) is None))
        finally:
            if actors is not None:
                actors.kill()
            served.close()
        if actors.problem:
            raise RuntimeError(actors.problem)


class _RayMetricPool(_MetricServers):
    """A program study's metric served by Ray actors that join its session (what
    ``dspex.optimizer.Study.optimize(workers=Ray(...))`` uses instead of worker processes)."""

    what = "Ray actor"

    def __init__(self, launcher: "Ray", ctx: Any, scorer: Any, tool: str) -> None:
        self._ray = launcher._init()
        self._launcher = launcher
        try:
            self._data = self._ray.cloudpickle.dumps(scorer)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"the metric and the examples cannot be sent to Ray actors: {e}") from None
        self._actors: Optional[_Actors] = None
        self._ca: Optional[bytes] = None
        bind, tls = None, None
        if ctx.engine is None:
            bind, tls, self._ca = launcher._bind(self._ray)
        if ctx.engine is not None and ctx._auth[1] is not None:
            with open(ctx._auth[1], "rb") as f:
                self._ca = f.read()
        super().__init__(ctx, tool, bind, tls)

    def _start(self, address: str, token: Optional[str]) -> None:
        ctx = self._ctx
        self._actors = _Actors(self._ray, self._launcher, (self._data, address, token, self._ca, ctx.session_id, self._tool,
                                                           self._var, ctx.tool_timeout), method="serve_metric")

    def _look(self) -> Optional[str]:
        return None if self._actors is None else self._actors.poll(again=not self._done.is_set())

    def _stop(self) -> None:
        if self._actors is not None:  # they leave (unregistering the metric) before they are killed
            self._actors.wait(5.0)
            self._actors.kill()


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m dspex.launchers ray ...``: Ray actors attached to an engine as workers of a
    study's run, until it ends (``dspex optimize --launcher ray`` starts this). The token comes
    from ``DSPEX_TOKEN``. Exit status 0 when the run ended, 2 when the objective cannot be
    loaded, 3 when an actor lost the engine."""
    import argparse
    import json
    import time

    from dspex.worker import EXIT_BAD_OBJECTIVE, EXIT_ENGINE, load_objective

    p = argparse.ArgumentParser(prog="python -m dspex.launchers", description="Start dspex workers as Ray actors.")
    p.add_argument("launcher", choices=["ray"])
    p.add_argument("--engine", required=True, help="engine address, host:port (or https://host:port)")
    p.add_argument("--study", required=True)
    p.add_argument("--objective", required=True, help="module:function")
    p.add_argument("--tls-ca", default=None, help="CA certificate (PEM) of an https engine")
    p.add_argument("--concurrency", type=int, default=1, help="evaluations at once per actor")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--address", default="auto", help="the Ray cluster")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor")
    p.add_argument("--resources", default=None, help="custom Ray resources per actor, as JSON")
    p.add_argument("--name", default="ray", help="the actors' name in the engine's logs")
    args = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    try:
        func = load_objective(args.objective)
    except BaseException as e:  # noqa: BLE001
        print(f"dspex.launchers: cannot load the objective {args.objective!r}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_BAD_OBJECTIVE
    # the actors import the objective as this process does (the study file's directory)
    path = os.environ.get("PYTHONPATH")
    launcher = Ray(num_workers=args.num_workers, address=args.address, num_cpus_per_worker=args.num_cpus,
                   num_gpus_per_worker=args.num_gpus, resources=json.loads(args.resources) if args.resources else None,
                   runtime_env={"env_vars": {"PYTHONPATH": path}} if path else None)
    ray = launcher._init()
    ca = None
    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            ca = f.read()
    token = os.environ.get("DSPEX_TOKEN")
    actors = _Actors(ray, launcher, (ray.cloudpickle.dumps(func), args.engine, args.study, token, ca, max(1, args.concurrency),
                                        args.name))
    try:
        while actors.running and actors.poll(again=False) is None:
            time.sleep(0.2)
    finally:
        actors.kill()
    if actors.problem:
        print(f"dspex.launchers: {actors.problem}", file=sys.stderr)
        return EXIT_BAD_OBJECTIVE if "cannot load the objective" in actors.problem else EXIT_ENGINE
    return 0


if __name__ == "__main__":
    sys.exit(main())
