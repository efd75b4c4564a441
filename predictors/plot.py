"""The figure of a prediction: every layer's predicted curve with its interval band, on a log step axis."""

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from fitting.contracts import SERIES_LABELS
from predictors.predict import Prediction


def prediction_figure(prediction: Prediction, series: str, title: str, level: float = 0.9) -> Figure:
    """Predicted curve of each layer, coloured by depth (cividis, colour-blind safe), with its `level` band."""
    curves = prediction.curves
    n_layers = prediction.layers.height
    norm = Normalize(0, max(n_layers - 1, 1))
    cmap = colormaps["cividis"]
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for (layer,), group in curves.group_by("layer", maintain_order=True):
        color = cmap(norm(layer))
        step = group["step"].to_numpy()
        ax.fill_between(
            step, group["value_lo"].to_numpy(), group["value_hi"].to_numpy(), color=color, alpha=0.15, linewidth=0
        )
        ax.plot(step, group["value"].to_numpy(), color=color, linewidth=1.5)
    # Members with inconsistent parameters can give curves orders of magnitude off; scaling the axis to them
    # would flatten every prediction onto zero, so the axis follows the predictions and says what it cuts.
    central = curves["value"].to_numpy()
    top = max(3 * float(np.nanpercentile(central, 75)), 10.0)
    bottom = min(0.0, float(np.nanpercentile(central, 5)))
    if (
        (np.nan_to_num(curves["value_hi"].to_numpy()) > top).any()
        or (central > top).any()
        or (np.nan_to_num(curves["value_lo"].to_numpy()) < bottom).any()
    ):
        ax.set_ylim(bottom, top)
        ax.text(
            0.01,
            0.98,
            "curves and bands cut at the axis: the ensemble members disagree beyond it",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            color="dimgray",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"predicted {SERIES_LABELS.get(series, series)}")
    low, high = round(50 * (1 - level)), round(50 * (1 + level))
    ax.set_title(f"{title}\nlines: prediction; bands: {low}-{high} % of the ensemble members", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    bar.set_label("layer (0-based decoder block)")
    if n_layers <= 12:
        bar.set_ticks(np.arange(n_layers))
    return fig
