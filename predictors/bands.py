"""Prediction bands calibrated on held-out models (split conformal over leave-one-model-out residuals).

A band is the predicted log-ratio curve plus and minus a half-width per knot: the `level` quantile of the
absolute residuals that the measured points near that knot had when their model was held out. Residuals come
from whole held-out models, so the band states what a new architecture gets, not what a known one does. In
log space the band can never put a ratio below 0.
"""

import math

import numpy as np

from predictors.knots import N_KNOTS, curve, knot_steps


def nearest_knot(steps: np.ndarray, total_steps: float) -> np.ndarray:
    """The index of the knot nearest to each step, in log(1 + step)."""
    knots = np.log1p(knot_steps(total_steps))
    return np.abs(np.log1p(np.asarray(steps, dtype=float))[:, None] - knots[None, :]).argmin(axis=1)


def half_widths(knot_index: np.ndarray, residuals: np.ndarray, level: float = 0.9) -> np.ndarray:
    """Per knot, the conformal `level` quantile of |residual| of the points nearest to it (N_KNOTS values).

    The finite-sample rank ceil((n + 1) level) of n residuals makes the band cover a new point with probability
    at least `level` when points are exchangeable and n >= level / (1 - level) (9 at 90 %); with fewer the width is
    the largest residual, which covers less. A knot with no points borrows its neighbours' width.
    """
    widths = np.full(N_KNOTS, np.nan)
    for k in range(N_KNOTS):
        r = np.sort(np.abs(residuals[knot_index == k]))
        if r.size:
            widths[k] = r[min(r.size, math.ceil((r.size + 1) * level)) - 1]
    known = np.flatnonzero(np.isfinite(widths))
    if known.size == 0:
        return np.zeros(N_KNOTS)
    return np.interp(np.arange(N_KNOTS), known, widths[known])


def band(
    knot_values: np.ndarray, widths: np.ndarray, total_steps: float, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) log ratio at `steps` of the band around the curve through `knot_values`."""
    return (curve(knot_values - widths, total_steps, steps), curve(knot_values + widths, total_steps, steps))


def draws(knot_values: np.ndarray, residual_curves: np.ndarray) -> np.ndarray:
    """The predicted knots plus each held-out residual curve (n_draws, N_KNOTS): plausible curves of a new model,
    whose spread gives the intervals of the curve's descriptors."""
    return knot_values[None, :] + residual_curves
