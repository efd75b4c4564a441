"""The predicted emergence of every layer of a planned architecture: its curve with a band, and descriptors.

For a curve predictor (the default) the band is calibrated on held-out models (`predictors.bands`): on models
it did not see, the measured points fall inside a 90 % band about 90 % of the time, as `mdyn train` reports.
The descriptors (final ratio, step of half rise, peak step and height) get 5-95 % intervals from the predicted
curve plus every held-out residual curve. The Eq. 9 and Eq. 14 parameters fitted to the predicted curve are
given in the paper's vocabulary; they trade off against each other, so read the curve and descriptors first.

For a paper-target predictor (`--target paper`) intervals are the 5-95 % quantiles over the ensemble members
(the trees of a random forest, or bootstrap refits): how much the learned mapping varies, a lower bound.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from fitting.contracts import EQ9_PARAMS, Architecture
from fitting.curves import emergence, eq9_to_eq14, t_peak
from fitting.errors import ExtrapolationWarning, UserError
from predictors.bands import band, draws
from predictors.features import RECIPE_FEATURES, layer_features, recipe_features
from predictors.knots import curve, dense_steps, describe
from predictors.trained import TrainedCurvePredictor, TrainedPredictor


@dataclass(frozen=True)
class Prediction:
    """`layers`: one row per layer (a curve predictor: the descriptors with _lo/_hi and the Eq. 9 / Eq. 14
    parameters of the predicted curve; a paper predictor: each target with _lo/_hi, and t_peak); `curves`: layer,
    step, ratio, ratio_lo, ratio_hi (the predicted series, named ratio whichever series was learned)."""

    layers: pl.DataFrame
    curves: pl.DataFrame


def outside_training_range(trained: TrainedPredictor | TrainedCurvePredictor, features: np.ndarray) -> list[str]:
    """Descriptions of the features that leave the training range, e.g. 'd/L = 21.33 (trained on 32..64)'."""
    described = []
    names = trained.feature_names
    for name, lo, hi, tmin, tmax in zip(
        names, features.min(axis=0), features.max(axis=0), trained.feature_min, trained.feature_max
    ):
        if lo < tmin or hi > tmax:
            values = f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"
            described.append(f"{name} = {values} (trained on {tmin:.4g}..{tmax:.4g})")
    return described


def predict_architecture(
    trained: TrainedPredictor | TrainedCurvePredictor,
    arch: Architecture,
    steps: int = 143_000,
    level: float = 0.9,
    n_points: int = 120,
    recipe: tuple[float, float] | None = None,
) -> Prediction:
    """Every layer's predicted curve over a run of `steps` steps, with its band or intervals, and its descriptors.

    `level` is the interval of a paper-target predictor's ensemble; a curve predictor's bands and descriptor
    intervals are at the level its bands were calibrated for (`trained.level`). `recipe` (peak LR, tokens per
    step) is needed by a predictor trained with recipe features. Warns with
    `ExtrapolationWarning` when any feature lies outside the training range.
    """
    if isinstance(trained, TrainedCurvePredictor):
        return _predict_curve(trained, arch, steps, n_points, recipe)
    X = layer_features(arch)
    _warn_outside(trained, X)
    point = trained.estimator.predict(X)
    members = trained.estimator.predict_members(X)
    tails = ((1.0 - level) / 2.0, (1.0 + level) / 2.0)
    low, high = np.quantile(members, tails, axis=0)
    columns: dict[str, pl.Series | np.ndarray | float] = {"layer": pl.Series(np.arange(arch.n_layers), dtype=pl.Int32)}
    for j, target in enumerate(trained.targets):
        columns |= {target: point[:, j], f"{target}_lo": low[:, j], f"{target}_hi": high[:, j]}
    params = dict(zip(trained.targets, point.T))
    columns["t_peak"] = t_peak(params["lam"], params["gamma"], params["t0"])
    return Prediction(pl.DataFrame(columns), _curves(trained.targets, point, members, steps, tails, n_points))


def _curves(
    targets: Sequence[str],
    point: np.ndarray,
    members: np.ndarray,
    steps: int,
    tails: tuple[float, float],
    n_points: int,
) -> pl.DataFrame:
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
            "ratio": value.ravel(),
            "ratio_lo": low.ravel(),
            "ratio_hi": high.ravel(),
        }
    )


def _warn_outside(trained: TrainedPredictor | TrainedCurvePredictor, X: np.ndarray) -> None:
    outside = outside_training_range(trained, X)
    if outside:
        warnings.warn(
            "the architecture lies outside what the predictor was trained on, so its predictions extrapolate: "
            + "; ".join(outside),
            ExtrapolationWarning,
            stacklevel=3,
        )


def curve_features(
    trained: TrainedCurvePredictor, arch: Architecture, steps: int, recipe: tuple[float, float] | None
) -> np.ndarray:
    """The feature rows of every layer of `arch`, with the recipe features when the predictor uses them."""
    X = layer_features(arch)
    if not trained.uses_recipe:
        return X
    if recipe is None:
        raise UserError(
            "this predictor was trained with recipe features: give --lr and --tokens-per-step (and "
            "--steps) of the planned run"
        )
    return np.column_stack([X, np.broadcast_to(recipe_features(steps, *recipe), (len(X), len(RECIPE_FEATURES)))])


def _predict_curve(
    trained: TrainedCurvePredictor, arch: Architecture, steps: int, n_points: int, recipe: tuple[float, float] | None
) -> Prediction:
    X = curve_features(trained, arch, steps, recipe)
    _warn_outside(trained, X)
    lengths = [int(n) for n in trained.curves["total_steps"]]
    if not trained.uses_recipe and not min(lengths) <= steps <= max(lengths):
        warnings.warn(
            f"the planned {steps:,} steps lie outside the training runs' {min(lengths):,}..{max(lengths):,}: the "
            "prediction is their curve's shape stretched to this length (train with --recipe-features on runs of "
            "several lengths to learn what the length changes)",
            ExtrapolationWarning,
            stacklevel=3,
        )
    knots = trained.estimator.predict(X)
    grid = dense_steps(steps, n_points)
    low, high = band(knots, trained.widths, steps, grid)
    layers = np.arange(arch.n_layers)
    curves = pl.DataFrame(
        {
            "layer": pl.Series(np.repeat(layers, grid.size), dtype=pl.Int32),
            "step": np.tile(grid, arch.n_layers),
            "ratio": np.exp(curve(knots, steps, grid)).ravel(),
            "ratio_lo": np.exp(low).ravel(),
            "ratio_hi": np.exp(high).ravel(),
        }
    )
    tails = (50.0 * (1.0 - trained.level), 50.0 * (1.0 + trained.level))  # 5-95 % at the bands' 90 %
    columns: dict = {"layer": pl.Series(layers, dtype=pl.Int32)}
    point = describe(knots, steps)
    described = [describe(draws(k, trained.residual_curves), steps) for k in knots]  # every draw of every layer
    for name, values in point.items():
        spread = np.stack([d[name] for d in described])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a descriptor no draw has (no peak) is NaN
            lo, hi = np.nanpercentile(spread, tails, axis=1)
        columns |= {name: values, f"{name}_lo": lo, f"{name}_hi": hi}
    columns |= _paper_vocabulary(knots, steps)
    return Prediction(pl.DataFrame(columns), curves)


def _paper_vocabulary(knots: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Eq. 9 fitted to each predicted curve (A, lam, gamma, t0, K, its R² and t_peak) and the Eq. 14 combinations."""
    from fitting.model import EmergenceModel, fit_curve

    grid = dense_steps(steps, 60)
    rows = []
    for layer_knots in knots:
        fit = fit_curve(EmergenceModel(), grid, np.exp(curve(layer_knots, steps, grid)))
        params = [fit.params.get(name, np.nan) for name in EQ9_PARAMS]
        rows.append([*params, *eq9_to_eq14(*params)[:4], fit.r2, fit.t_peak])
    names = [*(f"eq9_{n}" for n in EQ9_PARAMS), "eq14_A1", "eq14_A2", "eq14_beta", "eq14_tau0", "eq9_r2", "eq9_t_peak"]
    return dict(zip(names, np.array(rows, dtype=float).T))
