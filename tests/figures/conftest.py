"""Tables the figure tests draw from: the shipped tiny-suite data, a small synthetic family, and their fits."""

from types import SimpleNamespace

import polars as pl
import pytest

from fitting.synthetic import paper_like_steps, synthetic_measurements

# Two small models whose ratio follows known Eq. 9 curves: early peaks, a logarithmic rise, a late rise.
CURVES = {
    ("synthetic/three-layers", 0): dict(A=40.0, lam=1.0, gamma=1e-3, t0=0.1, K=60.0),
    ("synthetic/three-layers", 1): dict(A=30.0, lam=0.05, gamma=2e-4, t0=1.0, K=10.0),
    ("synthetic/three-layers", 2): dict(A=50.0, lam=0.5, gamma=4e-4, t0=1.2, K=20.0),
    ("synthetic/four-layers", 0): dict(A=45.0, lam=0.8, gamma=1e-3, t0=0.3, K=50.0),
    ("synthetic/four-layers", 1): dict(A=25.0, lam=0.02, gamma=1e-4, t0=1.0, K=12.0),
    ("synthetic/four-layers", 2): dict(A=35.0, lam=0.1, gamma=3e-4, t0=1.0, K=15.0),
    ("synthetic/four-layers", 3): dict(A=60.0, lam=0.4, gamma=5e-4, t0=1.1, K=25.0),
}
ARCHITECTURES = pl.DataFrame(
    {
        "model": ["synthetic/three-layers", "synthetic/four-layers"],
        "n_layers": [3, 4],
        "d_model": [64, 128],
        "n_heads": [4, 4],
        "d_ff": [256, 512],
        "n_params": [200_000, 900_000],
    }
)


@pytest.fixture(scope="session")
def embedded():
    from dynamics.embedded import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def embedded_fits(embedded):
    from fitting.table import fit_table

    return fit_table(embedded.measurements, series="ratio")


@pytest.fixture(scope="session")
def synthetic():
    from fitting.table import fit_table

    measurements = synthetic_measurements(CURVES, paper_like_steps(), n_seq=3, noise=0.02, seed=0)
    return SimpleNamespace(
        measurements=measurements, fits=fit_table(measurements, series="ratio", n_jobs=1), architectures=ARCHITECTURES
    )


@pytest.fixture(scope="session", params=["embedded", "synthetic"])
def case(request, embedded, embedded_fits, synthetic):
    """The shipped data or the synthetic family, as measurements, fits and architectures."""
    if request.param == "synthetic":
        return synthetic
    return SimpleNamespace(measurements=embedded.measurements, fits=embedded_fits, architectures=embedded.architectures)


@pytest.fixture(scope="session")
def family():
    """Fits and architectures of the predictors' synthetic family: 14 models whose parameters all allow log1p."""
    from tests.predictors.synthetic_family import family_tables

    return family_tables()


@pytest.fixture(scope="session")
def predictor(family):
    from predictors.dataset import training_table
    from predictors.regressors import EmergencePredictor
    from predictors.trained import train

    fits, architectures = family
    return train(training_table(fits, architectures), EmergencePredictor(n_estimators=20, random_state=0))
