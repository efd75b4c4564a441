"""`mdyn report`: one self-contained HTML page of the paper's figures and tables, with captions and provenance."""

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


def report(
    store: Store,
    out: Annotated[Path, typer.Option(help="Folder for report.html (and fits.parquet when --fits is not given).")],
    fits: Fits = None,
    predictor: Predictor = None,
    architectures: Architectures = None,
    series: Series = "ratio",
    probe_id: ProbeId = None,
    n_estimators: NEstimators = 200,
    jobs: Jobs = None,
    figures_dir: Annotated[
        Path | None,
        typer.Option(help="Also write every figure (PNG) and table (CSV, Markdown) here, as `mdyn figures` does."),
    ] = None,
) -> None:
    """Write one self-contained HTML page of the figures and tables, with captions and provenance.

    OUT/report.html holds every figure and table the inputs allow (as `mdyn figures`), a caption for each, the
    provenance of the data (models, revisions, probes, versions, date) and what was skipped and why. The page
    embeds its images, so it can be sent on its own.
    """
    from rich.console import Console

    check_output_dir(out)
    if figures_dir is not None:
        check_output_dir(figures_dir, "--figures-dir")
    write_report(
        Console(soft_wrap=True),
        store,
        out,
        fits,
        predictor,
        architectures,
        series,
        probe_id,
        n_estimators,
        jobs,
        figures_dir,
    )


def write_report(
    console,
    store,
    out,
    fits=None,
    predictor=None,
    architectures=None,
    series="ratio",
    probe_id=None,
    n_estimators=200,
    jobs=None,
    figures_dir=None,
) -> Path:
    """Read the inputs, draw everything, write OUT/report.html (and the files into `figures_dir`); its path."""
    from dynamics import store as stores
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.figures.catalog import build_all, save
    from dynamics.figures.report import provenance, render
    from fitting.contracts import package_version

    with warnings_as_messages():
        loaded = read_inputs(console, store, out, fits, predictor, architectures, series, probe_id, n_estimators, jobs)
        ledger = stores.load(store, stores.LEDGER) if Path(store).is_dir() else None
        with console.status("drawing the figures and tables"):
            built = list(build_all(loaded.inputs))
    page = render(
        built,
        provenance(loaded.inputs.measurements, ledger),
        loaded.sources,
        package_version(),
        loaded.note is not None,
    )
    path = Path(out) / "report.html"
    path.write_text(page, encoding="utf-8")
    for b in built:
        if b.skipped:
            console.print(f"skipped {b.item.name}: {b.skipped}", markup=False)
        elif figures_dir is not None:
            save(b, figures_dir, "png", loaded.note)
    console.print(f"wrote {path}", markup=False)
    return path
