"""What a trained predictor's K (Fig 9) and λ (Fig 10) depend on: SHAP when installed, else permutation
importance and partial dependence (scikit-learn), always computed on the predictor's training rows."""

import importlib.util

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from threadpoolctl import threadpool_limits

from dynamics.figures.style import PALETTE, SEQUENTIAL, new_figure, note_tiny_suite
from fitting.errors import UserError

TARGET_LABELS = {
    "A": "A, amplitude (series units)",
    "lam": "λ, decay rate (dimensionless)",
    "gamma": "γ, time scaling (per step)",
    "t0": "t0, time offset (dimensionless)",
    "K": "K, baseline (series units)",
}
N_PARTIAL = 2  # partial-dependence panels: the most important features
MIN_ROWS = 5  # fewer rows explain nothing: one shuffle moves a large share of them


def shap_available() -> bool:
    """True when the optional `shap` extra is installed."""
    return importlib.util.find_spec("shap") is not None


def fig9_explain_K(
    trained, fits: pl.DataFrame, architectures: pl.DataFrame, series: str = "ratio", n_estimators: int = 200
):
    """Fig 9: what the predicted K depends on; with SHAP, a summary and the waterfall of one layer."""
    return explanation_figure(
        paper_predictor(trained, fits, architectures, series, n_estimators),
        fits,
        architectures,
        "K",
        "Fig 9",
        waterfall=True,
    )


def fig10_explain_lambda(
    trained, fits: pl.DataFrame, architectures: pl.DataFrame, series: str = "ratio", n_estimators: int = 200
):
    """Fig 10: what the predicted λ depends on; with SHAP, its summary."""
    return explanation_figure(
        paper_predictor(trained, fits, architectures, series, n_estimators),
        fits,
        architectures,
        "lam",
        "Fig 10",
        waterfall=False,
    )


def paper_predictor(trained, fits: pl.DataFrame, architectures: pl.DataFrame, series: str, n_estimators: int):
    """`trained` when it learned the paper's targets (`mdyn train --target paper`); else a random forest on the
    paper's targets trained here from the fits, as the paper's SHAP analysis explains one."""
    from predictors.dataset import training_table
    from predictors.regressors import EmergencePredictor
    from predictors.trained import TrainedPredictor, train

    if isinstance(trained, TrainedPredictor):
        return trained
    table = training_table(fits, architectures, series)
    return train(table, EmergencePredictor(kind="random_forest", random_state=0, n_estimators=n_estimators))


def explanation_figure(trained, fits, architectures, target, name, waterfall, use_shap=None):
    """SHAP summary (and waterfall) of one target, or permutation importance plus partial dependence without SHAP.

    The rows explained are the training table of `fits` and `architectures` for the predictor's series; the
    title says when they differ from the rows the predictor was trained on (by data hash). `trained` is a
    `predictors.trained.TrainedPredictor`.
    """
    # predictors loads skops (and with it torch): about 2 s that only the predictor-based items need.
    from predictors.dataset import table_hash, training_table

    table = training_table(fits, architectures, trained.series)
    if table.height < MIN_ROWS:
        raise UserError(
            f"the fits give {table.height} layers to explain the predictor on, fewer than {MIN_ROWS}: fit more models"
        )
    X = table.select(trained.feature_names).to_numpy()
    j = trained.targets.index(target)
    regressor = trained.estimator.estimators_[j]
    names = list(trained.feature_names)
    same = table_hash(table) == trained.data_hash
    rows = f"{table.height} layers of {table['model'].n_unique()} models" + (
        "" if same else ", not the predictor's training rows"
    )
    use_shap = shap_available() if use_shap is None else use_shap
    with threadpool_limits(limits=1):
        if use_shap:
            fig = _shap_figure(regressor, X, names, table, target, waterfall)
            method = "SHAP"
        else:
            fig = _sklearn_figure(regressor, X, table[target].to_numpy(), names, target)
            method = "permutation importance + partial dependence (SHAP not installed)"
    fig.suptitle(
        f"{name}: what the predicted {TARGET_LABELS[target].split(',')[0]} depends on: {method}\n"
        f"{trained.kind} predictor, series {trained.series}; {rows}",
        fontsize=10,
    )
    note_tiny_suite(fig, table["model"].unique().to_list())
    return fig


