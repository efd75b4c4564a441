import importlib.util
import warnings

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from fitting.errors import UserError
from predictors.dataset import TARGETS
from predictors.features import FEATURES
from predictors.regressors import KINDS, EmergencePredictor

# Every kind with the transform defined for any y, plus log1p alone (its y > -1 comes from the positive_only tag).
CHECKED = [
    EmergencePredictor(kind=k, n_estimators=10, n_bootstrap=0, random_state=0, transforms=("yeo-johnson",))
    for k in KINDS
]
CHECKED += [EmergencePredictor(kind="ridge", n_bootstrap=2, random_state=0, transforms=("log1p",))]
NOT_APPLICABLE = {
    (
        "log1p",
        "check_regressor_multioutput",
    ): "the check draws a multi-output y from make_regression without honouring positive_only, so it holds "
    "values <= -1 where log1p is undefined; the yeo-johnson estimators run this check",
}


ANY_TRANSFORM = {
    "check_array_api_input": "EmergencePredictor computes on numpy arrays and does not declare array API support "
    "(array_api_support tag)",
}


@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_contract(estimator, check):
    name = check.func.__name__
    reason = NOT_APPLICABLE.get((estimator.transforms[0], name)) or ANY_TRANSFORM.get(name)
    if reason:
        pytest.skip(reason)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="xgboost is not installed")
        check(estimator)


def _xy(table):
    return table.select(FEATURES).to_numpy(), table.select(TARGETS).to_numpy()


def test_five_targets_with_the_papers_transforms(table):
    X, Y = _xy(table)
    model = EmergencePredictor(kind="ridge", n_bootstrap=0).fit(X, Y)
    assert model.predict(X).shape == Y.shape
    names = [type(est.transformer_).__name__ for est in model.estimators_]
    assert names == ["FunctionTransformer"] * 4 + ["PowerTransformer"]
    assert model.estimators_[0].transformer_.func is np.log1p
    assert model.estimators_[4].transformer_.method == "yeo-johnson"
    scaler = model.estimators_[2].regressor_[0]
    np.testing.assert_allclose(scaler.mean_, X.mean(axis=0))


def test_log1p_needs_targets_above_minus_one(table):
    X, Y = _xy(table)
    Y[3, 0] = -1.0
    with pytest.raises(ValueError, match="target column 0 has values <= -1"):
        EmergencePredictor(kind="ridge").fit(X, Y)
    with pytest.raises(ValueError, match="y has 2 columns but there are 5 target transforms"):
        EmergencePredictor(kind="ridge").fit(X, Y[:, :2])


def test_unknown_kind_is_a_user_error(table):
    X, Y = _xy(table)
    with pytest.raises(UserError, match="unknown regressor kind 'svm': choose one of ridge, lasso"):
        EmergencePredictor(kind="svm").fit(X, Y)


@pytest.mark.skipif(importlib.util.find_spec("xgboost") is not None, reason="xgboost is installed: no fallback")
def test_xgboost_falls_back_to_hist_gradient_boosting_and_says_so_once(table):
    X, Y = _xy(table)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = EmergencePredictor(kind="xgboost", n_estimators=10, n_bootstrap=2).fit(X, Y)
    assert [str(w.message)[:28] for w in caught] == ["xgboost is not installed, so"]
    assert all(isinstance(est.regressor_[-1], HistGradientBoostingRegressor) for est in model.estimators_)


def test_forest_members_are_its_trees_in_target_units(table):
    X, Y = _xy(table)
    model = EmergencePredictor(n_estimators=15, random_state=1).fit(X, Y)
    members = model.predict_members(X[:7])
    assert members.shape == (15, 7, 5)
    point = model.predict(X[:7])
    # The point prediction undoes the transform of the trees' mean, so it lies within the trees' range.
    assert np.all((members.min(axis=0) <= point + 1e-12) & (point <= members.max(axis=0) + 1e-12))
    assert np.all(members[..., :4] > -1)


def test_other_kinds_take_members_from_bootstrap_refits(table):
    X, Y = _xy(table)
    model = EmergencePredictor(kind="gradient_boosting", n_estimators=10, n_bootstrap=4, random_state=0).fit(X, Y)
    members = model.predict_members(X[:3])
    assert members.shape == (4, 3, 5)
    assert np.ptp(members, axis=0).min() > 0  # the refits saw different resamples
    with pytest.raises(ValueError, match="n_bootstrap > 0"):
        EmergencePredictor(kind="ridge", n_bootstrap=0).fit(X, Y).predict_members(X)


def test_a_seed_makes_fits_repeatable(table):
    X, Y = _xy(table)
    first = EmergencePredictor(n_estimators=10, random_state=3).fit(X, Y).predict(X)
    np.testing.assert_array_equal(first, EmergencePredictor(n_estimators=10, random_state=3).fit(X, Y).predict(X))
    assert not np.array_equal(first, EmergencePredictor(n_estimators=10, random_state=4).fit(X, Y).predict(X))
