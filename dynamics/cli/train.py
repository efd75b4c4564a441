"""`mdyn train`: learn the map from architecture to emergence-curve parameters, evaluate it, save it."""

from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli.paths import check_output_file
from fitting.errors import UserError

PROTOCOLS = ("paper", "lomo", "both")


def train(
    fits: Annotated[Path, typer.Option(help="Fits table written by `mdyn fit` (parquet or CSV).")],
    out: Annotated[Path, typer.Option(help="Where to write the trained predictor (a .skops file).")],
    architectures: Annotated[
        Path | None,
        typer.Option(
            help="CSV or parquet with model, n_layers, d_model, n_heads, d_ff for every fitted model "
            "[default: the shipped tables: the nine Pythia models and the tiny suite]."
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option(help="Regressor to save: ridge, lasso, random_forest, gradient_boosting or xgboost.")
    ] = "random_forest",
    protocol: Annotated[
        str,
        typer.Option(help="Evaluation: paper (random 80/20 split + 5-fold CV), lomo (leave one model out), or both."),
    ] = "both",
    series: Annotated[str, typer.Option(help="Which fitted series to learn (ratio, top1, median, ...).")] = "ratio",
    compare: Annotated[
        bool, typer.Option(help="Evaluate every kind (the paper's Table 3), or only --kind with --no-compare.")
    ] = True,
    n_estimators: Annotated[int, typer.Option(help="Trees or boosting rounds of the tree-based kinds.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the split, the folds and the regressors.")] = 0,
) -> None:
    """Learn the emergence-curve parameters (Eq. 9) of every layer from architecture, evaluate, and save.

    The evaluation prints the paper's random-split protocol (its Table 3) and leave-one-model-out, the honest
    estimate of what a new architecture will get.
    """
    from rich.console import Console

    from predictors.regressors import check_kind

    check_kind(kind)
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}: choose paper, lomo or both")
    check_output_file(out, (".skops",))
    run_training(Console(), fits, out, architectures, kind, protocol, series, compare, n_estimators, seed)


def run_training(
    console,
    fits: Path,
    out: Path,
    architectures: Path | None = None,
    kind: str = "random_forest",
    protocol: str = "both",
    series: str = "ratio",
    compare: bool = True,
    n_estimators: int = 200,
    seed: int = 0,
) -> Path:
    """Build the training table, print the evaluations the protocol asks for, train and save; the file written."""
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.embedded import shipped_architectures
    from fitting.table import read_fits
    from predictors.dataset import TARGETS, read_table, training_table
    from predictors.evaluate import leave_one_model_out, paper_protocol
    from predictors.features import FEATURES
    from predictors.regressors import KINDS, EmergencePredictor
    from predictors.trained import save
    from predictors.trained import train as fit_predictor

    with warnings_as_messages():
        table = training_table(
            read_fits(fits),
            read_table(architectures, "architectures") if architectures else shipped_architectures(),
            series,
        )
        models = table["model"].unique().to_list()
        console.print(f"Training on {table.height} layers of {len(models)} models (series {series!r}).")
        X, Y = table.select(FEATURES).to_numpy(), table.select(TARGETS).to_numpy()
        estimator = EmergencePredictor(kind=kind, random_state=seed, n_estimators=n_estimators)
        kinds = KINDS if compare else (kind,)
        if protocol in ("paper", "both"):
            result = paper_protocol(X, Y, kinds, estimator, random_state=seed)
            console.print(
                _metrics_table(
                    result,
                    "Paper protocol: random 80/20 split over layers, 5-fold CV on the "
                    "80 % (Table 3 analogue; layers of one model sit on both sides)",
                )
            )
        if protocol in ("lomo", "both"):
            result = leave_one_model_out(X, Y, table["model"].to_numpy(), kinds, estimator)
            console.print(
                _metrics_table(
                    result,
                    "Leave one model out: each model predicted by a fit on the others "
                    "(what to expect for a new architecture)",
                )
            )
        trained = fit_predictor(table, estimator)
    path = save(trained, out)
    console.print(f"Saved the {kind} predictor to {path} (training data sha256 {trained.data_hash[:12]}).")
    return path


def _metrics_table(result, title):
    """A rich table of one protocol's metrics, one row per (kind, target); sizes go in the caption."""
    from rich.table import Table

    first = result.row(0, named=True)
    caption = f"{first['n_train']} training and {first['n_test']} test layers"
    if first["protocol"] != "paper":
        caption = f"{first['n_test']} layers predicted, each by a fit on about {first['n_train']} others"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    cv = result["cv_r2_mean"].is_not_null().any()
    for name in ("kind", "target", "R²", *(["CV R²"] if cv else []), "MAE", "RMSE"):
        table.add_column(name, justify="left" if name in ("kind", "target") else "right")
    for row in result.iter_rows(named=True):
        cv_cell = [f"{row['cv_r2_mean']:.3f}±{row['cv_r2_std']:.3f}"] if cv else []
        errors = f"{row['mae']:.3g}", f"{row['rmse']:.3g}"
        table.add_row(row["kind"], row["target"], f"{row['r2']:.3f}", *cv_cell, *errors)
    return table
