"""Figures of the sites table (docs/science.md §10): the sink's co-emergence with the residual ratio, and which
sublayer writes the largest value."""

import math

import numpy as np
import polars as pl
from matplotlib.colors import TwoSlopeNorm
from matplotlib.lines import Line2D

from dynamics.figures.aggregates import check_models
from dynamics.figures.style import PALETTE, depth_order, new_figure, note_tiny_suite, step_axis
from dynamics.sinks import SINK_EPS
from fitting.errors import UserError
from fitting.table import series_table

SITE_STYLES = {
    "residual": ("residual stream (block output)", PALETTE[6], "o"),
    "attn": ("attention output", PALETTE[1], "s"),
    "mlp": ("MLP output", PALETTE[4], "^"),
    "mlp_in": ("input of the MLP's output projection", PALETTE[2], "D"),
}


def _rows_of(sites: pl.DataFrame, wanted, what: str) -> pl.DataFrame:
    """The rows of the `wanted` sites; a UserError saying how to get them when there are none."""
    rows = sites.filter(pl.col("site").is_in(list(wanted)))
    if rows.is_empty():
        raise UserError(f"the sites table has no {what} rows; sweep with --sites {','.join(wanted)} (or all)")
    return rows


def sink_coemergence(measurements: pl.DataFrame, sites: pl.DataFrame, model: str | None = None):
    """Per layer of one model (default: the deepest with sink rows): the residual ratio (Eq. 8) and the sink rate
    and mass over training steps, on two axes."""
    sink = _rows_of(sites, ("sink",), "sink")
    model = model or depth_order(sink)[-1]
    check_models(measurements, [model], "the measurements table")
    check_models(sink, [model], "the sites table's sink rows")
    ratio = series_table(measurements.filter(pl.col("model") == model), "ratio")
    shares = (
        sink.filter(pl.col("model") == model)
        .group_by("layer", "step")
        .agg(pl.col("sink_rate").mean(), pl.col("sink_mass").mean())
        .sort("layer", "step")
    )
    n_layers = int(shares.select(pl.col("layer").max()).item()) + 1
    n_cols = min(n_layers, 4)
    n_rows = math.ceil(n_layers / n_cols)
    fig = new_figure(3.6 * n_cols + 0.6, 2.9 * n_rows + 1.1)
    # A last row holds the legend, inside the layout, so that it never covers the tiny-suite caveat.
    grid = fig.add_gridspec(n_rows + 1, n_cols, height_ratios=[1] * n_rows + [0.12])
    axes = [fig.add_subplot(grid[i // n_cols, i % n_cols]) for i in range(n_rows * n_cols)]
    for layer, ax in enumerate(axes):
        if layer >= n_layers:
            ax.set_visible(False)
            continue
        points = ratio.filter(pl.col("layer") == layer)
        ax.plot(points["step"].to_numpy(), points["value"].to_numpy(), color=PALETTE[6], marker="o", ms=3, lw=1.3)
        step_axis(ax)
        ax.set_ylabel("residual ratio (Eq. 8)", fontsize=8)
        twin = ax.twinx()
        part = shares.filter(pl.col("layer") == layer)
        steps = part["step"].to_numpy()
        twin.plot(steps, part["sink_rate"].to_numpy(), color=PALETTE[4], marker="s", ms=3, lw=1.3)
        twin.plot(steps, part["sink_mass"].to_numpy(), color=PALETTE[3], ls="--", lw=1.2)
        twin.set_ylim(-0.03, 1.03)
        twin.set_ylabel("sink rate, sink mass (0-1)", fontsize=8)
        ax.set_title(f"layer {layer}", fontsize=10)
    handles = [
        Line2D([], [], color=PALETTE[6], marker="o", ms=3, label="residual ratio (Eq. 8)"),
        Line2D([], [], color=PALETTE[4], marker="s", ms=3, label=f"sink rate (share of heads with α₀ > {SINK_EPS})"),
        Line2D([], [], color=PALETTE[3], ls="--", label="sink mass (α₀ averaged over heads)"),
    ]
    drawn = sink.filter(pl.col("model") == model)
    lengths = ", ".join(str(n) for n in sorted(drawn["seq_len"].drop_nulls().unique().to_list()))
    fig.suptitle(f"{model}: residual ratio and attention sink over training ({lengths}-token sequences)", fontsize=10)
    legend = fig.add_subplot(grid[n_rows, :])
    legend.axis("off")
    legend.legend(handles=handles, loc="center", ncols=3, fontsize=8, frameon=False)
    note_tiny_suite(fig, [model])
    return fig


def sublayer_origin(measurements: pl.DataFrame, sites: pl.DataFrame, model: str | None = None):
    """Which sublayer writes the larger value at each (layer, step) of one model (default: the deepest with attn and
    mlp rows), as log10 of the mean top-1 of the MLP output over that of the attention output; and, for the layer
    with the largest final residual ratio, the mean top-1 of every measured site over steps."""
    parts = _rows_of(sites, ("attn", "mlp"), "attn and mlp")
    model = model or depth_order(parts)[-1]
    check_models(parts, [model], "the sites table's attn and mlp rows")
    check_models(measurements, [model], "the measurements table")
    of_model = sites.filter(pl.col("model") == model)
    means = (
        of_model.filter(pl.col("site") != "sink")
        .group_by("site", "layer", "step")
        .agg(pl.col("top1").mean())
        .sort("site", "layer", "step")
    )
    wide = means.pivot(on="site", index=["layer", "step"], values="top1").sort("layer", "step")
    missing = [site for site in ("attn", "mlp") if site not in wide.columns]
    if missing:
        raise UserError(f"the sites table has no {' or '.join(missing)} rows for {model}; sweep with --sites all")
    steps = sorted(wide["step"].unique().to_list())
    n_layers = int(wide.select(pl.col("layer").max()).item()) + 1
    grid = np.full((n_layers, len(steps)), np.nan)
    column = {step: j for j, step in enumerate(steps)}
    for layer, step, attn, mlp in wide.select("layer", "step", "attn", "mlp").iter_rows():
        if attn and mlp:
            grid[layer, column[step]] = math.log10(mlp / attn)

    fig = new_figure(12, 4.8)
    heat, lines = fig.subplots(1, 2, width_ratios=(1.15, 1))
    limit = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0, 0.1)
    image = heat.imshow(
        grid, aspect="auto", origin="lower", cmap="PuOr_r", norm=TwoSlopeNorm(0.0, -limit, limit), interpolation="none"
    )
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
    heat.set_xticks(ticks, [str(steps[j]) for j in ticks], rotation=45, fontsize=7)
    heat.set_xlabel("training step (measured revisions, in order)")
    heat.set_ylabel("layer (0-based decoder block)")
    heat.set_yticks(np.arange(n_layers))
    heat.set_title("which sublayer writes the larger top-1", fontsize=10)
    bar = fig.colorbar(image, ax=heat, shrink=0.9)
    bar.set_label(
        "log10(mean top-1 of MLP output / of attention output)\n> 0: the MLP's, < 0: the attention's", fontsize=8
    )

    ratio = series_table(measurements.filter(pl.col("model") == model), "ratio")
    last = ratio.filter(pl.col("step") == pl.col("step").max()).drop_nulls("value")
    layer = int(last.sort("value")["layer"][-1]) if last.height else n_layers - 1
    for site, (label, color, marker) in SITE_STYLES.items():
        part = means.filter((pl.col("site") == site) & (pl.col("layer") == layer))
        if part.height:
            lines.plot(
                part["step"].to_numpy(), part["top1"].to_numpy(), color=color, marker=marker, ms=3, lw=1.3, label=label
            )
    step_axis(lines)
    lines.set_yscale("log")
    lines.set_ylabel("mean top-1 of |x| over probe sequences", fontsize=8)
    lines.set_title(f"layer {layer} (largest final residual ratio): the top-1 of each site", fontsize=10)
    lines.legend(fontsize=7)
    fig.suptitle(f"{model}: where the largest activations are written", fontsize=11)
    note_tiny_suite(fig, [model])
    return fig
