"""`mdyn demo`: the whole pipeline, offline, on the embedded default; what `make demo` runs."""

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options

DEFAULT_OUT = Path("demo-output")
SUITE_CACHE = Path(".suite-cache") / "hub"
# The architecture the demo plans: between the shipped models' shapes, so the predictor interpolates.
PLANNED = {"layers": 5, "hidden": 160, "heads": 5}


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = DEFAULT_OUT,
    cache: Annotated[
        Path, typer.Option(help="HF cache holding the demo suite; a build already there is reused.")
    ] = SUITE_CACHE,
    preset: Annotated[str, typer.Option(help="Suite to build and sweep: demo (about 2 minutes), or micro (seconds).")] = "demo",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads for training the demo suite.")] = None,
    device: options.Device = "auto",
) -> None:
    """Run every stage offline: build the tiny demo suite, sweep it, fit, train a predictor, predict, draw.

    1. build (or reuse) three tiny GPT-NeoX models trained here with Pythia's recipe, published as an offline
       HF cache with stepN branches;
    2. `mdyn sweep` each of them on held-out text;
    3. `mdyn fit` the emergence curve (paper Eq. 9) to every layer of the demo models and of the shipped
       full tiny suite (data/tiny-suite);
    4. `mdyn train` a predictor from architecture to curve parameters, evaluated leave-one-model-out;
    5. `mdyn predict` a planned architecture;
    6. figures and a report.
    These toy models grow outlier channels, not the massive activations of billion-parameter models.
    """
    # Before huggingface_hub is first imported, which reads these into its constants.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(cache.resolve())
    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from dynamics import store
    from dynamics.cli import fit, predict, report, suite, sweep, train
    from dynamics.corpus import DATA_DIR

    console = Console()
    timings: list[tuple[str, float]] = []
    shipped = DATA_DIR / "tiny-suite"
    out.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def stage(name: str):
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        yield
        timings.append((name, time.perf_counter() - start))
        console.print(f"[green]{name}[/]: {timings[-1][1]:.1f} s")

    with stage("1. build the demo suite"):
        suite.build(preset=preset, cache=cache, out=out / "suite", device=device, threads=threads, steps=None)
    demo_models = pl.read_csv(out / "suite" / "architectures.csv")["model"].to_list()
    with stage("2. sweep"):
        for model in demo_models:
            sweep.sweep(targets=[model], store_dir=out / "store", probe="embedded", n_seq=10, batch_size=10, bos=True, device=device,
                        keep_checkpoints=True, offline=True, cache_dir=cache)
    with stage("3. fit"):
        measurements = pl.concat([store.load(out / "store"), pl.read_parquet(shipped / "measurements.parquet")],
                                 how="diagonal_relaxed")
        measurements.write_parquet(out / "measurements.parquet")
        fit.fit(store=out / "measurements.parquet", out=out / "fits.parquet", hypotheses="all")
    with stage("4. train a predictor"):
        architectures = pl.concat([pl.read_csv(shipped / "architectures.csv"), pl.read_csv(out / "suite" / "architectures.csv")])
        architectures.write_csv(out / "architectures.csv")
        train.train(fits=out / "fits.parquet", out=out / "predictor.skops", architectures=out / "architectures.csv",
                    protocol="lomo", compare=False)
    with stage("5. predict a planned architecture"):
        predict.predict(predictor=out / "predictor.skops", out=out / "prediction", steps=3000, **PLANNED)
    inputs = {"store": out / "measurements.parquet", "fits": out / "fits.parquet",
              "predictor": out / "predictor.skops", "architectures": out / "architectures.csv"}
    with stage("6. figures and report"):
        report.report(out=out, figures_dir=out / "figures", **inputs)

    table = Table(title=f"demo finished: everything is in {out.resolve()}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, seconds in timings:
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("total", f"{sum(s for _, s in timings):.1f}")
    console.print(table)
    console.print(f"open the report: {(out / 'report.html').resolve()}")
