"""The benchmark harness behind ``dspex bench`` (issue 6): dspex's samplers against Optuna,
rustuna and hyperopt on standard problems (quality, with paired Wilcoxon verdicts) and on speed.
Peers are optional (``pip install 'dspex[bench]'``); missing ones are named in the report."""

from .runner import SUITES, main

__all__ = ["SUITES", "main"]
