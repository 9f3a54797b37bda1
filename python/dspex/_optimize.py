"""The Python side of ``Study.optimize``: evaluators that pull trial numbers from the engine's
run, call the objective and answer. The engine decides which trials start and when."""

from __future__ import annotations

# asyncio is imported where async objectives are run: importing it costs ~15 ms, which a
# study with a sync objective should not pay.
import gc
import math
import os
import sys
import threading
import time
import traceback
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Type

from dspex._alias import is_trial_pruned
from dspex.exceptions import StorageInternalError, TrialPruned
from dspex.logging import defer as _defer
from dspex.logging import flush as _flush_log
from dspex.logging import get_logger
from dspex.samplers import _is_python_sampler
from dspex.trial import FrozenTrial, Trial, TrialState

if TYPE_CHECKING:
    from dspex.study import Study

_logger = get_logger("dspex.study")


class _Progress:
    """tqdm when installed, else one updating stderr line."""

    def __init__(self, enabled: bool, n_trials: Optional[int], timeout: Optional[float]) -> None:
        self.enabled = enabled
        self.n = 0
        self.start = time.monotonic()
        self.bar: Any = None
        self.last = 0.0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_trials, desc="dspex", unit="trial")
        except ImportError:
            self.bar = None

    def update(self, best: Optional[float], extra: Optional[Dict[str, str]] = None) -> None:
        """One more trial; ``extra`` fields are shown after the best value."""
        if not self.enabled:
            return
        self.n += 1
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.n / elapsed
        if self.bar is not None:
            self.bar.update(1)
            postfix = {} if best is None else {"best": f"{best:.6g}"}
            postfix.update(extra or {})
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        best_s = "-" if best is None else f"{best:.6g}"
        more = "".join(f", {k} {v}" for k, v in (extra or {}).items())
        sys.stderr.write(f"\r[dspex] {self.n} trials, best {best_s}{more}, {rate:.1f} trials/s")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _outcome(value: Any, pruned: Optional[TrialPruned], exc: Optional[BaseException]) -> dict:
    """The keyword arguments of ``tell``/``finish`` for what the objective did."""
    if pruned is not None:
        return {"state": "PRUNED"}
    if exc is not None:
        return {"state": "FAIL", "fail_reason": _reason(exc)}
    vals, why = convert_values(value)
    if why is None:
        return {"values": vals}
    return {"state": "FAIL", "fail_reason": why}


def _params_text(native: Any, number: int) -> Any:
    """Trial ``number``'s parameters for its log line; built after the trial, so the engine may
    be out of reach by then (a remote run's stream closes when the run ends)."""
    try:
        return native.trial_params(number)
    except Exception as e:  # noqa: BLE001 - the line is still logged
        return f"(unavailable: {e})"


def _completed_line(native: Any, number: int, values: List[float], best: Optional[Tuple[int, float]]) -> str:
    params = _params_text(native, number)
    if best is not None:
        return f"Trial {number} finished with value: {values[0]} and parameters: {params}. Best is trial {best[0]} with value: {best[1]}."
    return f"Trial {number} finished with values: {values} and parameters: {params}."


def _pruned_line(number: int, pruned: Optional[TrialPruned]) -> str:
    return f"Trial {number} pruned. {pruned if pruned is not None else ''}".rstrip()


def _failed_line(native: Any, number: int, why: str) -> str:
    return f"Trial {number} failed with parameters: {_params_text(native, number)} because of the following error: {why}."


def _failed_value_line(number: int, value: Any) -> str:
    return f"Trial {number} failed with value {value!r}."


def convert_values(value: Any) -> Tuple[Optional[List[float]], Optional[str]]:
    """The objective's return value as floats, or why it cannot be."""
    if value is None:
        return None, "The value None could not be cast to float"
    items = list(value) if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, (str, bytes))) else [value]
    out: List[float] = []
    errors = []
    for v in items:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            errors.append(f"The value {v!r} could not be cast to float")
    if errors:
        return None, "; ".join(errors)
    return out, None


