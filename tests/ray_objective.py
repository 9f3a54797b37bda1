"""An objective for test_ray.py, importable by Ray actors: it notes which process evaluated
(a file per pid in ``folder``, and ``busy-<pid>`` while it evaluates) and sleeps ``sleep``
seconds."""

import os
import time


class Quadratic:
    def __init__(self, folder: str, sleep: float = 0.01) -> None:
        self.folder = folder
        self.sleep = sleep

    def __call__(self, trial):
        x = trial.suggest_float("x", -5, 5)
        pid = os.getpid()
        open(os.path.join(self.folder, str(pid)), "a").close()
        open(os.path.join(self.folder, f"busy-{pid}"), "a").close()
        time.sleep(self.sleep)
        return x * x


class Contains:
    """A program study's metric that notes which process scored (a file per pid in ``folder``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, example, prediction, trace=None):
        open(os.path.join(self.folder, str(os.getpid())), "a").close()
        return float(example["answer"] in prediction.answer)
