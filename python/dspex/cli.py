"""The ``dspex`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    import dspex

    parser = argparse.ArgumentParser(
        prog="dspex",
        description="dspex: an optimization engine. Python defines the experiment, a Rust engine runs it.",
    )
    parser.add_argument("--version", action="version", version=f"dspex {dspex.__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
