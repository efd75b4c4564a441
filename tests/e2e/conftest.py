"""Fixtures of the end-to-end tests: a small curve predictor trained on the shipped tiny-suite data."""

import pytest


@pytest.fixture(scope="session")
def predictor_file(tmp_path_factory):
    """A curve predictor trained on the shipped tiny-suite data (one kind, 20 boosting rounds), as a .skops file."""
    from rich.console import Console

    from dynamics.cli.train import run_curve_training

    out = tmp_path_factory.mktemp("predictor") / "predictor.skops"
    return run_curve_training(Console(quiet=True), None, out, compare=False, n_estimators=20)
