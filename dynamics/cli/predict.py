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
    steps: Annotated[int, typer.Option(help="Length of the planned run in optimizer steps.")] = 143_000,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate of the planned run (a predictor trained with --recipe-features needs it)."
        ),
    ] = None,
    tokens_per_step: Annotated[
        int | None, typer.Option(help="Tokens per optimizer step of the planned run (with --lr).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for prediction.parquet, prediction.csv, prediction_curves.parquet and "
            "prediction.png [default: print only]."
        ),
    ] = None,
) -> None:
    """Predict every layer's emergence curve over a run of --steps steps, with 90 % bands and descriptors.

    Give the architecture as --config config.json or as --layers/--hidden/--heads [--ffn]. Prints, per layer,
    the final ratio, the step of half rise and the peak (when the curve peaks before the end), each with a
    5-95 % interval; the files also hold the Eq. 9 and Eq. 14 parameters fitted to the predicted curve. A warning
    says when the architecture lies outside what the predictor was trained on.
    """
    from rich.console import Console

    from fitting.contracts import from_config, from_spec
    from predictors.trained import load

    spec = {"--layers": layers, "--hidden": hidden, "--heads": heads}
    if config is not None and any(v is not None for v in (*spec.values(), ffn)):
        raise UserError("give either --config or --layers/--hidden/--heads [--ffn], not both")
    if config is None and (missing := [name for name, value in spec.items() if value is None]):
        raise UserError(
            f"missing {', '.join(missing)}: give --config config.json or all of --layers, --hidden, --heads"
        )
    if steps < 1:
        raise UserError(f"--steps must be a positive number of training steps, got {steps}")
    if (lr is None) != (tokens_per_step is None):
        raise UserError("give --lr and --tokens-per-step together (the recipe of the planned run), or neither")
    arch = from_config(config) if config is not None else from_spec(layers, hidden, heads, ffn)  # type: ignore[arg-type]
    trained = load(predictor)
    if out is not None:
        check_output_dir(out)
    recipe = (lr, tokens_per_step) if lr is not None and tokens_per_step is not None else None
    run_prediction(Console(), trained, arch, steps, out, recipe)


def run_prediction(
    console, trained, arch, steps: int = 143_000, out: Path | None = None, recipe: tuple[float, float] | None = None
):
    """Predict `arch`'s curves with a loaded predictor, print the table, and write the files into `out`."""
    from dynamics.cli.messages import warnings_as_messages
    from predictors.predict import predict_architecture
    from predictors.trained import TrainedCurvePredictor

    with warnings_as_messages():
        prediction = predict_architecture(trained, arch, steps=steps, recipe=recipe)
    planned = f"L={arch.n_layers}, d={arch.d_model}, H={arch.n_heads}, d_ff={arch.d_ff}, {steps:,} steps"
    source = f"{trained.kind} predictor of the {trained.series} series, trained on {len(trained.models)} models"
    if isinstance(trained, TrainedCurvePredictor):
        console.print(_curve_table(prediction, planned, source, trained))
    else:
        console.print(_paper_table(prediction, planned, source, trained))
    if out is not None:
        from predictors.plot import prediction_figure

        prediction.layers.write_parquet(out / "prediction.parquet")
        prediction.layers.write_csv(out / "prediction.csv")
        prediction.curves.write_parquet(out / "prediction_curves.parquet")
        figure = prediction_figure(prediction, trained.series, f"Predicted: {planned}", trained, arch)
        figure.savefig(out / "prediction.png", dpi=150)
        console.print(
            f"Wrote prediction.parquet, prediction.csv, prediction_curves.parquet, prediction.png to {out}",
            markup=False,
            highlight=False,
        )
    return prediction


def _interval(value: float, low: float, high: float, digits: str = ".3g") -> str:
    # The interval on a line of its own, its bounds split by a comma (a dash reads as a minus sign beside 1e-03):
    # a narrow terminal then wraps the cell between whole numbers instead of cutting it.
    if math.isnan(value):
        return "-"
    return f"{value:{digits}}\n[{low:{digits}}, {high:{digits}}]"


def _curve_table(prediction, planned: str, source: str, trained):
    from rich.table import Table

    evaluation = trained.evaluation
    table = Table(
        title=f"Predicted emergence, {planned}",
        title_justify="left",
        caption=f"{source}; value [5-95 %]. On held-out models: skill {evaluation['skill']:+.2f}, bands held "
        f"{evaluation['coverage']:.0%} of measured points.",
        caption_justify="left",
    )
    for name in ("layer", "final ratio", "half-rise step", "peak step", "peak ratio"):
        table.add_column(name, justify="right", overflow="fold")
    for row in prediction.layers.iter_rows(named=True):
        cells = [_interval(row[n], row[f"{n}_lo"], row[f"{n}_hi"]) for n in ("final", "half_rise_step")]
        if math.isnan(row["peak_step"]):
            cells += ["no peak", "-"]
        else:
            cells += [_interval(row[n], row[f"{n}_lo"], row[f"{n}_hi"]) for n in ("peak_step", "peak_height")]
        table.add_row(str(row["layer"]), *cells)
    return table


def _paper_table(prediction, planned: str, source: str, trained):
    from rich.table import Table

    table = Table(title=f"Predicted Eq. 9 parameters, {planned} ({source}); value [5-95 %]", title_justify="left")
    table.add_column("layer", justify="right")
    for name in (*trained.targets, "t_peak"):
        table.add_column(name, justify="right", overflow="fold")
    for row in prediction.layers.iter_rows(named=True):
        cells = [_interval(row[t], row[t + "_lo"], row[t + "_hi"]) for t in trained.targets]
        peak = "no peak" if math.isnan(row["t_peak"]) else f"{row['t_peak']:.3g}"
        table.add_row(str(row["layer"]), *cells, peak)
    return table
