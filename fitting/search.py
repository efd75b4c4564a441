"""Variable-projection search for curves y = a * b(t; shape) + c, used to start and steer the lmfit fits.

Every hypothesis of `fitting.model` is linear in an amplitude a and (for most) a baseline c once its shape
parameters are fixed. So a grid of shapes is scored in one pass with the least-squares a and c, and the
nonlinear search runs over the shape alone (Golub and Pereyra's variable projection). Removing a and c
removes the directions in which the full problem is worst conditioned (A against lam and t0 in Eq. 9).
Shape parameters with a positive lower bound are searched on a log scale, so that a series whose optimum
runs off towards a bound reaches it in a few steps instead of creeping.
"""

import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import least_squares

Shape = dict[str, float]  # shape parameter -> value
Bounds = dict[str, tuple[float, float]]  # shape parameter -> (low, high)
Grid = dict[str, np.ndarray]  # shape parameter -> values, all of one length
Basis = Callable[..., np.ndarray]  # basis(t, **shape)


class ShapeSearch:
    """Least squares over the shape parameters of a separable curve, a and c solved at every evaluation.

    basis(t, **shape) evaluates the curve with a = 1 and c = 0 and broadcasts over arrays of shape values;
    basis_jacobian(t, **shape), when given, returns its derivatives by the shape parameters, shape (n, p),
    and is used in Kaufman's form of the variable-projection Jacobian (finite differences otherwise);
    bounds maps each shape parameter to its (low, high) search box.
    """

    def __init__(
        self,
        basis: Basis,
        bounds: Bounds,
        t: np.ndarray,
        y: np.ndarray,
        level: bool,
        basis_jacobian: Basis | None = None,
    ) -> None:
        self.basis, self.basis_jacobian, self.names = basis, basis_jacobian, list(bounds)
        self.t, self.level = t, level
        self.y_mean = y.mean() if level else 0.0
        self.y_seen = y - self.y_mean  # what the basis must explain once c is solved for
        low, high = (np.array([bounds[n][i] for n in self.names], dtype=float) for i in (0, 1))
        self.log = low > 0
        self.lower = np.where(self.log, np.log(np.where(self.log, low, 1.0)), low)
        self.upper = np.where(self.log, np.log(high), high)

    def shape(self, u: np.ndarray) -> Shape:
        """Shape parameter values for solver coordinates u."""
        return {n: (math.exp(v) if log else v) for n, v, log in zip(self.names, u, self.log)}

    def coordinates(self, shape: Shape) -> np.ndarray:
        """Solver coordinates of shape parameter values, clipped into the search box."""
        v = np.array([shape[n] for n in self.names], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(self.log, np.log(np.where(self.log, np.abs(v), 1.0)), v)
        return np.clip(np.nan_to_num(u, nan=0.0), self.lower, self.upper)

    def _solve(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least-squares a per row of b (shape (..., n)): (a, the rows as the fit sees them, the sum of
        squares each row explains).

        With a baseline the rows are centred, which solves for c; a = 0 where a row is flat or not finite.
        """
        seen = b - b.mean(axis=-1, keepdims=True) if self.level else b
        spread = np.einsum("...i,...i->...", seen, seen)
        cross = seen @ self.y_seen
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(np.isfinite(spread) & (spread > 0) & np.isfinite(cross), cross / spread, 0.0)
        return a, seen, a * cross

    def residual(self, u: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            a, seen, _ = self._solve(self.basis(self.t, **self.shape(u)))
            return a * seen - self.y_seen

    def jacobian(self, u: np.ndarray) -> np.ndarray:
        """Kaufman's variable-projection Jacobian: a times the part of d(basis)/du outside span(basis, 1).

        Its gradient J^T r is exact, so the stationary points are those of the full problem.
        """
        assert self.basis_jacobian is not None, "jacobian needs a basis_jacobian"  # minimise uses it only then
        shape = self.shape(u)
        with np.errstate(all="ignore"):
            a, seen, _ = self._solve(self.basis(self.t, **shape))
            spread = seen @ seen
            chain = np.array([shape[n] if log else 1.0 for n, log in zip(self.names, self.log)])
            d = self.basis_jacobian(self.t, **shape) * chain
            if self.level:
                d = d - d.mean(axis=0)
            if spread > 0:
                d = d - np.outer(seen, seen @ d) / spread
            return a * d

    def best_of_grid(self, grid: Grid) -> Shape | None:
        """The grid point (dict of equal-length arrays) whose least-squares a and c fit best; None if none fits."""
        columns = {n: np.asarray(v, dtype=float)[:, None] for n, v in grid.items()}
        with np.errstate(all="ignore"):
            _, _, explained = self._solve(self.basis(self.t, **columns))  # the sum of squares each row removes
        explained = np.where(np.isfinite(explained), explained, -np.inf)
        i = int(np.argmax(explained))
        return {n: float(v[i, 0]) for n, v in columns.items()} if explained[i] > 0 else None

    def minimise(self, shape: Shape, **options: float | str) -> tuple[Shape, float]:
        """(shape, cost) after least_squares from `shape`; options go to scipy's least_squares."""
        with np.errstate(all="ignore"):
            found = least_squares(
                self.residual,
                self.coordinates(shape),
                bounds=(self.lower, self.upper),
                jac="2-point" if self.basis_jacobian is None else self.jacobian,
                **options,
            )
        return self.shape(found.x), float(found.cost)

    def coefficients(self, shape: Shape) -> tuple[float, float]:
        """(a, c) of the least-squares fit at this shape."""
        b = self.basis(self.t, **shape)
        with np.errstate(all="ignore"):
            a, _, _ = self._solve(b)
        return float(a), (float(self.y_mean - a * b.mean()) if self.level else 0.0)