def _catch_tuple(catch: Any) -> Tuple[Type[BaseException], ...]:
    if isinstance(catch, type) and issubclass(catch, BaseException):
        return (catch,)
    try:
        items = tuple(catch)
    except TypeError:
        raise TypeError(f"catch must be an exception class or an iterable of them, got {catch!r}") from None
    for c in items:
        if not (isinstance(c, type) and issubclass(c, BaseException)):
            raise TypeError(f"catch must contain exception classes, got {c!r}")
    return items


def _reason(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


class _Runner:
    """State shared by the evaluators of one run."""

    def __init__(
        self,
        study: "Study",
        run: Any,
        func: Callable,
        catch: tuple,
        callbacks: List[Callable],
        gc_after_trial: bool,
        progress: _Progress,
        constraints_func: Optional[Callable] = None,
    ) -> None:
        self.study = study
        self.native = study._native
        self.run = run
        self.func = func
        self.catch = catch
        self.callbacks = callbacks
        self.gc_after_trial = gc_after_trial
        self.progress = progress
        self.constraints_func = constraints_func or getattr(study.sampler, "_constraints_func", None)
        self.custom_sampler = study.sampler if _is_python_sampler(study.sampler) else None
        self.error: Optional[BaseException] = None
        self.lock = threading.Lock()
        self.single = len(self.native.directions) == 1
        self.maximize = self.single and self.native.directions[0] == "maximize"
        self.best: Optional[Tuple[int, float]] = None
        if self.single:
            try:
                b = self.native.best_trial()
                assert b.values is not None  # a COMPLETE trial's
                self.best = (b.number, b.values[0])
            except ValueError:
                pass

    def _set_error(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc

    def finish(self, number: int, value: Any, pruned: Optional[TrialPruned], exc: Optional[BaseException], wait: bool = True) -> None:
        """Tells the engine, logs, runs callbacks, answers the run. Never raises. Without
        ``wait`` (an event loop's trial) the engine may record the outcome in the background."""
        if self.custom_sampler is not None:
            failed = self._after_trial(number, value, pruned, exc)
            exc = exc if exc is not None else failed
        if self.constraints_func is not None and exc is None:
            exc = self._constraints(number)
        if not self.callbacks and (exc is None or isinstance(exc, self.catch)):
            self._finish_fast(number, value, pruned, exc, wait)
            return
        abort: Optional[str] = None
        told = None
        try:
            told = self.native.tell(number, **_outcome(value, pruned, exc))
        except ValueError:
            told = None  # the engine failed this trial already (timeout, interrupt)
        except BaseException as e:  # noqa: BLE001 - an engine error must not kill an evaluator
            self._set_error(e)
            abort = repr(e)
        # When the engine already failed the trial (per-trial timeout, interrupt), what the
        # objective raised afterwards (often "trial ... is FAIL") does not stop the study.
        if exc is not None and told is not None and not isinstance(exc, self.catch):
            self._set_error(exc)
            abort = repr(exc)
            # Other evaluator threads must not start trials while this one logs the traceback.
            self.run.stop()
        if told is not None:
            self._log(number, told, value, pruned, exc)
        if told is not None and self.callbacks:
            _flush_log()  # callbacks see the trial after its log line
            try:
                frozen = FrozenTrial._from_native(self.native.trial(number))
                for cb in self.callbacks:
                    cb(self.study, frozen)
            except BaseException as e:  # noqa: BLE001
                self._set_error(e)
                abort = repr(e)
                self.run.stop()
        self.progress.update(None if self.best is None else self.best[1])
        if self.gc_after_trial:
            gc.collect()
        self.run.done(number, abort)

    def _after_trial(self, number: int, value: Any, pruned: Optional[TrialPruned], exc: Optional[BaseException]) -> Optional[Exception]:
        """Calls the Python sampler's ``after_trial`` before the outcome is stored (as Optuna);
        the exception when it failed."""
        state = TrialState.PRUNED if pruned is not None else TrialState.FAIL if exc is not None else TrialState.COMPLETE
        values = None
        if state == TrialState.COMPLETE:
            try:
                values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
            except (TypeError, ValueError):
                values = None
        try:
            self.custom_sampler.after_trial(self.study, FrozenTrial._from_native(self.native.trial(number)), state, values)  # type: ignore[union-attr]
            return None
        except Exception as e:  # noqa: BLE001 - fails the trial
            return e

    def _constraints(self, number: int) -> Optional[Exception]:
        """Stores what the sampler's ``constraints_func`` says of trial ``number`` (the
        ``constraints`` system attribute, as Optuna); the exception when it failed."""
        assert self.constraints_func is not None
        try:
            values = self.constraints_func(FrozenTrial._from_native(self.native.trial(number)))
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                raise TypeError(f"constraints_func must return a sequence of floats, got {values!r}")
            floats = [float(v) for v in values]
            if any(math.isnan(v) for v in floats):
                raise ValueError(f"constraints_func returned NaN: {values!r}")
            self.native.set_trial_system_attr(number, "constraints", floats)
            return None
        except Exception as e:  # noqa: BLE001 - fails the trial
            return e

    def _finish_fast(self, number: int, value: Any, pruned: Optional[TrialPruned], exc: Optional[BaseException], wait: bool) -> None:
        """``finish`` without callbacks nor an exception that stops the study: the outcome and
        the answer cross to the engine at once (one call embedded, one message remote)."""
        try:
            told = self.run.finish(number, **_outcome(value, pruned, exc), wait=wait)
        except BaseException as e:  # noqa: BLE001 - an engine error must not kill an evaluator
            self._set_error(e)
            told = None
        if told is not None:
            self._log(number, told, value, pruned, exc)
        self.progress.update(None if self.best is None else self.best[1])
        if self.gc_after_trial:
            gc.collect()

    def _log(self, number: int, told: Any, value: Any, pruned: Optional[TrialPruned], exc: Optional[BaseException]) -> None:
        """Queues the trial's log line (built and written on the logging thread); ``told`` is
        what the engine recorded (a ``dspex._native.Told``)."""
        state, values, reason = told.state, told.values, told.fail_reason
        if state == "COMPLETE":
            best = None
            if self.single and values:
                v = values[0]
                with self.lock:
                    if self.best is None or (v > self.best[1] if self.maximize else v < self.best[1]):
                        self.best = (number, v)
                    best = self.best
            _defer(_logger, 20, _completed_line, self.native, number, values, best)
        elif state == "PRUNED":
            _defer(_logger, 20, _pruned_line, number, pruned)
        elif exc is not None:
            _defer(_logger, 30, _failed_line, self.native, number, repr(exc), exc_info=(type(exc), exc, exc.__traceback__))
        else:
            _defer(_logger, 30, _failed_line, self.native, number, reason)
            _defer(_logger, 30, _failed_value_line, number, value)

    # -- evaluation
    def evaluate(self, number: int) -> None:
        """Runs the objective for one trial; BaseExceptions (Ctrl-C) fail the trial and propagate."""
        trial = Trial(self.study, number)
        value = None
        pruned = None
        exc = None
        try:
            value = self.func(trial)
        except TrialPruned as e:
            pruned = e
        except Exception as e:  # noqa: BLE001
            pruned, exc = _pruned_or_failed(e)
        except BaseException as e:
            self.interrupt(number, e)
            raise
        self.finish(number, value, pruned, exc)

    async def evaluate_async(self, number: int) -> None:
        import asyncio

        trial = Trial(self.study, number)
        value = None
        pruned = None
        exc = None
        try:
            value = await self.func(trial)
        except TrialPruned as e:
            pruned = e
        except Exception as e:  # noqa: BLE001
            pruned, exc = _pruned_or_failed(e)
        except asyncio.CancelledError as e:  # the loop is shutting down (Ctrl-C)
            self.interrupt(number, KeyboardInterrupt("the trial was cancelled by an interrupt"), cause=e)
            raise
        except BaseException as e:
            self.interrupt(number, e)
            raise
        self.finish(number, value, pruned, exc, wait=False)

    def interrupt(self, number: int, exc: BaseException, cause: Optional[BaseException] = None) -> None:
        """Fails ``number`` because of ``exc`` and ends the run now."""
        try:
            reason = _reason(exc) if cause is None else f"{type(exc).__name__}: {exc}"
            self.native.tell(number, state="FAIL", fail_reason=reason)
            _logger.warning(f"Trial {number} failed because of the following error: {exc!r}.")
        except BaseException:  # noqa: BLE001 - already failed by the engine
            pass
        self.run.interrupt(type(exc).__name__)


def _pruned_or_failed(e: Exception) -> Tuple[Optional[TrialPruned], Optional[Exception]]:
    """An objective's exception: the real Optuna's ``TrialPruned`` (an integration's pruning
    callback, with Optuna installed beside dspex) prunes the trial as dspex's does; any other
    fails it."""
    if is_trial_pruned(e):
        pruned = TrialPruned(*e.args)
        pruned.__cause__ = e
        return pruned, None
    return None, e


def check_args(n_trials: Any, timeout: Any, n_jobs: Any, concurrency: Any, trial_timeout: Any) -> int:
    """Checks ``optimize``'s budget arguments; returns the concurrency (``n_jobs`` is its alias,
    -1 one per CPU)."""
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0):
        raise ValueError(f"n_trials must be None or an int >= 0, got {n_trials!r}")
    for name, t in (("timeout", timeout), ("trial_timeout", trial_timeout)):
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0 or math.isnan(t)):
            raise ValueError(f"{name} must be None or a number of seconds >= 0, got {t!r}")
    conc = concurrency if concurrency is not None else n_jobs
    if isinstance(conc, bool) or not isinstance(conc, int) or conc == 0 or conc < -1:
        raise ValueError(f"concurrency (n_jobs) must be an int >= 1 or -1, got {conc!r}")
    if conc == -1:
        conc = os.cpu_count() or 1
    return conc


