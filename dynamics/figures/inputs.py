"""The inputs of the figures and the report, read from the command-line paths: measurements (one probe),
fits (fitted here when not given), architectures, predictor, the store's sites table when it has one, and a
description of where each came from."""

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dynamics.figures.catalog import Inputs


@dataclass(frozen=True)
class Loaded:
    """What `load_inputs` read: the inputs, the tiny-suite caveat (or None), the sources by name, and the fits file
    it wrote when it had to fit the store itself (or None)."""

    inputs: Inputs
    note: str | None
    sources: dict[str, str]
    fitted: Path | None


def load_inputs(
    store: Path,
    out: Path,
    fits: Path | None,
    predictor: Path | None,
    architectures: Path | None,
    series: str,
    probe_id: str | None,
    n_estimators: int,
    jobs: int | None,
) -> Loaded:
    """Read every input; without `fits`, fit every hypothesis to the store and write OUT/fits.parquet.

    Measurements without a training step are left out first (`aggregates.with_steps`: a UserError when none has one).
    """
    from dynamics.embedded import TINY_SUITE_CAVEAT, is_tiny_suite, shipped_architectures
    from dynamics.figures.aggregates import with_steps
    from dynamics.store import SITES, read_measurements
    from dynamics.store import load as load_table
    from fitting.errors import UserError
    from fitting.table import SERIES, fit_table, read_fits, select_probe, write_fits
    from predictors.dataset import read_table
    from predictors.trained import load

    if series not in SERIES:
        raise UserError(f"unknown --series {series!r}; choose one of {', '.join(SERIES)}")
    measurements = with_steps(select_probe(read_measurements(store), probe_id))
    sources = {"measurements": f"{store} ({measurements.height} rows)"}
    trained = load(predictor) if predictor is not None else None
    table = read_table(architectures, "architectures") if architectures is not None else shipped_architectures()
    sources["architectures"] = str(architectures) if architectures is not None else "shipped tables (data/)"
    fitted = None
    if fits is not None:
        fit_rows = read_fits(fits)
        sources["fits"] = str(fits)
    else:
        fit_rows = fit_table(measurements, series=series, n_jobs=jobs)
        fitted = Path(out) / "fits.parquet"
        write_fits(fit_rows, fitted)
        sources["fits"] = f"fitted from the measurements, every hypothesis, series {series}"
    if trained is not None:
        sources["predictor"] = (
            f"{predictor} ({trained.kind}, series {trained.series}, {trained.n_samples} "
            f"layers of {len(trained.models)} models, trained {trained.trained_at})"
        )
    if "probe_id" in measurements.columns:
        sources["probe ids"] = ", ".join(
            measurements["probe_id"].cast(pl.String).drop_nulls().unique().sort().to_list()
        )
    sites = load_table(store, SITES) if Path(store).is_dir() else None
    if sites is not None and not sites.is_empty():
        # The probe the measurements were reduced to, so that both tables describe one experiment.
        sites = sites.filter(pl.col("probe_id").is_in(measurements["probe_id"].unique().to_list()))
        sources["sites"] = f"{store} ({sites.height} rows: {', '.join(sorted(sites['site'].unique().to_list()))})"
    tiny = any(is_tiny_suite(m) for m in measurements["model"].unique().to_list())
    inputs = Inputs(
        measurements,
        fit_rows,
        table,
        trained,
        series=series,
        n_estimators=n_estimators,
        sites=sites if sites is not None and not sites.is_empty() else None,
    )
    return Loaded(inputs, TINY_SUITE_CAVEAT if tiny else None, sources, fitted)
