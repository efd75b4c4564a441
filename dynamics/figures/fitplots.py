"""Figures of the fitted curves: example fits (Fig 6), fit quality per layer (Fig 7), the t_peak surface (Fig 8)."""

import json

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.colors import LogNorm
from matplotlib.patches import Patch

from dynamics.figures.aggregates import check_models, emergence_fits
from dynamics.figures.style import PALETTE, SEQUENTIAL, depth_order, labels, new_figure, note_tiny_suite, step_axis
from dynamics.figures.style import style as model_style
from fitting.contracts import EQ9_PARAMS, SERIES_LABELS
from fitting.curves import emergence, t_peak
from fitting.errors import UserError
from fitting.table import series_table

NO_PEAK, LATE_PEAK = "0.88", "#CC79A7"  # no peak at all; a peak after the last step (not in cividis)


def fit_row(fits: pl.DataFrame, model: str, layer: int) -> dict | None:
    """The successful Eq. 9 fit of one layer as a dict, or None."""
    rows = fits.filter((pl.col("model") == model) & (pl.col("layer") == layer) & pl.col("success"))
    return rows.row(0, named=True) if rows.height else None


def draw_fit(ax, steps, values, fit: dict | None, rivals=()) -> None:
    """Measured points, the Eq. 9 curve of `fit` (when given) and its peak, and the curves of `rivals` (fits-table
    rows of other hypotheses, drawn dashed), on a symlog step axis.

    A peak within the measured steps is marked by a line; one beyond them is an extrapolation, named in the
    legend only, since drawing it would squeeze the data into a corner.
    """
    from fitting.model import HYPOTHESES

    ax.plot(steps, values, "o", ms=3.5, color="0.15", label="measured", zorder=3)
    t = np.concatenate([[0.0], np.geomspace(1.0, max(float(np.max(steps)), 1.0), 300)])
    functions = {cls.hypothesis: cls().func for cls in HYPOTHESES}
    for i, row in enumerate(r for r in rivals if r.get("params")):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            curve = functions[row["hypothesis"]](t, **json.loads(row["params"]))
        failed = "" if row["success"] else " (failed)"
        ax.plot(
            t, curve, "--", lw=1.2, color=PALETTE[i % 3], label=f"{row['hypothesis']}, R² = {row['r2']:.3f}{failed}"
        )
    if fit is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            curve = emergence(t, **{name: fit[name] for name in EQ9_PARAMS})
        ax.plot(t, curve, "-", color=PALETTE[4], lw=1.8, label=f"Eq. 9 fit, R² = {fit['r2']:.3f}")
        peak = fit.get("t_peak")
        if peak is not None and np.isfinite(peak):
            # With A < 0 the critical point of Eq. 9 is a minimum.
            kind = "peak" if fit["A"] > 0 else "trough"
            if peak <= np.max(steps):
                ax.axvline(peak, color=PALETTE[3], ls=":", lw=1.2, label=f"{kind} at step {peak:.0f}")
            else:
                ax.plot([], [], " ", label=f"{kind} extrapolated to step {peak:.3g}")
    step_axis(ax)
    ax.legend(fontsize=7, loc="best")


def layer_figure(measurements: pl.DataFrame, fits: pl.DataFrame, model: str, layer: int, series: str = "ratio"):
    """One layer's series with every fitted hypothesis (`mdyn fit --plot`)."""
    points = series_table(measurements.filter((pl.col("model") == model) & (pl.col("layer") == layer)), series)
    rows = fits.filter((pl.col("model") == model) & (pl.col("layer") == layer))
    eq9 = rows.filter((pl.col("hypothesis") == "emergence") & pl.col("success"))
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    draw_fit(
        ax,
        points["step"].to_numpy(),
        points["value"].to_numpy(),
        eq9.row(0, named=True) if eq9.height else None,
        rivals=rows.filter(pl.col("hypothesis") != "emergence").to_dicts(),
    )
    ax.set_ylabel(SERIES_LABELS[series], fontsize=8)
    ax.set_title(f"{model}, layer {layer}" + ("" if eq9.height else ": no successful Eq. 9 fit"), fontsize=10)
    note_tiny_suite(fig, [model])
    return fig