def _start_run(
    study: "Study",
    func: Any,
    n_trials: Optional[int],
    timeout: Optional[float],
    conc: int,
    trial_timeout: Optional[float],
    max_retries: int,
    max_concurrency: Optional[int],
) -> Any:
    """Starts the run that this process evaluates, ``conc`` trials at once (a ``dspex._native.Run``)."""
    # Sync objectives pull trials on threads that may sample themselves (no hand-off to the
    # engine's blocking pool); an event loop only pulls sampled trials, so the engine samples.
    return study._native.start_run(
        n_trials,
        None if timeout is None else float(timeout),
        conc,
        None if trial_timeout is None else float(trial_timeout),
        max_retries=max_retries,
        max_concurrency=max_concurrency,
        evaluators_ask=not _is_async(func),
    )


def _is_async(func: Any) -> bool:
    """Whether ``func`` is an ``async def`` function (or a callable whose ``__call__`` is one)."""
    if type(func) is types.FunctionType and not hasattr(func, "_is_coroutine_marker"):
        # The common case without importing inspect (about 3 ms on the first optimize).
        return bool(func.__code__.co_flags & 0x80)  # inspect.CO_COROUTINE
    import inspect

    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def evaluate(
    study: "Study",
    run: Any,
    func: Callable[..., Any],
    concurrency: int,
    catch: Any,
    callbacks: Optional[Iterable[Callable[..., Any]]] = None,
    *,
    gc_after_trial: bool = False,
    progress: Optional[_Progress] = None,
    constraints_func: Optional[Callable[..., Any]] = None,
) -> None:
    """Evaluates the trials that ``run`` (a ``dspex._native.Run``) sends with ``func`` until
    the run is over: a sync objective on this thread (``concurrency`` 1) or on ``concurrency``
    threads, an ``async def`` one as tasks on an event loop. An exception in ``catch`` fails
    its trial only; the first other one (or one raised by a callback) stops the run and is
    raised here, as is Ctrl-C after the trials in flight were failed. The evaluator of
    :func:`run_optimize` and of :func:`dspex.attach`; the caller counts the study as
    optimizing (``study._optimizing``)."""
    if progress is None:
        progress = _Progress(False, None, None)
    try:
        runner = _Runner(study, run, func, _catch_tuple(catch), list(callbacks or []), gc_after_trial, progress, constraints_func)
        if _is_async(func):
            _drive_async(runner, concurrency)
        elif concurrency == 1:
            _drive_here(runner)
        else:
            _drive_threads(runner, concurrency)
    finally:
        _flush_log()
        progress.close()
    if runner.error is not None:
        raise runner.error


