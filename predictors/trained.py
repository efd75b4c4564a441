"""Trained predictors with the provenance of their training data; saved and loaded with skops, never pickle.

Two kinds: `TrainedCurvePredictor` (the default: the log ratio at knots, with bands calibrated on held-out
models) and `TrainedPredictor` (`--target paper`: the five Eq. 9 parameters, as the paper regresses them).
"""

import datetime
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import sklearn
import skops.io
from sklearn.base import clone

from fitting.contracts import package_version
from fitting.errors import UserError
from predictors.dataset import TARGETS, table_hash
from predictors.features import FEATURE_CONVENTION, FEATURES
from predictors.knots import KNOT_COLUMNS, KNOT_FRACTIONS
from predictors.regressors import CurveRegressor, EmergencePredictor

if TYPE_CHECKING:
    from predictors.skill import Heldout

# Bump when the saved fields or their meaning change; files of another format are refused.
FORMAT = 2
# The types `save` writes that skops does not trust by default: the estimator classes, the trees of random_forest
# and gradient_boosting, the trees of the xgboost fallback, (with the optional extra) XGBoost's own, and the
# Gaussian process's kernels.
TRUSTED_TYPES = frozenset(
    {
        "predictors.regressors.EmergencePredictor",
        "predictors.regressors.CurveRegressor",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.gaussian_process.kernels.ConstantKernel",
        "sklearn.gaussian_process.kernels.Hyperparameter",
        "sklearn.gaussian_process.kernels.Product",
        "sklearn.gaussian_process.kernels.RBF",
        "sklearn.gaussian_process.kernels.Sum",
        "sklearn.gaussian_process.kernels.WhiteKernel",
        "sklearn.compose._target.TransformedTargetRegressor",
        "sklearn.decomposition._pca.PCA",
        "sklearn.multioutput.MultiOutputRegressor",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.core.Booster",
    }
)


@dataclass(frozen=True)
class TrainedPredictor:
    """A fitted `EmergencePredictor` (paper targets) and what it was trained on: series, data hash, feature range."""

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


@dataclass(frozen=True)
class TrainedCurvePredictor:
    """A fitted `CurveRegressor`, its calibration and what it was trained on.

    `widths` are the band half-widths per knot at `level` (log units), `residual_curves` the held-out knot
    residuals (one row per training layer) that give the descriptors' intervals; `curves` holds every training
    layer's knots (model, layer, depth, total_steps, knot columns) for the nearest-model overlay; `evaluation`
    the leave-one-model-out summary (error, baseline, skill, coverage, seed floor).
    """

    estimator: CurveRegressor
    series: str
    data_hash: str
    models: tuple[str, ...]
    architectures: dict  # model -> (n_layers, d_model, n_heads, d_ff)
    n_samples: int
    feature_names: tuple[str, ...]
    feature_min: np.ndarray
    feature_max: np.ndarray
    widths: np.ndarray
    level: float
    residual_curves: np.ndarray
    curves: dict  # column -> list or array (a polars frame, as skops stores plain values)
    evaluation: dict
    excluded: tuple[tuple[str, int, str], ...]
    package_version: str
    sklearn_version: str
    trained_at: str
    feature_convention: str = FEATURE_CONVENTION
    knot_fractions: tuple[float, ...] = KNOT_FRACTIONS

    @property
    def kind(self) -> str:
        return self.estimator.kind

    @property
    def uses_recipe(self) -> bool:
        return len(self.feature_names) > len(FEATURES)

    def training_curves(self) -> pl.DataFrame:
        return pl.DataFrame(self.curves)


def _provenance() -> dict:
    return {
        "package_version": package_version(),
        "sklearn_version": sklearn.__version__,
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


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
        **_provenance(),
    )


def train_curve(
    table: pl.DataFrame,
    series_table: pl.DataFrame,
    features: tuple[str, ...],
    architectures: dict,
    series: str = "ratio",
    estimator: CurveRegressor | None = None,
    level: float = 0.9,
    excluded: Iterable[tuple[str, int, str]] = (),
    heldout: "Heldout | None" = None,
) -> TrainedCurvePredictor:
    """Fit the curve regressor on a `dataset.curve_table`, and calibrate its bands by leave-one-model-out.

    `series_table` holds the measured series (model, layer, step, value) the table was built from; the bands
    and the evaluation compare held-out predictions with it. `heldout`, when the caller already computed
    `skill.hold_out` for this estimator, saves computing it again.
    """
    from predictors.bands import half_widths
    from predictors.skill import hold_out, seed_floor, summarise

    estimator = CurveRegressor(random_state=0) if estimator is None else clone(estimator)
    heldout = heldout or hold_out(table, series_table, features, estimator)
    points = heldout.points
    widths = half_widths(points["knot"].to_numpy(), (points["measured"] - points["predicted"]).to_numpy(), level)
    evaluation = summarise(heldout, table, level) | {
        "seed_floor": seed_floor(table, series_table),
        "kind": estimator.kind,
    }
    X = table.select(features).to_numpy()
    Y = table.select(KNOT_COLUMNS).to_numpy()
    estimator.fit(X, Y)
    curves = table.select("model", "layer", pl.col("l/L").alias("depth"), "total_steps", *KNOT_COLUMNS)
    return TrainedCurvePredictor(
        estimator=estimator,
        series=series,
        data_hash=table_hash(table, (*features, *KNOT_COLUMNS)),
        models=tuple(table["model"].unique(maintain_order=True).to_list()),
        architectures={m: tuple(int(v) for v in a) for m, a in architectures.items()},
        n_samples=table.height,
        feature_names=tuple(features),
        feature_min=X.min(axis=0),
        feature_max=X.max(axis=0),
        widths=widths,
        level=level,
        residual_curves=Y - heldout.knots,
        curves={c: curves[c].to_list() for c in curves.columns},
        evaluation=evaluation,
        excluded=tuple(excluded),
        **_provenance(),
    )


def save(trained: TrainedPredictor | TrainedCurvePredictor, path: Path) -> Path:
    """Write a trained predictor as a skops file."""
    values = {f.name: getattr(trained, f.name) for f in fields(trained)}
    target = "curve" if isinstance(trained, TrainedCurvePredictor) else "paper"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compressed: a fitted forest or boosting is thousands of small arrays, each with a header that compresses well.
    skops.io.dump(
        {"format": FORMAT, "target": target, **values}, path, compression=zipfile.ZIP_DEFLATED, compresslevel=9
    )
    return path


def load(path: Path) -> TrainedPredictor | TrainedCurvePredictor:
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
    target = values.pop("target", None)
    kind, estimator_type = {
        "paper": (TrainedPredictor, EmergencePredictor),
        "curve": (TrainedCurvePredictor, CurveRegressor),
    }.get(target, (None, None))
    if kind is None or estimator_type is None or not isinstance(values.get("estimator"), estimator_type):
        raise UserError(f"{path} does not hold a predictor this version knows: pass a file written by `mdyn train`")
    checks: dict[str, object] = {"feature_convention": FEATURE_CONVENTION}
    checks |= (
        {"feature_names": FEATURES, "targets": TARGETS} if target == "paper" else {"knot_fractions": KNOT_FRACTIONS}
    )
    for name, expected in checks.items():
        if values.get(name) != expected:
            raise UserError(
                f"{path} was trained with {name} {values.get(name)!r}, this version uses {expected!r}: "
                "retrain with `mdyn train`"
            )
    try:
        return kind(**values)
    except TypeError as err:
        raise UserError(f"{path} has unexpected fields ({err}): retrain with `mdyn train`") from None