def fig6_example_fits(measurements: pl.DataFrame, fits: pl.DataFrame, models=None, series: str = "ratio"):
    """Fig 6: points and Eq. 9 fit of a shallow, a middle and a deep layer for two models (default: the deepest)."""
    eq9 = emergence_fits(fits, series)
    models = list(models) if models is not None else depth_order(eq9)[-2:][::-1]
    check_models(measurements, models, "the measurements table")
    points = series_table(measurements.filter(pl.col("model").is_in(models)), series)
    names = labels(models)
    fig = new_figure(11, 3.2 * len(models) + 0.4)
    axes = fig.subplots(len(models), 3, squeeze=False)
    for row, model in zip(axes, models):
        part = points.filter(pl.col("model") == model)
        n_layers = int(part["layer"].to_numpy().max()) + 1
        for ax, (where, layer) in zip(row, (("shallow", 0), ("middle", n_layers // 2), ("deep", n_layers - 1))):
            layer_points = part.filter(pl.col("layer") == layer)
            fit = fit_row(eq9, model, layer)
            draw_fit(ax, layer_points["step"].to_numpy(), layer_points["value"].to_numpy(), fit)
            ax.set_title(
                f"{names[model]}, layer {layer} ({where})" + ("" if fit else ", no successful fit"), fontsize=9
            )
            ax.set_ylabel(SERIES_LABELS[series], fontsize=8)
    fig.suptitle(f"Fig 6: Eq. 9 fits of shallow, middle and deep layers ({series})")
    note_tiny_suite(fig, models)
    return fig


def fig7_fit_quality(fits: pl.DataFrame, series: str = "ratio"):
    """Fig 7: R² of the Eq. 9 fit of every layer against relative depth, one line per model."""
    eq9 = emergence_fits(fits, series)
    succeeded = eq9.filter(pl.col("success") & pl.col("r2").is_not_null())
    if succeeded.is_empty():
        raise UserError(
            f"none of the {eq9.height} Eq. 9 fits of series {series!r} succeeded, so there is no R² to draw; "
            "the fits table's message column says why"
        )
    models = depth_order(eq9)
    names = labels(models)
    fig = new_figure(8, 4.8)
    ax = fig.add_subplot()
    failed = 0
    for i, model in enumerate(models):
        part = eq9.filter(pl.col("model") == model)
        ok = part.filter(pl.col("success") & pl.col("r2").is_not_null())
        failed += part.height - ok.height
        depth = (ok["layer"].to_numpy() + 1) / part["n_layers"][0]
        ax.plot(depth, ok["r2"].to_numpy(), lw=1.2, ms=5, label=names[model], **model_style(i))
    ax.set_xlabel("relative depth (layer + 1) / L")
    ax.set_ylabel("R² of the Eq. 9 fit")
    ax.set_xlim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(models) > 6 else 1, loc="lower left")
    mean = float(np.mean(succeeded["r2"].to_numpy()))
    title = f"Fig 7: fit quality per layer ({series}); mean R² {mean:.3f} over {succeeded.height} layers"
    ax.set_title(title + (f", {failed} failed fits not shown" if failed else ""), fontsize=10)
    note_tiny_suite(fig, models)
    return fig


def fig8_peak_surface(
    fits: pl.DataFrame | None = None, series: str = "ratio", t0: float | None = None, last_step: float = 143_000
):
    """Fig 8: t_peak(λ, γ) at a fixed t0 (Lambert W, Eqs. 10-13), the region without an observable peak masked.

    Peaks after `last_step` (default: Pythia's last) get their own shade. With `fits`, t0 defaults to the median
    fitted t0, the axes cover the fitted (λ, γ) and the fits are overlaid; without, t0 = 1 over λ in [1e-3, 10]
    and γ in [1e-6, 1e-2] per step.
    """
    eq9 = None
    if fits is not None:
        eq9 = emergence_fits(fits, series).filter(pl.col("success") & (pl.col("lam") > 0) & (pl.col("gamma") > 0))
        eq9 = eq9 if eq9.height else None
    if eq9 is not None:
        t0 = float(np.median(eq9["t0"].to_numpy())) if t0 is None else t0
        lam_range = _decades(eq9["lam"].to_numpy())
        gamma_range = _decades(eq9["gamma"].to_numpy())
    else:
        t0 = 1.0 if t0 is None else t0
        lam_range, gamma_range = (1e-3, 10.0), (1e-6, 1e-2)
    lam = np.geomspace(*lam_range, 200)
    gamma = np.geomspace(*gamma_range, 200)
    surface = np.ma.masked_invalid(t_peak(lam[None, :], gamma[:, None], t0))

    fig = new_figure(7.5, 5.5)
    ax = fig.add_subplot()
    cmap = colormaps[SEQUENTIAL].with_extremes(bad=NO_PEAK, over=LATE_PEAK, under=colormaps[SEQUENTIAL](0.0))
    norm = LogNorm(vmin=1.0, vmax=max(last_step, 10.0))
    mesh = ax.pcolormesh(lam, gamma, surface, cmap=cmap, norm=norm, shading="auto")
    fig.colorbar(mesh, ax=ax, extend="both").set_label("t_peak (training steps, log colour scale)")
    handles: list[Artist] = []
    if surface.count() < surface.size:
        handles.append(Patch(color=NO_PEAK, label="no peak after step 0"))
    if np.any(surface > float(norm.vmax or 0.0)):
        handles.append(Patch(color=LATE_PEAK, label=f"peak after step {norm.vmax:.0f}"))
    if eq9 is not None:
        handles.append(
            ax.scatter(
                eq9["lam"].to_numpy(),
                eq9["gamma"].to_numpy(),
                s=18,
                facecolor="none",
                edgecolor=PALETTE[4],
                linewidth=1.0,
                label=f"{eq9.height} fitted layers (own t0)",
            )
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("λ, decay rate (dimensionless)")
    ax.set_ylabel("γ, time scaling (per training step)")
    ax.set_title(f"Fig 8: step of the peak of Eq. 9 at t0 = {t0:.3g} ({series})", fontsize=10)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="lower left")
    if eq9 is not None:
        note_tiny_suite(fig, eq9["model"].unique().to_list())
    return fig


def _decades(values: np.ndarray) -> tuple[float, float]:
    """A log-range covering `values` with one decade of margin on each side."""
    low, high = np.log10(values.min()), np.log10(values.max())
    return 10 ** (np.floor(low) - 1), 10 ** (np.ceil(high) + 1)
