"""`mdyn demo`: the whole pipeline, offline, on the embedded default; what `make demo` runs."""

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options
from fitting.errors import UserError

DEFAULT_OUT = Path("demo-output")
SUITE_CACHE = Path(".suite-cache") / "hub"
# The architecture the demo plans: between the shipped models' shapes, so the predictor interpolates, over the
# shipped predict suite's run length.
PLANNED = {"layers": 5, "hidden": 160, "heads": 5}
PLANNED_STEPS = 1200


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = DEFAULT_OUT,
    cache: Annotated[
        Path, typer.Option("--cache-dir", help="HF cache holding the demo suite; a build already there is reused.")
    ] = SUITE_CACHE,
    preset: Annotated[
        str, typer.Option(help="Suite to build and sweep: demo (about 2 minutes), or micro (seconds).")
    ] = "demo",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads for training the demo suite.")] = None,
    device: options.Device = "auto",
    old_cache: options.OldCache = None,
) -> None:
    """Run every stage offline: build the tiny demo suite, sweep it, fit, train a predictor, predict, draw.

    1. build (or reuse) three tiny GPT-NeoX models trained here with Pythia's recipe, published as an offline
       HF cache with stepN branches;
    2. `mdyn sweep` each of them on held-out text;
    3. `mdyn fit` the emergence curve (paper Eq. 9) to every layer of the demo models and of the shipped
       predict suite (data/tiny-suite-predict: 16 architectures, 4 of them with a second seed, one recipe);
    4. `mdyn train` the curve predictor (architecture -> each layer's curve), evaluated leave one design out;
    5. `mdyn predict` a planned architecture;
    6. figures and a report.
    These toy models grow outlier channels, not the massive activations of billion-parameter models.
    """
    cache = old_cache or cache
    # Before huggingface_hub is first imported, which reads these into its constants.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(cache.resolve())
    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from dynamics import store
    from dynamics.cli import fit, predict, report, suite, train
    from dynamics.embedded import PREDICT_SUITE_DIR
    from dynamics.suite import PRESETS, build_suite, write_suite_tables
    from fitting.contracts import from_spec
    from fitting.table import fit_table, hypothesis_summary, r2_summary, write_fits
    from predictors.trained import load

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    options.quiet_transformers()
    console = Console()
    timings: list[tuple[str, float]] = []
    shipped = PREDICT_SUITE_DIR
    out.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def stage(name: str):
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        yield
        timings.append((name, time.perf_counter() - start))
        console.print(f"[green]{name}[/]: {timings[-1][1]:.1f} s")

    with stage("1. build the demo suite"):
        manifest = build_suite(PRESETS[preset], cache, device=device, threads=threads, console=console)
        suite.show_suite(console, manifest, cache)
        write_suite_tables(manifest, out / "suite")
    with stage("2. sweep"):
        suite.sweep_suite(console, manifest, cache, out / "store", device)
    with stage("3. fit"):
        measurements = pl.concat(
            [store.load(out / "store"), pl.read_parquet(shipped / "measurements.parquet")], how="diagonal_relaxed"
        )
        measurements.write_parquet(out / "measurements.parquet")
        with console.status("fitting every layer with every hypothesis"):
            fits = fit_table(measurements, series="ratio")
        write_fits(fits, out / "fits.parquet")
        fit.show_summary(console, fits, r2_summary(fits), hypothesis_summary(fits))
    with stage("4. train a predictor"):
        architectures = pl.concat(
            [pl.read_csv(shipped / "architectures.csv"), pl.read_csv(out / "suite" / "architectures.csv")]
        )
        architectures.write_csv(out / "architectures.csv")
        train.run_curve_training(
            console, out / "measurements.parquet", out / "predictor.skops", out / "architectures.csv", compare=False
        )
    with stage("5. predict a planned architecture"):
        (out / "prediction").mkdir(exist_ok=True)
        predict.run_prediction(
            console, load(out / "predictor.skops"), from_spec(**PLANNED), steps=PLANNED_STEPS, out=out / "prediction"
        )
    with stage("6. figures and report"):
        report.write_report(
            console,
            out / "measurements.parquet",
            out,
            out / "fits.parquet",
            out / "predictor.skops",
            out / "architectures.csv",
            figures_dir=out / "figures",
        )

    table = Table(title=f"demo finished: everything is in {out.resolve()}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, seconds in timings:
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("total", f"{sum(s for _, s in timings):.1f}")
    console.print(table)
    console.print(f"open the report: {(out / 'report.html').resolve()}")