def run_optimize(
    study: "Study",
    func: Any,
    n_trials: Any,
    timeout: Any,
    n_jobs: Any,
    catch: Any,
    callbacks: Any,
    gc_after_trial: bool,
    show_progress_bar: bool,
    concurrency: Any,
    trial_timeout: Any,
    max_retries: int = 0,
    max_concurrency: Optional[int] = None,
) -> None:
    """``Study.optimize`` in this process: starts a run and evaluates it."""
    conc = check_args(n_trials, timeout, n_jobs, concurrency, trial_timeout)
    with study._lock:
        if study._optimizing:
            raise RuntimeError("Nested optimization detected: optimize cannot be called while this study is optimizing.")
        study._optimizing += 1
    try:
        if not callable(func):
            raise TypeError(f"the objective must be callable, got {func!r}")
        # Bad arguments are refused before a run starts.
        catch_t = _catch_tuple(catch)
        cbs = list(callbacks or [])
        run = _start_run(study, func, n_trials, timeout, conc, trial_timeout, max_retries, max_concurrency)
        evaluate(study, run, func, conc, catch_t, cbs, gc_after_trial=gc_after_trial, progress=_Progress(show_progress_bar, n_trials, timeout))
    finally:
        with study._lock:
            study._optimizing -= 1
    _raise_run_error(run)


