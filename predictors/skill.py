"""What architecture explains of measured curves: leave-one-model-out error, the architecture-blind baseline,
skill, band coverage and the seed floor.

Every number compares a predicted log ratio with the measured one at the measured steps of a held-out model.
A held-out model leaves together with every run of its design (seeds of one architecture and recipe share a
`group`), so no model is predicted from its own twin. The baseline ignores architecture: a held-out layer gets
the mean, over the training models, of their curves at the same relative depth. Skill is 1 - error / baseline:
at or below 0 the architecture explains nothing the baseline did not. The seed floor is the median |log ratio
difference| between two seeds of one design (and its mean). A run is its design's expected curve plus its own
noise, and two runs differ by √2 times that noise, so even a perfect predictor of the expected curve misses a
single run by about floor / √2: the error below which nothing is left for architecture to explain.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from sklearn.base import clone
from sklearn.model_selection import LeaveOneGroupOut

from fitting.errors import UserError
from predictors.bands import band, half_widths, nearest_knot
from predictors.knots import KNOT_COLUMNS, curve

if TYPE_CHECKING:
    from predictors.regressors import CurveRegressor

DEPTH = "l/L"


@dataclass(frozen=True)
class Heldout:
    """Leave-one-model-out predictions of one regressor: per row (model, layer) the predicted and baseline knots,
    and per measured point its log value and residuals."""

    knots: np.ndarray  # (n_rows, N_KNOTS), predicted log ratio
    baseline: np.ndarray  # (n_rows, N_KNOTS), the architecture-blind baseline
    points: pl.DataFrame  # row, group, step, knot, measured, predicted, baseline


def measured_points(table: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    """The measured log values of every row of a curve table, at its measured steps up to its run's end.

    `series` is `fitting.table.series_table` output (model, layer, step, value). Columns: row, group, step, knot
    (the nearest knot), measured.
    """
    rows = table.select("model", "layer", "group", "total_steps").with_row_index("row")
    points = (
        rows.join(series.with_columns(pl.col("layer").cast(rows["layer"].dtype)), on=["model", "layer"])
        .filter(pl.col("value").is_finite() & (pl.col("value") > 0) & (pl.col("step") <= pl.col("total_steps")))
        .sort("row", "step")
    )
    knot = (
        np.concatenate(
            [
                nearest_knot(part["step"].to_numpy(), part["total_steps"][0])
                for part in points.partition_by("row", maintain_order=True)
            ]
        )
        if points.height
        else np.empty(0, dtype=int)
    )
    return points.select("row", "group", "step", pl.Series("knot", knot), pl.col("value").log().alias("measured"))


def blind_baseline(train: pl.DataFrame, depth: np.ndarray) -> np.ndarray:
    """Per relative depth, the mean over training models of their knot curves at that depth (linear between
    a model's layers, its first or last layer beyond them): (len(depth), N_KNOTS)."""
    curves = []
    for part in train.sort(DEPTH).partition_by("model"):
        x, y = part[DEPTH].to_numpy(), part.select(KNOT_COLUMNS).to_numpy()
        curves.append(np.column_stack([np.interp(depth, x, y[:, k]) for k in range(y.shape[1])]))
    return np.mean(curves, axis=0)


def hold_out(
    table: pl.DataFrame, series: pl.DataFrame, features: tuple[str, ...], estimator: "CurveRegressor"
) -> Heldout:
    """Predict every group's rows from a fit on the other groups; needs at least 2 groups."""
    groups = table["group"].to_numpy()
    if len(np.unique(groups)) < 2:
        raise UserError(
            f"leave-one-model-out needs at least 2 model designs, got {len(np.unique(groups))}: measure more models"
        )
    X, Y = table.select(features).to_numpy(), table.select(KNOT_COLUMNS).to_numpy()
    predicted, baseline = np.empty_like(Y), np.empty_like(Y)
    for train, test in LeaveOneGroupOut().split(X, Y, groups):
        predicted[test] = clone(estimator).fit(X[train], Y[train]).predict(X[test])
        baseline[test] = blind_baseline(table[train], table[DEPTH].to_numpy()[test])
    points = measured_points(table, series)
    totals, row = table["total_steps"].to_numpy(), points["row"].to_numpy()
    steps = points["step"].to_numpy()
    at = {
        name: np.concatenate([curve(values[i], totals[i], steps[row == i]) for i in np.unique(row)])
        for name, values in (("predicted", predicted), ("baseline", baseline))
    }
    return Heldout(
        predicted,
        baseline,
        points.with_columns(pl.Series("predicted", at["predicted"]), pl.Series("baseline", at["baseline"])),
    )


def coverage(heldout: Heldout, table: pl.DataFrame, level: float = 0.9) -> float:
    """The share of held-out measured points inside their band, each group's band calibrated on the others."""
    points = heldout.points
    residual = (points["measured"] - points["predicted"]).to_numpy()
    inside = np.zeros(points.height, dtype=bool)
    totals = table["total_steps"].to_numpy()
    for group in points["group"].unique():
        mine = (points["group"] == group).to_numpy()
        widths = half_widths(points["knot"].to_numpy()[~mine], residual[~mine], level)
        for i in np.unique(points["row"].to_numpy()[mine]):
            at = (points["row"] == i).to_numpy()
            low, high = band(heldout.knots[i], widths, totals[i], points["step"].to_numpy()[at])
            measured = points["measured"].to_numpy()[at]
            inside[at] = (low <= measured) & (measured <= high)
    return float(inside.mean())


def seed_floor(table: pl.DataFrame, series: pl.DataFrame) -> dict[str, float] | None:
    """Median and mean |log ratio difference| between seeds of one design, over their common steps and layers,
    and `perfect`, the median error of a perfect predictor of the expected curve (median / √2); None without
    replicates."""
    values = series.filter(pl.col("value").is_finite() & (pl.col("value") > 0))
    designs = table.group_by("group").agg(pl.col("model").unique().sort()).filter(pl.col("model").list.len() > 1)
    differences = []
    for models in designs["model"].to_list():
        first, *others = models
        for other in others:
            pair = values.filter(pl.col("model") == first).join(
                values.filter(pl.col("model") == other), on=["layer", "step"], suffix="_other"
            )
            differences.append((pair["value"].log() - pair["value_other"].log()).abs().to_numpy())
    joined = np.concatenate(differences) if differences else np.empty(0)
    if not joined.size:
        return None
    median = float(np.median(joined))
    return {"median": median, "mean": float(joined.mean()), "perfect": median / np.sqrt(2)}


def summarise(heldout: Heldout, table: pl.DataFrame, level: float = 0.9) -> dict:
    """error and baseline (median and mean |log predicted - log measured| over held-out points), skill (on the
    medians), band coverage at `level`, and how many models and layers were held out."""
    points = heldout.points
    error = (points["predicted"] - points["measured"]).abs()
    base = (points["baseline"] - points["measured"]).abs()
    # polars types Series.median() and mean() as any Python literal, whatever the dtype; these are floats.
    error_median, base_median = float(error.median()), float(base.median())  # type: ignore[arg-type]
    return {
        "error": error_median,
        "error_mean": float(error.mean()),  # type: ignore[arg-type]
        "baseline": base_median,
        "baseline_mean": float(base.mean()),  # type: ignore[arg-type]
        "skill": 1.0 - error_median / base_median,
        "coverage": coverage(heldout, table, level),
        "level": level,
        "models": table["model"].n_unique(),
        "layers": table.height,
    }
