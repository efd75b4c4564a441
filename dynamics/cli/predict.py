"""`mdyn predict`: the emergence curve of every layer of an architecture before it is trained."""

import math
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli.paths import check_output_dir
from fitting.errors import UserError


def predict(
    predictor: Annotated[Path, typer.Option(help="Predictor file written by `mdyn train --out`.")],
    config: Annotated[
        Path | None, typer.Option(help="A model's config.json (GPT-NeoX, LLaMA family, GPT-2), or its folder.")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Number of decoder blocks L (instead of --config).")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden size d (instead of --config).")] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads H (instead of --config).")] = None,
    ffn: Annotated[int | None, typer.Option(help="MLP width d_ff [default: 4 * hidden].")] = None,
    steps: Annotated[int, typer.Option(help="Training steps over which to draw the predicted curve.")] = 143_000,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for prediction.parquet, prediction.csv, prediction_curves.parquet and "
            "prediction.png [default: print only]."
        ),
    ] = None,
) -> None:
    """Predict every layer's emergence curve (Eq. 9 parameters, 5-95 % intervals, peak step) for an architecture.

    Give the architecture as --config config.json or as --layers/--hidden/--heads [--ffn]. A warning says when
    it lies outside what the predictor was trained on.
    """
    from rich.console import Console

    from predictors.features import from_config, from_spec
    from predictors.trained import load

    spec = {"--layers": layers, "--hidden": hidden, "--heads": heads}
    if config is not None and any(v is not None for v in (*spec.values(), ffn)):
        raise UserError("give either --config or --layers/--hidden/--heads [--ffn], not both")
    if config is None:
        missing = [name for name, value in spec.items() if value is None]
        if missing:
            raise UserError(
                f"missing {', '.join(missing)}: give --config config.json or all of --layers, --hidden, --heads"
            )
    if steps < 1:
        raise UserError(f"--steps must be a positive number of training steps, got {steps}")
    arch = from_config(config) if config is not None else from_spec(layers, hidden, heads, ffn)
    trained = load(predictor)
    if out is not None:
        check_output_dir(out)
    run_prediction(Console(), trained, arch, steps, out)


def run_prediction(console, trained, arch, steps: int = 143_000, out: Path | None = None):
    """Predict `arch`'s curves with a loaded predictor, print the table, and write the files into `out`."""
    from rich.table import Table

    from dynamics.cli.messages import warnings_as_messages
    from predictors.predict import predict_architecture

    with warnings_as_messages():
        prediction = predict_architecture(trained, arch, steps=steps)
    planned = f"Predicted emergence for L={arch.n_layers}, d={arch.d_model}, H={arch.n_heads}, d_ff={arch.d_ff}"
    source = f"{trained.kind} predictor of series {trained.series}, trained on {len(trained.models)} models"
    table = Table(title=f"{planned} ({source}); value [5 %, 95 %]", title_justify="left")
    table.add_column("layer", justify="right")
    for name in (*trained.targets, "t_peak"):
        table.add_column(name, justify="right")
    for row in prediction.layers.iter_rows(named=True):
        cells = [f"{row[t]:.3g} [{row[t + '_lo']:.3g}, {row[t + '_hi']:.3g}]" for t in trained.targets]
        peak = "no peak" if math.isnan(row["t_peak"]) else f"{row['t_peak']:.3g}"
        table.add_row(str(row["layer"]), *cells, peak)
    console.print(table)
    if out is not None:
        from predictors.plot import prediction_figure

        prediction.layers.write_parquet(out / "prediction.parquet")
        prediction.layers.write_csv(out / "prediction.csv")
        prediction.curves.write_parquet(out / "prediction_curves.parquet")
        prediction_figure(prediction, trained.series, f"{planned}\n{source}").savefig(out / "prediction.png", dpi=150)
        console.print(f"Wrote prediction.parquet, prediction.csv, prediction_curves.parquet, prediction.png to {out}")
    return prediction
