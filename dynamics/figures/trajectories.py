"""Figures of one model's trajectories: the overview (Fig 1) and every layer's ratios over steps (Fig 4)."""

import polars as pl
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from dynamics.figures.aggregates import check_models, emergence_fits, endpoints, layer_means
from dynamics.figures.fitplots import draw_fit, fit_row
from dynamics.figures.style import (
    PALETTE,
    SEQUENTIAL,
    depth_order,
    layer_axis,
    new_figure,
    note_tiny_suite,
    step_axis,
)
from fitting.contracts import SERIES_LABELS
from fitting.table import series_table

STAT_STYLES = {
    "top1": ("top-1", PALETTE[4], "o"),
    "top2": ("top-2", PALETTE[0], "s"),
    "top3": ("top-3", PALETTE[5], "^"),
    "median": ("median", PALETTE[3], "D"),
}


def fig1_overview(
    measurements: pl.DataFrame, fits: pl.DataFrame | None = None, model: str | None = None, series: str = "ratio"
):
    """Fig 1: one model (default: the deepest): per-layer top-1/2/3 and median at its first and last step, and
    the series of a shallow and a deep layer over steps with their Eq. 9 fits (when `fits` is given)."""
    model = model or depth_order(measurements)[-1]
    check_models(measurements, [model], "the measurements table")
    part = measurements.filter(pl.col("model") == model)
    ends = endpoints(layer_means(part))
    fig = new_figure(11, 7.5)
    axes = fig.subplots(2, 2)
    axes[0, 1].sharey(axes[0, 0])
    for ax, when in zip(axes[0], ("first", "last")):
        rows = ends.filter(pl.col("when") == when).sort("layer")
        for stat, (label, color, marker) in STAT_STYLES.items():
            ax.plot(
                rows["layer"].to_numpy(),
                rows[stat].to_numpy(),
                marker=marker,
                color=color,
                lw=1.3,
                ms=4,
                label=f"{label} of |h|",
            )
        ax.set_yscale("log")
        layer_axis(ax)
        ax.set_ylabel("mean over probe sequences of |h| (residual-stream units)", fontsize=8)
        step = rows["step"][0]
        label = "initialisation, step 0" if step == 0 else f"{when} measured step, {step}"
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)

    points = series_table(part, series)
    eq9 = emergence_fits(fits, series) if fits is not None else None
    n_layers = int(points["layer"].to_numpy().max()) + 1
    for ax, (where, layer) in zip(axes[1], (("shallow", 0), ("deep", n_layers - 1))):
        layer_points = points.filter(pl.col("layer") == layer)
        fit = fit_row(eq9, model, layer) if eq9 is not None else None
        draw_fit(ax, layer_points["step"].to_numpy(), layer_points["value"].to_numpy(), fit)
        ax.set_ylabel(SERIES_LABELS[series], fontsize=8)
        ax.set_title(f"layer {layer} ({where})" + ("" if fit or eq9 is None else ", no successful fit"), fontsize=10)
    fig.suptitle(f"Fig 1: {model}, activation magnitudes before and after training, and the {series} series")
    note_tiny_suite(fig, [model])
    return fig


def fig4_layer_trajectories(measurements: pl.DataFrame, model: str | None = None):
    """Fig 4: top-1, top-2 and top-3 over median against step for every layer of one model (default: the deepest)."""
    model = model or depth_order(measurements)[-1]
    check_models(measurements, [model], "the measurements table")
    part = measurements.filter(pl.col("model") == model)
    n_layers = int(part["layer"].to_numpy().max()) + 1
    norm = Normalize(0, max(n_layers - 1, 1))
    cmap = colormaps[SEQUENTIAL]
    fig = new_figure(13, 4.4)
    axes = fig.subplots(1, 3, sharey=True)
    for ax, series in zip(axes, ("ratio", "top2_ratio", "top3_ratio")):
        values = series_table(part, series)
        for (layer,), group in values.group_by("layer", maintain_order=True):
            ax.plot(
                group["step"].to_numpy(), group["value"].to_numpy(), color=cmap(norm(layer)), lw=1.4, marker=".", ms=4
            )
        step_axis(ax)
        ax.set_title(SERIES_LABELS[series].removesuffix(" (Eq. 8)"), fontsize=10)
    axes[0].set_ylabel("ratio to the median of |h| (dimensionless)")
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.9)
    bar.set_label("layer (0-based decoder block)")
    if n_layers <= 12:
        bar.set_ticks(list(range(n_layers)))
    fig.suptitle(f"Fig 4: {model}, every layer's top-k / median ratio over training")
    note_tiny_suite(fig, [model])
    return fig
