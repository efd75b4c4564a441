"""How well a predictor maps architecture to Eq. 9 parameters: the paper's protocol and leave-one-model-out.

Both return one row per (kind, target) with R², MAE and RMSE in the parameters' own units (after undoing the
target transforms). The paper's random split puts layers of one model on both sides, so it answers "fill in a
missing layer of a known model"; leave-one-model-out answers "what will a new architecture do".
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.base import clone
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import KFold, LeaveOneGroupOut, train_test_split

from fitting.errors import UserError
from predictors.dataset import TARGETS
from predictors.regressors import KINDS, EmergencePredictor

SCHEMA = {
    "protocol": pl.String,
    "kind": pl.String,
    "target": pl.String,
    "r2": pl.Float64,
    "mae": pl.Float64,
    "rmse": pl.Float64,
    "cv_r2_mean": pl.Float64,
    "cv_r2_std": pl.Float64,
    "n_train": pl.Int64,
    "n_test": pl.Int64,
}
# Fewest rows for a 20 % test part of at least 2 rows and a 5-fold CV on the rest.
MIN_ROWS_PAPER = 10


def paper_protocol(
    X: npt.ArrayLike,
    Y: npt.ArrayLike,
    kinds: Sequence[str] = KINDS,
    estimator: EmergencePredictor | None = None,
    random_state: int = 0,
    test_size: float = 0.2,
    cv: int = 5,
) -> pl.DataFrame:
    """Seeded random 80/20 split; test metrics of a fit on the 80 %, and the mean/std R² of `cv`-fold CV within it.

    X: features (n, 10); Y: targets (n, 5) in `TARGETS` order; `estimator` is the template whose kind is varied
    (default `EmergencePredictor()`); the paper's Table 3 is the r2 column.
    """
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    if len(X) < MIN_ROWS_PAPER:
        raise UserError(
            f"the paper protocol needs at least {MIN_ROWS_PAPER} fitted layers, got {len(X)}: fit more layers or "
            "models, or evaluate by leaving one model out alone (mdyn train --protocol lomo)"
        )
    train, test = train_test_split(np.arange(len(X)), test_size=test_size, random_state=random_state)
    folds = list(KFold(cv, shuffle=True, random_state=random_state).split(train))
    rows = []
    for kind in kinds:
        model = _template(estimator, kind)
        predicted = clone(model).fit(X[train], Y[train]).predict(X[test])
        cv_r2 = _cv_r2(model, X[train], Y[train], folds)
        for j, target in enumerate(TARGETS):
            rows.append(
                {
                    "protocol": "paper",
                    "kind": kind,
                    "target": target,
                    **_metrics(Y[test, j], predicted[:, j]),
                    "cv_r2_mean": np.nanmean(cv_r2[:, j]),
                    "cv_r2_std": np.nanstd(cv_r2[:, j]),
                    "n_train": len(train),
                    "n_test": len(test),
                }
            )
    return pl.DataFrame(rows, schema=SCHEMA)


def leave_one_model_out(
    X: npt.ArrayLike,
    Y: npt.ArrayLike,
    groups: npt.ArrayLike,
    kinds: Sequence[str] = KINDS,
    estimator: EmergencePredictor | None = None,
) -> pl.DataFrame:
    """Hold out each model in turn (LeaveOneGroupOut); metrics over the pooled held-out predictions.

    groups: the design of each row (`training_table`'s group: the seeds of one design leave together), or the
    model. n_train is the mean training-set size over the held-out groups.
    """
    X, Y, groups = np.asarray(X, dtype=float), np.asarray(Y, dtype=float), np.asarray(groups)
    n_models = len(np.unique(groups))
    if n_models < 2:
        raise UserError(f"leave-one-model-out needs fits from at least 2 models, got {n_models}: use --protocol paper")
    splits = list(LeaveOneGroupOut().split(X, Y, groups))
    rows = []
    for kind in kinds:
        model = _template(estimator, kind)
        predicted = np.empty_like(Y)
        for train, test in splits:
            predicted[test] = clone(model).fit(X[train], Y[train]).predict(X[test])
        for j, target in enumerate(TARGETS):
            rows.append(
                {
                    "protocol": "leave-one-model-out",
                    "kind": kind,
                    "target": target,
                    **_metrics(Y[:, j], predicted[:, j]),
                    "cv_r2_mean": None,
                    "cv_r2_std": None,
                    "n_train": round(np.mean([len(train) for train, _ in splits])),
                    "n_test": len(Y),
                }
            )
    return pl.DataFrame(rows, schema=SCHEMA)


def _cv_r2(
    model: EmergencePredictor, X: np.ndarray, Y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """R² per fold and target, shape (n_folds, n_targets); NaN for a fold of one test row, where R² is undefined."""
    return np.array(
        [
            r2_score(Y[test], clone(model).fit(X[train], Y[train]).predict(X[test]), multioutput="raw_values")
            if len(test) > 1
            else np.full(Y.shape[1], np.nan)
            for train, test in folds
        ]
    )


def _template(estimator: EmergencePredictor | None, kind: str) -> EmergencePredictor:
    """The estimator to evaluate for one kind; bootstrap refits only serve intervals, so none are made."""
    return clone(estimator if estimator is not None else EmergencePredictor()).set_params(kind=kind, n_bootstrap=0)


def _metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "r2": r2_score(y, predicted),
        "mae": mean_absolute_error(y, predicted),
        "rmse": root_mean_squared_error(y, predicted),
    }
