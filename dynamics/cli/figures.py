"""`mdyn figures`: the paper's Figs 1-10 and Tables 1, 3 and 5 from a store, as image files, CSV and Markdown."""

from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli.figure_options import (
    Architectures,
    Fits,
    Jobs,
    NEstimators,
    Predictor,
    ProbeId,
    Series,
    Store,
    read_inputs,
)
from dynamics.cli.paths import check_output_dir
from fitting.errors import UserError


def figures(
    store: Store,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the figures (fig1_overview.png ...) and tables (table1_fit_quality.csv and .md ...)."
        ),
    ],
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
    --fits is not given); Fig 2 and Table 3 the architectures; Figs 9-10 a predictor; Figs S1-S2 (the attention
    sink and the sublayer sites) a store swept with --sites all. Each one that cannot be drawn is listed with the
    reason. Tiny-suite data is marked as toy-model emergence on every figure.
    """
    from rich.console import Console

    from dynamics.cli.messages import warnings_as_messages
    from dynamics.figures.catalog import FORMATS, build_all, save

    if format not in FORMATS:
        raise UserError(f"unknown --format {format!r}; choose one of {', '.join(FORMATS)}")
    check_output_dir(out)
    console = Console(soft_wrap=True)
    with warnings_as_messages():
        loaded = read_inputs(console, store, out, fits, predictor, architectures, series, probe_id, n_estimators, jobs)
        written = skipped = 0
        for built in build_all(loaded.inputs):
            if built.skipped:
                skipped += 1
                console.print(f"skipped {built.item.name}: {built.skipped}", markup=False)
                continue
            for path in save(built, out, format, loaded.note):
                console.print(f"wrote {path}", markup=False)
            written += 1
    console.print(f"{written} figures and tables in {out}" + (f", {skipped} skipped" if skipped else ""), markup=False)
