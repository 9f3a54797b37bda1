"""The ``dspex`` command line: the Rust CLI of the engine (``dspex serve``, ``dspex optimize
study.toml``, ``dspex worker``), run inside this Python process so that its workers use this
interpreter."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import List, Optional

from dspex import _native
from dspex._optuna_cli import COMMANDS as OPTUNA_COMMANDS
from dspex._studies_cli import main as studies_main


def main(argv: Optional[List[str]] = None) -> int:
    def _terminate(signum: int, frame: Optional[FrameType]) -> None:  # SIGTERM: graceful shutdown, like Ctrl-C
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        pass
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:  # dspex run SCRIPT [ARGS]: an Optuna script on dspex (python/dspex/run.py)
        from dspex.run import main as run_main

        return run_main(args[1:])
    if args[:1] == ["studies"] and args[1:2] and not args[1].startswith("-"):
        return studies_main(args[1:])  # dspex studies list|show|delete|export (python/dspex/_studies_cli.py)
    if args[:1] and args[0] in OPTUNA_COMMANDS:  # Optuna's commands (python/dspex/_optuna_cli.py)
        from dspex._optuna_cli import main as optuna_main

        return optuna_main(args)
    if args[:1] == ["sessions"]:  # dspex sessions list|show|close --engine ADDR (python/dspex/_sessions_cli.py)
        from dspex._sessions_cli import main as sessions_main

        return sessions_main(args[1:])
    if args[:1] == ["bench"]:  # dspex bench --suite quick|full --out DIR (python/dspex/bench/)
        from dspex.bench import main as bench_main  # its own imports are only for benchmarking

        return bench_main(args[1:])
    if args[:1] == ["optimize"]:  # a program file ([[steps]]) runs in Python (python/dspex/_program_cli.py)
        from dspex._program_cli import main as program_main

        code = program_main(args[1:])
        if code is not None:
            return code
    return _native.cli_main(["dspex", *args], sys.executable)


if __name__ == "__main__":
    sys.exit(main())
