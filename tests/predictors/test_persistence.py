import zipfile

import numpy as np
import pytest
import skops.io

from fitting.contracts import Architecture
from fitting.errors import UserError
from predictors.dataset import table_hash
from predictors.features import FEATURE_CONVENTION, FEATURES, layer_features
from predictors.regressors import EmergencePredictor
from predictors.trained import FORMAT, TrainedPredictor, load, package_version, save, train


class Stranger:
    """A type no predictor file contains."""


def test_round_trip_gives_identical_predictions(trained, predictor_file, table):
    loaded = load(predictor_file)
    X = table.select(FEATURES).to_numpy()
    np.testing.assert_array_equal(loaded.estimator.predict(X), trained.estimator.predict(X))
    np.testing.assert_array_equal(loaded.estimator.predict_members(X[:5]), trained.estimator.predict_members(X[:5]))
    assert loaded.data_hash == trained.data_hash == table_hash(table)
    assert (loaded.series, loaded.kind, loaded.models, loaded.n_samples) == (
        "ratio",
        "random_forest",
        trained.models,
        table.height,
    )
    assert loaded.feature_convention == FEATURE_CONVENTION and loaded.feature_names == FEATURES
    assert loaded.package_version == package_version() != ""
    np.testing.assert_array_equal(loaded.feature_min, X.min(axis=0))
    np.testing.assert_array_equal(loaded.feature_max, X.max(axis=0))


def test_bootstrap_kinds_round_trip_too(table, tmp_path):
    trained = train(table, EmergencePredictor(kind="gradient_boosting", n_estimators=5, n_bootstrap=3))
    loaded = load(save(trained, tmp_path / "gb.skops"))
    X = layer_features(Architecture(12, 384, 12, 1536))
    np.testing.assert_array_equal(loaded.estimator.predict_members(X), trained.estimator.predict_members(X))


def _saved_dict(trained, **changes):
    from dataclasses import fields

    values = {f.name: getattr(trained, f.name) for f in fields(trained)}
    return {"format": FORMAT, "target": "paper", **values, **changes}


def test_untrusted_types_are_refused(trained, tmp_path):
    path = tmp_path / "tampered.skops"
    skops.io.dump(_saved_dict(trained, extra=Stranger()), path)
    with pytest.raises(UserError, match=r"refusing to load .*Stranger"):
        load(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": FORMAT + 1}, f"is predictor format {FORMAT + 1}"),
        ({"feature_convention": "l = layer"}, "trained with feature_convention 'l = layer'"),
        ({"feature_names": FEATURES[:9]}, "trained with feature_names"),
        ({"estimator": "not an estimator"}, "does not hold a predictor this version knows"),
        ({"target": "knots"}, "does not hold a predictor this version knows"),
        ({"surprise": 1}, "unexpected fields"),
    ],
)
def test_incompatible_files_are_refused(trained, tmp_path, changes, message):
    path = tmp_path / "other.skops"
    skops.io.dump(_saved_dict(trained, **changes), path)
    with pytest.raises(UserError, match=message):
        load(path)


def test_files_that_are_not_predictors_are_refused(tmp_path):
    (tmp_path / "notes.skops").write_text("hello")
    with pytest.raises(UserError, match="is not a predictor file"):
        load(tmp_path / "notes.skops")
    with zipfile.ZipFile(tmp_path / "empty.skops", "w"):
        pass
    with pytest.raises(UserError, match="is not a predictor file"):
        load(tmp_path / "empty.skops")
    with pytest.raises(UserError, match="no predictor file"):
        load(tmp_path / "absent.skops")


def test_a_trained_predictor_is_a_plain_record(trained):
    assert isinstance(trained, TrainedPredictor) and trained.kind == trained.estimator.kind
