"""A worker process: attaches to a dspex engine and evaluates an objective on the trials the
engine sends, until the run is over.

    python -m dspex.worker --engine 127.0.0.1:50051 --study NAME --objective module:function

With ``--session ID --metric-tool NAME --pool-variable VAR`` it serves a program study's metric
instead (``dspex.optimizer.Study.optimize(processes=N)`` starts it so): it joins the session,
registers the metric as the shared tool NAME, and leaves when the session variable VAR is no
longer ``"open"`` or the session is gone.

The token comes from ``--token-file`` (a file holding it, e.g. a mounted secret), ``--token``
(visible in ``ps``: avoid it on shared machines) or the ``DSPEX_TOKEN`` environment variable. ``--check`` only
imports the objective (exit status 2 with the reason when it cannot be loaded): ``dspex
optimize`` and ``study.optimize(processes=N)`` use it before any trial runs. Exceptions raised
by the objective fail their trial; the worker goes on.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import sys
from typing import Any, Callable, List, Optional

from dspex import logging as dlogging
from dspex import remote

EXIT_BAD_OBJECTIVE = 2
EXIT_ENGINE = 3


def load_objective(path: Optional[str], pickle_path: Optional[str] = None) -> Callable:
    """The callable named by ``module:function`` (``function`` may be dotted), or unpickled."""
    if pickle_path is not None:
        with open(pickle_path, "rb") as f:
            obj = pickle.load(f)
    else:
        if not path or ":" not in path:
            raise ValueError(f"an objective must be given as 'module:function', got {path!r}")
        mod_name, _, attr = path.partition(":")
        module = importlib.import_module(mod_name)
        obj = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise AttributeError(f"module {mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise TypeError(f"the objective {path or pickle_path!r} is not callable: {obj!r}")
    return obj


def serve_metric(scorer: Any, engine: str, token: Optional[str], tls_ca: Optional[str], session_id: str, tool: str, pool_variable: str, tool_timeout: float) -> int:
    """Serves ``scorer.score`` as the shared tool ``tool`` of session ``session_id`` while the
    variable ``pool_variable`` is ``"open"``."""
    import time

    from dspex.session import DSpexSessionContext

    ctx = None
    try:
        # not a `with`: leaving must not close the session the study runs in
        ctx = DSpexSessionContext(session_id=session_id, engine=engine, token=token or os.environ.get("DSPEX_TOKEN"), tls_ca=tls_ca, tool_timeout=tool_timeout)
        ctx.register_tool(scorer.score, name=tool, shared=True, description="the metric of a program study (dspex.optimizer)")
        while ctx.variables.get(pool_variable) == "open":
            time.sleep(0.2)
    except (KeyError, remote.RemoteError):
        pass  # the variable or the session is gone: the study is over
    except RuntimeError as e:
        print(f"dspex.worker: {e}", file=sys.stderr)
        return EXIT_ENGINE
    if ctx is not None:
        try:
            ctx.unregister_tool(tool)
        except Exception:  # noqa: BLE001 - the session may be gone already
            pass
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dspex.worker", description="Attach to a dspex engine and evaluate an objective.")
    p.add_argument("--engine", help="engine address, host:port (or https://host:port)")
    p.add_argument("--study", help="study name")
    p.add_argument("--objective", help="the objective, module:function")
    p.add_argument("--objective-pickle", help=argparse.SUPPRESS)
    p.add_argument("--constraints-pickle", help=argparse.SUPPRESS)
    p.add_argument("--token", default=None, help="engine token (default: $DSPEX_TOKEN)")
    p.add_argument("--token-file", default=None, help="a file holding the engine token (a mounted secret)")
    p.add_argument("--tls-ca", default=None, help="CA certificate (PEM) of an https engine")
    p.add_argument("--concurrency", type=int, default=1, help="evaluations at once (threads, or tasks for async def)")
    p.add_argument("--heartbeat-ms", type=int, default=1000)
    p.add_argument("--name", default=None, help="name of this worker in the engine's logs")
    p.add_argument("--check", action="store_true", help="only check that the objective loads")
    p.add_argument("--session", default=None, help=argparse.SUPPRESS)
    p.add_argument("--metric-tool", default=None, help=argparse.SUPPRESS)
    p.add_argument("--pool-variable", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tool-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.token_file is not None:
        if args.token is not None:
            p.error("give --token or --token-file, not both")
        try:
            with open(args.token_file) as f:
                args.token = f.read().strip()
        except OSError as e:
            p.error(f"--token-file {args.token_file}: {e.strerror}")
        if not args.token:
            p.error(f"--token-file {args.token_file} is empty")
    sys.path.insert(0, os.getcwd())
    try:
        func = load_objective(args.objective, args.objective_pickle)
    except BaseException as e:  # noqa: BLE001 - any import-time failure is reported
        print(f"dspex.worker: cannot load the objective {args.objective or args.objective_pickle!r}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_BAD_OBJECTIVE
    constraints_func = None
    if args.constraints_pickle:
        try:
            constraints_func = load_objective(None, args.constraints_pickle)
        except BaseException as e:  # noqa: BLE001 - any import-time failure is reported
            print(f"dspex.worker: cannot load the sampler's constraints_func: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_BAD_OBJECTIVE
    if args.check:
        return 0
    if args.metric_tool:
        if not args.engine or not args.session or not args.pool_variable:
            p.error("--metric-tool needs --engine, --session and --pool-variable")
        return serve_metric(func, args.engine, args.token, args.tls_ca, args.session, args.metric_tool, args.pool_variable, args.tool_timeout)
    if not args.engine or not args.study:
        p.error("--engine and --study are required")
    if os.environ.get("DSPEX_WORKER_VERBOSE") != "1":
        dlogging.set_verbosity(dlogging.WARNING)
    worker = f"{args.name or 'worker'} pid {os.getpid()}"
    try:
        summary = remote.attach(
            args.study, func, args.engine, args.token, concurrency=args.concurrency, heartbeat_ms=args.heartbeat_ms, tls_ca=args.tls_ca, worker=worker, constraints_func=constraints_func
        )
    except remote.RemoteError as e:
        print(f"dspex.worker: {e}", file=sys.stderr)
        return EXIT_ENGINE
    except RuntimeError as e:
        print(f"dspex.worker: {e}", file=sys.stderr)
        return EXIT_ENGINE
    if summary is not None and summary.reason == "error":
        print(f"dspex.worker: {summary.detail}", file=sys.stderr)
        return EXIT_ENGINE
    return 0


if __name__ == "__main__":
    sys.exit(main())
