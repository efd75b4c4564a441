"""lmfit models of the emergence curve (Eq. 9) and its rival hypotheses, fitted in normalised units.

Every model is fitted to t / t_max and to y shifted and scaled into [0, 1] (scaled only, for curves without
a baseline). Starts spanning the model's regimes are explored by variable projection (`fitting.search`);
the best is then fitted by lmfit with `least_squares` and bounds, with the analytic Jacobian where there is
one. Parameters and standard errors are converted back to steps and to the series' own units exactly: each
conversion is affine per parameter.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmfit
import lmfit.model
import numpy as np
import numpy.typing as npt

from fitting.curves import (
    emergence,
    emergence_jacobian,
    first_order_step,
    log_rise,
    second_order_peak,
    second_order_step,
    t_peak,
)
from fitting.errors import first_line
from fitting.search import Bounds, Grid, Shape, ShapeSearch

MIN_POINTS = 6

# How a parameter changes when t is divided by t_scale and y becomes (y - y_shift) / y_scale.
AMPLITUDE, LEVEL, RATE, TIME, PURE = "amplitude", "level", "rate", "time", "pure"

# Solver tolerances. ftol stops once an iteration lowers the residual sum of squares by less than 1e-5 of
# itself: for n ~ 150 points that is a change of chi^2 below 2e-3, statistically nothing, and it stops the
# endless creep towards an optimum at infinity that noisy, weakly determined series have. Noise-free series
# still converge to machine precision (xtol, gtol), since each iteration there removes most of the residual.
TOLERANCES: dict[str, float | str] = {"ftol": 1e-5, "xtol": 1e-12, "gtol": 1e-12, "x_scale": "jac"}
EXPLORE = TOLERANCES | {"max_nfev": 15}  # each start: only the best start goes on
REFINE = TOLERANCES | {"max_nfev": 1000}
LMFIT_NFEV = 200  # the final lmfit fit starts at the optimum and stops after a few evaluations


@dataclass(frozen=True)
class CurveFit:
    """Outcome of fitting one hypothesis to one series, in training steps and the series' units.

    `stderr` is None when the covariance is unavailable; `message` then says why. `params` is empty when
    the series could not be fitted at all (too few points, constant series). `covar` is the parameters'
    covariance (lmfit's, scaled by the reduced chi-square) in the order of `params`, or None with `stderr`.
    """

    hypothesis: str
    params: dict[str, float] = field(default_factory=dict)
    stderr: dict[str, float] | None = None
    r2: float = math.nan
    aic: float = math.nan
    bic: float = math.nan
    n_points: int = 0
    success: bool = False
    message: str = ""
    t_peak: float = math.nan
    covar: np.ndarray | None = None


@dataclass(frozen=True)
class Normalisation:
    """The affine change of units t -> t / t_scale, y -> (y - y_shift) / y_scale used while fitting."""

    t_scale: float
    y_shift: float
    y_scale: float

    def factor(self, unit: str) -> float:
        """Multiplier taking a parameter of this unit (and its standard error) back to original units."""
        return {AMPLITUDE: self.y_scale, LEVEL: self.y_scale, RATE: 1.0 / self.t_scale, TIME: self.t_scale, PURE: 1.0}[
            unit
        ]

    def to_original(self, unit: str, value: float) -> float:
        return value * self.factor(unit) + (self.y_shift if unit == LEVEL else 0.0)

    def to_normalised(self, unit: str, value: float) -> float:
        return (value - (self.y_shift if unit == LEVEL else 0.0)) / self.factor(unit)


class CurveModel(lmfit.Model):
    """An lmfit Model of a curve a * shape(t) + c whose parameters declare their units.

    Subclasses set `hypothesis` (the name written to the fits table), `units` (parameter -> unit),
    `amplitude` and `level` (the names of a and c; level None for curves without a baseline),
    `shape_bounds` (the other parameters -> their (low, high) box in normalised units), `eq9_fixed` (the
    Eq. 9 parameters that a special case of Eq. 9 pins, or None for curves outside Eq. 9), and implement
    `guess` and `regimes`. The box keeps weakly determined series from running off to infinity; the lmfit
    parameter hints only state the natural bounds (for example gamma > 0).
    """

    hypothesis = ""
    units: dict[str, str] = {}
    amplitude = "A"
    level: str | None = "K"
    shape_bounds: Bounds = {}
    eq9_fixed: dict[str, float] | None = None
    jacobian: Callable[..., np.ndarray] | None = None

    def __init__(self, func: Callable[..., np.ndarray], **kws: Any) -> None:
        kws.setdefault("nan_policy", "omit")
        super().__init__(func, independent_vars=["t"], **kws)
        for name, (low, _) in self.shape_bounds.items():
            self.set_param_hint(name, min=0.0 if low == 0 else np.finfo(float).tiny)

    def _unit_coefficients(self) -> dict[str, float]:
        return {self.amplitude: 1.0} | ({self.level: 0.0} if self.level else {})

    def basis(self, t: np.ndarray, **shape: float | np.ndarray) -> np.ndarray:
        """The curve with amplitude 1 and baseline 0."""
        return self.func(t, **self._unit_coefficients(), **shape)

    def basis_jacobian(self, t: np.ndarray, **shape: float) -> np.ndarray:
        """Derivatives of `basis` by the shape parameters, shape (len(t), len(shape_bounds))."""
        assert self.jacobian is not None, f"{self.hypothesis} has no analytic Jacobian"  # _search checks first
        full = self.jacobian(t, **self._unit_coefficients(), **shape)
        return full[:, [self.param_names.index(name) for name in self.shape_bounds]]

    def regimes(self, t: np.ndarray) -> list[Grid]:
        """Grids of shape values (dicts of equal-length arrays, normalised units), one per regime of the curve."""
        return []

    def starts(self, data: np.ndarray, t: np.ndarray) -> list[Shape]:
        """Shape values to start from: the guess, then the best grid point of each regime."""
        search = self._search(t, data)
        guess = self.guess(data, t).valuesdict()
        found = [search.best_of_grid(grid) for grid in self.regimes(t)]
        return [{n: guess[n] for n in self.shape_bounds}] + [s for s in found if s is not None]

    def _search(self, t: np.ndarray, data: np.ndarray) -> ShapeSearch:
        return ShapeSearch(
            self.basis,
            self.shape_bounds,
            t,
            data,
            self.level is not None,
            None if self.jacobian is None else self.basis_jacobian,
        )

    def peak(self, values: Shape) -> float:
        """Training step of the curve's peak for these parameter values; NaN when it has none."""
        return math.nan

    def remark(self, values: Shape) -> str | None:
        """What a reader should know about these fitted values (a limit the fit ran into), or None."""
        return None

    def bounded_params(self, values: Shape) -> lmfit.Parameters:
        """Parameters at these values (normalised units), bounded by the search box."""
        params = self.make_params()
        for name, (low, high) in self.shape_bounds.items():
            params[name].set(min=low, max=high)
        for name, value in values.items():
            params[name].set(value=float(np.clip(value, params[name].min, params[name].max)))
        return params

    def _fit_kws(self) -> dict[str, object]:
        return TOLERANCES | ({"jac": self._residual_jacobian} if self.jacobian is not None else {})

    def _residual_jacobian(
        self, params: lmfit.Parameters, data: np.ndarray, weights: np.ndarray | None, t: np.ndarray
    ) -> np.ndarray:
        values = params.valuesdict()
        assert self.jacobian is not None, f"{self.hypothesis} has no analytic Jacobian"  # _fit_kws checks first
        full = self.jacobian(t, **{name: values[name] for name in self.param_names})
        varying = [i for i, name in enumerate(self.param_names) if params[name].vary]
        return -full[:, varying]  # lmfit's residual is data - model


def _grid(**axes: npt.ArrayLike) -> Grid:
    """All combinations of the given axes, as a dict of flat arrays."""
    mesh = np.meshgrid(*axes.values(), indexing="ij")
    return {name: m.ravel() for name, m in zip(axes, mesh)}


class EmergenceModel(CurveModel):
    """Paper Eq. 9, A * exp(-lam * (gamma t + t0)) * log(gamma t + t0) + K, with lam >= 0, gamma > 0, t0 > 0."""

    hypothesis = "emergence"
    units = {"A": AMPLITUDE, "lam": PURE, "gamma": RATE, "t0": PURE, "K": LEVEL}
    shape_bounds = {"lam": (0.0, 1e3), "gamma": (1e-6, 1e8), "t0": (1e-9, 1e4)}
    eq9_fixed = {}
    jacobian = staticmethod(emergence_jacobian)

    def __init__(self, **kws: Any) -> None:
        super().__init__(emergence, **kws)

    def guess(self, data: npt.ArrayLike, t: npt.ArrayLike, **kws: Any) -> lmfit.Parameters:
        """The paper's initial guess: A = range(y), K = min(y) + A / 2, lam = 1 / std(t), gamma = 1 / range(t)."""
        data, t = np.asarray(data, float), np.asarray(t, float)
        amplitude = float(np.ptp(data))
        params = self.make_params(
            A=amplitude,
            K=float(data.min()) + amplitude / 2,
            lam=1.0 / float(np.std(t)),
            gamma=1.0 / float(np.ptp(t)),
            t0=1.0,
        )
        return lmfit.models.update_param_vals(params, self.prefix, **kws)

    def regimes(self, t: np.ndarray) -> list[Grid]:
        """Slow logarithmic rise, mid-course peak, early peak then decay (three ranges of lam), each starting
        below its baseline (t0 < 1, log x < 0 at step 0) or above it."""
        gamma = np.logspace(-1.0, 5.0, 13) / float(np.ptp(t))
        return [
            _grid(lam=lams, gamma=gamma, t0=t0)
            for lams in ((1e-3, 0.01, 0.05), (0.1, 0.2, 0.5), (1.0, 2.0, 5.0))
            for t0 in ((0.03, 0.1, 0.3, 0.6), (1.0, 1.5, 2.5, 5.0))
        ]

    def peak(self, values: Shape) -> float:
        return t_peak(values["lam"], values["gamma"], values["t0"])


class LogRiseModel(CurveModel):
    """Eq. 9 with lam = 0: A * log(gamma t + 1) + K, a logarithmic rise without a peak (t0 = 1 loses nothing)."""

    hypothesis = "log_rise"
    units = {"A": AMPLITUDE, "gamma": RATE, "K": LEVEL}
    shape_bounds = {"gamma": (1e-6, 1e8)}
    eq9_fixed = {"lam": 0.0, "t0": 1.0}

    def __init__(self, **kws: Any) -> None:
        super().__init__(log_rise, **kws)

    def guess(self, data: npt.ArrayLike, t: npt.ArrayLike, **kws: Any) -> lmfit.Parameters:
        """gamma = 10 / range(t), so the data span one decade of log; A and K by linear least squares."""
        data, t = np.asarray(data, float), np.asarray(t, float)
        gamma = 10.0 / float(np.ptp(t))
        A, K = np.polyfit(np.log1p(gamma * t), data, 1)
        return lmfit.models.update_param_vals(self.make_params(A=A, gamma=gamma, K=K), self.prefix, **kws)

    def regimes(self, t: np.ndarray) -> list[Grid]:
        return [{"gamma": np.logspace(-1.0, 5.0, 13) / float(np.ptp(t))}]


class FirstOrderStepModel(CurveModel):
    """The paper's first-order step response K * (1 - exp(-t / tau)) (Table 5): no baseline, no peak."""

    hypothesis = "first_order_step"
    units = {"K": AMPLITUDE, "tau": TIME}
    amplitude, level = "K", None
    shape_bounds = {"tau": (1e-8, 1e6)}

    def __init__(self, **kws: Any) -> None:
        super().__init__(first_order_step, **kws)

    def guess(self, data: npt.ArrayLike, t: npt.ArrayLike, **kws: Any) -> lmfit.Parameters:
        """K = the last value, tau = the first step where the series reaches 63 % of it."""
        data, t = np.asarray(data, float), np.asarray(t, float)
        order = np.argsort(t)
        final = float(data[order][-1])
        reached = np.abs(data[order]) >= 0.632 * abs(final)
        tau = float(t[order][np.argmax(reached)]) or float(np.ptp(t)) / 10
        return lmfit.models.update_param_vals(self.make_params(K=final, tau=tau), self.prefix, **kws)

    def regimes(self, t: np.ndarray) -> list[Grid]:
        return [{"tau": np.logspace(-5.0, 1.0, 13) * float(np.ptp(t))}]


class SecondOrderStepModel(CurveModel):
    """The paper's second-order step response (Table 5), under-, critically or over-damped by zeta."""

    hypothesis = "second_order_step"
    units = {"K": AMPLITUDE, "zeta": PURE, "omega_n": RATE}
    amplitude, level = "K", None
    shape_bounds = {"zeta": (1e-4, 1e4), "omega_n": (1e-6, 1e8)}

    def __init__(self, **kws: Any) -> None:
        super().__init__(second_order_step, **kws)

    def guess(self, data: npt.ArrayLike, t: npt.ArrayLike, **kws: Any) -> lmfit.Parameters:
        """Critically damped, K = the last value, reaching 63 % of it where the data do."""
        step = FirstOrderStepModel().guess(data, t)
        params = self.make_params(K=step["K"].value, zeta=1.0, omega_n=2.0 / step["tau"].value)
        return lmfit.models.update_param_vals(params, self.prefix, **kws)

    def regimes(self, t: np.ndarray) -> list[Grid]:
        """Under-, critically and over-damped."""
        omega_n = np.logspace(-1.0, 5.0, 13) / float(np.ptp(t))
        return [_grid(zeta=[zeta], omega_n=omega_n) for zeta in (0.3, 1.0, 3.0)]

    def peak(self, values: Shape) -> float:
        return second_order_peak(values["zeta"], values["omega_n"])

    def remark(self, values: Shape) -> str | None:
        """Far over-damped, the response is K (1 - exp(-t / tau)) with tau = 2 zeta / omega_n: the first-order
        step, so its R² equals the first-order fit's and says nothing new."""
        zeta, omega_n = values["zeta"], values["omega_n"]
        if zeta < FIRST_ORDER_LIMIT:
            return None
        return (
            f"{FIRST_ORDER_REMARK}: zeta = {zeta:.3g}, the over-damped response is first-order with "
            f"tau = 2 zeta / omega_n = {2 * zeta / omega_n:.3g} steps"
        )


HYPOTHESES = (EmergenceModel, LogRiseModel, FirstOrderStepModel, SecondOrderStepModel)
# Over-damped by zeta, the second-order step is the first-order one plus a fast term of relative size about
# 1 / (4 zeta^2): 0.25 % at zeta = 10, nothing a series of a few dozen noisy points can tell apart.
FIRST_ORDER_LIMIT = 10.0
FIRST_ORDER_REMARK = "collapsed to the first-order limit"


def _failure(model: CurveModel, n_points: int, message: str) -> CurveFit:
    return CurveFit(hypothesis=model.hypothesis, n_points=n_points, success=False, message=message)


def fit_curve(model: CurveModel, t: npt.ArrayLike, y: npt.ArrayLike, start: Shape | None = None) -> CurveFit:
    """Fit `model` to points (t, y): multi-start, keep the lowest AIC, refine with lmfit; never raises on bad data.

    t: training steps; y: the series. Points with a non-finite value or a negative step are left out
    (lmfit's nan_policy "omit"). `start`, parameter values in original units, replaces the multi-start by
    one warm start (the bootstrap starts each resample from the full-data fit).
    """
    t, y = np.asarray(t, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if t.shape != y.shape:
        return _failure(model, 0, f"steps ({t.size}) and values ({y.size}) differ in length")
    usable: npt.NDArray[np.bool_] = np.isfinite(t) & np.isfinite(y) & (t >= 0)
    t, y = t[usable], y[usable]
    n, n_free = int(t.size), len(model.param_names)
    if n < MIN_POINTS:
        return _failure(model, n, f"only {n} usable points (finite values at steps >= 0); need {MIN_POINTS}")
    if np.unique(t).size <= n_free:
        return _failure(model, n, f"only {np.unique(t).size} distinct steps for {n_free} parameters")
    if np.ptp(y) == 0:
        return _failure(model, n, "the series is constant: no emergence to fit")
    has_level = model.level is not None
    norm = Normalisation(
        t_scale=float(t.max()),
        y_shift=float(y.min()) if has_level else 0.0,
        y_scale=float(np.ptp(y)) if has_level else float(np.abs(y).max()),
    )
    tn, yn = t / norm.t_scale, (y - norm.y_shift) / norm.y_scale

    search = model._search(tn, yn)
    if start is None:
        # All starts share n and k, so the lowest AIC is the lowest residual.
        explored, errors = [], []
        with np.errstate(all="ignore"):
            starts = model.starts(yn, tn)
        for shape in starts:
            try:
                explored.append(search.minimise(shape, **EXPLORE))
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
                errors.append(first_line(err))
        if not explored:
            return _failure(model, n, "every start failed: " + "; ".join(errors or ["no start"]))
        shape = min(explored, key=lambda found: found[1])[0]
    else:
        shape = {name: norm.to_normalised(model.units[name], start[name]) for name in model.shape_bounds}
    try:
        shape, _ = search.minimise(shape, **REFINE)
        a, c = search.coefficients(shape)
        values = shape | {model.amplitude: a} | ({model.level: c} if model.level is not None else {})
        with np.errstate(all="ignore"):
            result = model.fit(
                yn,
                model.bounded_params(values),
                t=tn,
                method="least_squares",
                max_nfev=LMFIT_NFEV,
                fit_kws=model._fit_kws(),
            )
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
        return _failure(model, n, f"the fit failed: {first_line(err)}")
    return _summarise(model, result, norm, tn, yn)


def _summarise(
    model: CurveModel, result: lmfit.model.ModelResult, norm: Normalisation, tn: np.ndarray, yn: np.ndarray
) -> CurveFit:
    """The statistics of an lmfit result, in original units."""
    n, k = int(tn.size), int(result.nvarys)
    names = model.param_names
    fitted = {name: result.params[name].value for name in names}
    values = {name: norm.to_original(model.units[name], fitted[name]) for name in names}
    sse = max(float(np.sum(result.residual**2)), 1e-250 * n) * norm.y_scale**2  # floored as lmfit does
    sst = float(np.sum((yn - yn.mean()) ** 2)) * norm.y_scale**2
    log_likelihood_term = n * math.log(sse / n)
    r2, aic, bic = 1.0 - sse / sst, log_likelihood_term + 2 * k, log_likelihood_term + k * math.log(n)
    messages = [str(result.message)]
    # Only the box's own edges: lam = 0 is the natural bound of a pure logarithmic rise, not a warning sign.
    at_edge = [
        name
        for name, (low, high) in model.shape_bounds.items()
        if any(edge > 0 and math.isclose(fitted[name], edge, rel_tol=1e-6) for edge in (low, high))
    ]
    if at_edge:
        messages.append(f"weakly determined: {', '.join(at_edge)} at the edge of the search box")
    stderr, covar = None, None
    errs = [result.params[name].stderr for name in names]
    if result.covar is None or any(e is None or not np.isfinite(e) for e in errs):
        messages.append("standard errors unavailable: the covariance matrix is singular at the optimum")
    else:
        stderr = {name: float(e) * norm.factor(model.units[name]) for name, e in zip(names, errs)}
        factors = np.array([norm.factor(model.units[name]) for name in names])
        covar = result.covar * np.outer(factors, factors)
    finite = all(np.isfinite(v) for v in (*values.values(), r2, aic, bic))
    if not finite:
        messages.append("non-finite parameters or statistics")
    elif remark := model.remark(values):
        messages.append(remark)
    return CurveFit(
        hypothesis=model.hypothesis,
        params=values,
        stderr=stderr,
        r2=r2,
        aic=aic,
        bic=bic,
        n_points=n,
        success=bool(result.success) and finite,
        message="; ".join(messages),
        t_peak=model.peak(values) if finite else math.nan,
        covar=covar,
    )
