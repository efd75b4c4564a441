"""The emergence curve of paper Eq. 9, its Jacobian, the Eq. 14 form, its peak time and the rival curves."""

from typing import overload

import numpy as np
import numpy.typing as npt
from scipy.special import lambertw

# A parameter: one value, or an array of values that broadcasts against t.
Value = float | np.ndarray


# With a scalar step and scalar parameters each curve returns a float (a NumPy float64), otherwise an array.
@overload
def emergence(t: float, A: float, lam: float, gamma: float, t0: float, K: float) -> float: ...
@overload
def emergence(t: npt.ArrayLike, A: Value, lam: Value, gamma: Value, t0: Value, K: Value) -> np.ndarray: ...
def emergence(t: npt.ArrayLike, A: Value, lam: Value, gamma: Value, t0: Value, K: Value) -> float | np.ndarray:
    """f(t) = A * exp(-lam * x) * log(x) + K with x = gamma * t + t0 (paper Eq. 9); t in training steps."""
    x = gamma * np.asarray(t, dtype=float) + t0
    return A * np.exp(-lam * x) * np.log(x) + K


def emergence_jacobian(t: npt.ArrayLike, A: float, lam: float, gamma: float, t0: float, K: float) -> np.ndarray:
    """Partial derivatives of Eq. 9 by (A, lam, gamma, t0, K): an array of shape (len(t), 5)."""
    t = np.asarray(t, dtype=float)
    x = gamma * t + t0
    decay = np.exp(-lam * x)
    log_x = np.log(x)
    d_x = A * decay * (1.0 / x - lam * log_x)  # Eq. 10 without the factor gamma
    return np.column_stack([decay * log_x, -A * x * decay * log_x, d_x * t, d_x, np.ones_like(t)])


@overload
def emergence_eq14(t: float, A1: float, A2: float, beta: float, tau0: float, K: float) -> float: ...
@overload
def emergence_eq14(t: npt.ArrayLike, A1: Value, A2: Value, beta: Value, tau0: Value, K: Value) -> np.ndarray: ...
def emergence_eq14(t: npt.ArrayLike, A1: Value, A2: Value, beta: Value, tau0: Value, K: Value) -> float | np.ndarray:
    """f(t) = exp(-beta * t) * (A1 * log(t + tau0) + A2) + K (paper Eq. 14), the same family as Eq. 9."""
    t = np.asarray(t, dtype=float)
    return np.exp(-beta * t) * (A1 * np.log(t + tau0) + A2) + K


def eq9_to_eq14(A: Value, lam: Value, gamma: Value, t0: Value, K: Value) -> tuple[Value, Value, Value, Value, Value]:
    """(A, lam, gamma, t0, K) of Eq. 9 -> (A1, A2, beta, tau0, K) of Eq. 14."""
    A1 = A * np.exp(-lam * t0)
    return A1, A1 * np.log(gamma), lam * gamma, t0 / gamma, K


def eq14_to_eq9(A1: Value, A2: Value, beta: Value, tau0: Value, K: Value) -> tuple[Value, Value, Value, Value, Value]:
    """(A1, A2, beta, tau0, K) of Eq. 14 -> (A, lam, gamma, t0, K) of Eq. 9; needs A1 != 0."""
    gamma = np.exp(A2 / A1)
    # lam * t0 = beta * tau0, so A follows without the round trip through gamma.
    return A1 * np.exp(beta * tau0), beta / gamma, gamma, tau0 * gamma, K


