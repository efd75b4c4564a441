"""Figures across the models of a family: final ratio vs size (Fig 2), layer profiles (Fig 3), peak heatmaps (Fig 5)."""

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.colors import LogNorm, SymLogNorm
from matplotlib.lines import Line2D

from dynamics.figures.aggregates import endpoints, final_ratios, layer_means, ratio_peaks
from dynamics.figures.style import (
    MARKERS,
    SEQUENTIAL,
    depth_order,
    family,
    labels,
    layer_axis,
    new_figure,
    note_tiny_suite,
    size_order,
    spread,
)
from fitting.contracts import SERIES_LABELS
from fitting.errors import UserError

# Fig 2's two values per model: (column, label, colour, line style).
FIG2_SERIES = (
    ("max_over_layers", "largest layer", "#D55E00", "-"),
    ("mean_over_layers", "mean over layers", "#0072B2", "--"),
)


def fig2_ratio_vs_size(measurements: pl.DataFrame, architectures: pl.DataFrame, series: str = "ratio"):
    """Fig 2: the series at each model's last step (largest and mean over layers) against parameter count.

    Lines join only the models of one family (`style.family`: EleutherAI/pythia-*), each family with its own
    marker; a model alone in its family is a marker, so that unrelated models never read as a trend.
    """
    finals = final_ratios(measurements, series)
    missing = [c for c in ("model", "n_params") if c not in architectures.columns]
    if missing:
        raise UserError(f"the architectures table lacks column(s) {', '.join(missing)}; Fig 2 needs n_params")
    table = finals.join(architectures.select("model", "n_params"), on="model", how="left")
    unknown = table.filter(pl.col("n_params").is_null())["model"].to_list()
    if unknown:
        raise UserError(
            f"the architectures table has no n_params for {', '.join(unknown)}; "
            "pass --architectures with a row per model"
        )
    table = table.sort("n_params")
    table = table.with_columns(family=pl.Series([family(m) for m in table["model"]], dtype=pl.String))
    names = labels(table["model"].to_list())
    fig = new_figure(7.5, 5)
    ax = fig.add_subplot()
    handles = [Line2D([], [], color=color, ls=ls, lw=1.2, label=label) for _, label, color, ls in FIG2_SERIES]
    for i, ((name,), members) in enumerate(table.group_by("family", maintain_order=True)):
        marker = MARKERS[i % len(MARKERS)]
        n_params = members["n_params"].to_numpy().astype(float)
        for column, _, color, ls in FIG2_SERIES:
            ax.plot(n_params, members[column].to_numpy(), marker=marker, ls=ls, color=color, lw=1.2, ms=5)
        handles.append(Line2D([], [], color="0.35", marker=marker, ls="", label=f"{name}-*" if "/" in name else name))
    for row in table.iter_rows(named=True):
        ax.annotate(
            names[row["model"]],
            (row["n_params"], row["max_over_layers"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (count, log scale)")
    ax.set_ylabel(f"{SERIES_LABELS[series]} at the last step", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=8)
    ax.set_title(
        f"Fig 2: final {series} against model size ({table.height} models; lines join one family's models)",
        fontsize=10,
    )
    note_tiny_suite(fig, table["model"].to_list())
    return fig


def fig3_layer_profiles(measurements: pl.DataFrame, architectures: pl.DataFrame | None = None, models=None):
    """Fig 3: per-layer top-1 and median of |h| at the first and last step, for up to three models.

    Default models: the smallest, a middle and the largest by parameter count (by depth without architectures).
    """
    means = layer_means(measurements)
    models = list(models) if models is not None else spread(size_order(depth_order(means), architectures), 3)
    ends = endpoints(means.filter(pl.col("model").is_in(models)))
    if ends.is_empty():
        raise UserError(f"the measurements table has no rows for {', '.join(models)}")
    names = labels(models)
    fig = new_figure(4.2 * len(models) + 0.5, 4.6)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        part = ends.filter(pl.col("model") == model)
        for when, style in (("first", "--"), ("last", "-")):
            rows = part.filter(pl.col("when") == when).sort("layer")
            step = rows["step"][0]
            ax.plot(
                rows["layer"].to_numpy(),
                rows["top1"].to_numpy(),
                style,
                marker="o",
                color="#D55E00",
                ms=4,
                label=f"top-1, step {step}",
            )
            ax.plot(
                rows["layer"].to_numpy(),
                rows["median"].to_numpy(),
                style,
                marker="D",
                color="#0072B2",
                ms=3.5,
                label=f"median, step {step}",
            )
        ax.set_yscale("log")
        layer_axis(ax)
        ax.set_title(names[model], fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, handlelength=3.5)
    axes[0].set_ylabel("mean over probe sequences of |h| (residual-stream units)", fontsize=8)
    fig.suptitle("Fig 3: per-layer activation magnitudes at the first (dashed) and last (solid) step")
    note_tiny_suite(fig, models)
    return fig


def fig5_peak_heatmaps(measurements: pl.DataFrame, architectures: pl.DataFrame | None = None, series: str = "ratio"):
    """Fig 5: over relative depth x model, the largest value of the series over training and the step it occurs.

    Each model's row is split into its own layers at relative depths layer/L ... (layer+1)/L; rows are ordered by
    parameter count when the architectures table gives it, else by depth.
    """
    peaks = ratio_peaks(measurements, series)
    models = size_order(depth_order(peaks), architectures)
    fig = new_figure(12, 0.45 * len(models) + 2.6)
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("peak", LogNorm(*_positive_range(peaks["peak"])), SEQUENTIAL, f"largest {series} over training"),
        (
            "peak_step",
            SymLogNorm(
                1.0,
                vmin=float(peaks["peak_step"].to_numpy().min()),
                vmax=max(float(peaks["peak_step"].to_numpy().max()), float(peaks["peak_step"].to_numpy().min()) + 1.0),
            ),
            "viridis",
            "step of the largest value (training steps)",
        ),
    )
    for ax, (column, norm, cmap, label) in zip(axes, panels):
        for i, model in enumerate(models):
            part = peaks.filter(pl.col("model") == model).sort("layer")
            n_layers = part["n_layers"][0]
            edges = np.arange(n_layers + 1) / n_layers
            values = np.full(n_layers, np.nan)
            values[part["layer"].to_numpy()] = part[column].to_numpy()
            mesh = ax.pcolormesh(
                edges, [i, i + 1], values[None, :], norm=norm, cmap=colormaps[cmap], edgecolors="white", linewidth=0.5
            )
        fig.colorbar(mesh, ax=ax, orientation="horizontal", pad=0.02, aspect=40).set_label(label, fontsize=8)
        ax.set_xlabel("relative depth: layer l of L spans l/L to (l + 1)/L")
        ax.set_xlim(0, 1)
        ax.set_title(label, fontsize=10)
    names = labels(models)
    axes[0].set_yticks(np.arange(len(models)) + 0.5, [names[m] for m in models], fontsize=8)
    axes[0].set_ylim(0, len(models))
    fig.suptitle(f"Fig 5: where and when the {series} peaks, per layer and model")
    note_tiny_suite(fig, models)
    return fig


def _positive_range(values: pl.Series) -> tuple[float, float]:
    positive = values.filter(values > 0)
    if positive.is_empty():
        return 1e-3, 1.0
    low, high = float(positive.to_numpy().min()), float(positive.to_numpy().max())
    return low, max(high, low * 1.01)
