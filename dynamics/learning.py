"""Training a curve predictor from measurements: which architectures, the training table, every kind's
leave-one-model-out evaluation, and the trained predictor (what `mdyn train` and the demo run)."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from fitting.errors import UserError

if TYPE_CHECKING:  # predictors loads sklearn: only a training run needs it
    from predictors.trained import TrainedCurvePredictor


def default_training_data() -> Path:
    """The shipped measurements `mdyn train` learns from without --store: the `predict` preset's, else the full
    tiny suite's."""
    from dynamics.embedded import PREDICT_SUITE_DIR, TINY_SUITE_DIR

    predict = PREDICT_SUITE_DIR / "measurements.parquet"
    return predict if predict.is_file() else TINY_SUITE_DIR / "measurements.parquet"


def architectures_for(store: Path | None, table_file: Path | None) -> pl.DataFrame:
    """Every architecture known for a training run: a given table first, then what the store recorded while
    measuring, then the shipped tables (the nine Pythia models and the tiny suites)."""
    from dynamics import store as stores
    from dynamics.embedded import shipped_architectures
    from predictors.dataset import read_table

    tables = [read_table(table_file, "architectures")] if table_file is not None else []
    if store is not None and Path(store).is_dir():
        tables.append(stores.recorded_architectures(store))
    tables.append(shipped_architectures())
    merged = pl.concat([t for t in tables if t.height], how="diagonal_relaxed")
    return merged.unique("model", keep="first", maintain_order=True)


@dataclass(frozen=True)
class Training:
    """A trained curve predictor, every evaluated kind's leave-one-model-out summary, and the layers left out."""

    trained: "TrainedCurvePredictor"
    comparison: pl.DataFrame  # one row per kind: error, error_mean, baseline, baseline_mean, skill, coverage
    excluded: list[tuple[str, int, str]]


def train_curves(
    measurements: pl.DataFrame,
    architectures: pl.DataFrame,
    kind: str,
    kinds: tuple[str, ...],
    series: str = "ratio",
    recipe: bool = False,
    level: float = 0.9,
    n_estimators: int = 200,
    seed: int = 0,
) -> Training:
    """Evaluate each of `kinds` leave-one-model-out, then train `kind` (calibrated on its own held-out run)."""
    from fitting.table import SERIES, series_table
    from predictors.dataset import architectures_by_model, curve_table
    from predictors.features import FEATURES, RECIPE_FEATURES
    from predictors.regressors import CurveRegressor
    from predictors.skill import hold_out, summarise
    from predictors.trained import train_curve

    if series not in SERIES:
        raise UserError(f"unknown --series {series!r}; choose one of {', '.join(SERIES)}")
    table, excluded = curve_table(measurements, architectures, series, recipe)
    if table["model"].n_unique() < 2:
        raise UserError(
            f"training needs at least 2 models (their held-out errors calibrate the bands); the "
            f"measurements hold {table['model'].n_unique()}: measure more models"
        )
    values = series_table(measurements, series)
    features = (*FEATURES, *RECIPE_FEATURES) if recipe else FEATURES
    rows, runs = [], {}
    for name in dict.fromkeys((kind, *kinds)):
        estimator = CurveRegressor(name, random_state=seed, n_estimators=n_estimators)
        runs[name] = (estimator, hold_out(table, values, features, estimator))
        rows.append({"kind": name, **summarise(runs[name][1], table, level)})
    archs = architectures_by_model(architectures.filter(pl.col("model").is_in(table["model"].unique().to_list())))
    shapes = {m: (a.n_layers, a.d_model, a.n_heads, a.d_ff) for m, a in archs.items()}
    estimator, heldout = runs[kind]
    trained = train_curve(table, values, features, shapes, series, estimator, level, excluded, heldout)
    return Training(trained, pl.DataFrame(rows), excluded)