def _raise_run_error(run: Any) -> None:
    """A run the engine ended on an error (a storage failure while starting or recording a
    trial...)."""
    summary = run.wait(5.0)  # over: its evaluators saw it end
    if summary is not None and summary.reason == "error":
        detail = summary.detail or "unknown error"
        if detail.startswith("storage error"):
            raise StorageInternalError(detail)
        raise RuntimeError(detail)


async def run_optimize_async(
    study: "Study",
    func: Any,
    n_trials: Any,
    timeout: Any,
    concurrency: int,
    catch: Any,
    callbacks: Any,
    show_progress_bar: bool,
    trial_timeout: Any,
    max_retries: int = 0,
    max_concurrency: Optional[int] = None,
) -> None:
    """``Study.optimize_async``: the run's trials as tasks of the running event loop."""
    conc = check_args(n_trials, timeout, 1, concurrency, trial_timeout)
    if not _is_async(func):
        raise TypeError("optimize_async needs an `async def` objective")
    with study._lock:
        if study._optimizing:
            raise RuntimeError("Nested optimization detected: optimize cannot be called while this study is optimizing.")
        study._optimizing += 1
    runner = None
    try:
        catch_t = _catch_tuple(catch)
        cbs = list(callbacks or [])
        run = _start_run(study, func, n_trials, timeout, conc, trial_timeout, max_retries, max_concurrency)
        runner = _Runner(study, run, func, catch_t, cbs, False, _Progress(show_progress_bar, n_trials, timeout))
        try:
            await _async_main(runner, conc)
        except BaseException as e:
            runner.run.interrupt(type(e).__name__)
            raise
    finally:
        with study._lock:
            study._optimizing -= 1
        _flush_log()
        if runner is not None:
            runner.progress.close()
    if runner.error is not None:
        raise runner.error
    _raise_run_error(runner.run)


