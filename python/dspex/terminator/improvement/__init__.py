"""``optuna.terminator.improvement``: the improvement evaluators, under Optuna's module paths."""
