"""Every figure and table of the paper, what each needs, and how to build and save them all from one set of inputs.

`mdyn figures` and `mdyn report` both walk `ITEMS` with `build_all`: an item whose inputs are missing, or whose
builder finds the data unsuitable (a `UserError`), is returned as skipped with the reason instead of failing.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import polars as pl
from matplotlib.figure import Figure

from dynamics.figures.aggregates import with_steps
from dynamics.figures.explain import fig9_explain_K, fig10_explain_lambda, paper_predictor
from dynamics.figures.family import fig2_ratio_vs_size, fig3_layer_profiles, fig5_peak_heatmaps
from dynamics.figures.fitplots import fig6_example_fits, fig7_fit_quality, fig8_peak_surface
from dynamics.figures.sites import sink_coemergence, sublayer_origin
from dynamics.figures.tables import (
    markdown,
    single_block,
    table1_fit_quality,
    table3_blocks,
    table3_regressors,
    table5_hypotheses,
)
from dynamics.figures.trajectories import fig1_overview, fig4_layer_trajectories
from fitting.errors import UserError

FORMATS = ("png", "pdf", "svg")
# How a user supplies each optional input on the command line.
OPTIONS = {
    "fits": "--fits",
    "architectures": "--architectures",
    "predictor": "--predictor",
    "sites": "a store with a sites table (mdyn sweep --sites all)",
}


@dataclass(frozen=True)
class Inputs:
    """The tables the figures are drawn from; `series` is the fitted series, n_estimators and seed serve Table 3.

    `predictor` is a `predictors.trained.TrainedPredictor` (not imported here: predictors loads skops and torch);
    `sites` the store's sites table (`dynamics.store.SITES`), of the same probe as the measurements.
    """

    measurements: pl.DataFrame
    fits: pl.DataFrame | None = None
    architectures: pl.DataFrame | None = None
    predictor: object | None = None
    sites: pl.DataFrame | None = None
    series: str = "ratio"
    n_estimators: int = 200
    seed: int = 0

    @cached_property
    def explained(self):
        """The predictor Figs 9 and 10 explain, trained once for both when `predictor` is not one of the paper's
        targets (`dynamics.figures.explain.paper_predictor`)."""
        return paper_predictor(
            self.predictor, given(self.fits), given(self.architectures), self.series, self.n_estimators
        )


@dataclass(frozen=True)
class Item:
    """One figure or table: its name in the paper, file stem, title, caption, required inputs, builder and, for a
    table, how it is shown: titled blocks of rows (the CSV file holds the table itself)."""

    name: str
    stem: str
    title: str
    caption: str
    needs: tuple[str, ...]
    build: Callable[[Inputs], Figure | pl.DataFrame]
    blocks: Callable[[pl.DataFrame], list[tuple[str, pl.DataFrame]]] = single_block


@dataclass(frozen=True)
class Built:
    """An item's result (a Figure or a DataFrame), or None with the reason it was skipped."""

    item: Item
    result: Figure | pl.DataFrame | None = None
    skipped: str | None = None