def _sklearn_figure(regressor, X, y, names, target):
    """Permutation importance (R² drop) of every feature and partial dependence on the most important ones."""
    from sklearn.inspection import partial_dependence, permutation_importance

    result = permutation_importance(regressor, X, y, n_repeats=10, random_state=0, scoring="r2")
    order = np.argsort(result.importances_mean)
    fig = new_figure(12, 4.6)
    grid = fig.add_gridspec(1, 1 + N_PARTIAL, width_ratios=[1.4] + [1] * N_PARTIAL)
    ax = fig.add_subplot(grid[0])
    ax.barh(
        np.arange(len(names)),
        result.importances_mean[order],
        xerr=result.importances_std[order],
        color=PALETTE[3],
        ecolor="0.3",
    )
    ax.set_yticks(np.arange(len(names)), [names[i] for i in order])
    ax.set_xlabel(f"drop in R² of {target} when the feature is shuffled")
    ax.set_title("permutation importance (10 shuffles)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    for k, feature in enumerate(order[::-1][:N_PARTIAL]):
        ax = fig.add_subplot(grid[1 + k])
        dependence = partial_dependence(regressor, X, [feature], grid_resolution=30, kind="average")
        ax.plot(dependence["grid_values"][0], dependence["average"][0], color=PALETTE[4], lw=1.8)
        ax.plot(
            X[:, feature],
            np.full(len(X), np.min(dependence["average"][0])),
            "|",
            color="0.3",
            ms=8,
            label="training rows",
        )
        ax.set_xlabel(f"{names[feature]} (feature value)")
        ax.set_ylabel(f"mean predicted {TARGET_LABELS[target]}", fontsize=8)
        ax.set_title(f"partial dependence on {names[feature]}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _shap_figure(regressor, X, names, table, target, waterfall):
    """A SHAP summary (beeswarm) and, if asked, the waterfall of the layer with the largest prediction."""
    import shap

    explanation = shap.Explainer(regressor.predict, shap.maskers.Independent(X, max_samples=100), feature_names=names)(
        X
    )
    values, base = np.asarray(explanation.values), np.asarray(explanation.base_values).reshape(-1)
    fig = new_figure(12 if waterfall else 7.5, 5)
    axes = fig.subplots(1, 2 if waterfall else 1, squeeze=False)[0]
    _beeswarm(fig, axes[0], values, X, names, target)
    if waterfall:
        row = int(np.argmax(values.sum(axis=1) + base))
        title = f"{table['model'][row]} layer {table['layer'][row]}"
        _waterfall(axes[1], values[row], base[row], X[row], names, target, title)
    return fig


def _beeswarm(fig, ax, values, X, names, target):
    """SHAP value of every row per feature, features ordered by mean |SHAP|, coloured by the feature's value."""
    order = np.argsort(np.abs(values).mean(axis=0))
    rng = np.random.default_rng(0)
    cmap = colormaps[SEQUENTIAL]
    for rank, feature in enumerate(order):
        column = X[:, feature]
        span = np.ptp(column)
        colour = (column - column.min()) / span if span > 0 else np.full(len(column), 0.5)
        ax.scatter(values[:, feature], rank + rng.uniform(-0.25, 0.25, len(column)), c=cmap(colour), s=12)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(np.arange(len(order)), [names[i] for i in order])
    ax.set_xlabel(f"SHAP value: contribution to the predicted {TARGET_LABELS[target]}", fontsize=8)
    ax.set_title("SHAP summary", fontsize=9)
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, ticks=[0, 1]).set_label(
        "feature value (low to high)", fontsize=8
    )


def _waterfall(ax, contributions, base, x, names, target, title):
    """Bars from the expected prediction to this row's prediction, largest contributions first."""
    order = np.argsort(np.abs(contributions))[::-1]
    position = base
    for rank, feature in enumerate(order):
        value = contributions[feature]
        ax.barh(rank, value, left=position, color=PALETTE[4] if value > 0 else PALETTE[3])
        position += value
    ax.set_yticks(np.arange(len(order)), [f"{names[i]} = {x[i]:.3g}" for i in order], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(base, color="0.5", lw=0.8, ls="--", label=f"expected value {base:.3g}")
    ax.axvline(position, color="0.1", lw=0.8, label=f"prediction {position:.3g}")
    ax.set_xlabel(f"predicted {TARGET_LABELS[target]}", fontsize=8)
    ax.set_title(f"SHAP waterfall: {title}", fontsize=9)
    ax.legend(fontsize=7)
