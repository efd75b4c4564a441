"""The regressors: `EmergencePredictor` (features -> the five Eq. 9 parameters, one regressor per target, as in
docs/science.md §4) and `CurveRegressor` (features -> the log ratio at the knots, the default target)."""

import functools
import importlib.util
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ParamSpec, Self, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.linear_model import Lasso, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, PowerTransformer, StandardScaler
from sklearn.utils import Tags, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from fitting.errors import UserError

if TYPE_CHECKING:
    from sklearn.gaussian_process import GaussianProcessRegressor

KINDS = ("ridge", "lasso", "random_forest", "gradient_boosting", "xgboost")
# The paper's target transforms, in the order A, lam, gamma, t0, K.
PAPER_TRANSFORMS = ("log1p", "log1p", "log1p", "log1p", "yeo-johnson")
TRANSFORMS = ("log1p", "yeo-johnson")

Factory = Callable[[int, int], RegressorMixin]  # (n_estimators, seed) -> an unfitted regressor
Seed = int | np.random.RandomState | None  # scikit-learn's random_state
P = ParamSpec("P")
R = TypeVar("R")


def _ridge(n_estimators: int, seed: int) -> Ridge:
    return Ridge(alpha=1.0)


def _lasso(n_estimators: int, seed: int) -> Lasso:
    # The default alpha=1 zeroes every coefficient on log1p-scale targets of this size.
    return Lasso(alpha=0.01, max_iter=20_000)


def _random_forest(n_estimators: int, seed: int) -> RandomForestRegressor:
    return RandomForestRegressor(n_estimators=n_estimators, random_state=seed)


def _gradient_boosting(n_estimators: int, seed: int) -> GradientBoostingRegressor:
    return GradientBoostingRegressor(n_estimators=n_estimators, random_state=seed)


def _xgboost(n_estimators: int, seed: int) -> RegressorMixin:
    from xgboost import XGBRegressor

    return XGBRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=1)


def _hist_gradient_boosting(n_estimators: int, seed: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=n_estimators, random_state=seed)


_FACTORIES: dict[str, Factory] = {
    "ridge": _ridge,
    "lasso": _lasso,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    "xgboost": _xgboost,
}


