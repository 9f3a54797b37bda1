"""An objective for test_ray.py, importable by Ray actors: it notes which process evaluated
(a file per pid in ``folder``, and ``busy-<pid>`` while it evaluates) and sleeps ``sleep``
seconds; with ``together``, a trial also waits (up to a minute) until that many processes have
evaluated, so every actor takes part however late it starts."""

import os
import time


class Quadratic:
    def __init__(self, folder: str, sleep: float = 0.01, together: int = 0) -> None:
        self.folder = folder
        self.sleep = sleep
        self.together = together

    def __call__(self, trial):
        x = trial.suggest_float("x", -5, 5)
        pid = os.getpid()
        open(os.path.join(self.folder, str(pid)), "a").close()
        open(os.path.join(self.folder, f"busy-{pid}"), "a").close()
        time.sleep(self.sleep)
        deadline = time.monotonic() + 60
        while self._evaluators() < self.together and time.monotonic() < deadline:
            time.sleep(0.01)
        return x * x

    def _evaluators(self) -> int:
        return sum(1 for name in os.listdir(self.folder) if name.isdigit())


class Contains:
    """A program study's metric that notes which process scored (a file per pid in ``folder``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, example, prediction, trace=None):
        open(os.path.join(self.folder, str(os.getpid())), "a").close()
        return float(example["answer"] in prediction.answer)
