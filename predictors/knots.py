"""A layer's curve as its log ratio at fixed knots over the run, rebuilt between them, and described.

The curve predictor learns log r at knots placed at fixed fractions of a run's length T: step 0 (the random
initialisation) and T/1024, T/512, ..., T/2, T (Pythia's checkpoint schedule doubles the same way). Curve values
are what the data determine; Eq. 9's five parameters trade off against each other (docs/science.md §11).
Between knots the curve is rebuilt by a shape-preserving cubic (PCHIP) in log(1 + step), so that it never
overshoots the knot values.
"""

import numpy as np
from scipy.interpolate import PchipInterpolator

KNOT_FRACTIONS = (0.0, *(2.0**-k for k in range(10, -1, -1)))
N_KNOTS = len(KNOT_FRACTIONS)
KNOT_COLUMNS = tuple(f"knot{i}" for i in range(N_KNOTS))


def knot_steps(total_steps: float) -> np.ndarray:
    """The steps of the knots of a run of `total_steps` steps (fractional steps are fine: they are positions)."""
    return np.asarray(KNOT_FRACTIONS) * float(total_steps)


def smooth(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each point replaced by the least-squares line through it and its two neighbours, evaluated at it; ends kept.

    Exact for a series linear in x (here log(1 + step)), so it removes probe noise; a curved stretch (a peak, the
    bend of a rise) is flattened a little.
    """
    x, values = np.asarray(x, dtype=float), np.asarray(values, dtype=float)
    if values.size < 3:
        return values.copy()
    xs = np.stack([x[:-2], x[1:-1], x[2:]])
    ys = np.stack([values[:-2], values[1:-1], values[2:]])
    dx = xs - xs.mean(axis=0)
    slope = (dx * (ys - ys.mean(axis=0))).sum(axis=0) / (dx**2).sum(axis=0)
    inner = ys.mean(axis=0) + slope * (x[1:-1] - xs.mean(axis=0))
    return np.concatenate([values[:1], inner, values[-1:]])


def series_at_knots(steps: np.ndarray, log_values: np.ndarray, total_steps: float) -> np.ndarray:
    """A measured log-ratio series, smoothed, at the knots of a run of `total_steps`: linear in log(1 + step).

    `steps` and `log_values` must be finite and in step order; knots outside the measured steps are NaN.
    """
    x = np.log1p(np.asarray(steps, dtype=float))
    at = np.log1p(knot_steps(total_steps))
    values = np.interp(at, x, smooth(x, log_values))
    return np.where((at >= x[0] - 1e-12) & (at <= x[-1] + 1e-12), values, np.nan)


def curve(knot_values: np.ndarray, total_steps: float, steps: np.ndarray) -> np.ndarray:
    """Log ratio at `steps` of the curve through `knot_values` (..., N_KNOTS), by PCHIP in log(1 + step)."""
    x = np.log1p(knot_steps(total_steps))
    return PchipInterpolator(x, np.asarray(knot_values, dtype=float), axis=-1, extrapolate=True)(
        np.log1p(np.asarray(steps, dtype=float))
    )


def dense_steps(total_steps: float, n: int = 120) -> np.ndarray:
    """Step 0 and `n - 1` steps spaced evenly in log(1 + step) up to `total_steps`: where curves are drawn."""
    return np.concatenate([[0.0], np.expm1(np.linspace(np.log1p(1.0), np.log1p(total_steps), n - 1))])


def describe(knot_values: np.ndarray, total_steps: float, n: int = 400) -> dict[str, np.ndarray]:
    """Identifiable descriptors of curves given by their knot values (..., N_KNOTS), in ratio units and steps.

    final: the ratio at the last step. half_rise_step: the first step where the ratio has covered half of its
    rise from step 0 to its largest value (NaN when it never rises). peak_step and peak_height: the largest value
    and its step, reported only when the curve ends at least 5 % below it (a peak before the end of training,
    else NaN).
    """
    steps = dense_steps(total_steps, n)
    ratio = np.exp(curve(knot_values, total_steps, steps))
    start, top, final = ratio[..., 0], ratio.max(axis=-1), ratio[..., -1]
    half = start + 0.5 * (top - start)
    reached = ratio >= half[..., None]
    half_step = np.where(top > start, steps[np.argmax(reached, axis=-1)], np.nan)
    peaked = final < 0.95 * top
    return {
        "final": final,
        "half_rise_step": half_step,
        "peak_step": np.where(peaked, steps[np.argmax(ratio, axis=-1)], np.nan),
        "peak_height": np.where(peaked, top, np.nan),
    }
