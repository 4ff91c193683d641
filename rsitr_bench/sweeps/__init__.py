"""Optuna studies over the runner: search spaces declared by methods, validation mR as the only objective."""