ITEMS = (
    Item(
        "Fig 1",
        "fig1_overview",
        "one model before and after training",
        "One model (the deepest): mean top-1, top-2, top-3 and median of |h| per layer at the first and the last "
        "measured step (log scale), and the fitted series of its first and last layer over training with the "
        "Eq. 9 fit and its peak step.",
        (),
        lambda i: fig1_overview(i.measurements, i.fits, series=i.series),
    ),
    Item(
        "Fig 2",
        "fig2_ratio_vs_size",
        "final ratio against model size",
        "The series at each model's last step, in its largest layer and averaged over layers, against the "
        "parameter count of the architectures table.",
        ("architectures",),
        lambda i: fig2_ratio_vs_size(i.measurements, given(i.architectures), i.series),
    ),
    Item(
        "Fig 3",
        "fig3_layer_profiles",
        "per-layer magnitudes, first and last step",
        "Top-1 and median of |h| per layer at the first (dashed) and last (solid) step, for the smallest, a "
        "middle and the largest model.",
        (),
        lambda i: fig3_layer_profiles(i.measurements, i.architectures),
    ),
    Item(
        "Fig 4",
        "fig4_layer_trajectories",
        "every layer over training",
        "Every layer of the deepest model over training: mean top-1, top-2 and top-3 each divided by the mean "
        "median of |h| (colour: layer).",
        (),
        lambda i: fig4_layer_trajectories(i.measurements),
    ),
    Item(
        "Fig 5",
        "fig5_peak_heatmaps",
        "where and when the series peaks",
        "For every layer (columns: relative depth) of every model (rows): the largest value of the series over "
        "training, and the step where it occurs (the last step when the series still rises).",
        (),
        lambda i: fig5_peak_heatmaps(i.measurements, i.architectures, i.series),
    ),
    Item(
        "Fig 6",
        "fig6_example_fits",
        "example Eq. 9 fits",
        "Measured series (points) and Eq. 9 fits (line) of the first, middle and last layer of the two deepest "
        "models; the dotted line marks the fitted peak step when it lies within training.",
        ("fits",),
        lambda i: fig6_example_fits(i.measurements, given(i.fits), series=i.series),
    ),
    Item(
        "Fig 7",
        "fig7_fit_quality",
        "fit quality per layer",
        "R² of the Eq. 9 fit of every layer against its relative depth, one line per model.",
        ("fits",),
        lambda i: fig7_fit_quality(given(i.fits), i.series),
    ),
    Item(
        "Fig 8",
        "fig8_peak_surface",
        "the peak step over (λ, γ)",
        "The step of the peak of Eq. 9 (Lambert W, paper Eqs. 10-13) over the decay rate λ and the time scaling "
        "γ at the median fitted t0; light grey: no peak after step 0, purple: a peak after the last measured "
        "step. Circles: the fitted layers, each with its own t0.",
        (),
        lambda i: fig8_peak_surface(i.fits, i.series, last_step=float(i.measurements["step"].to_numpy().max())),
    ),
    Item(
        "Fig 9",
        "fig9_explain_K",
        "what the predicted K depends on",
        "What a predictor of the paper's targets predicts for K (the curve's baseline) depends on, computed on its "
        "training rows: the --predictor when it was trained with --target paper, else a random forest trained "
        "here on the fits. SHAP values when the optional shap extra is installed, else permutation importance "
        "and partial dependence.",
        ("fits", "architectures"),
        lambda i: fig9_explain_K(i.explained, given(i.fits), given(i.architectures), i.series),
    ),
    Item(
        "Fig 10",
        "fig10_explain_lambda",
        "what the predicted λ depends on",
        "What the predicted λ (the decay rate) depends on, as Fig 9.",
        ("fits", "architectures"),
        lambda i: fig10_explain_lambda(i.explained, given(i.fits), given(i.architectures), i.series),
    ),
    Item(
        "Table 1",
        "table1_fit_quality",
        "Eq. 9 fit quality per model",
        "Eq. 9 fit per model: fitted layers, mean R² over the successful fits, layers with R² below 0.9, failed fits.",
        ("fits",),
        lambda i: table1_fit_quality(given(i.fits), i.series),
    ),
    Item(
        "Table 3",
        "table3_regressors",
        "architecture-to-parameter regressors",
        "Test R² of each regressor for each Eq. 9 parameter. 'paper': the paper's random 80/20 split over layers "
        "(layers of one model fall on both sides); 'leave-one-model-out': each model predicted from the others, "
        "what to expect for a new architecture.",
        ("fits", "architectures"),
        lambda i: table3_regressors(
            given(i.fits), given(i.architectures), i.series, n_estimators=i.n_estimators, seed=i.seed
        ),
        table3_blocks,
    ),
    Item(
        "Table 5",
        "table5_hypotheses",
        "Eq. 9 against rival hypotheses",
        "Mean R² per model of each hypothesis: Eq. 9 (emergence), its λ = 0 limit (log_rise), and first- and "
        "second-order step responses.",
        ("fits",),
        lambda i: table5_hypotheses(given(i.fits), i.series),
    ),
    Item(
        "Fig S1",
        "figS1_sink_coemergence",
        "the residual ratio and the attention sink",
        "Every layer of one model (the deepest with sink rows) over training: the residual ratio (Eq. 8, left "
        "axis), the sink rate (share of heads whose attention to position 0, averaged over the queries, exceeds "
        "0.3; Gu et al. 2024) and the sink mass (that attention averaged over heads), right axis. A sink rate "
        "depends on the sequence length, which the title gives (docs/science.md §10.1).",
        ("sites",),
        lambda i: sink_coemergence(i.measurements, given(i.sites)),
    ),
    Item(
        "Fig S2",
        "figS2_sublayer_origin",
        "which sublayer writes the largest value",
        "Left: for each layer and measured step of one model (the deepest with attn and mlp rows), log10 of the "
        "mean top-1 of the MLP sublayer's output over that of the attention sublayer's output: orange where the "
        "MLP writes the larger value, purple where attention does. Right: in the layer with the largest final "
        "residual ratio, the mean top-1 of every measured site over training; the input of the MLP's output "
        "projection is where a super weight shows (docs/science.md §10.3).",
        ("sites",),
        lambda i: sublayer_origin(i.measurements, given(i.sites)),
    ),
)


def given(table: pl.DataFrame | None) -> pl.DataFrame:
    """An input an item `needs`: `build_all` builds the item only when the input is there."""
    assert table is not None
    return table


def build_all(inputs: Inputs, items=ITEMS) -> Iterator[Built]:
    """Each item built from `inputs`, or skipped with the reason (a missing input or unsuitable data).

    Measurements without a training step are left out (`aggregates.with_steps`); with none left, every item is
    skipped with that reason.
    """
    try:
        inputs = replace(inputs, measurements=with_steps(inputs.measurements))
    except UserError as err:
        yield from (Built(item, skipped=str(err)) for item in items)
        return
    for item in items:
        missing = [OPTIONS[name] for name in item.needs if getattr(inputs, name) is None]
        if missing:
            yield Built(item, skipped=f"needs {' and '.join(missing)}")
            continue
        try:
            yield Built(item, item.build(inputs))
        except UserError as err:
            yield Built(item, skipped=str(err))


def save(built: Built, out: Path, fmt: str = "png", note: str | None = None) -> list[Path]:
    """Write a built figure as out/STEM.FMT, or a table as out/STEM.csv and out/STEM.md (caption, then `note`,
    then the table); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    item, result = built.item, built.result
    if isinstance(result, Figure):
        path = out / f"{item.stem}.{fmt}"
        result.savefig(path, format=fmt)
        return [path]
    assert isinstance(result, pl.DataFrame), f"{item.name} was skipped: nothing to save"
    csv, md = out / f"{item.stem}.csv", out / f"{item.stem}.md"
    result.write_csv(csv)
    caption = item.caption + (f"\n\n{note}" if note else "")
    body = "\n\n".join((f"**{title}**\n\n" if title else "") + markdown(rows) for title, rows in item.blocks(result))
    md.write_text(f"# {item.name}: {item.title}\n\n{caption}\n\n{body}\n")
    return [csv, md]
