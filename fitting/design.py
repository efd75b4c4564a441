"""Which revision to measure next: the I-optimal criterion for Eq. 9 fits, linearised at the current fits.

The target is the curve, not the five parameters (docs/science.md §11): a design is judged by how far the
fit on its revisions is expected to lie from the fit on every revision ("the full-series fit"), in log ratio,
averaged over all steps of the schedule. Around the current fit, each fit is linear in the data:
theta_s - theta = P_s e_s, with P_s = (J_s' W J_s + R)^-1 J_s' W the least-squares response to the errors e
of the log ratio at the design's steps s. J is the Jacobian of log f (Eq. 9) by its five parameters; W = f^2
because the fit minimises squares of the ratio, not of its log; R is a ridge worth `RIDGE` average revisions
of information on each parameter (scaled by the full series' own information, so it does not depend on the
units), which keeps the inverse finite where lambda, gamma and t0 trade off (docs/science.md §11.1).

The errors e follow an `ErrorModel`: probe-sequence noise, independent from revision to revision, plus the
curve's misfit, correlated over neighbouring revisions (exp(-|i - j| / length), i and j positions in the
schedule). With misfit, a cluster of neighbouring revisions carries little more than one of them, so the
criterion spreads its picks; with noise alone it would be the classical I-optimal design, whose clusters serve the
linearisation better than the nonlinear fit, hence a floor on the misfit (MISFIT_FLOOR).

Risk of design s: the mean over the schedule's steps of Var(log f_s(t) - log f_all(t)), i.e. tr(G D C D')
with D = P_s - P_all, C the error covariance and G = mean_t g(t) g(t)'. The criterion value of a candidate
revision is the drop in risk, summed over layers, when it joins the design; adding one revision updates
(J' W J + R)^-1 by Sherman-Morrison, so every candidate is scored in one vectorised pass.
"""

from dataclasses import dataclass

import numpy as np

from fitting.curves import emergence, emergence_jacobian
from fitting.table import SERIES

RIDGE = 1.0  # prior information on each parameter, in average revisions' worth
LENGTH_FRACTION = 0.3  # misfit correlation length, as a fraction of the schedule's revisions
# Misfit assumed at least this many times the noise: a fit on few revisions moves along valleys its linearisation
# does not see, so picks that a noise-only criterion would cluster are spread (benchmarks/adaptive_fidelity.py).
MISFIT_FLOOR = 1.0
BAND_Z = 1.96  # 95 % band
N_PARAMS = 5


@dataclass(frozen=True)
class ErrorModel:
    """Errors of one layer's log ratio: `noise` (variance, independent per revision), `misfit` (variance,
    correlated as exp(-|i - j| / length) over schedule positions i, j)."""

    noise: float
    misfit: float
    length: float

    def covariance(self, n: int) -> np.ndarray:
        """The (n, n) covariance over the schedule's positions 0 ... n-1."""
        position = np.arange(n)
        distance = np.abs(position[:, None] - position[None, :])
        return self.misfit * np.exp(-distance / self.length) + self.noise * np.eye(n)


