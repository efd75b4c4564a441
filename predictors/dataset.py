"""The training set: one row per (model, layer), the Table 4 features joined to the fitted Eq. 9 parameters."""

import hashlib
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from fitting.contracts import ARCHITECTURE_COLUMNS, EQ9_PARAMS, FITS_COLUMNS, Architecture, require_columns
from fitting.errors import UserError
from predictors.features import FEATURES, layer_features

TARGETS = EQ9_PARAMS
# log1p is the paper's transform for these; it is undefined at or below -1.
LOG1P_TARGETS = ("A", "lam", "gamma", "t0")


def read_table(path: Path, what: str) -> pl.DataFrame:
    """A CSV or parquet file as a table; `what` names it in error messages."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no {what} file at {path}: pass an existing .parquet or .csv file")
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path)
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise UserError(
            f"cannot read the {what} file {path} ({type(err).__name__}): pass a parquet or .csv file"
        ) from None


def architectures_by_model(table: pl.DataFrame) -> dict[str, Architecture]:
    """The validated architecture of every model of an architectures table."""
    require_columns(table, ARCHITECTURE_COLUMNS, "the architectures table")
    duplicated = table.filter(pl.col("model").is_duplicated())["model"].unique().to_list()
    if duplicated:
        raise UserError(f"the architectures table lists {sorted(duplicated)} more than once: keep one row per model")
    result = {}
    for row in table.select(ARCHITECTURE_COLUMNS).iter_rows(named=True):
        try:
            result[row["model"]] = Architecture(row["n_layers"], row["d_model"], row["n_heads"], row["d_ff"])
        except UserError as err:
            raise UserError(f"architectures table, model {row['model']}: {err}") from None
    return result


def training_table(fits: pl.DataFrame, architectures: pl.DataFrame, series: str = "ratio") -> pl.DataFrame:
    """Successful, finite emergence fits of one series with their layer features.

    Columns: model, layer, series, `FEATURES`, `TARGETS`; one row per (model, layer), sorted. Rows whose A, lam,
    gamma or t0 is <= -1 are dropped with a warning, since their log1p transform is undefined.
    """
    require_columns(fits, FITS_COLUMNS, "the fits table")
    available = sorted(fits["series"].unique().drop_nulls().to_list())
    if series not in available:
        raise UserError(f"the fits table has no series {series!r}; it has {available}: pass one of those as --series")
    finite = pl.all_horizontal([pl.col(t).cast(pl.Float64).is_finite().fill_null(False) for t in TARGETS])
    chosen = (pl.col("hypothesis") == "emergence") & (pl.col("series") == series) & pl.col("success").fill_null(False)
    rows = fits.filter(chosen & finite).select(
        "model", pl.col("layer").cast(pl.Int64), "series", *[pl.col(t).cast(pl.Float64) for t in TARGETS]
    )
    if rows.is_empty():
        raise UserError(
            f"the fits table has no successful, finite emergence fits for series {series!r}: run `mdyn fit` "
            "with the emergence hypothesis first"
        )
    undefined = rows.filter(pl.any_horizontal([pl.col(t) <= -1 for t in LOG1P_TARGETS]))
    if not undefined.is_empty():
        warnings.warn(
            f"dropped {undefined.height} fits with A, lam, gamma or t0 <= -1 (log1p undefined) from models "
            f"{sorted(undefined['model'].unique().to_list())}",
            stacklevel=2,
        )
        rows = rows.filter(pl.all_horizontal([pl.col(t) > -1 for t in LOG1P_TARGETS]))
        if rows.is_empty():
            raise UserError(f"no fit of series {series!r} has A, lam, gamma and t0 above -1: train on another series")
    duplicated = rows.filter(pl.struct("model", "layer").is_duplicated())
    if not duplicated.is_empty():
        raise UserError(
            f"the fits table has several emergence fits of series {series!r} for the same layer (e.g. "
            f"{duplicated['model'][0]} layer {duplicated['layer'][0]}): keep one row per model and layer"
        )
    archs = architectures_by_model(architectures)
    missing = sorted(set(rows["model"].unique().to_list()) - archs.keys())
    if missing:
        raise UserError(
            f"the architectures table has no row for {missing}: add them (columns {', '.join(ARCHITECTURE_COLUMNS)}) "
            "and pass the file as --architectures"
        )
    rows = rows.sort("model", "layer")
    features = np.vstack(
        [
            layer_features(archs[model], group["layer"].to_numpy())
            for (model,), group in rows.group_by("model", maintain_order=True)
        ]
    )
    return pl.concat(
        [rows.select("model", "layer", "series"), pl.DataFrame(features, schema=list(FEATURES)), rows.select(TARGETS)],
        how="horizontal",
    )


def table_hash(table: pl.DataFrame) -> str:
    """sha256 of a training table's models, layers, features and targets, in row order."""
    h = hashlib.sha256()
    for name in ("model", "layer"):
        h.update("\0".join(map(str, table[name].to_list())).encode() + b"\1")
    h.update(np.ascontiguousarray(table.select(*FEATURES, *TARGETS).to_numpy(), dtype="<f8").tobytes())
    return h.hexdigest()
