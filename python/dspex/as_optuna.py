"""``import dspex.as_optuna`` makes ``import optuna`` (and every ``optuna.X``) resolve to dspex
for the rest of the process: see :func:`dspex.install_as_optuna`."""

from dspex._alias import install_as_optuna

install_as_optuna()
