"""The options `mdyn figures` and `mdyn report` share, and reading their inputs with progress shown."""

from pathlib import Path
from typing import Annotated

import typer

Store = Annotated[
    Path,
    typer.Option(
        help="A results store (every parquet file under STORE/measurements/ is read) or one measurements parquet file."
    ),
]
Fits = Annotated[
    Path | None,
    typer.Option(
        help="Fits table written by `mdyn fit` (with --hypotheses all for Table 5). Default: fit the store here, "
        "every hypothesis, and write OUT/fits.parquet."
    ),
]
Predictor = Annotated[
    Path | None, typer.Option(help="A predictor written by `mdyn train`, for Figs 9 and 10 (skipped without it).")
]
Architectures = Annotated[
    Path | None,
    typer.Option(
        help="CSV or parquet with model, n_layers, d_model, n_heads, d_ff, n_params per model, for Fig 2 and "
        "Table 3. Default: the shipped tables (the nine Pythia models and the tiny suite)."
    ),
]
Series = Annotated[
    str,
    typer.Option(
        help="The fitted series drawn: ratio (paper Eq. 8), ratio_mean, top1, median, top2_ratio or top3_ratio."
    ),
]
ProbeId = Annotated[
    str | None,
    typer.Option(
        help="Use only the measurements of this probe id (needed when a model was measured with several probes)."
    ),
]
Jobs = Annotated[int | None, typer.Option(help="Worker processes for fitting the store. Default: every core.", min=1)]
NEstimators = Annotated[int, typer.Option(help="Trees or boosting rounds of the regressors of Table 3.", min=1)]


def read_inputs(console, store, out, fits, predictor, architectures, series, probe_id, n_estimators, jobs):
    """`load_inputs`, showing that it fits the store when no --fits is given, and the tiny-suite caveat."""
    from dynamics.figures.inputs import load_inputs

    waiting = "no --fits: fitting every layer of the store with every hypothesis" if fits is None else "reading"
    with console.status(waiting):
        loaded = load_inputs(store, out, fits, predictor, architectures, series, probe_id, n_estimators, jobs)
    if loaded.fitted is not None:
        n_layers = loaded.inputs.measurements.select("model", "layer").n_unique()
        console.print(
            f"no --fits: fitted {series} of {n_layers} layers with every hypothesis; wrote {loaded.fitted} "
            "(pass it as --fits next time)",
            markup=False,
        )
    if loaded.note:
        console.print(loaded.note, style="yellow", markup=False)
    return loaded
