"""`mdyn fit`: fit the emergence curve (paper Eq. 9) to every layer's trajectory in a measurements table."""

from pathlib import Path
from typing import Annotated

import typer

from fitting.errors import UserError


def read_measurements(store):
    """The measurements of a store folder (every parquet under STORE/measurements/) or of one parquet file."""
    import polars as pl

    from fitting.table import check_measurements

    store = Path(store)
    if store.is_dir():
        files = sorted((store / "measurements").glob("**/*.parquet"))
        if not files:
            raise UserError(f"no measurements in {store}: expected parquet files under {store / 'measurements'}; "
                            "run `mdyn sweep` into this store first, or pass one measurements parquet file")
    elif store.is_file():
        files = [store]
    else:
        raise UserError(f"--store {store} does not exist; pass a store folder or a measurements parquet file")
    try:
        frames = [pl.read_parquet(f) for f in files]
    except (OSError, pl.exceptions.PolarsError) as err:
        raise UserError(f"cannot read measurements from {store}: {str(err).splitlines()[0]}") from None
    measurements = pl.concat(frames, how="diagonal_relaxed")
    check_measurements(measurements, str(store))
    return measurements


def fit(
    store: Annotated[Path, typer.Option(
        help="A results store (every parquet file under STORE/measurements/ is read) or one measurements "
        "parquet file with at least the columns model, step, seq, layer, top1, top2, top3, median.")],
    series: Annotated[str, typer.Option(
        help="The trajectory fitted per layer: ratio (mean top-1 / mean median over the probe sequences, "
        "the paper's Eq. 8), ratio_mean (mean of per-sequence ratios), top1, median, top2_ratio, top3_ratio.")]
    = "ratio",
    hypotheses: Annotated[str, typer.Option(
        help="emergence (paper Eq. 9), or all: also log_rise (Eq. 9 with lambda = 0), first_order_step and "
        "second_order_step, with R², AIC and BIC side by side (the paper's Table 5).")] = "emergence",
    bootstrap: Annotated[int, typer.Option(
        help="Resample the probe sequences this many times and refit, for 2.5-97.5 % intervals of every "
        "parameter and of the peak step (columns *_lo, *_hi). 0: no intervals.", min=0)] = 0,
    out: Annotated[Path | None, typer.Option(
        help="Output file. Default: STORE/fits.parquet (fits.parquet beside a single input file); with "
        "--plot, a PNG beside it.")] = None,
    plot: Annotated[tuple[str, int] | None, typer.Option(
        metavar="MODEL LAYER",
        help="Instead of the table, draw one layer: its points, the fitted curves and the peak step, on a "
        "log-step axis.")] = None,
    jobs: Annotated[int | None, typer.Option(help="Worker processes. Default: every core.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
) -> None:
    """Fit A·exp(-λx)·log(x) + K, x = γt + t0 (paper Eq. 9) to every (model, layer) of a measurements table.

    Writes one row per model, layer and hypothesis: the five parameters with standard errors, R², AIC,
    BIC and the step of the peak. Prints the mean R² per model (the paper's Table 1) and every failure.
    """
    from rich.console import Console

    from fitting.model import HYPOTHESES, EmergenceModel
    from fitting.table import SERIES, fit_table, hypothesis_summary, r2_summary, write_fits

    if series not in SERIES:
        raise UserError(f"unknown series {series!r}; choose one of {', '.join(SERIES)}")
    chosen = {"emergence": (EmergenceModel,), "all": HYPOTHESES}.get(hypotheses)
    if chosen is None:
        raise UserError(f"unknown --hypotheses {hypotheses!r}; choose emergence or all")
    measurements = read_measurements(store)
    console = Console(soft_wrap=True)
    default_dir = store if store.is_dir() else store.parent

    if plot is not None:
        import polars as pl

        model, layer = plot
        part = measurements.filter((pl.col("model") == model) & (pl.col("layer") == layer))
        if part.is_empty():
            layers = measurements.select("model", "layer").unique().sort("model", "layer")
            known = ", ".join(f"{m} {l}" for m, l in layers.head(8).iter_rows())
            raise UserError(f"no measurements for model {model!r} layer {layer}; some that exist: {known}")
        fits = fit_table(part, series=series, hypotheses=chosen, n_jobs=1)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)
        path = out or default_dir / f"fit_{safe}_layer{layer}_{series}.png"
        if path.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise UserError(f"--out {path}: with --plot, give a .png, .pdf or .svg file")
        _plot_layer(part, fits, series, path)
        console.print(f"wrote {path}", markup=False)
        return

    target = out or default_dir / "fits.parquet"
    if target.resolve() == store.resolve():
        raise UserError(f"--out {target} would overwrite the measurements; choose another file")
    with console.status(f"fitting {series} per layer"):
        fits = fit_table(measurements, series=series, hypotheses=chosen, bootstrap=bootstrap, seed=seed,
                         n_jobs=jobs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_fits(fits, target)
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror or err}; choose another --out") from None
    _print_summary(console, fits, r2_summary(fits), hypothesis_summary(fits) if len(chosen) > 1 else None)
    console.print(f"wrote {target} ({fits.height} rows)", markup=False)


def _print_summary(console, fits, summary, by_hypothesis):
    """The Table 1 analogue, the failures, and with several hypotheses the Table 5 analogue."""
    import polars as pl
    from rich.table import Table

    table = Table(title="Eq. 9 fit per model (paper Table 1)")
    for column in ("model", "layers", "mean R²", "layers R² < 0.9", "failed"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in summary.iter_rows(named=True):
        mean = "-" if row["mean_r2"] is None else f"{row['mean_r2']:.4f}"
        table.add_row(row["model"], str(row["layers"]), mean, str(row["layers_r2_below_0_9"]), str(row["failed"]))
    console.print(table)

    if by_hypothesis is not None:
        wide = by_hypothesis.pivot(on="model", index="hypothesis", values="mean_r2").sort("hypothesis")
        comparison = Table(title="mean R² per hypothesis (paper Table 5)")
        for column in wide.columns:
            comparison.add_column(column, justify="left" if column == "hypothesis" else "right")
        for row in wide.iter_rows():
            comparison.add_row(row[0], *("-" if v is None else f"{v:.4f}" for v in row[1:]))
        console.print(comparison)

    failed = fits.filter(~pl.col("success"))
    for row in failed.head(20).iter_rows(named=True):
        console.print(f"failed: {row['model']} layer {row['layer']} {row['hypothesis']}: {row['message']}",
                      markup=False)
    if failed.height > 20:
        console.print(f"... and {failed.height - 20} more failures (column success in the table)")


def _plot_layer(measurements, fits, series, path):
    """Points of one layer's series, each fitted hypothesis and the Eq. 9 peak step, on a log-step axis."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fitting.model import HYPOTHESES
    from fitting.table import SERIES_LABELS, series_table

    points = series_table(measurements, series)
    steps, values = points["step"].to_numpy(), points["value"].to_numpy()
    curve_t = np.concatenate([[0.0], np.logspace(0, np.log10(max(steps.max(), 1)), 400)])
    functions = {cls.hypothesis: cls().func for cls in HYPOTHESES}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(steps, values, "o", ms=4, color="black", label="measured")
    for row in fits.iter_rows(named=True):
        if row["params"] is None:
            continue
        params = json.loads(row["params"])
        style = "-" if row["hypothesis"] == "emergence" else "--"
        ax.plot(curve_t, functions[row["hypothesis"]](curve_t, **params), style,
                label=f"{row['hypothesis']}  R² = {row['r2']:.4f}" + ("" if row["success"] else " (failed)"))
        if row["hypothesis"] == "emergence" and np.isfinite(row["t_peak"]):
            # A peak far beyond the data is an extrapolation; drawing it would squeeze the data into a corner.
            if row["t_peak"] <= 10 * steps.max():
                ax.axvline(row["t_peak"], color="grey", ls=":", label=f"peak at step {row['t_peak']:.0f}")
            else:
                ax.plot([], [], " ", label=f"peak extrapolated to step {row['t_peak']:.3g}")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("training step (log scale; step 0 at the left)")
    ax.set_ylabel(SERIES_LABELS[series])
    ax.set_title(f"{fits['model'][0]}, layer {fits['layer'][0]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
