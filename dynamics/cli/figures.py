"""`mdyn figures`: the paper's Figs 1-10 and Tables 1, 3 and 5 from a store, as image files, CSV and Markdown."""

from pathlib import Path
from typing import Annotated

import typer

from fitting.errors import UserError

Store = Annotated[Path, typer.Option(
    help="A results store (every parquet file under STORE/measurements/ is read) or one measurements parquet file.")]
Fits = Annotated[Path | None, typer.Option(
    help="Fits table written by `mdyn fit` (with --hypotheses all for Table 5). Default: fit the store here, "
    "every hypothesis, and write OUT/fits.parquet.")]
Predictor = Annotated[Path | None, typer.Option(
    help="A predictor written by `mdyn train`, for Figs 9 and 10 (skipped without it).")]
Architectures = Annotated[Path | None, typer.Option(
    help="CSV or parquet with model, n_layers, d_model, n_heads, d_ff, n_params per model, for Fig 2 and "
    "Table 3. Default: the shipped tables (the nine Pythia models and the tiny suite).")]
Series = Annotated[str, typer.Option(help="The fitted series drawn: ratio (paper Eq. 8), ratio_mean, top1, median, "
                                     "top2_ratio or top3_ratio.")]
ProbeId = Annotated[str | None, typer.Option(
    help="Use only the measurements of this probe id (needed when a model was measured with several probes).")]
Jobs = Annotated[int | None, typer.Option(help="Worker processes for fitting the store. Default: every core.", min=1)]
NEstimators = Annotated[int, typer.Option(help="Trees or boosting rounds of the regressors of Table 3.", min=1)]


def figures(
    store: Store,
    out: Annotated[Path, typer.Option(help="Folder for the figures (fig1_overview.png ...) and tables "
                                      "(table1_fit_quality.csv and .md ...).")],
    fits: Fits = None,
    predictor: Predictor = None,
    architectures: Architectures = None,
    format: Annotated[str, typer.Option("--format", help="Image format: png, pdf or svg.")] = "png",
    series: Series = "ratio",
    probe_id: ProbeId = None,
    n_estimators: NEstimators = 200,
    jobs: Jobs = None,
) -> None:
    """Draw the paper's figures and tables from a measurements store: every one the inputs allow.

    Figs 1-5 need only the measurements; Figs 6-8 and Tables 1 and 5 the fits (computed from the store when
    --fits is not given); Fig 2 and Table 3 the architectures; Figs 9-10 a predictor. Each one that cannot be
    drawn is listed with the reason. Tiny-suite data is marked as toy-model emergence on every figure.
    """
    from rich.console import Console

    from dynamics.cli.messages import warnings_as_messages
    from dynamics.figures.catalog import FORMATS, build_all, save

    if format not in FORMATS:
        raise UserError(f"unknown --format {format!r}; choose one of {', '.join(FORMATS)}")
    console = Console(soft_wrap=True)
    with warnings_as_messages():
        inputs, note, _ = load_inputs(console, store, out, fits, predictor, architectures, series, probe_id,
                                      n_estimators, jobs)
        if note:
            console.print(note, style="yellow", markup=False)
        written = skipped = 0
        for built in build_all(inputs):
            if built.skipped:
                skipped += 1
                console.print(f"skipped {built.item.name}: {built.skipped}", markup=False)
                continue
            for path in save(built, out, format, note):
                console.print(f"wrote {path}", markup=False)
            written += 1
    console.print(f"{written} figures and tables in {out}" + (f", {skipped} skipped" if skipped else ""),
                  markup=False)


def load_inputs(console, store, out, fits, predictor, architectures, series, probe_id, n_estimators, jobs):
    """(`Inputs`, tiny-suite note or None, sources: name -> description) from the command-line options.

    Without --fits, every hypothesis is fitted to the store and the table is written to OUT/fits.parquet.
    """
    import polars as pl

    from dynamics.cli.fit import read_measurements
    from dynamics.embedded import TINY_SUITE_CAVEAT, is_tiny_suite, shipped_architectures
    from dynamics.figures.catalog import Inputs
    from fitting.table import SERIES, fit_table, read_fits, write_fits
    from predictors.dataset import read_table
    from predictors.trained import load

    if series not in SERIES:
        raise UserError(f"unknown --series {series!r}; choose one of {', '.join(SERIES)}")
    measurements = select_probe(read_measurements(store), probe_id)
    sources = {"measurements": f"{store} ({measurements.height} rows)"}
    trained = load(predictor) if predictor is not None else None
    table = read_table(architectures, "architectures") if architectures is not None else shipped_architectures()
    sources["architectures"] = str(architectures) if architectures is not None else "shipped tables (data/)"
    if fits is not None:
        fitted = read_fits(fits)
        sources["fits"] = str(fits)
    else:
        n_layers = measurements.select("model", "layer").n_unique()
        with console.status(f"no --fits: fitting the {series} series of {n_layers} layers with every hypothesis"):
            fitted = fit_table(measurements, series=series, n_jobs=jobs)
        out.mkdir(parents=True, exist_ok=True)
        write_fits(fitted, out / "fits.parquet")
        console.print(f"no --fits: fitted {series} of {n_layers} layers with every hypothesis; wrote "
                      f"{out / 'fits.parquet'} (pass it as --fits next time)", markup=False)
        sources["fits"] = f"fitted from the measurements, every hypothesis, series {series}"
    if trained is not None:
        sources["predictor"] = (f"{predictor} ({trained.kind}, series {trained.series}, {trained.n_samples} "
                                f"layers of {len(trained.models)} models, trained {trained.trained_at})")
    if "probe_id" in measurements.columns:
        sources["probe ids"] = ", ".join(measurements["probe_id"].cast(pl.String).unique().sort().to_list())
    tiny = any(is_tiny_suite(m) for m in measurements["model"].unique().to_list())
    inputs = Inputs(measurements, fitted, table, trained, series=series, n_estimators=n_estimators)
    return inputs, TINY_SUITE_CAVEAT if tiny else None, sources


def select_probe(measurements, probe_id):
    """The rows of one probe: `probe_id` when given; a UserError when a model has several and none is given."""
    import polars as pl

    if "probe_id" not in measurements.columns:
        if probe_id is not None:
            raise UserError("--probe-id given, but the measurements have no probe_id column; leave it out")
        return measurements
    if probe_id is not None:
        chosen = measurements.filter(pl.col("probe_id") == probe_id)
        if chosen.is_empty():
            found = ", ".join(measurements["probe_id"].unique().sort().to_list())
            raise UserError(f"no measurements with probe id {probe_id!r}; the store has {found}")
        return chosen
    probes = measurements.group_by("model").agg(pl.col("probe_id").unique().sort())
    several = probes.filter(pl.col("probe_id").list.len() > 1)
    if several.height:
        model, ids = several.row(0)
        raise UserError(f"model {model} was measured with several probes ({', '.join(ids)}); pass --probe-id to "
                        "choose one, so that sequences of different probes are not averaged together")
    return measurements