@overload
def t_peak(lam: float, gamma: float, t0: float) -> float: ...
@overload
def t_peak(lam: Value, gamma: Value, t0: Value) -> float | np.ndarray: ...
def t_peak(lam: Value, gamma: Value, t0: Value) -> float | np.ndarray:
    """Training step of the curve's extremum, solving lam * x * log(x) = 1 by Lambert W; NaN if not observable.

    x* = exp(W(1/lam)); t_peak = (x* - t0) / gamma. With lam <= 0 the curve rises forever (no peak); a peak
    before step 0 cannot be observed during training.
    """
    lam, gamma, t0 = (np.asarray(v, dtype=float) for v in (lam, gamma, t0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x_star = np.exp(lambertw(1.0 / lam).real)
        t = (x_star - t0) / gamma
    t = np.where((lam > 0) & (gamma > 0) & np.isfinite(t) & (t > 0), t, np.nan)
    return float(t) if t.ndim == 0 else t


@overload
def log_rise(t: float, A: float, gamma: float, K: float) -> float: ...
@overload
def log_rise(t: npt.ArrayLike, A: Value, gamma: Value, K: Value) -> np.ndarray: ...
def log_rise(t: npt.ArrayLike, A: Value, gamma: Value, K: Value) -> float | np.ndarray:
    """f(t) = A * log(gamma * t + 1) + K: Eq. 9 with lam = 0 (no peak) and t0 = 1, which K absorbs."""
    return A * np.log1p(gamma * np.asarray(t, dtype=float)) + K


@overload
def first_order_step(t: float, K: float, tau: float) -> float: ...
@overload
def first_order_step(t: npt.ArrayLike, K: Value, tau: Value) -> np.ndarray: ...
def first_order_step(t: npt.ArrayLike, K: Value, tau: Value) -> float | np.ndarray:
    """f(t) = K * (1 - exp(-t / tau)): the first-order step response the paper compares against (Table 5)."""
    return K * -np.expm1(-np.asarray(t, dtype=float) / tau)


@overload
def second_order_step(t: float, K: float, zeta: float, omega_n: float) -> float: ...
@overload
def second_order_step(t: npt.ArrayLike, K: Value, zeta: Value, omega_n: Value) -> np.ndarray: ...
def second_order_step(t: npt.ArrayLike, K: Value, zeta: Value, omega_n: Value) -> float | np.ndarray:
    """Unit-step response of a second-order system scaled by K (paper Table 5); omega_n in radians per step.

    f(t) = K * (1 - exp(-zeta * omega_n * t) * (c(t) + zeta * omega_n * s(t))) where, with
    q = omega_n * sqrt(|zeta^2 - 1|), c = cos(q t) and s = sin(q t) / q when under-damped (zeta < 1),
    c = 1 and s = t when critically damped, c = cosh(q t) and s = sinh(q t) / q when over-damped; the
    three branches meet continuously at zeta = 1. Broadcasts over arrays of parameters.
    """
    t = np.asarray(t, dtype=float)
    zeta, omega_n = np.asarray(zeta, dtype=float), np.asarray(omega_n, dtype=float)
    p = zeta * omega_n
    q = omega_n * np.sqrt(np.abs(zeta * zeta - 1.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        under = np.exp(-p * t) * (np.cos(q * t) + p * t * np.sinc(q * t / np.pi))
        # Over-damped: written with the slow rate p - q = omega_n^2 / (p + q) and expm1, so that it neither
        # overflows (cosh) nor cancels (zeta -> 1 or zeta >> 1).
        slow = np.exp(-(omega_n * omega_n / (p + q)) * t)
        q_safe = np.where(q > 0, q, 1.0)
        sinh_over_q = slow * np.where(q > 0, -np.expm1(-2.0 * q_safe * t) / (2.0 * q_safe), t)
        over = 0.5 * (slow + np.exp(-(p + q) * t)) + p * sinh_over_q
    return K * (1.0 - np.where(zeta < 1.0, under, over))


def second_order_peak(zeta: float, omega_n: float) -> float:
    """Time of the first overshoot peak of the second-order step response, pi / omega_d; NaN unless zeta < 1."""
    if not (0.0 <= zeta < 1.0) or omega_n <= 0:
        return float("nan")
    return float(np.pi / (omega_n * np.sqrt(1.0 - zeta * zeta)))
