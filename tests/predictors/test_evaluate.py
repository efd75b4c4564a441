import warnings

import numpy as np
import polars as pl
import pytest

from fitting.errors import UserError
from predictors.dataset import TARGETS
from predictors.evaluate import SCHEMA, leave_one_model_out, paper_protocol
from predictors.features import FEATURES
from predictors.regressors import KINDS, EmergencePredictor

SMALL_FOREST = EmergencePredictor(n_estimators=50, random_state=0)


def _xyg(table):
    return table.select(FEATURES).to_numpy(), table.select(TARGETS).to_numpy(), table["model"].to_numpy()


def test_random_forest_predicts_unseen_models_of_the_synthetic_family(table):
    X, Y, groups = _xyg(table)
    result = leave_one_model_out(X, Y, groups, ["random_forest"], SMALL_FOREST)
    assert result["target"].to_list() == list(TARGETS)
    r2 = dict(zip(result["target"], result["r2"]))
    assert min(r2.values()) >= 0.8, r2
    assert (result["n_test"] == len(X)).all()


def test_paper_protocol_runs_every_kind(table):
    X, Y, _ = _xyg(table)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="xgboost is not installed")
        result = paper_protocol(X, Y, KINDS, EmergencePredictor(n_estimators=10, random_state=0))
    assert result.schema == pl.Schema(SCHEMA)
    assert result.height == len(KINDS) * len(TARGETS)
    assert (result["n_train"] + result["n_test"] == len(X)).all() and (result["n_test"] == round(0.2 * len(X))).all()
    finite = result.select(pl.all_horizontal([pl.col(c).is_finite() for c in ("r2", "mae", "rmse", "cv_r2_mean")]))
    assert finite.to_series().all()
    forest = result.filter(pl.col("kind") == "random_forest")
    assert forest["r2"].min() > 0.8 and forest["cv_r2_mean"].min() > 0.8


def test_paper_protocol_is_seeded(table):
    X, Y, _ = _xyg(table)
    model = EmergencePredictor(kind="ridge")
    assert paper_protocol(X, Y, ["ridge"], model, random_state=5).equals(
        paper_protocol(X, Y, ["ridge"], model, random_state=5)
    )
    assert not paper_protocol(X, Y, ["ridge"], model, random_state=6)["r2"].equals(
        paper_protocol(X, Y, ["ridge"], model, random_state=5)["r2"]
    )


def test_a_per_model_effect_the_features_cannot_explain_flatters_only_the_random_split(table):
    """Layers of one model share an offset: a random split sees it in training, leave-one-model-out cannot."""
    X, Y, groups = _xyg(table)
    rng = np.random.default_rng(0)
    offset = {model: rng.normal(0.0, 10.0) for model in np.unique(groups)}
    Y = Y.copy()
    Y[:, 4] += np.array([offset[g] for g in groups])
    forest = EmergencePredictor(n_estimators=20, random_state=0)
    paper = paper_protocol(X, Y, ["random_forest"], forest)
    lomo = leave_one_model_out(X, Y, groups, ["random_forest"], forest)
    assert paper.filter(pl.col("target") == "K")["r2"][0] > lomo.filter(pl.col("target") == "K")["r2"][0] + 0.3


def test_too_little_data_is_a_user_error(table):
    X, Y, groups = _xyg(table)
    with pytest.raises(UserError, match="at least 2 models, got 1"):
        leave_one_model_out(X[:4], Y[:4], groups[:4], ["ridge"])
    with pytest.raises(UserError, match="at least 10 fitted layers, got 9"):
        paper_protocol(X[:9], Y[:9], ["ridge"])


def test_paper_protocol_survives_folds_of_one_test_row():
    """12 rows: the 80 % training part (9) in 5 folds leaves folds of one row, where R² is undefined."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(12, 10)), rng.uniform(0.1, 1.0, size=(12, 5))
    result = paper_protocol(X, Y, ["ridge"])
    assert result.height == 5 and result["cv_r2_mean"].is_finite().all()
