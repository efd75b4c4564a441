"""The emergence curve of paper Eq. 9 and its peak time (Eqs. 10-13)."""

import numpy as np
from scipy.special import lambertw


def emergence(t, A, lam, gamma, t0, K):
    """f(t) = A * exp(-lam * x) * log(x) + K with x = gamma * t + t0 (paper Eq. 9); t in training steps."""
    x = gamma * np.asarray(t, dtype=float) + t0
    return A * np.exp(-lam * x) * np.log(x) + K


def t_peak(lam, gamma, t0):
    """Training step of the curve's extremum, solving lam * x * log(x) = 1 by Lambert W; NaN if not observable.

    x* = exp(W(1/lam)); t_peak = (x* - t0) / gamma. With lam <= 0 the curve rises forever (no peak); a peak
    before step 0 cannot be observed during training.
    """
    lam, gamma, t0 = (np.asarray(v, dtype=float) for v in (lam, gamma, t0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x_star = np.exp(lambertw(1.0 / lam).real)
        t = (x_star - t0) / gamma
    t = np.where((lam > 0) & (gamma > 0) & np.isfinite(t) & (t > 0), t, np.nan)
    return float(t) if t.ndim == 0 else t