def series_and_noise(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """The ratio series (Eq. 8) per step and the variance of its log from the spread over probe sequences.

    stats: top1 ... median as arrays of shape (step, seq), as `fitting.table.layer_stats` gives. The
    variance is the delta method's for log(mean top1 / mean median): var_i(top1_i / m1 - median_i / m2) / n.
    """
    n_seq = stats["top1"].shape[1]
    ratio = SERIES["ratio"](stats, np.ones(n_seq))
    with np.errstate(divide="ignore", invalid="ignore"):
        top1 = stats["top1"] / np.nanmean(stats["top1"], axis=1, keepdims=True)
        median = stats["median"] / np.nanmean(stats["median"], axis=1, keepdims=True)
        counts = np.sum(np.isfinite(top1 - median), axis=1)
        spread = np.nanvar(top1 - median, axis=1, ddof=1) if n_seq > 1 else np.full(len(ratio), np.nan)
        return ratio, np.where(counts > 1, spread / counts, np.nan)


def log_jacobian(steps: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(d log f / d(A, lam, gamma, t0, K) of shape (n, 5), f) of Eq. 9 at the steps; f floored just above 0."""
    f = emergence(steps, **params)
    floor = 1e-6 * max(float(np.nanmax(np.abs(f))), 1e-300)
    f = np.maximum(f, floor)
    return emergence_jacobian(steps, **params) / f[:, None], f


def error_model(residuals: list[np.ndarray], noise: list[float], n_steps: int) -> list[ErrorModel]:
    """Each layer's error model from the log residuals of its current fit and its probe-sequence noise.

    A layer's total variance shrinks its own residuals towards the pool of all layers (N_PARAMS pseudo-residuals
    of the pooled variance), since a fit on a handful of revisions leaves few degrees of freedom; what exceeds
    the noise is misfit, and it is at least MISFIT_FLOOR times the noise.
    """
    sse = [float(np.nansum(r**2)) for r in residuals]
    counts = [int(np.isfinite(r).sum()) for r in residuals]
    pooled = sum(sse) / max(sum(max(n - N_PARAMS, 1) for n in counts), 1)
    length = max(1.0, LENGTH_FRACTION * n_steps)
    models = []
    for s, n, e in zip(sse, counts, noise):
        total = (s + N_PARAMS * pooled) / max(n, 1)
        e = e if np.isfinite(e) else 0.0
        models.append(ErrorModel(noise=max(e, 1e-12), misfit=max(total - e, MISFIT_FLOOR * e), length=length))
    return models


@dataclass(frozen=True)
class LayerDesign:
    """One layer, linearised at its current fit over the whole schedule: g (n, 5), f (n,), covariance (n, n)."""

    g: np.ndarray
    f: np.ndarray
    covariance: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        return self.f**2 / np.mean(self.f**2)

    def _full(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ridge R, the full-series response P_all (5, n), G)."""
        gw = self.g * self.weights[:, None]
        information = gw.T @ self.g
        ridge = RIDGE * np.diag(np.diag(information)) / len(self.f)
        return ridge, np.linalg.solve(information + ridge, gw.T), self.g.T @ self.g / len(self.f)

    def difference(self, measured: np.ndarray) -> np.ndarray:
        """D = P_s - P_all (5, n) for the design `measured` (bool over the schedule)."""
        ridge, p_all, _ = self._full()
        gw = (self.g * self.weights[:, None])[measured]
        response = np.zeros_like(p_all)
        response[:, measured] = np.linalg.pinv(gw.T @ self.g[measured] + ridge) @ gw.T
        return response - p_all

    def band(self, measured: np.ndarray) -> np.ndarray:
        """The 95 % half-width of log f_s(t) - log f_all(t) at every step: the relative band of the design's curve."""
        d = self.difference(measured)
        spread = np.einsum("ti,ij,tj->t", self.g, d @ self.covariance @ d.T, self.g)
        return BAND_Z * np.sqrt(np.maximum(spread, 0.0))

    def risks(self, measured: np.ndarray, candidates: np.ndarray) -> tuple[float, np.ndarray]:
        """(risk of the design, risk with each candidate added) for bool masks over the schedule."""
        ridge, p_all, gram = self._full()
        w, g, cov = self.weights, self.g, self.covariance
        s, c = np.flatnonzero(measured), np.flatnonzero(candidates)
        u = (g[s] * w[s][:, None]).T  # (5, n_s): the design's part of J' W
        inverse = np.linalg.pinv(u @ g[s] + ridge)
        u_cov_u = u @ cov[np.ix_(s, s)] @ u.T
        u_cov_p = u @ cov[s] @ p_all.T
        p_cov_p = p_all @ cov @ p_all.T

        def risk(
            b: np.ndarray, inner: np.ndarray, cross: np.ndarray
        ) -> np.ndarray:  # tr(G (b inner b - b cross - (b cross)' + p_cov_p)) per leading index
            cov_d = b @ inner @ b - b @ cross - np.swapaxes(b @ cross, -1, -2) + p_cov_p
            return np.einsum("ij,...ji->...", gram, cov_d)

        now = float(risk(inverse, u_cov_u, u_cov_p))
        gc, wc = g[c], w[c]
        ig = gc @ inverse
        b = (
            inverse[None]
            - wc[:, None, None] * np.einsum("ci,cj->cij", ig, ig) / (1 + wc * np.sum(ig * gc, 1))[:, None, None]
        )
        v = (u @ cov[np.ix_(s, c)]).T  # (n_c, 5)
        outer = np.einsum("ci,cj->cij", v, gc)
        inner = (
            u_cov_u[None]
            + wc[:, None, None] * (outer + np.swapaxes(outer, 1, 2))
            + (wc**2 * cov[c, c])[:, None, None] * np.einsum("ci,cj->cij", gc, gc)
        )
        cross = u_cov_p[None] + wc[:, None, None] * np.einsum("ci,cj->cij", gc, cov[c] @ p_all.T)
        return now, risk(b, inner, cross)


def layer_design(steps: np.ndarray, params: dict, model: ErrorModel) -> LayerDesign | None:
    """A layer linearised at its fit over the schedule's steps; None when the fit gives no finite Jacobian there."""
    g, f = log_jacobian(steps, params)
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(f))):
        return None
    return LayerDesign(g, f, model.covariance(len(f)))


def choose(layers: list[LayerDesign], measured: np.ndarray, candidates: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Up to k schedule positions to measure next, each with its drop in summed risk, chosen greedily.

    The linearised risk does not depend on the values still to be measured, so a batch (one Slurm round) is
    chosen by adding one pick at a time to the design. Without layers to score (no fit yet), the pick is the
    candidate farthest from every measured position.
    """
    measured, candidates = measured.copy(), candidates & ~measured
    picks = []
    for _ in range(min(k, int(candidates.sum()))):
        where = np.flatnonzero(candidates)
        if layers:
            gains = np.zeros(where.size)
            for layer in layers:
                now, after = layer.risks(measured, candidates)
                gains += now - after
            best = int(np.argmax(np.where(np.isfinite(gains), gains, -np.inf)))
            pick, value = int(where[best]), float(gains[best])
        else:
            pick, value = farthest(measured, candidates), float("nan")
        picks.append((pick, value))
        measured[pick], candidates[pick] = True, False
    return picks


def farthest(measured: np.ndarray, candidates: np.ndarray) -> int:
    """The candidate position farthest from every measured one (the lowest on a tie)."""
    where, held = np.flatnonzero(candidates), np.flatnonzero(measured)
    if not held.size:
        return int(where[0])
    return int(where[np.argmax(np.min(np.abs(where[:, None] - held[None, :]), axis=1))])
