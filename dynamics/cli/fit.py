"""`mdyn fit`: fit the emergence curve (paper Eq. 9) to every layer's trajectory in a measurements table."""

from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli.paths import check_output_file
from fitting.errors import UserError


def fit(
    store: Annotated[
        Path,
        typer.Option(
            help="A results store (every parquet file under STORE/measurements/ is read) or one measurements "
            "parquet file with at least the columns model, step, seq, layer, top1, top2, top3, median."
        ),
    ],
    series: Annotated[
        str,
        typer.Option(
            help="The trajectory fitted per layer: ratio (mean top-1 / mean median over the probe sequences, "
            "the paper's Eq. 8), ratio_mean (mean of per-sequence ratios), top1, median, top2_ratio, top3_ratio."
        ),
    ] = "ratio",
    hypotheses: Annotated[
        str,
        typer.Option(
            help="emergence (paper Eq. 9), or all: also log_rise (Eq. 9 with lambda = 0), first_order_step and "
            "second_order_step, with R², AIC and BIC side by side (the paper's Table 5)."
        ),
    ] = "emergence",
    bootstrap: Annotated[
        int,
        typer.Option(
            help="Resample the probe sequences this many times and refit, for 2.5-97.5 % intervals of every "
            "parameter and of the peak step (columns *_lo, *_hi). 0: no intervals.",
            min=0,
        ),
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output file. Default: STORE/fits.parquet (fits.parquet beside a single input file); with "
            "--plot, a PNG beside it."
        ),
    ] = None,
    plot: Annotated[
        tuple[str, int] | None,
        typer.Option(
            metavar="MODEL LAYER",
            help="Instead of the table, draw one layer: its points, the fitted curves and the peak step, on a "
            "log-step axis.",
        ),
    ] = None,
    jobs: Annotated[int | None, typer.Option(help="Worker processes. Default: every core.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
    probe_id: Annotated[
        str | None,
        typer.Option(
            help="Fit only the measurements of this probe id; `all` averages the sequences of every probe together. "
            "Needed when a model was measured with several probes."
        ),
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(
            help="Fit this site's series from the store's sites table (a store swept with --sites): attn, mlp, "
            "mlp_in, or residual; the default fits the measurements. Default --out: STORE/fits-SITE.parquet."
        ),
    ] = None,
) -> None:
    """Fit A·exp(-λx)·log(x) + K, x = γt + t0 (paper Eq. 9) to every (model, layer) of a measurements table.

    Writes one row per model, layer and hypothesis: the five parameters with standard errors, R², AIC,
    BIC and the step of the peak. Prints the mean R² per model (the paper's Table 1) and every failure.
    With --site, fits that site's rows of the sites table instead (the fits then carry a site column).
    """
    from rich.console import Console

    from dynamics.cli.messages import warnings_as_messages
    from dynamics.store import read_measurements, read_sites
    from fitting.contracts import SITES
    from fitting.model import HYPOTHESES, EmergenceModel
    from fitting.table import SERIES, fit_table, hypothesis_summary, r2_summary, select_probe, write_fits

    if series not in SERIES:
        raise UserError(f"unknown series {series!r}; choose one of {', '.join(SERIES)}")
    chosen = {"emergence": (EmergenceModel,), "all": HYPOTHESES}.get(hypotheses)
    if chosen is None:
        raise UserError(f"unknown --hypotheses {hypotheses!r}; choose emergence or all")
    fitted_sites = [name for name in SITES if name != "sink"]
    if site is not None and site not in fitted_sites:
        raise UserError(
            f"cannot fit --site {site!r}; choose one of {', '.join(fitted_sites)} (the sink has no top-1/median series)"
        )
    console = Console(soft_wrap=True)
    default_dir = store if store.is_dir() else store.parent
    suffix = f"-{site}" if site else ""
    default_name = f"fit_{_safe(plot[0])}_layer{plot[1]}_{series}{suffix}.png" if plot else f"fits{suffix}.parquet"
    target = out or (default_dir / default_name)
    check_output_file(target, (".png", ".pdf", ".svg") if plot else (".parquet",), "--out")
    with warnings_as_messages():
        measurements = select_probe(read_measurements(store) if site is None else read_sites(store, site), probe_id)

    if plot is not None:
        import polars as pl

        from dynamics.figures.fitplots import layer_figure

        model, layer = plot
        part = measurements.filter((pl.col("model") == model) & (pl.col("layer") == layer))
        if part.is_empty():
            layers = measurements.select("model", "layer").unique().sort("model", "layer")
            known = ", ".join(f"{m} {l}" for m, l in layers.head(8).iter_rows())
            raise UserError(f"no measurements for model {model!r} layer {layer}; some that exist: {known}")
        fits = fit_table(part, series=series, hypotheses=chosen, n_jobs=1)
        layer_figure(part, fits, model, layer, series).savefig(target, dpi=120)
        console.print(f"wrote {target}", markup=False)
        return

    if target.resolve() == store.resolve():
        raise UserError(f"--out {target} would overwrite the measurements; choose another file")
    with console.status(f"fitting {series} per layer"):
        fits = fit_table(measurements, series=series, hypotheses=chosen, bootstrap=bootstrap, seed=seed, n_jobs=jobs)
    write_fits(fits, target)
    show_summary(console, fits, r2_summary(fits), hypothesis_summary(fits) if len(chosen) > 1 else None)
    console.print(f"wrote {target} ({fits.height} rows)", markup=False)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# Two-line headers, so that the model names keep the width of an 80-column terminal.
HYPOTHESIS_HEADERS = {
    "emergence": "Eq. 9",
    "log_rise": "log rise",
    "first_order_step": "1st-order\nstep",
    "second_order_step": "2nd-order\nstep",
}


def show_summary(console, fits, summary, by_hypothesis):
    """The Table 1 analogue, the failures, and with several hypotheses the Table 5 analogue."""
    import polars as pl
    from rich.table import Table

    table = Table(title="Eq. 9 fit per model (paper Table 1)", title_justify="left")
    for column in ("model", "layers", "mean R²", "layers R² < 0.9", "failed"):
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    for row in summary.iter_rows(named=True):
        mean = "-" if row["mean_r2"] is None else f"{row['mean_r2']:.4f}"
        table.add_row(row["model"], str(row["layers"]), mean, str(row["layers_r2_below_0_9"]), str(row["failed"]))
    console.print(table)

    if by_hypothesis is not None:
        # One row per model and one short column per hypothesis, so that long model names stay readable.
        wide = by_hypothesis.pivot(on="hypothesis", index="model", values="mean_r2").sort("model")
        order = [h for h in HYPOTHESIS_HEADERS if h in wide.columns]
        wide = wide.select("model", *order, *(c for c in wide.columns[1:] if c not in order))
        comparison = Table(title="mean R² per hypothesis (paper Table 5, transposed)", title_justify="left")
        comparison.add_column("model", overflow="fold")
        for column in wide.columns[1:]:
            comparison.add_column(HYPOTHESIS_HEADERS.get(column, column), justify="right", overflow="fold")
        for row in wide.iter_rows():
            comparison.add_row(row[0], *("-" if v is None else f"{v:.4f}" for v in row[1:]))
        console.print(comparison)
        limit = by_hypothesis.filter(pl.col("hypothesis") == "second_order_step")
        if limit["layers_at_limit"].sum():
            console.print(
                f"2nd-order step: {limit['layers_at_limit'].sum()} of {limit['layers'].sum()} layers "
                "collapsed to the first-order limit (damping zeta >> 1), so there its R² equals the "
                "1st-order one: the data hold no second-order behaviour.",
                markup=False,
            )

    failed = fits.filter(~pl.col("success"))
    for row in failed.head(20).iter_rows(named=True):
        console.print(
            f"failed: {row['model']} layer {row['layer']} {row['hypothesis']}: {row['message']}", markup=False
        )
    if failed.height > 20:
        console.print(f"... and {failed.height - 20} more failures (column success in the table)")
