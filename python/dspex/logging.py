"""dspex's logger (Optuna-compatible helpers: ``set_verbosity``, ``disable_default_handler``...)."""

from __future__ import annotations

import atexit
import collections
import logging as _logging
import sys
import threading
import time
from logging import CRITICAL, DEBUG, ERROR, FATAL, INFO, WARN, WARNING  # noqa: F401
from typing import Any, Callable, Deque, Optional, Tuple

_lock = threading.Lock()
_default_handler: _logging.Handler | None = None
_default_formatter = _logging.Formatter("[%(levelname)1.1s %(asctime)s] %(message)s")
_ROOT = "dspex"


def _configure() -> None:
    global _default_handler
    with _lock:
        if _default_handler is not None:
            return
        _default_handler = _logging.StreamHandler(sys.stderr)
        _default_handler.setFormatter(_default_formatter)
        root = _logging.getLogger(_ROOT)
        root.addHandler(_default_handler)
        root.setLevel(INFO)
        root.propagate = False


def _reroot(name: str) -> None:
    """Makes ``name`` (``"optuna"``, see :func:`dspex.install_as_optuna`) the root of dspex's
    logging: the default handler, the level and the verbosity functions move to that logger,
    and the ``dspex`` loggers propagate to it, so that a handler on it sees every line."""
    global _ROOT
    _configure()
    with _lock:
        if name == _ROOT:
            return
        old, new = _logging.getLogger(_ROOT), _logging.getLogger(name)
        new.setLevel(old.level)
        new.propagate = old.propagate
        for h in list(old.handlers):
            old.removeHandler(h)
            new.addHandler(h)
        old.setLevel(_logging.NOTSET)
        old.propagate = True
        old.parent = new  # dspex.* records go on to the new root's handlers
        _ROOT = name


def get_logger(name: str) -> _logging.Logger:
    """A logger under the ``dspex`` hierarchy."""
    _configure()
    return _logging.getLogger(name if name.startswith(("dspex", _ROOT)) else f"{_ROOT}.{name}")


def get_verbosity() -> int:
    _configure()
    return _logging.getLogger(_ROOT).getEffectiveLevel()


def set_verbosity(verbosity: int) -> None:
    """Sets the level of dspex's root logger (e.g. ``dspex.logging.WARNING``)."""
    _configure()
    _logging.getLogger(_ROOT).setLevel(verbosity)


def disable_default_handler() -> None:
    _configure()
    assert _default_handler is not None
    _logging.getLogger(_ROOT).removeHandler(_default_handler)


def enable_default_handler() -> None:
    _configure()
    assert _default_handler is not None
    _logging.getLogger(_ROOT).addHandler(_default_handler)


def disable_propagation() -> None:
    _configure()
    _logging.getLogger(_ROOT).propagate = False


def enable_propagation() -> None:
    _configure()
    _logging.getLogger(_ROOT).propagate = True


class _Deferred:
    """Log lines whose message is built, and whose record is handled, on a background thread.

    ``optimize`` logs a line per trial; building it (the trial's parameters, the formatting)
    and writing it to stderr cost a tenth of an event loop's concurrency when done where the
    trial finishes. Here the evaluator only queues what the line needs; one thread builds the
    lines in batches (at most every ``_PERIOD`` seconds, so it takes the GIL rarely), in order,
    with the time they were queued. While dspex's default handler is the only one that would
    see them, a batch is formatted as that handler would and written at once; otherwise each
    line goes through the logger as a record. :func:`flush` waits until every queued line was
    handled: ``optimize`` calls it before callbacks see a trial and before it returns, so a
    handler on the logger has seen every line by then.
    """

    _PERIOD = 0.05

    def __init__(self) -> None:
        self._items: Deque[Tuple[_logging.Logger, int, float, Callable[..., str], Tuple[Any, ...], Any]] = collections.deque()
        self._cv = threading.Condition()
        self._busy = False
        self._flushing = 0
        self._thread: Optional[threading.Thread] = None
        self._second = -1
        self._stamp = ""

    def submit(self, logger: _logging.Logger, level: int, build: Callable[..., str], *args: Any, exc_info: Any = None) -> None:
        """Queues the line ``build(*args)`` at ``level`` (when ``logger`` would log it)."""
        if not logger.isEnabledFor(level):
            return
        item = (logger, level, time.time(), build, args, exc_info)
        with self._cv:
            self._items.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="dspex-log", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Waits until every queued line was handled."""
        if threading.current_thread() is self._thread:
            return
        with self._cv:
            self._flushing += 1
            try:
                self._cv.notify_all()
                while self._items or self._busy:
                    self._cv.wait(0.5)
            finally:
                self._flushing -= 1

    def _main(self) -> None:
        while True:
            with self._cv:
                self._busy = False
                self._cv.notify_all()
                # Batches: wait a period unless someone is waiting for the lines.
                self._cv.wait_for(lambda: self._flushing > 0, self._PERIOD)
                while not self._items:
                    self._cv.wait()
                self._busy = True
                batch = list(self._items)
                self._items.clear()
            try:
                self._emit_batch(batch)
            except Exception:  # noqa: BLE001 - a broken line must not stop the ones after it
                pass

    def _emit_batch(self, batch: list) -> None:
        handler = _default_handler
        text: list = []
        for logger, level, created, build, args, exc_info in batch:
            if exc_info is None and handler is not None and _only_default_handler(logger, level, handler):
                text.append(f"[{_logging.getLevelName(level)[0]} {self._asctime(created)}] {build(*args)}\n")
                continue
            if text:
                _write(handler, "".join(text))
                text.clear()
            self._emit(logger, level, created, build, args, exc_info)
        if text:
            _write(handler, "".join(text))

    def _asctime(self, created: float) -> str:
        """``%(asctime)s`` of the default formatter, the date part computed once a second."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"

    @staticmethod
    def _emit(logger: _logging.Logger, level: int, created: float, build: Callable[..., str], args: Tuple[Any, ...], exc_info: Any) -> None:
        try:
            record = logger.makeRecord(logger.name, level, "(dspex)", 0, build(*args), (), exc_info)
            record.created = created
            record.msecs = (created - int(created)) * 1000.0
            logger.handle(record)
        except Exception:  # noqa: BLE001 - a broken line must not stop the ones after it
            _logging.getLogger(_ROOT).debug("could not log a line", exc_info=True)


def _only_default_handler(logger: _logging.Logger, level: int, handler: _logging.Handler) -> bool:
    """Whether a record of ``logger`` at ``level`` would reach ``handler`` only, unfiltered and
    formatted by its default formatter."""
    lg: Any = logger
    while lg is not None:
        if lg.filters:
            return False
        if lg.name == _ROOT:
            return (
                lg.handlers == [handler]
                and not lg.propagate
                and not handler.filters
                and handler.level <= level
                and handler.formatter is _default_formatter
            )
        if lg.handlers or not lg.propagate:
            return False
        lg = lg.parent
    return False


def _write(handler: Any, text: str) -> None:
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    except Exception:  # noqa: BLE001 - as logging does: a closed stderr must not break the study
        pass
    finally:
        handler.release()


_deferred = _Deferred()
defer = _deferred.submit
flush = _deferred.flush
atexit.register(flush)
