"""Reductions of a measurements or fits table that the figures plot."""

import warnings

import polars as pl

from fitting.errors import UserError
from fitting.table import STATS, series_table

NEEDED = ("model", "step", "seq", "layer", *STATS)


def check_models(table: pl.DataFrame, models, what: str) -> None:
    """UserError unless every one of `models` has rows in `table`."""
    known = set(table["model"].unique().to_list())
    missing = [m for m in models if m not in known]
    if missing:
        raise UserError(f"{what} has no rows for model(s) {', '.join(missing)}; it has {', '.join(sorted(known))}")


def with_steps(measurements: pl.DataFrame) -> pl.DataFrame:
    """The rows that have a training step. Rows without one (a model folder measured on its own: revision
    `local`, step null) cannot be placed on a training axis: they are left out with a warning naming them, and
    a UserError says so when no row has a step."""
    stepless = measurements.filter(pl.col("step").is_null())
    if stepless.is_empty():
        return measurements
    checkpoints = ", ".join(f"{m}@{r}" for m, r in stepless.select("model", "revision").unique().sort("model").rows())
    advice = (
        "measure a folder of stepN/ checkpoint folders or hub revisions (mdyn sweep) to draw how activations "
        "evolve over training"
    )
    if stepless.height == measurements.height:
        raise UserError(f"no measurement has a training step ({checkpoints}: a model folder measured alone); {advice}")
    warnings.warn(f"left {checkpoints} out of the figures: it has no training step; {advice}", stacklevel=2)
    return measurements.filter(pl.col("step").is_not_null())


def layer_means(measurements: pl.DataFrame) -> pl.DataFrame:
    """Per (model, layer, step): the means over probe sequences of top1, top2, top3 and median, and n_layers."""
    missing = [c for c in NEEDED if c not in measurements.columns]
    if missing:
        raise UserError(f"the measurements table lacks column(s) {', '.join(missing)}; it needs {', '.join(NEEDED)}")
    return (
        measurements.group_by("model", "layer", "step")
        .agg(pl.col(STATS).cast(pl.Float64).fill_nan(None).mean())
        .with_columns(n_layers=pl.col("layer").max().over("model") + 1)
        .sort("model", "layer", "step")
    )


def endpoints(means: pl.DataFrame) -> pl.DataFrame:
    """The rows of `layer_means` at each model's first and last step, with a column `when` (first | last).

    A model measured at one step has it as both, so that every model has a first and a last row."""
    first, last = pl.col("step").min().over("model"), pl.col("step").max().over("model")
    return pl.concat(
        [
            means.filter(pl.col("step") == first).with_columns(when=pl.lit("first")),
            means.filter(pl.col("step") == last).with_columns(when=pl.lit("last")),
        ]
    )


def ratio_peaks(measurements: pl.DataFrame, series: str = "ratio") -> pl.DataFrame:
    """Per (model, layer): the series' largest value over steps (`peak`), its step (`peak_step`) and n_layers."""
    values = series_table(measurements, series).drop_nulls("value").filter(pl.col("value").is_finite())
    return (
        values.sort("step")
        .group_by("model", "layer")
        .agg(pl.col("value").max().alias("peak"), pl.col("step").get(pl.col("value").arg_max()).alias("peak_step"))
        .with_columns(n_layers=pl.col("layer").max().over("model") + 1)
        .sort("model", "layer")
    )


def final_ratios(measurements: pl.DataFrame, series: str = "ratio") -> pl.DataFrame:
    """Per model: the series at its last step, the largest and the mean over layers, and that step."""
    values = series_table(measurements, series)
    last = values.filter(pl.col("step") == pl.col("step").max().over("model"))
    return (
        last.group_by("model")
        .agg(
            pl.col("value").max().alias("max_over_layers"),
            pl.col("value").mean().alias("mean_over_layers"),
            pl.col("step").first().alias("step"),
        )
        .sort("model")
    )


def emergence_fits(fits: pl.DataFrame, series: str) -> pl.DataFrame:
    """The Eq. 9 ("emergence") rows of one series, with n_layers per model; UserError when there are none."""
    missing = [c for c in ("model", "layer", "series", "hypothesis", "success", "r2") if c not in fits.columns]
    if missing:
        raise UserError(f"the fits table lacks column(s) {', '.join(missing)}; pass a table written by `mdyn fit`")
    rows = fits.filter((pl.col("hypothesis") == "emergence") & (pl.col("series") == series))
    if rows.is_empty():
        found = sorted(fits["series"].unique().drop_nulls().to_list())
        raise UserError(
            f"the fits table has no emergence (Eq. 9) fits of series {series!r} (series: {found}); "
            f"run `mdyn fit --series {series}`"
        )
    return rows.with_columns(n_layers=pl.col("layer").max().over("model") + 1).sort("model", "layer")
