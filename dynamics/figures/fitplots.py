"""Figures of the fitted curves: example fits (Fig 6), fit quality per layer (Fig 7), the t_peak surface (Fig 8)."""

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.patches import Patch

from dynamics.figures.aggregates import check_models, emergence_fits
from dynamics.figures.style import PALETTE, SEQUENTIAL, depth_order, new_figure, note_tiny_suite, short, step_axis
from dynamics.figures.style import style as model_style
from fitting.curves import emergence, t_peak
from fitting.table import SERIES_LABELS, series_table

EQ9 = ("A", "lam", "gamma", "t0", "K")
NO_PEAK, LATE_PEAK = "0.88", "#CC79A7"  # no peak at all; a peak after the last step (not in cividis)


def fit_row(fits: pl.DataFrame, model: str, layer: int) -> dict | None:
    """The successful Eq. 9 fit of one layer as a dict, or None."""
    rows = fits.filter((pl.col("model") == model) & (pl.col("layer") == layer) & pl.col("success"))
    return rows.row(0, named=True) if rows.height else None


def draw_fit(ax, steps, values, fit: dict | None) -> None:
    """Measured points, the Eq. 9 curve of `fit` (when given) and its peak step, on a symlog step axis."""
    ax.plot(steps, values, "o", ms=3.5, color="0.15", label="measured", zorder=3)
    if fit is not None:
        t = np.concatenate([[0.0], np.geomspace(1.0, max(float(np.max(steps)), 1.0), 300)])
        with np.errstate(invalid="ignore", divide="ignore"):
            curve = emergence(t, **{name: fit[name] for name in EQ9})
        ax.plot(t, curve, "-", color=PALETTE[4], lw=1.8, label=f"Eq. 9 fit, R² = {fit['r2']:.3f}")
        if fit.get("t_peak") is not None and np.isfinite(fit["t_peak"]) and fit["t_peak"] <= np.max(steps):
            # With A < 0 the critical point of Eq. 9 is a minimum.
            kind = "peak" if fit["A"] > 0 else "trough"
            ax.axvline(fit["t_peak"], color=PALETTE[3], ls=":", lw=1.2, label=f"{kind} at step {fit['t_peak']:.0f}")
    step_axis(ax)
    ax.legend(fontsize=7, loc="best")


def fig6_example_fits(measurements: pl.DataFrame, fits: pl.DataFrame, models=None, series: str = "ratio"):
    """Fig 6: points and Eq. 9 fit of a shallow, a middle and a deep layer for two models (default: the deepest)."""
    eq9 = emergence_fits(fits, series)
    models = list(models) if models is not None else depth_order(eq9)[-2:][::-1]
    check_models(measurements, models, "the measurements table")
    points = series_table(measurements.filter(pl.col("model").is_in(models)), series)
    fig = new_figure(11, 3.2 * len(models) + 0.4)
    axes = fig.subplots(len(models), 3, squeeze=False)
    for row, model in zip(axes, models):
        part = points.filter(pl.col("model") == model)
        n_layers = int(part["layer"].max()) + 1
        for ax, (where, layer) in zip(row, (("shallow", 0), ("middle", n_layers // 2), ("deep", n_layers - 1))):
            layer_points = part.filter(pl.col("layer") == layer)
            fit = fit_row(eq9, model, layer)
            draw_fit(ax, layer_points["step"].to_numpy(), layer_points["value"].to_numpy(), fit)
            ax.set_title(f"{short(model)}, layer {layer} ({where})" + ("" if fit else ", no successful fit"),
                         fontsize=9)
            ax.set_ylabel(SERIES_LABELS[series], fontsize=8)
    fig.suptitle(f"Fig 6: Eq. 9 fits of shallow, middle and deep layers ({series})")
    note_tiny_suite(fig, models)
    return fig


def fig7_fit_quality(fits: pl.DataFrame, series: str = "ratio"):
    """Fig 7: R² of the Eq. 9 fit of every layer against relative depth, one line per model."""
    eq9 = emergence_fits(fits, series)
    models = depth_order(eq9)
    fig = new_figure(8, 4.8)
    ax = fig.add_subplot()
    failed = 0
    for i, model in enumerate(models):
        part = eq9.filter(pl.col("model") == model)
        ok = part.filter(pl.col("success") & pl.col("r2").is_not_null())
        failed += part.height - ok.height
        depth = (ok["layer"].to_numpy() + 1) / part["n_layers"][0]
        ax.plot(depth, ok["r2"].to_numpy(), lw=1.2, ms=5, label=short(model), **model_style(i))
    ax.set_xlabel("relative depth (layer + 1) / L")
    ax.set_ylabel("R² of the Eq. 9 fit")
    ax.set_xlim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(models) > 6 else 1, loc="lower left")
    mean = eq9.filter(pl.col("success"))["r2"].mean()
    title = f"Fig 7: fit quality per layer ({series}); mean R² {mean:.3f} over {eq9.height} layers"
    ax.set_title(title + (f", {failed} failed fits not shown" if failed else ""), fontsize=10)
    note_tiny_suite(fig, models)
    return fig


def fig8_peak_surface(fits: pl.DataFrame | None = None, series: str = "ratio", t0: float | None = None,
                      last_step: float = 143_000):
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
        t0 = float(eq9["t0"].median()) if t0 is None else t0
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
    handles = []
    if surface.count() < surface.size:
        handles.append(Patch(color=NO_PEAK, label="no peak after step 0"))
    if np.any(surface > norm.vmax):
        handles.append(Patch(color=LATE_PEAK, label=f"peak after step {norm.vmax:.0f}"))
    if eq9 is not None:
        handles.append(ax.scatter(eq9["lam"].to_numpy(), eq9["gamma"].to_numpy(), s=18, facecolor="none",
                                  edgecolor=PALETTE[4], linewidth=1.0, label=f"{eq9.height} fitted layers (own t0)"))
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
