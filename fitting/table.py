"""Fit every (model, layer) of a measurements table: the fits table, bootstrap intervals, model comparison.

A series is reduced over the probe sequences at each step (paper Eq. 8 and its variants, `SERIES`), fitted
by each hypothesis of `fitting.model`, and written one row per (model, layer, series, hypothesis).

The fits table (schema version `SCHEMA_VERSION`, stored in the parquet file metadata under `SCHEMA_KEY`):
- the contract columns: model, layer, series, hypothesis, A, lam, gamma, t0, K and their *_se, r2, aic, bic,
  n_points, success, message, t_peak. A..K are the Eq. 9 parameters: set for "emergence" (Eq. 9) and
  "log_rise" (Eq. 9 with lam = 0 and t0 = 1, both fixed, so their *_se are null), null for
  "first_order_step" and "second_order_step". *_se are null when the covariance is unavailable (message
  says so). t_peak is NaN when the curve has no observable peak; for "second_order_step" it is the first
  overshoot, pi / omega_d, when under-damped. r2, aic and bic are computed in the series' own units, with
  aic = n log(SSE / n) + 2 k and bic = n log(SSE / n) + k log n, so they compare across hypotheses.
- params, params_se: JSON objects with each hypothesis' own parameters (K, tau; K, zeta, omega_n; ...),
  in training steps and the series' units; params_se is null without a covariance.
- with a bootstrap: A_lo, A_hi, ..., K_lo, K_hi, t_peak_lo, t_peak_hi (2.5 and 97.5 % percentiles over
  the resamples whose refit succeeded; for t_peak, over those with an observable peak) and n_boot (the
  number of successful refits), for the Eq. 9 hypotheses; null for the others.
- probe_id, dtype, device (and site, for rows of a sites table) when the measurements have them: their distinct
  values per model, joined by ",".
"""

import json
import math
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl

from fitting.contracts import EQ9_PARAMS, FIT_INPUT_COLUMNS, FITS_COLUMNS, STATS, require_columns
from fitting.errors import UserError
from fitting.model import FIRST_ORDER_REMARK, HYPOTHESES, CurveFit, CurveModel, fit_curve

ALL_PROBES = "all"  # --probe-id all: pool every probe

SCHEMA_VERSION = 1
SCHEMA_KEY = "massive_dynamics.fits_schema_version"  # parquet file metadata
# Per-model provenance copied from the measurements when present (distinct values joined by ","); site when the
# rows are one site of a sites table.
CARRIED = ("probe_id", "dtype", "device", "site")
# Below this many single fits (about 50 ms each), a process pool costs more to start than it saves.
POOL_MIN_FITS = 16

Stats = dict[str, np.ndarray]  # top1..median -> array of shape (step, seq)
SeriesFunction = Callable[[Stats, np.ndarray], np.ndarray]  # (stats, weight per sequence) -> value per step
Row = dict[str, object]  # one row of the fits table
Hypothesis = Callable[[], CurveModel]  # a model class of `fitting.model`