def check_kind(kind: str) -> str:
    """`kind` itself if it names a regressor kind; otherwise a UserError listing the kinds."""
    if kind not in _FACTORIES:
        raise UserError(f"unknown regressor kind {kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def regressor_factory(kind: str) -> Factory:
    """The function (n_estimators, seed) -> unfitted regressor of one kind; xgboost falls back, with a warning."""
    if check_kind(kind) == "xgboost" and importlib.util.find_spec("xgboost") is None:
        warnings.warn(
            "xgboost is not installed, so kind 'xgboost' uses sklearn's HistGradientBoostingRegressor instead; "
            "install the extra (pip install 'massive-dynamics[xgboost]') for XGBoost",
            stacklevel=3,
        )
        return _hist_gradient_boosting
    return _FACTORIES[kind]


def _one_thread(method: Callable[P, R]) -> Callable[P, R]:
    """Run `method` with one OpenMP/BLAS thread: on a few hundred rows threads only add overhead, and on a busy
    2-core machine HistGradientBoosting fits were 40x slower with them."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with threadpool_limits(limits=1):
            return method(*args, **kwargs)

    return wrapper


def _target_transformer(name: str) -> FunctionTransformer | PowerTransformer:
    if name == "log1p":
        return FunctionTransformer(np.log1p, inverse_func=np.expm1, check_inverse=False)
    return PowerTransformer(method="yeo-johnson")


class EmergencePredictor(RegressorMixin, BaseEstimator):
    """Standard-scaled features -> one TransformedTargetRegressor per target column (docs/science.md §4).

    Parameters
    ----------
    kind : one of `KINDS`; 'xgboost' without the optional extra uses HistGradientBoostingRegressor.
    random_state : seed of the regressors and of the bootstrap; one seed is shared by every target, so member i
        of each target's forest or bootstrap saw the same resample.
    n_estimators : trees (forest) or boosting rounds; ignored by ridge and lasso.
    n_bootstrap : for kinds other than random_forest, the number of refits on bootstrap resamples kept for
        `predict_members` (prediction intervals); 0 keeps none.
    transforms : target transform per column of y, each 'log1p' (needs y > -1) or 'yeo-johnson'; one name
        applies to every column; None means the paper's for the columns A, lam, gamma, t0, K.
    """

    def __init__(
        self,
        kind: str = "random_forest",
        random_state: Seed = None,
        n_estimators: int = 200,
        n_bootstrap: int = 30,
        transforms: Sequence[str] | None = None,
    ) -> None:
        self.kind = kind
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.n_bootstrap = n_bootstrap
        self.transforms = transforms

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        # Only log1p constrains y; a y > 0 satisfies its y > -1.
        tags.target_tags.positive_only = self.transforms is not None and set(self.transforms) == {"log1p"}
        return tags

    @_one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> Self:
        """Fit one regressor per column of y (shape (n,) or (n, n_targets)) and, if asked, the bootstrap refits."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self.y_ndim_ = y.ndim
        Y = y.reshape(len(y), -1)
        transforms = self._resolved_transforms(Y.shape[1])
        for j, name in enumerate(transforms):
            if name == "log1p" and np.any(Y[:, j] <= -1):
                raise ValueError(f"target column {j} has values <= -1, where its log1p transform is undefined")
        make = regressor_factory(self.kind)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        self.estimators_ = _fit_targets(make, self.n_estimators, seed, transforms, X, Y)
        self.bootstrap_ = []
        if self.kind != "random_forest":
            rng = np.random.RandomState(seed)
            for _ in range(self.n_bootstrap):
                rows = rng.randint(len(X), size=len(X))
                self.bootstrap_.append(_fit_targets(make, self.n_estimators, seed, transforms, X[rows], Y[rows]))
        return self

    @_one_thread
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets, shape (n,) or (n, n_targets) like the y given to fit."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        predictions = np.column_stack([est.predict(X) for est in self.estimators_])
        return predictions if self.y_ndim_ == 2 else predictions[:, 0]

    @_one_thread
    def predict_members(self, X: np.ndarray) -> np.ndarray:
        """Predictions of every ensemble member: the forest's trees, or the bootstrap refits.

        Shape (n_members, n) or (n_members, n, n_targets); member i of every target comes from the same resample.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        if self.kind == "random_forest":
            members = np.stack([_tree_predictions(est, X) for est in self.estimators_], axis=-1)
        elif self.bootstrap_:
            members = np.stack([[est.predict(X) for est in refit] for refit in self.bootstrap_]).transpose(0, 2, 1)
        else:
            raise ValueError(f"kind {self.kind!r} has no members: fit with n_bootstrap > 0 to get them")
        return members if self.y_ndim_ == 2 else members[..., 0]

    def _resolved_transforms(self, n_targets: int) -> tuple[str, ...]:
        transforms = PAPER_TRANSFORMS if self.transforms is None else tuple(self.transforms)
        unknown = sorted(set(transforms) - set(TRANSFORMS))
        if unknown:
            raise ValueError(f"unknown target transforms {unknown}: use {' or '.join(TRANSFORMS)}")
        if len(transforms) == 1:
            return transforms * n_targets
        if len(transforms) != n_targets:
            raise ValueError(
                f"y has {n_targets} columns but there are {len(transforms)} target transforms; the default "
                f"(transforms=None) is the paper's for the five columns A, lam, gamma, t0, K"
            )
        return transforms


def _fit_targets(
    make: Factory, n_estimators: int, seed: int, transforms: Sequence[str], X: np.ndarray, Y: np.ndarray
) -> list[TransformedTargetRegressor]:
    """One fitted TransformedTargetRegressor(Pipeline(StandardScaler, regressor)) per column of Y."""
    return [
        TransformedTargetRegressor(
            regressor=Pipeline([("scale", StandardScaler()), ("model", make(n_estimators, seed))]),
            transformer=_target_transformer(name),
        ).fit(X, Y[:, j])
        for j, name in enumerate(transforms)
    ]


def _tree_predictions(target_regressor: TransformedTargetRegressor, X: np.ndarray) -> np.ndarray:
    """Every tree's prediction of one target, back in the target's units: shape (n_trees, n)."""
    pipeline = target_regressor.regressor_
    scaled = pipeline[:-1].transform(X)
    transformed = np.stack([tree.predict(scaled) for tree in pipeline[-1].estimators_])
    return target_regressor.transformer_.inverse_transform(transformed.reshape(-1, 1)).reshape(transformed.shape)


CURVE_KINDS = ("gaussian_process", "random_forest", "ridge", "gradient_boosting", "xgboost")


def _gaussian_process(n_features: int, seed: int) -> "GaussianProcessRegressor":
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    # ARD: one length scale per standardized feature, so features that do not matter get long ones.
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(n_features), (1e-2, 1e3)) + WhiteKernel(1e-2, (1e-6, 1.0))
    return GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=0, random_state=seed)


def _curve_model(kind: str, n_features: int, n_estimators: int, seed: int) -> Pipeline:
    """An unfitted multi-output regressor of one curve kind, on standardized features."""
    from sklearn.multioutput import MultiOutputRegressor

    if kind == "gaussian_process":
        model = _gaussian_process(n_features, seed)
    elif kind == "random_forest":
        # Leaves of 2 rows keep the saved forest small without changing its predictions much on a few hundred rows.
        model = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=2, random_state=seed)
    elif kind == "ridge":
        model = Ridge(alpha=1.0)
    elif kind == "gradient_boosting":
        model = MultiOutputRegressor(GradientBoostingRegressor(n_estimators=n_estimators, random_state=seed))
    else:
        make = regressor_factory("xgboost")
        model = make(n_estimators, seed)
        if make is _hist_gradient_boosting:  # the fallback is single-output
            model = MultiOutputRegressor(model)
    return Pipeline([("scale", StandardScaler()), ("model", model)])


class CurveRegressor(RegressorMixin, BaseEstimator):
    """Features -> a layer's log ratio at every knot, one joint regression (the default target).

    Knot curves are smooth, so a few principal components hold them: every kind but the Gaussian process learns
    `components` principal-component scores of the knots (fewer, better-conditioned targets, which on the shipped
    data also predict better), the Gaussian process the knots themselves (it shares one kernel across its
    outputs, which suits knots of one smoothness, not components of very different variance).

    Parameters
    ----------
    kind : one of `CURVE_KINDS`; gaussian_process is sklearn's with an ARD RBF kernel plus white noise.
    random_state : seed of the regressor.
    n_estimators : trees or boosting rounds of the tree-based kinds.
    components : principal components of the knots learned by the other kinds (at most the number of knots).
    """

    def __init__(
        self, kind: str = "gradient_boosting", random_state: Seed = None, n_estimators: int = 200, components: int = 4
    ) -> None:
        self.kind = kind
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.components = components

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @_one_thread
    def fit(self, X: np.ndarray, y: np.ndarray) -> Self:
        """Fit the regressor to y of shape (n,) or (n, n_knots)."""
        from sklearn.exceptions import ConvergenceWarning

        if self.kind not in CURVE_KINDS:
            raise ValueError(f"unknown curve regressor kind {self.kind!r}: use one of {', '.join(CURVE_KINDS)}")
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self.y_ndim_ = y.ndim
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        self.model_ = _curve_model(self.kind, X.shape[1], self.n_estimators, seed)
        Y = y.reshape(len(y), -1)
        n_components = min(self.components, *Y.shape)
        if self.kind != "gaussian_process" and n_components < Y.shape[1]:
            from sklearn.compose import TransformedTargetRegressor
            from sklearn.decomposition import PCA

            self.model_ = TransformedTargetRegressor(self.model_, transformer=PCA(n_components), check_inverse=False)
        with warnings.catch_warnings():
            # A length scale at its bound says the feature barely matters: what ARD is for, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_.fit(X, Y)
        return self

    @_one_thread
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted log ratios, shape (n,) or (n, n_knots) like the y given to fit."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        predictions = np.asarray(self.model_.predict(X)).reshape(len(X), -1)
        return predictions if self.y_ndim_ == 2 else predictions[:, 0]


def check_curve_kind(kind: str) -> str:
    """`kind` itself if it names a curve regressor kind; otherwise a UserError listing them."""
    if kind not in CURVE_KINDS:
        raise UserError(f"unknown regressor kind {kind!r} for the curve target: choose one of {', '.join(CURVE_KINDS)}")
    return kind
