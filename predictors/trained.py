"""A trained predictor with the provenance of its training data; saved and loaded with skops, never pickle."""

import datetime
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl
import sklearn
import skops.io
from sklearn.base import clone

from fitting.contracts import package_version
from fitting.errors import UserError
from predictors.dataset import TARGETS, table_hash
from predictors.features import FEATURE_CONVENTION, FEATURES
from predictors.regressors import EmergencePredictor

# Bump when the saved fields or their meaning change; files of another format are refused.
FORMAT = 1
# The types `save` writes that skops does not trust by default: the estimator class, the trees of random_forest
# and gradient_boosting, the trees of the xgboost fallback, and (with the optional extra) XGBoost's own.
TRUSTED_TYPES = frozenset(
    {
        "predictors.regressors.EmergencePredictor",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.core.Booster",
    }
)


@dataclass(frozen=True)
class TrainedPredictor:
    """A fitted `EmergencePredictor` and what it was trained on: series, data hash, feature range, versions."""

    estimator: EmergencePredictor
    series: str
    data_hash: str
    models: tuple[str, ...]
    n_samples: int
    feature_min: np.ndarray
    feature_max: np.ndarray
    package_version: str
    sklearn_version: str
    trained_at: str
    feature_convention: str = FEATURE_CONVENTION
    feature_names: tuple[str, ...] = FEATURES
    targets: tuple[str, ...] = TARGETS

    @property
    def kind(self) -> str:
        return self.estimator.kind


def train(table: pl.DataFrame, estimator: EmergencePredictor | None = None) -> TrainedPredictor:
    """Fit `estimator` (default `EmergencePredictor(random_state=0)`) on a `dataset.training_table`."""
    estimator = EmergencePredictor(random_state=0) if estimator is None else clone(estimator)
    series = table["series"].unique().to_list()
    if len(series) != 1:
        raise UserError(f"the training table mixes the series {series}: build it for one series")
    X = table.select(FEATURES).to_numpy()
    estimator.fit(X, table.select(TARGETS).to_numpy())
    return TrainedPredictor(
        estimator=estimator,
        series=series[0],
        data_hash=table_hash(table),
        models=tuple(table["model"].unique(maintain_order=True).to_list()),
        n_samples=table.height,
        feature_min=X.min(axis=0),
        feature_max=X.max(axis=0),
        package_version=package_version(),
        sklearn_version=sklearn.__version__,
        trained_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def save(trained: TrainedPredictor, path: Path) -> Path:
    """Write a trained predictor as a skops file."""
    values = {f.name: getattr(trained, f.name) for f in fields(trained)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skops.io.dump({"format": FORMAT, **values}, path)
    return path


def load(path: Path) -> TrainedPredictor:
    """Read a predictor written by `save`, refusing types outside `TRUSTED_TYPES` and files of another format."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no predictor file at {path}: pass a file written by `mdyn train --out`")
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise UserError(
            f"{path} is not a predictor file ({type(err).__name__}): pass one written by `mdyn train`"
        ) from None
    unexpected = sorted(set(untrusted) - TRUSTED_TYPES)
    if unexpected:
        raise UserError(
            f"refusing to load {path}: it holds types a predictor never contains ({', '.join(unexpected)}); "
            "retrain with `mdyn train` rather than loading a file you cannot vouch for"
        )
    values = skops.io.load(path, trusted=untrusted)
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        found = values.get("format") if isinstance(values, dict) else type(values).__name__
        raise UserError(f"{path} is predictor format {found!r}, this version reads {FORMAT}: retrain with `mdyn train`")
    values.pop("format")
    checks = {"feature_convention": FEATURE_CONVENTION, "feature_names": FEATURES, "targets": TARGETS}
    for name, expected in checks.items():
        if values.get(name) != expected:
            raise UserError(
                f"{path} was trained with {name} {values.get(name)!r}, this version uses {expected!r}: "
                "retrain with `mdyn train`"
            )
    if not isinstance(values.get("estimator"), EmergencePredictor):
        raise UserError(f"{path} does not hold an EmergencePredictor: pass a file written by `mdyn train`")
    try:
        return TrainedPredictor(**values)
    except TypeError as err:
        raise UserError(f"{path} has unexpected fields ({err}): retrain with `mdyn train`") from None
