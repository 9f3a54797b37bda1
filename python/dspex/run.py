"""``dspex run SCRIPT [ARGS...]`` (or ``python -m dspex.run SCRIPT [ARGS...]``): runs an unmodified
Optuna script on dspex. ``import optuna`` in the script (and in the libraries it uses) resolves
to dspex (:func:`dspex.install_as_optuna`); the script runs as ``__main__`` with ``sys.argv`` set
to ``[SCRIPT, ARGS...]`` and its directory first on ``sys.path``, as ``python SCRIPT`` would."""

from __future__ import annotations

import os
import runpy
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: dspex run SCRIPT [ARGS...]\n\nRuns an Optuna script on dspex: `import optuna` resolves to dspex.")
        return 0 if args else 2
    script = args[0]
    if not os.path.isfile(script):
        print(f"dspex run: no such file: {script}", file=sys.stderr)
        return 2
    from dspex._alias import install_as_optuna

    install_as_optuna()
    sys.argv = args
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
