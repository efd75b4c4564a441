"""`mdyn train`: learn how massive activations emerge from architecture, evaluate it on held-out models, save it."""

from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli.paths import check_output_file
from fitting.errors import UserError

PROTOCOLS = ("paper", "lomo", "both")
TARGETS = ("curve", "paper")
DEFAULT_CURVE_KIND = "gradient_boosting"


def train(
    out: Annotated[Path, typer.Option(help="Where to write the trained predictor (a .skops file).")],
    store: Annotated[
        Path | None,
        typer.Option(
            help="Measurements to learn from: a store folder or a measurements parquet file [default: the shipped "
            "tiny-suite data, data/tiny-suite-predict]. The curve target learns each layer's measured series."
        ),
    ] = None,
    architectures: Annotated[
        Path | None,
        typer.Option(
            help="CSV or parquet with model, n_layers, d_model, n_heads, d_ff (and, for --recipe-features, "
            "total_steps, peak_lr, tokens_per_step) [default: what the store recorded while measuring, then the "
            "shipped tables: the nine Pythia models and the tiny suites]."
        ),
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            help="curve: the log ratio at knots over the run, with calibrated bands; paper: the five Eq. 9 "
            "parameters from --fits, as the paper regresses them (its Table 3)."
        ),
    ] = "curve",
    kind: Annotated[
        str | None,
        typer.Option(
            help="Regressor to save. curve: gaussian_process, random_forest, ridge, gradient_boosting [default] or "
            "xgboost; paper: ridge, lasso, random_forest [default], gradient_boosting or xgboost."
        ),
    ] = None,
    compare: Annotated[bool, typer.Option(help="Evaluate every kind, or only --kind.")] = True,
    recipe_features: Annotated[
        bool, typer.Option(help="Also learn from the recipe: log total steps, log peak LR, log tokens per step.")
    ] = False,
    series: Annotated[str, typer.Option(help="Which series to learn (ratio, top1, median, ...).")] = "ratio",
    probe_id: Annotated[
        str | None, typer.Option(help="Use the measurements of this probe id (when a model has several).")
    ] = None,
    fits: Annotated[Path | None, typer.Option(help="Fits table written by `mdyn fit` (--target paper).")] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="--target paper: paper (random 80/20 split + 5-fold CV), lomo (leave one model out), or both."
        ),
    ] = "both",
    n_estimators: Annotated[int, typer.Option(min=1, help="Trees or boosting rounds of the tree-based kinds.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the split, the folds and the regressors.")] = 0,
) -> None:
    """Learn how each layer's massive activations emerge, from architecture; evaluate on held-out models; save.

    The default (curve) target is every layer's measured log ratio at knots spread over its run, predicted
    jointly. Each model is held out in turn (with the other seeds of its design) and predicted from the rest:
    the error, the architecture-blind baseline (the mean curve at the same relative depth), the skill
    (1 - error / baseline) and the coverage of the 90 % bands are printed for each kind. Skill at or below 0
    means the architecture explains little of this data's variation.
    """
    from rich.console import Console

    from predictors.regressors import check_curve_kind, check_kind

    if target not in TARGETS:
        raise UserError(f"unknown --target {target!r}: choose curve or paper")
    check_output_file(out, (".skops",))
    console = Console()
    if target == "paper":
        if fits is None:
            raise UserError("--target paper learns the fitted Eq. 9 parameters: pass --fits (from `mdyn fit`)")
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {protocol!r}: choose paper, lomo or both")
        run_paper_training(
            console,
            fits,
            out,
            architectures,
            check_kind(kind or "random_forest"),
            protocol,
            series,
            compare,
            n_estimators,
            seed,
        )
        return
    run_curve_training(
        console,
        store,
        out,
        architectures,
        check_curve_kind(kind or DEFAULT_CURVE_KIND),
        compare,
        recipe_features,
        series,
        probe_id,
        n_estimators,
        seed,
    )


