"""A metric for the ``processes=N`` tests of test_program.py, importable by worker processes:
it notes which process scored each prediction (a file per pid under $DSPEX_TEST_POOL_DIR) and,
once, kills its own process (a worker's) with SIGKILL in the middle of a call."""

import os
import signal
import time


def metric(example, prediction, trace=None):
    d = os.environ["DSPEX_TEST_POOL_DIR"]
    with open(os.path.join(d, f"pid-{os.getpid()}"), "a") as f:
        f.write("x")
    scored = sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.startswith("pid-"))
    marker = os.path.join(d, "killed")
    owner = os.environ.get("DSPEX_TEST_POOL_OWNER")
    worker = str(os.getpid()) != owner
    # Only once two workers have scored: then another one serves the metric when this one dies
    # (a kill while a single worker has joined leaves the shared tool without any provider).
    workers = [n for n in os.listdir(d) if n.startswith("pid-") and n != f"pid-{owner}"]
    if worker and len(workers) < 2:
        time.sleep(0.1)  # slow until the second worker has joined (it may start late on a busy machine)
    if worker and scored >= 30 and len(workers) >= 2 and not os.path.exists(marker):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # one process only
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return float(example["answer"] in prediction.answer)
