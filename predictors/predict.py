"""Predicted Eq. 9 parameters, peak step and curve of every layer of a planned architecture, with intervals.

Intervals are the 5-95 % quantiles (for `level=0.9`) over the predictor's ensemble members: the trees of a random
forest, or refits on bootstrap resamples for the other kinds. They show how much the learned mapping varies, not
the layer-to-layer scatter of fitted parameters around it, so they are narrower than a full predictive interval.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from fitting.curves import emergence, t_peak
from fitting.errors import ExtrapolationWarning
from predictors.features import FEATURES, Architecture, layer_features
from predictors.trained import TrainedPredictor


@dataclass(frozen=True)
class Prediction:
    """`layers`: one row per layer (layer, each target with _lo/_hi, t_peak); `curves`: layer, step, value, _lo/_hi."""

    layers: pl.DataFrame
    curves: pl.DataFrame


def outside_training_range(trained: TrainedPredictor, features: np.ndarray) -> list[str]:
    """Descriptions of the features that leave the training range, e.g. 'd/L = 21.33 (trained on 32..64)'."""
    described = []
    for name, lo, hi, tmin, tmax in zip(
        FEATURES, features.min(axis=0), features.max(axis=0), trained.feature_min, trained.feature_max
    ):
        if lo < tmin or hi > tmax:
            values = f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"
            described.append(f"{name} = {values} (trained on {tmin:.4g}..{tmax:.4g})")
    return described


def predict_architecture(
    trained: TrainedPredictor, arch: Architecture, steps: int = 143_000, level: float = 0.9, n_points: int = 120
) -> Prediction:
    """Per-layer parameters with `level` intervals, t_peak, and the curve at `n_points` log-spaced steps 1..`steps`.

    Warns with `ExtrapolationWarning` when any feature lies outside the training range.
    """
    X = layer_features(arch)
    outside = outside_training_range(trained, X)
    if outside:
        warnings.warn(
            "the architecture lies outside what the predictor was trained on, so its predictions extrapolate: "
            + "; ".join(outside),
            ExtrapolationWarning,
            stacklevel=2,
        )
    point = trained.estimator.predict(X)
    members = trained.estimator.predict_members(X)
    tails = ((1.0 - level) / 2.0, (1.0 + level) / 2.0)
    low, high = np.quantile(members, tails, axis=0)
    columns = {"layer": pl.Series(np.arange(arch.n_layers), dtype=pl.Int32)}
    for j, target in enumerate(trained.targets):
        columns |= {target: point[:, j], f"{target}_lo": low[:, j], f"{target}_hi": high[:, j]}
    params = dict(zip(trained.targets, point.T))
    columns["t_peak"] = t_peak(params["lam"], params["gamma"], params["t0"])
    return Prediction(pl.DataFrame(columns), _curves(trained.targets, point, members, steps, tails, n_points))


def _curves(targets, point, members, steps, tails, n_points) -> pl.DataFrame:
    """The Eq. 9 curve of the point prediction and its band over the members' curves, long format."""
    step = np.unique(np.round(np.geomspace(1, steps, n_points)))
    # A member may put x = gamma*t + t0 at or below 0, where log is undefined; the band ignores it there.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = emergence(step[None, :], **{t: point[:, j, None] for j, t in enumerate(targets)})
        member_values = emergence(step[None, None, :], **{t: members[:, :, j, None] for j, t in enumerate(targets)})
        low, high = np.nanquantile(member_values, tails, axis=0)
    n_layers = point.shape[0]
    return pl.DataFrame(
        {
            "layer": pl.Series(np.repeat(np.arange(n_layers), step.size), dtype=pl.Int32),
            "step": np.tile(step, n_layers).astype(np.int64),
            "value": value.ravel(),
            "value_lo": low.ravel(),
            "value_hi": high.ravel(),
        }
    )
