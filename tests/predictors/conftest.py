"""Fixtures: the synthetic family's tables, its training table, and a small random-forest predictor trained on it."""

import pytest
from synthetic_family import family_tables


@pytest.fixture(scope="session")
def family():
    return family_tables()


@pytest.fixture(scope="session")
def table(family):
    from predictors.dataset import training_table

    fits, architectures = family
    return training_table(fits, architectures)


@pytest.fixture(scope="session")
def trained(table):
    from predictors.regressors import EmergencePredictor
    from predictors.trained import train

    return train(table, EmergencePredictor(n_estimators=30, random_state=0))


@pytest.fixture(scope="session")
def predictor_file(trained, tmp_path_factory):
    from predictors.trained import save

    return save(trained, tmp_path_factory.mktemp("predictor") / "predictor.skops")
