"""The paper's Tables 1, 3 and 5 computed from the project's tables, and their Markdown rendering."""

import math

import polars as pl

from dynamics.figures.aggregates import emergence_fits
from fitting.errors import UserError
from fitting.table import hypothesis_summary, r2_summary


def table1_fit_quality(fits: pl.DataFrame, series: str = "ratio") -> pl.DataFrame:
    """Table 1: per model, the layers, mean R² of the Eq. 9 fits, layers with R² < 0.9 and failed fits."""
    return r2_summary(emergence_fits(fits, series))


def table3_regressors(
    fits: pl.DataFrame,
    architectures: pl.DataFrame,
    series: str = "ratio",
    kinds=None,
    n_estimators: int = 200,
    seed: int = 0,
) -> pl.DataFrame:
    """Table 3: R², MAE, RMSE per regressor kind (default: all of `predictors.regressors.KINDS`) and Eq. 9
    parameter, under the paper's random 80/20 split and under leave-one-model-out (column protocol); one row per
    (protocol, kind, target)."""
    # predictors loads skops (and with it torch): about 2 s that only this table and Figs 9-10 need.
    from predictors.dataset import TARGETS, design_groups, training_table
    from predictors.evaluate import leave_one_model_out, paper_protocol
    from predictors.features import FEATURES
    from predictors.regressors import KINDS, EmergencePredictor

    kinds = KINDS if kinds is None else kinds
    table = training_table(fits, architectures, series)
    X, Y = table.select(FEATURES).to_numpy(), table.select(TARGETS).to_numpy()
    estimator = EmergencePredictor(random_state=seed, n_estimators=n_estimators)
    parts = [paper_protocol(X, Y, kinds, estimator, random_state=seed)]
    groups = design_groups(table["model"].to_list(), architectures)
    if len(set(groups)) >= 2:
        parts.append(leave_one_model_out(X, Y, groups, kinds, estimator))
    return pl.concat(parts)


def table5_hypotheses(fits: pl.DataFrame, series: str = "ratio") -> pl.DataFrame:
    """Table 5: mean R² per model (rows) and hypothesis (columns) for one series (the paper's, transposed)."""
    rows = fits.filter(pl.col("series") == series)
    found = rows["hypothesis"].unique().to_list()
    if len(found) < 2:
        raise UserError(
            f"the fits table holds only the hypotheses {found} for series {series!r}; Table 5 compares "
            "several: run `mdyn fit --hypotheses all`"
        )
    summary = hypothesis_summary(rows)
    table = summary.pivot(on="hypothesis", index="model", values="mean_r2").select("model", *sorted(found))
    second = summary.filter(pl.col("hypothesis") == "second_order_step")
    if second.height:
        # Where the second-order fit ran to its over-damped limit it is the first-order step: say how often.
        limit = second.select("model", pl.format("{} of {}", "layers_at_limit", "layers").alias("2nd order = 1st"))
        table = table.join(limit, on="model", how="left")
    return table.sort("model")


def single_block(table: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """A table shown as it is: one untitled block."""
    return [("", table)]


def table3_blocks(table3: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Table 3 as the paper prints it: test R² per parameter (rows) and kind (columns), one block per protocol."""
    blocks = []
    for (protocol,), part in table3.group_by("protocol", maintain_order=True):
        wide = part.pivot(on="kind", index="target", values="r2")
        blocks.append((f"{protocol}: test R², {part['n_train'][0]} training / {part['n_test'][0]} test layers", wide))
    return blocks


def markdown(table: pl.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table; floats rounded to `digits` decimals, nulls as '-'."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.iter_rows():
        lines.append("| " + " | ".join(format_cell(value, digits) for value in row) + " |")
    return "\n".join(lines)


def format_cell(value, digits: int = 4) -> str:
    """One table cell as text: floats to `digits` decimals (`digits` significant ones from a million on, so that a
    diverged R² of -1e58 stays short), None and NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.{digits}g}"
    return str(value)