def _finish_interrupted(runner: _Runner, exc: BaseException) -> None:
    runner.run.interrupt(type(exc).__name__)
    # The engine fails the trials in flight and ends the run without waiting for evaluators.
    while runner.run.wait(5.0) is None:
        pass


def _drive_here(runner: _Runner) -> None:
    """concurrency == 1: the objective runs on the calling thread (Ctrl-C reaches it)."""
    try:
        while True:
            numbers = runner.run.pull(1, None)
            if numbers is None:
                break
            for n in numbers:
                runner.evaluate(n)
    except BaseException as e:
        _finish_interrupted(runner, e)
        raise
    runner.run.wait(None)


def _drive_threads(runner: _Runner, conc: int) -> None:
    """Sync objective, concurrency > 1: one evaluator thread per slot; this thread waits."""

    def worker() -> None:
        try:
            while True:
                numbers = runner.run.pull(1, 0.2)
                if numbers is None:
                    return
                for n in numbers:
                    runner.evaluate(n)
        except BaseException as e:  # noqa: BLE001 - SystemExit etc. in a worker
            runner._set_error(e)

    threads = [threading.Thread(target=worker, name=f"dspex-worker-{i}", daemon=True) for i in range(conc)]
    for t in threads:
        t.start()
    try:
        runner.run.wait(None)
    except BaseException as e:
        _finish_interrupted(runner, e)
        raise
    for t in threads:
        t.join()


async def _async_main(runner: _Runner, conc: int) -> None:
    """The run's trials as tasks of the running loop. The loop watches a descriptor the engine
    makes readable when trials are queued or the run ends, and pulls without waiting: no thread
    blocks in ``pull`` (its every answer would cost a hand-off of the GIL)."""
    import asyncio

    loop = asyncio.get_running_loop()
    tasks: set = set()
    fd = runner.run.wakeup_fd()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        while True:
            numbers = runner.run.pull(conc, 0)
            if numbers is None:
                break
            for n in numbers:
                t = loop.create_task(runner.evaluate_async(n))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await ready.wait()
            ready.clear()
            _drain(fd)
        if tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
    except BaseException:
        for t in list(tasks):
            t.cancel()
        if tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        raise
    finally:
        loop.remove_reader(fd)


def _drain(fd: int) -> None:
    """Reads the wake-up descriptor ``fd`` empty (it never blocks)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _drive_async(runner: _Runner, conc: int) -> None:
    """``async def`` objective: tasks on one event loop (a new one in this thread, or in a
    helper thread when this thread already runs a loop)."""
    import asyncio

    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if not in_loop:
        try:
            asyncio.run(_async_main(runner, conc))
        except BaseException as e:
            _finish_interrupted(runner, e)
            raise
        return
    # Inside a running loop (Jupyter, IPython): the trials run on a loop of their own in a
    # helper thread while this thread waits, so an interrupt of the kernel reaches it.
    box: List[BaseException] = []
    loop = asyncio.new_event_loop()
    main: List[Any] = []

    def target() -> None:
        try:
            main.append(loop.create_task(_async_main(runner, conc)))
            loop.run_until_complete(main[0])
        except BaseException as e:  # noqa: BLE001
            box.append(e)
        finally:
            loop.close()

    t = threading.Thread(target=target, name="dspex-async", daemon=True)
    t.start()
    try:
        runner.run.wait(None)
    except BaseException as e:
        _finish_interrupted(runner, e)
        # The trials in flight are failed; their tasks are cancelled, not left running.
        if main:
            loop.call_soon_threadsafe(main[0].cancel)
        t.join(10.0)
        raise
    t.join()
    if box:
        raise box[0]


__all__ = ["check_args", "convert_values", "evaluate", "run_optimize", "run_optimize_async"]
