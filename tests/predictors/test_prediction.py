import warnings

import numpy as np
import polars as pl
import pytest

from fitting.contracts import Architecture
from fitting.curves import emergence, t_peak
from predictors.dataset import TARGETS
from predictors.features import layer_features
from predictors.predict import ExtrapolationWarning, predict_architecture
from predictors.regressors import EmergencePredictor
from predictors.trained import train

INSIDE = Architecture(12, 512, 8, 2048)  # every feature within the synthetic family's range


def test_one_row_per_layer_with_intervals_and_peak(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prediction = predict_architecture(trained, INSIDE, steps=5000)
    layers = prediction.layers
    assert layers["layer"].to_list() == list(range(12))
    assert layers.columns == ["layer", *[f"{t}{s}" for t in TARGETS for s in ("", "_lo", "_hi")], "t_peak"]
    for t in TARGETS:
        assert (layers[f"{t}_lo"] < layers[f"{t}_hi"]).all()
    expected = t_peak(layers["lam"].to_numpy(), layers["gamma"].to_numpy(), layers["t0"].to_numpy())
    np.testing.assert_array_equal(layers["t_peak"].to_numpy(), expected)
    point = trained.estimator.predict(layer_features(INSIDE))
    np.testing.assert_array_equal(layers.select(TARGETS).to_numpy(), point)


def test_curves_follow_eq_9_with_a_band_around_them(trained):
    prediction = predict_architecture(trained, INSIDE, steps=5000, n_points=50)
    curves = prediction.curves
    steps = curves.filter(pl.col("layer") == 0)["step"].to_numpy()
    assert steps[0] == 1 and steps[-1] == 5000 and np.all(np.diff(steps) > 0)
    assert curves.height == 12 * len(steps)
    layer = prediction.layers.row(7, named=True)
    seven = curves.filter(pl.col("layer") == 7)
    np.testing.assert_allclose(seven["ratio"].to_numpy(), emergence(steps, *(layer[t] for t in TARGETS)))
    assert (curves["ratio_lo"] <= curves["ratio_hi"]).all()
    inside = ((curves["ratio_lo"] <= curves["ratio"]) & (curves["ratio"] <= curves["ratio_hi"])).mean()
    assert inside > 0.8


def test_extrapolation_warns_and_names_the_features(trained):
    with pytest.warns(ExtrapolationWarning, match=r"d/L = 2048 \(trained on 32..64\)") as caught:
        predict_architecture(trained, Architecture(2, 4096, 32, 16384))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "log d = 8.318 (trained on 4.852..6.931)" in message and "l*L = 2..4 (trained on 4..576)" in message
    assert "H/d" not in message and "l/L" not in message


def test_bootstrap_kinds_give_intervals_too(table):
    trained = train(table, EmergencePredictor(kind="ridge", n_bootstrap=20, random_state=0))
    layers = predict_architecture(trained, INSIDE).layers
    assert layers.height == 12 and (layers["K_lo"] < layers["K"]).all() and (layers["K"] < layers["K_hi"]).all()


def test_figure_draws_one_curve_and_band_per_layer_on_a_log_step_axis(trained):
    from matplotlib.collections import FillBetweenPolyCollection

    from predictors.plot import prediction_figure

    fig = prediction_figure(predict_architecture(trained, INSIDE, steps=5000), "ratio", "plan")
    ax, colorbar = fig.axes
    assert len(ax.get_lines()) == 12 and all(len(line.get_xdata()) > 10 for line in ax.get_lines())
    assert sum(isinstance(c, FillBetweenPolyCollection) for c in ax.collections) == 12
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("training step")
    assert "top-1 / mean median" in ax.get_ylabel() and ax.get_title().startswith("plan")
    assert colorbar.get_ylabel() == "layer (0-based decoder block)"
    colours = {line.get_color() for line in ax.get_lines()}
    assert len(colours) == 12