def _mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over sequences (axis 1) of the finite entries; NaN where a step has none."""
    finite = np.isfinite(values)
    total = finite @ weights
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.where(finite, values, 0.0) @ weights / total, np.nan)


def _ratio_of_means(top: str) -> SeriesFunction:
    def series(stats: Stats, weights: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return _mean(stats[top], weights) / _mean(stats["median"], weights)

    return series


def _mean_of_ratios(stats: Stats, weights: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _mean(stats["top1"] / stats["median"], weights)


def _mean_of(stat: str) -> SeriesFunction:
    def series(stats: Stats, weights: np.ndarray) -> np.ndarray:
        return _mean(stats[stat], weights)

    return series


# Each series maps the per-(step, sequence) statistics and a weight per sequence to one value per step.
SERIES: dict[str, SeriesFunction] = {
    "ratio": _ratio_of_means("top1"),  # Eq. 8: mean top-1 / mean median
    "ratio_mean": _mean_of_ratios,
    "top1": _mean_of("top1"),
    "median": _mean_of("median"),
    "top2_ratio": _ratio_of_means("top2"),
    "top3_ratio": _ratio_of_means("top3"),
}


def check_measurements(measurements: pl.DataFrame, name: str = "the measurements table") -> None:
    """Raise UserError unless the table has the columns the fit needs."""
    require_columns(measurements, FIT_INPUT_COLUMNS, name)


def select_probe(measurements: pl.DataFrame, probe_id: str | None = None) -> pl.DataFrame:
    """The rows of one probe: `probe_id` when given (`all` keeps every probe); without it, a UserError when a model
    was measured with several probes, since averaging sequences of different probes mixes two experiments."""
    if "probe_id" not in measurements.columns:
        if probe_id not in (None, ALL_PROBES):
            raise UserError("--probe-id given, but the measurements have no probe_id column; leave it out")
        return measurements
    if probe_id == ALL_PROBES:
        return measurements
    if probe_id is not None:
        chosen = measurements.filter(pl.col("probe_id") == probe_id)
        if chosen.is_empty():
            found = ", ".join(measurements["probe_id"].drop_nulls().unique().sort().to_list())
            raise UserError(f"no measurements with probe id {probe_id!r}; the measurements have {found}")
        return chosen
    probes = measurements.group_by("model").agg(pl.col("probe_id").drop_nulls().unique().sort())
    several = probes.filter(pl.col("probe_id").list.len() > 1)
    if several.height:
        model, ids = several.sort("model").row(0)
        raise UserError(
            f"model {model} was measured with several probes ({', '.join(ids)}); pass --probe-id ID to "
            f"use one, or --probe-id {ALL_PROBES} to average sequences of different probes together"
        )
    return measurements


def _series_function(series: str) -> SeriesFunction:
    if series not in SERIES:
        raise UserError(f"unknown series {series!r}; choose one of {', '.join(SERIES)}")
    return SERIES[series]


def layer_stats(measurements: pl.DataFrame) -> Iterator[tuple[str, int, np.ndarray, Stats]]:
    """One (model, layer, steps, stats) per layer: stats maps top1..median to arrays of shape (step, seq).

    Rows repeated for a (step, seq) (e.g. step143000 and main) are averaged; missing entries are NaN.
    """
    check_measurements(measurements)
    table = (
        measurements.select(FIT_INPUT_COLUMNS)
        .with_columns(pl.col(STATS).cast(pl.Float64).fill_nan(None))
        .group_by("model", "layer", "step", "seq")
        .agg(pl.col(STATS).mean())
        .sort("model", "layer", "step", "seq")
    )
    for (model, layer), part in table.partition_by("model", "layer", as_dict=True, maintain_order=True).items():
        step_ids, step_index = np.unique(part["step"].to_numpy(), return_inverse=True)
        seq_ids, seq_index = np.unique(part["seq"].to_numpy(), return_inverse=True)
        stats = {}
        for stat in STATS:
            grid = np.full((step_ids.size, seq_ids.size), np.nan)
            grid[step_index, seq_index] = part[stat].cast(pl.Float64).fill_null(np.nan).to_numpy()
            stats[stat] = grid
        yield str(model), int(layer), step_ids, stats


def series_table(measurements: pl.DataFrame, series: str = "ratio") -> pl.DataFrame:
    """The series of every layer: columns model, layer, step, value."""
    function = _series_function(series)
    frames = [
        pl.DataFrame(
            {"model": model, "layer": layer, "step": steps, "value": function(stats, np.ones(stats["top1"].shape[1]))},
            schema={"model": pl.String, "layer": pl.Int32, "step": pl.Int64, "value": pl.Float64},
        )
        for model, layer, steps, stats in layer_stats(measurements)
    ]
    return (
        pl.concat(frames)
        if frames
        else pl.DataFrame(schema={"model": pl.String, "layer": pl.Int32, "step": pl.Int64, "value": pl.Float64})
    )


def _null_if_nan(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _row(model: CurveModel, fit: CurveFit) -> Row:
    """The fits-table columns of one CurveFit (without model, layer, series)."""
    eq9 = {**fit.params, **model.eq9_fixed} if model.eq9_fixed is not None and fit.params else {}
    stderr = (fit.stderr or {}) if eq9 else {}
    row: Row = {"hypothesis": model.hypothesis}
    for name in EQ9_PARAMS:
        row |= {name: eq9.get(name), f"{name}_se": stderr.get(name)}
    row |= {
        "r2": _null_if_nan(fit.r2),
        "aic": _null_if_nan(fit.aic),
        "bic": _null_if_nan(fit.bic),
        "n_points": fit.n_points,
        "success": fit.success,
        "message": fit.message,
        "t_peak": fit.t_peak,
        "params": json.dumps(fit.params) if fit.params else None,
        "params_se": json.dumps(fit.stderr) if fit.stderr else None,
    }
    return row


def _bootstrap_columns(
    model: CurveModel,
    fit: CurveFit,
    steps: np.ndarray,
    stats: Stats,
    function: SeriesFunction,
    weights: list[np.ndarray],
) -> Row:
    """2.5 and 97.5 % percentiles of the Eq. 9 parameters and t_peak over resampled probe sequences."""
    assert model.eq9_fixed is not None, f"no bootstrap intervals for {model.hypothesis}, outside Eq. 9"
    draws: dict[str, list[float]] = {name: [] for name in (*EQ9_PARAMS, "t_peak")}
    n_boot = 0
    for w in weights:
        refit = fit_curve(model, steps, function(stats, w), start=fit.params)
        if refit.success:
            n_boot += 1
            for name, value in ({**refit.params, **model.eq9_fixed} | {"t_peak": refit.t_peak}).items():
                draws[name].append(value)
    columns: Row = {"n_boot": n_boot}
    for name, drawn in draws.items():
        values = np.array(drawn, dtype=float)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if values.size else (math.nan, math.nan)
        columns |= {f"{name}_lo": _null_if_nan(float(low)), f"{name}_hi": _null_if_nan(float(high))}
    return columns


def _fit_layer(task: tuple[str, int, np.ndarray, Stats, str, tuple[Hypothesis, ...], int, int]) -> list[Row]:
    """All rows of one layer: each hypothesis fitted to the series, with bootstrap intervals if asked."""
    model_name, layer, steps, stats, series, hypotheses, n_boot, seed = task
    function = SERIES[series]
    n_seq = stats["top1"].shape[1]
    y = function(stats, np.ones(n_seq))
    # Same resamples for every layer of a model: one resampled probe set, refitted layer by layer.
    rng = np.random.default_rng([seed, zlib.crc32(model_name.encode())])
    weights = [np.bincount(rng.integers(0, n_seq, n_seq), minlength=n_seq).astype(float) for _ in range(n_boot)]
    rows = []
    for cls in hypotheses:
        model = cls()
        fit = fit_curve(model, steps, y)
        row = {"model": model_name, "layer": layer, "series": series} | _row(model, fit)
        if n_boot and model.eq9_fixed is not None and fit.success:
            row |= _bootstrap_columns(model, fit, steps, stats, function, weights)
        rows.append(row)
    return rows


def _schema(bootstrap: int, carried: Iterable[str]) -> dict[str, type[pl.DataType]]:
    schema = {"model": pl.String, "layer": pl.Int32, "series": pl.String, "hypothesis": pl.String}
    schema |= dict.fromkeys(EQ9_PARAMS, pl.Float64)
    schema |= {f"{name}_se": pl.Float64 for name in EQ9_PARAMS}
    schema |= {
        "r2": pl.Float64,
        "aic": pl.Float64,
        "bic": pl.Float64,
        "n_points": pl.Int32,
        "success": pl.Boolean,
        "message": pl.String,
        "t_peak": pl.Float64,
        "params": pl.String,
        "params_se": pl.String,
    }
    if bootstrap:
        for name in (*EQ9_PARAMS, "t_peak"):
            schema |= {f"{name}_lo": pl.Float64, f"{name}_hi": pl.Float64}
        schema["n_boot"] = pl.Int32
    return schema | dict.fromkeys(carried, pl.String)


def _own_streams() -> None:
    """In a fit worker: new stdout and stderr objects on the same file descriptors.

    A forked worker inherits the parent's stream objects with their locks as they were at the fork. If another
    thread of the parent was inside a write then (a progress spinner redraws ten times a second), the lock stays
    taken in the worker for good, and its first warning, or its flush at exit, waits forever; so does the
    parent, for the worker.
    """
    for name, fd in (("stdout", 1), ("stderr", 2)):
        try:
            stream = open(fd, "w", closefd=False)  # noqa: SIM115 (open for the worker's life)
        except OSError:  # no such descriptor in a daemonized parent
            stream = open(os.devnull, "w")  # noqa: SIM115
        setattr(sys, name, stream)


def fit_table(
    measurements: pl.DataFrame,
    series: str = "ratio",
    hypotheses: Sequence[Hypothesis] = HYPOTHESES,
    bootstrap: int = 0,
    seed: int = 0,
    n_jobs: int | None = None,
) -> pl.DataFrame:
    """The fits table: one row per (model, layer, hypothesis) of `measurements` for one series.

    hypotheses: model classes of `fitting.model` (default: all). bootstrap: number of probe-sequence
    resamples (0: none) giving *_lo/*_hi columns and n_boot for Eq. 9-family hypotheses. n_jobs: worker
    processes (default: every core); small jobs run in this process.
    """
    _series_function(series)
    if bootstrap < 0:
        raise UserError(f"--bootstrap must be 0 or more, not {bootstrap}")
    tasks = [
        (model, layer, steps, stats, series, tuple(hypotheses), bootstrap, seed)
        for model, layer, steps, stats in layer_stats(measurements)
    ]
    workers = min(n_jobs or os.cpu_count() or 1, len(tasks))
    if workers > 1 and len(tasks) * len(hypotheses) * (1 + bootstrap) >= POOL_MIN_FITS:
        # On Linux, fork: workers start in milliseconds instead of re-importing SciPy and lmfit for about a
        # second each, and scripts need no `if __name__ == "__main__"` guard. It is safe although other threads
        # run (polars' pool, a progress spinner): workers only run NumPy, SciPy and lmfit on arrays, never
        # polars, and write through streams of their own (`_own_streams`). Elsewhere (macOS system libraries
        # do not survive fork), spawn.
        context = get_context("fork" if sys.platform == "linux" else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_own_streams) as pool:
            results = list(pool.map(_fit_layer, tasks, chunksize=max(1, len(tasks) // (4 * workers))))
    else:
        results = [_fit_layer(task) for task in tasks]
    fits = pl.DataFrame([row for rows in results for row in rows], schema=_schema(bootstrap, []))
    carried = [c for c in CARRIED if c in measurements.columns]
    if carried:
        provenance = measurements.group_by("model").agg(
            pl.col(c).cast(pl.String).unique().sort().str.join(",") for c in carried
        )
        fits = fits.join(provenance, on="model", how="left", maintain_order="left")
    return fits


def write_fits(fits: pl.DataFrame, path: str | Path) -> None:
    """Write a fits table to parquet, recording its schema version in the file metadata."""
    fits.write_parquet(path, metadata={SCHEMA_KEY: str(SCHEMA_VERSION)})


def read_fits(path: str | Path) -> pl.DataFrame:
    """A fits table (parquet, or CSV) judged by its columns: `mdyn fit`'s own, or one a user filtered and saved.

    A parquet file without this package's schema-version mark (polars drops it on a re-save) is read as it is;
    one with another version's mark with a warning; either way it needs the columns readers use (`FITS_COLUMNS`).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no fits table at {path}; run `mdyn fit` to make one")
    try:
        if path.suffix.lower() == ".csv":
            fits, version = pl.read_csv(path), None
        else:
            fits, version = pl.read_parquet(path), pl.read_parquet_metadata(path).get(SCHEMA_KEY)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise UserError(
            f"cannot read the fits table {path} ({' '.join(str(err).split())[:160]}); pass a parquet or "
            "CSV file written by `mdyn fit`"
        ) from None
    require_columns(fits, FITS_COLUMNS, f"the fits table {path}")
    if version not in (None, str(SCHEMA_VERSION)):
        warnings.warn(
            f"{path} is marked as fits schema version {version}, this package writes {SCHEMA_VERSION}; "
            "reading it by its columns (refit with `mdyn fit` if a figure looks wrong)",
            stacklevel=2,
        )
    return fits


def r2_summary(fits: pl.DataFrame, hypothesis: str = "emergence") -> pl.DataFrame:
    """Paper Table 1 analogue: per model, layers, mean R^2 over successful fits, layers with R^2 < 0.9, failures."""
    return (
        fits.filter(pl.col("hypothesis") == hypothesis)
        .group_by("model", maintain_order=True)
        .agg(
            pl.len().alias("layers"),
            pl.col("r2").filter(pl.col("success")).mean().alias("mean_r2"),
            (pl.col("success") & (pl.col("r2") < 0.9)).sum().alias("layers_r2_below_0_9"),
            (~pl.col("success")).sum().alias("failed"),
        )
        .sort("model")
    )


def compare_hypotheses(fits: pl.DataFrame) -> pl.DataFrame:
    """Per layer, R^2, AIC and BIC of every hypothesis side by side, and the hypothesis each criterion prefers.

    Columns: model, layer, series, r2_<hypothesis>, aic_<hypothesis>, bic_<hypothesis> ..., best_aic, best_bic.
    """
    keys = ["model", "layer", "series"]
    ok = fits.filter(pl.col("success"))
    wide = fits.pivot(on="hypothesis", index=keys, values=["r2", "aic", "bic"], separator="_")
    for criterion in ("aic", "bic"):
        best = ok.sort(criterion).group_by(keys).agg(pl.col("hypothesis").first().alias(f"best_{criterion}"))
        wide = wide.join(best, on=keys, how="left")
    return wide.sort(keys)


def hypothesis_summary(fits: pl.DataFrame) -> pl.DataFrame:
    """Paper Table 5 analogue: per (hypothesis, model) the mean R^2, how many layers AIC prefers it in, and how many
    fits ran into a limit of another hypothesis (`layers_at_limit`: a second-order step collapsed to first order)."""
    preferred = compare_hypotheses(fits).group_by("model", "best_aic").agg(pl.len().alias("layers_best_aic"))
    return (
        fits.group_by("hypothesis", "model", maintain_order=True)
        .agg(
            pl.col("r2").filter(pl.col("success")).mean().alias("mean_r2"),
            pl.len().alias("layers"),
            (
                pl.col("message").str.contains(FIRST_ORDER_REMARK, literal=True).sum()
                if "message" in fits.columns
                else pl.lit(0)
            ).alias("layers_at_limit"),
        )
        .join(preferred, left_on=["model", "hypothesis"], right_on=["model", "best_aic"], how="left")
        .with_columns(pl.col("layers_best_aic").fill_null(0))
        .sort("hypothesis", "model")
    )
