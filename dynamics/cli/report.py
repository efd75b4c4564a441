"""`mdyn report`: one self-contained HTML page of the paper's figures and tables, with captions and provenance."""

from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli.figures import Architectures, Fits, Jobs, NEstimators, Predictor, ProbeId, Series, Store
from fitting.errors import UserError


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
        Path | None, typer.Option(help="Also write every figure (PNG) and table (CSV, Markdown) here, as `mdyn figures` does.")
    ] = None,
) -> None:
    """Write one self-contained HTML page of the figures and tables, with captions and provenance.

    OUT/report.html holds every figure and table the inputs allow (as `mdyn figures`), a caption for each, the
    provenance of the data (models, revisions, probes, versions, date) and what was skipped and why. The page
    embeds its images, so it can be sent on its own.
    """
    from rich.console import Console

    from dynamics.cli.figures import load_inputs
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.figures.catalog import build_all, save
    from dynamics.figures.report import provenance, render
    from dynamics.store import load
    from predictors.trained import package_version

    console = Console(soft_wrap=True)
    with warnings_as_messages():
        inputs, note, sources = load_inputs(console, store, out, fits, predictor, architectures, series, probe_id,
                                            n_estimators, jobs)
        ledger = load(store, "ledger") if store.is_dir() else None
        with console.status("drawing the figures and tables"):
            built = list(build_all(inputs))
    page = render(built, provenance(inputs.measurements, ledger), sources, package_version(), note is not None)
    path = out / "report.html"
    try:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}; choose another --out") from None
    for b in built:
        if b.skipped:
            console.print(f"skipped {b.item.name}: {b.skipped}", markup=False)
        elif figures_dir is not None:
            save(b, figures_dir, "png", note)
    console.print(f"wrote {path}", markup=False)
