"""The figure of a prediction: every layer's predicted curve with its band, and faintly the curves of the nearest
training models, on log axes."""

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from fitting.contracts import SERIES_LABELS, Architecture
from predictors.knots import KNOT_COLUMNS, curve, dense_steps
from predictors.predict import Prediction
from predictors.trained import TrainedCurvePredictor, TrainedPredictor

N_NEAREST = 3


def nearest_models(trained: TrainedCurvePredictor, arch: Architecture, n: int = N_NEAREST) -> list[str]:
    """The `n` training models closest in shape to `arch`: depth, width, head size and MLP ratio, each in log
    units and standardized over the training models."""
    names = list(trained.architectures)
    shapes = np.array(
        [trained.architectures[m] for m in names] + [(arch.n_layers, arch.d_model, arch.n_heads, arch.d_ff)],
        dtype=float,
    )
    L, d, H, ff = shapes.T
    logs = np.log(np.column_stack([L, d, d / H, ff / d]))
    spread = logs[:-1].std(axis=0)
    z = (logs - logs[:-1].mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    order = np.argsort(((z[:-1] - z[-1]) ** 2).sum(axis=1))
    return [names[i] for i in order[:n]]


def prediction_figure(
    prediction: Prediction,
    series: str,
    title: str,
    trained: TrainedPredictor | TrainedCurvePredictor | None = None,
    arch: Architecture | None = None,
    level: float = 0.9,
) -> Figure:
    """Predicted curve of each layer, coloured by depth (cividis, colour-blind safe), with its `level` band.

    With a curve predictor and the planned `arch`, the layers of the nearest training models are drawn faintly
    over the same run length, so a reader sees what the prediction rests on.
    """
    curves = prediction.curves
    n_layers = prediction.layers.height
    norm = Normalize(0, max(n_layers - 1, 1))
    cmap = colormaps["cividis"]
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    steps_all = curves["step"].to_numpy()
    total = float(steps_all.max())
    if isinstance(trained, TrainedCurvePredictor) and arch is not None:
        nearest = nearest_models(trained, arch)
        known = trained.training_curves()
        grid = dense_steps(total, 80)[1:]
        for row in known.filter(known["model"].is_in(nearest)).iter_rows(named=True):
            knots = np.array([row[c] for c in KNOT_COLUMNS])
            ax.plot(grid, np.exp(curve(knots, total, grid)), color="0.6", lw=0.7, alpha=0.5, zorder=1)
        ax.plot(
            [],
            [],
            color="0.6",
            lw=0.7,
            label="nearest training models: " + ", ".join(m.rsplit("/", 1)[-1] for m in nearest),
        )
    for (layer,), group in curves.group_by("layer", maintain_order=True):
        color = cmap(norm(layer))
        visible = group.filter(group["step"] > 0)  # log axis: step 0 is the first knot, not drawable
        step = visible["step"].to_numpy()
        ax.fill_between(
            step,
            visible["ratio_lo"].to_numpy(),
            visible["ratio_hi"].to_numpy(),
            color=color,
            alpha=0.15,
            linewidth=0,
            zorder=2,
        )
        ax.plot(step, visible["ratio"].to_numpy(), color=color, linewidth=1.6, zorder=3)
    # The axis follows the predictions: a band above 3x their largest value (or below a third of their smallest)
    # is cut there, and the figure says so.
    central = curves.filter(curves["step"] > 0)["ratio"].to_numpy()
    lows, highs = np.nan_to_num(curves["ratio_lo"].to_numpy()), np.nan_to_num(curves["ratio_hi"].to_numpy())
    positive = bool(np.nanmin(central) > 0)  # a paper-target prediction may go negative
    top = 3 * float(np.nanmax(central))
    bottom = float(np.nanmin(central)) / 3 if positive else min(0.0, 3 * float(np.nanmin(central)))
    if highs.max() > top or lows.min() < bottom:
        ax.text(0.01, 0.98, "bands cut at the axis", transform=ax.transAxes, va="top", fontsize=8, color="dimgray")
    ax.set_ylim(max(bottom, lows.min()), min(top, highs.max()))
    ax.set_xscale("log")
    ax.set_yscale("log" if positive else "linear")
    ax.set_xlabel("training step of the planned run (log scale)")
    ax.set_ylabel(f"predicted {SERIES_LABELS.get(series, series)}", fontsize=9)
    calibrated = isinstance(trained, TrainedCurvePredictor)
    level = trained.level if isinstance(trained, TrainedCurvePredictor) else level
    low, high = round(50 * (1 - level)), round(50 * (1 + level))
    what = "calibrated on held-out models" if calibrated else "of the ensemble members"
    ax.set_title(f"{title}\nlines: prediction; bands: {low}-{high} % {what}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if isinstance(trained, TrainedCurvePredictor) and arch is not None:
        ax.legend(fontsize=8, loc="lower right")
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    bar.set_label("layer (0-based decoder block)")
    if n_layers <= 12:
        bar.set_ticks(list(range(n_layers)))
    return fig