def run_curve_training(
    console,
    store: Path | None,
    out: Path,
    architectures: Path | None = None,
    kind: str = DEFAULT_CURVE_KIND,
    compare: bool = True,
    recipe: bool = False,
    series: str = "ratio",
    probe_id: str | None = None,
    n_estimators: int = 200,
    seed: int = 0,
) -> Path:
    """Read the measurements, evaluate (every kind with `compare`), train `kind`, print, save; the file written."""
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.learning import architectures_for, default_training_data, train_curves
    from dynamics.store import read_measurements
    from fitting.table import select_probe
    from predictors.regressors import CURVE_KINDS
    from predictors.trained import save

    source = store or default_training_data()
    with warnings_as_messages():
        measurements = select_probe(read_measurements(source), probe_id)
        with console.status("holding out each model in turn, for every kind" if compare else "holding out models"):
            training = train_curves(
                measurements,
                architectures_for(source, architectures),
                kind,
                CURVE_KINDS if compare else (kind,),
                series,
                recipe,
                n_estimators=n_estimators,
                seed=seed,
            )
    trained = training.trained
    console.print(
        f"Learned the {series} curves of {trained.n_samples} layers of {len(trained.models)} models from "
        f"{source}" + (f"; left out {len(training.excluded)} layers:" if training.excluded else "."),
        markup=False,
        highlight=False,
    )
    for model, layer, reason in training.excluded[:10]:
        console.print(f"  {model} layer {layer}: {reason}", markup=False, highlight=False)
    console.print(evaluation_table(training.comparison, trained.evaluation.get("seed_floor")))
    show_verdict(console, trained.evaluation)
    path = save(trained, out)
    console.print(
        f"Saved the {kind} curve predictor to {path} (training data sha256 {trained.data_hash[:12]}).",
        markup=False,
        highlight=False,
    )
    return path


def evaluation_table(comparison, floor: dict | None):
    """Leave-one-model-out per kind: median and mean |log error|, the blind baseline, skill, coverage."""
    from rich.table import Table

    first = comparison.row(0, named=True)
    table = Table(
        title="Leave one model out: each design predicted from the others (what a new architecture gets)",
        title_justify="left",
        caption=f"|log predicted - log measured| over {first['layers']} layers of {first['models']} models at their "
        "measured steps; baseline: the mean curve of the other models at the same relative depth"
        + (
            f"; seed floor (|log difference| between seeds of one design): median {floor['median']:.3f}, mean "
            f"{floor['mean']:.3f}, so a perfect predictor would still err by about {floor['perfect']:.3f}"
            if floor
            else ""
        ),
        caption_justify="left",
    )
    for name in ("kind", "median err", "mean err", "baseline", "skill", f"{first['level']:.0%} band"):
        table.add_column(name, justify="left" if name == "kind" else "right")
    for row in comparison.iter_rows(named=True):
        table.add_row(
            row["kind"],
            f"{row['error']:.3f}",
            f"{row['error_mean']:.3f}",
            f"{row['baseline']:.3f}",
            f"{row['skill']:+.2f}",
            f"{row['coverage']:.0%}",
        )
    return table


def show_verdict(console, evaluation: dict) -> None:
    """One plain sentence on what the skill and coverage of the saved kind mean."""
    skill, kind = evaluation["skill"], evaluation["kind"]
    if skill <= 0:
        console.print(
            f"{kind}: skill {skill:+.2f}. The architecture explains little of this data's variation: on "
            "held-out models it does no better than the depth-only baseline. Trust the bands, not the "
            "curve's shape.",
            markup=False,
            highlight=False,
        )
    else:
        console.print(
            f"{kind}: skill {skill:+.2f}: on held-out models the error is {1 - skill:.0%} of the "
            f"architecture-blind baseline's; its bands held {evaluation['coverage']:.0%} of the measured "
            f"points (aim: {evaluation['level']:.0%}).",
            markup=False,
            highlight=False,
        )


def run_paper_training(
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
    """The paper's target: build the training table of fitted parameters, print the evaluations, train, save."""
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.learning import architectures_for
    from fitting.table import read_fits
    from predictors.dataset import TARGETS as PARAMS
    from predictors.dataset import design_groups, training_table
    from predictors.evaluate import leave_one_model_out, paper_protocol
    from predictors.features import FEATURES
    from predictors.regressors import KINDS, EmergencePredictor
    from predictors.trained import save
    from predictors.trained import train as fit_predictor

    with warnings_as_messages():
        # `mdyn fit` writes STORE/fits.parquet: the architectures that store recorded while measuring serve too.
        architecture_table = architectures_for(Path(fits).parent, architectures)
        table = training_table(read_fits(fits), architecture_table, series)
        models = table["model"].unique().to_list()
        console.print(f"Training on {table.height} layers of {len(models)} models (series {series!r}).")
        X, Y = table.select(FEATURES).to_numpy(), table.select(PARAMS).to_numpy()
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
            groups = design_groups(table["model"].to_list(), architecture_table)
            result = leave_one_model_out(X, Y, groups, kinds, estimator)
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
