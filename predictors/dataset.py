"""The training sets: one row per (model, layer), the Table 4 features joined to what is learned.

Two targets: `curve_table` (the default) holds each layer's measured log ratio at the knots of
`predictors.knots`; `training_table` (`--target paper`) the fitted Eq. 9 parameters, as the paper regresses them.
"""

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from fitting.contracts import ARCHITECTURE_COLUMNS, EQ9_PARAMS, FITS_COLUMNS, Architecture, require_columns
from fitting.errors import UserError
from predictors.features import FEATURES, RECIPE_COLUMNS, RECIPE_FEATURES, layer_features, recipe_features
from predictors.knots import KNOT_COLUMNS, series_at_knots

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
        models = sorted(undefined["model"].unique().to_list())
        shown = f"{models}" if len(models) <= 3 else f"{len(models)} models ({', '.join(models[:3])}, ...)"
        warnings.warn(
            f"dropped {undefined.height} of {rows.height} fits with A, lam, gamma or t0 <= -1 (log1p undefined) "
            f"from {shown}",
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


def curve_table(
    measurements: pl.DataFrame, architectures: pl.DataFrame, series: str = "ratio", recipe: bool = False
) -> tuple[pl.DataFrame, list[tuple[str, int, str]]]:
    """Every measured layer's log series at the knots of its run, with its features; and the layers left out.

    Columns: model, group (the architecture and recipe: seeds of one design share it), layer, total_steps,
    `FEATURES` (with `recipe`, also `RECIPE_FEATURES`), `KNOT_COLUMNS`. A run's length is the architectures
    table's total_steps when it has one, else the model's last measured step. Layers left out come back as
    (model, layer, reason): a series that does not cover its run, or has fewer than 2 finite positive values.
    """
    from fitting.table import series_table

    archs = architectures_by_model(architectures)
    lengths = _recipes(architectures)
    values = (
        series_table(measurements, series)
        .drop_nulls("value")
        .filter(pl.col("value").is_finite() & (pl.col("value") > 0))
    )
    models = sorted(measurements["model"].unique().to_list())
    missing = [m for m in models if m not in archs]
    if missing:
        raise UserError(
            f"no architecture for {missing}: add them to an architectures table (columns "
            f"{', '.join(ARCHITECTURE_COLUMNS)}) and pass it as --architectures"
        )
    if recipe and (absent := [m for m in models if m not in lengths]):
        raise UserError(
            f"recipe features need {', '.join(RECIPE_COLUMNS)} for every model; the architectures "
            f"table lacks them for {absent}: add them, or drop --recipe-features"
        )
    rows, excluded = [], []
    for model in models:
        arch = archs[model]
        features = layer_features(arch)
        part = values.filter(pl.col("model") == model)
        layers = measurements.filter(pl.col("model") == model)["layer"].unique().sort().to_list()
        # polars types Series.max() as any Python literal, whatever the dtype; steps are integers.
        total = lengths[model][0] if model in lengths else float(part["step"].max() or 0)  # type: ignore[arg-type]
        extra = recipe_features(*lengths[model]) if recipe else np.empty(0)
        for layer in layers:
            points = part.filter(pl.col("layer") == layer).sort("step")
            if points.height < 2 or total <= 0:
                excluded.append((model, layer, f"{points.height} finite positive values of the {series} series"))
                continue
            knots = series_at_knots(points["step"].to_numpy(), np.log(points["value"].to_numpy()), total)
            if not np.isfinite(knots).all():
                excluded.append(
                    (
                        model,
                        layer,
                        f"measured steps {points['step'][0]}..{points['step'][-1]} do not "
                        f"cover its run of {total:g} steps",
                    )
                )
                continue
            rows.append(
                {
                    "model": model,
                    "group": _group(arch, lengths.get(model)),
                    "layer": layer,
                    "total_steps": total,
                    **dict(zip(FEATURES, features[layer])),
                    **dict(zip(RECIPE_FEATURES, extra)),
                    **dict(zip(KNOT_COLUMNS, knots)),
                }
            )
    if not rows:
        raise UserError(
            f"no layer of the measurements has a {series} series covering its run; measure more "
            "revisions (mdyn sweep) or pass the right --store"
        )
    return pl.DataFrame(rows), excluded


def _recipes(architectures: pl.DataFrame) -> dict[str, tuple[float, float, float]]:
    """model -> (total_steps, peak_lr, tokens_per_step) for the models whose row has all three."""
    if not set(RECIPE_COLUMNS) <= set(architectures.columns):
        return {}
    rows = architectures.select("model", *RECIPE_COLUMNS).drop_nulls()
    return {m: (float(s), float(lr), float(t)) for m, s, lr, t in rows.iter_rows()}


def design_groups(models: Sequence[str], architectures: pl.DataFrame) -> np.ndarray:
    """The design of each model (as `curve_table`'s group column), for leave-one-model-out: the seeds of one
    architecture and recipe leave together, so that no model is predicted from its own twin."""
    archs, recipes = architectures_by_model(architectures), _recipes(architectures)
    return np.array([_group(archs[m], recipes.get(m)) for m in models])


def _group(arch: Architecture, recipe: tuple | None) -> str:
    """What two runs of one experiment design share: the architecture and, when known, the recipe."""
    name = f"L{arch.n_layers}-d{arch.d_model}-h{arch.n_heads}-ff{arch.d_ff}"
    return name + ("" if recipe is None else "-steps{:g}-lr{:g}-tok{:g}".format(*recipe))


def table_hash(table: pl.DataFrame, columns: Sequence[str] = (*FEATURES, *TARGETS)) -> str:
    """sha256 of a training table's models, layers and numeric `columns` (features and targets), in row order."""
    h = hashlib.sha256()
    for name in ("model", "layer"):
        h.update("\0".join(map(str, table[name].to_list())).encode() + b"\1")
    h.update(np.ascontiguousarray(table.select(*columns).to_numpy(), dtype="<f8").tobytes())
    return h.hexdigest()
