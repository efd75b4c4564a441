"""Every figure and table function, on the shipped tiny-suite data and on a synthetic family: content, not existence."""

import re

import numpy as np
import polars as pl
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from dynamics import figures
from dynamics.embedded import TINY_SUITE_CAVEAT, is_tiny_suite
from fitting.errors import UserError


def plot_axes(fig):
    """The axes that are not colorbars."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def data_lines(ax):
    """Lines that carry data (not the axvline of a peak)."""
    return [line for line in ax.get_lines() if len(np.unique(np.asarray(line.get_xdata(), dtype=float))) > 1]


def ratio_by_layer(measurements):
    """Mean top-1 / mean median per (model, layer, step), computed directly from the rows."""
    return measurements.group_by("model", "layer", "step").agg(
        (pl.col("top1").mean() / pl.col("median").mean()).alias("ratio")
    )


def deepest(measurements):
    layers = measurements.group_by("model").agg(pl.col("layer").max()).sort("layer", "model")
    return layers["model"][-1], int(layers["layer"][-1]) + 1


def caveat_shown(fig):
    return any(TINY_SUITE_CAVEAT[:40] in text.get_text().replace("\n", " ") for text in fig.texts)


def fitted(fits, model, layer):
    """1 when the Eq. 9 fit of this layer succeeded, else 0: the number of curves a panel shows."""
    return fits.filter(
        (pl.col("model") == model)
        & (pl.col("layer") == layer)
        & (pl.col("hypothesis") == "emergence")
        & pl.col("success")
    ).height


def test_fig1_overview(case):
    fig = figures.fig1_overview(case.measurements, case.fits)
    model, n_layers = deepest(case.measurements)
    n_steps = case.measurements.filter(pl.col("model") == model)["step"].n_unique()
    axes = plot_axes(fig)
    assert len(axes) == 4
    for ax in axes[:2]:  # top-1, top-2, top-3 and median per layer, at the first and at the last step
        assert [len(line.get_xdata()) for line in ax.get_lines()] == [n_layers] * 4
    for ax, layer in zip(axes[2:], (0, n_layers - 1)):  # the measured series and its Eq. 9 curve
        measured, *curves = data_lines(ax)
        assert len(measured.get_xdata()) == n_steps and np.isfinite(measured.get_ydata()).any()
        assert len(curves) == fitted(case.fits, model, layer)
    assert model in fig._suptitle.get_text()
    assert caveat_shown(fig) == is_tiny_suite(model)


def test_fig1_of_a_model_measured_at_one_step_shows_that_step_as_first_and_last(case):
    model, n_layers = deepest(case.measurements)
    part = case.measurements.filter(pl.col("model") == model)
    last = part["step"].max()
    fig = figures.fig1_overview(part.filter(pl.col("step") == last))
    first_ax, last_ax = plot_axes(fig)[:2]
    assert [len(line.get_xdata()) for line in first_ax.get_lines()] == [n_layers] * 4
    for a, b in zip(first_ax.get_lines(), last_ax.get_lines()):
        np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
    assert all(str(last) in ax.get_title() for ax in (first_ax, last_ax))


def test_the_default_model_of_equally_deep_ones_is_the_one_with_the_longest_series(case):
    model, _ = deepest(case.measurements)
    part = case.measurements.filter(pl.col("model") == model)
    single = part.filter(pl.col("step") == part["step"].max()).with_columns(model=pl.lit("zz/one-step"))
    fig = figures.fig1_overview(pl.concat([part, single]))
    assert model in fig._suptitle.get_text()


def test_fig1_without_fits_draws_the_points_only(case):
    fig = figures.fig1_overview(case.measurements)
    assert all(len(data_lines(ax)) == 1 for ax in plot_axes(fig)[2:])


def test_fig2_ratio_vs_size(case):
    fig = figures.fig2_ratio_vs_size(case.measurements, case.architectures)
    (ax,) = plot_axes(fig)
    # One pair of lines per family of models (a model alone in its family is a single point).
    largest, mean = ([line for line in ax.get_lines() if line.get_color() == color] for color in ("#D55E00", "#0072B2"))
    ratios = ratio_by_layer(case.measurements)
    last = ratios.filter(pl.col("step") == pl.col("step").max().over("model"))
    expected = (
        last.group_by("model")
        .agg(pl.col("ratio").max())
        .join(case.architectures.select("model", "n_params"), on="model")
        .sort("n_params")
    )
    x, y, y_mean = (
        np.concatenate([getattr(line, f"get_{d}data")() for line in lines])
        for d, lines in (("x", largest), ("y", largest), ("y", mean))
    )
    order = np.argsort(x, kind="stable")
    np.testing.assert_allclose(x[order], expected["n_params"].to_numpy())
    np.testing.assert_allclose(y[order], expected["ratio"].to_numpy())
    assert (y_mean <= y + 1e-12).all()
    assert ax.get_xscale() == "log"


def test_fig2_needs_parameter_counts(case):
    with pytest.raises(UserError, match="n_params"):
        figures.fig2_ratio_vs_size(case.measurements, case.architectures.head(1))


def test_fig3_layer_profiles(case):
    fig = figures.fig3_layer_profiles(case.measurements, case.architectures)
    n_models = case.measurements["model"].n_unique()
    axes = plot_axes(fig)
    assert len(axes) == min(3, n_models)
    smallest = case.architectures.filter(pl.col("model").is_in(case.measurements["model"].unique().implode()))
    assert axes[0].get_title() == smallest.sort("n_params")["model"][0].rsplit("/", 1)[-1]
    for ax in axes:
        lines = ax.get_lines()
        assert len(lines) == 4 and len({len(line.get_xdata()) for line in lines}) == 1


def test_fig4_layer_trajectories(case):
    fig = figures.fig4_layer_trajectories(case.measurements)
    model, n_layers = deepest(case.measurements)
    axes = plot_axes(fig)
    assert len(axes) == 3 and len(fig.axes) == 4  # and the layer colour bar
    for ax in axes:
        assert len(ax.get_lines()) == n_layers
        assert ax.get_xscale() == "symlog"
    top1 = max(max(line.get_ydata()) for line in axes[0].get_lines())
    expected = ratio_by_layer(case.measurements.filter(pl.col("model") == model))["ratio"].max()
    assert top1 == pytest.approx(expected)


def test_fig5_peak_heatmaps(case):
    fig = figures.fig5_peak_heatmaps(case.measurements, case.architectures)
    n_models = case.measurements["model"].n_unique()
    peak, when = plot_axes(fig)
    for ax in (peak, when):
        assert sum(isinstance(c, QuadMesh) for c in ax.collections) == n_models
    cells = np.concatenate([c.get_array().ravel() for c in peak.collections])
    ratios = ratio_by_layer(case.measurements)
    assert cells.size == ratios.select("model", "layer").n_unique()
    assert np.nanmax(cells) == pytest.approx(ratios["ratio"].max())
    steps = np.concatenate([c.get_array().ravel() for c in when.collections])
    assert set(steps) <= set(case.measurements["step"].unique().to_list())


def test_fig6_example_fits(case):
    fig = figures.fig6_example_fits(case.measurements, case.fits)
    axes = plot_axes(fig)
    assert len(axes) == 6
    by_name = {m.rsplit("/", 1)[-1]: m for m in case.measurements["model"].unique()}
    panels = [re.fullmatch(r"(\S+), layer (\d+) \((\w+)\).*", ax.get_title()).groups() for ax in axes]
    assert [where for _, _, where in panels] == ["shallow", "middle", "deep"] * 2
    assert len({name for name, _, _ in panels}) == 2
    for ax, (name, layer, _) in zip(axes, panels):
        measured, *curves = data_lines(ax)
        assert np.isfinite(measured.get_ydata()).any()
        assert len(curves) == fitted(case.fits, by_name[name], int(layer))


def test_fig7_fit_quality(case):
    fig = figures.fig7_fit_quality(case.fits)
    (ax,) = plot_axes(fig)
    eq9 = case.fits.filter((pl.col("hypothesis") == "emergence") & pl.col("success") & pl.col("r2").is_not_null())
    lines = ax.get_lines()
    assert len(lines) == case.fits["model"].n_unique()
    assert sum(len(line.get_xdata()) for line in lines) == eq9.height
    assert sorted(np.concatenate([line.get_ydata() for line in lines])) == pytest.approx(sorted(eq9["r2"]))


def test_fig8_peak_surface_overlays_the_fits(case):
    fig = figures.fig8_peak_surface(case.fits, last_step=float(case.measurements["step"].max()))
    (ax,) = plot_axes(fig)
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert (mesh.get_array().compressed() > 0).all()
    usable = case.fits.filter(
        (pl.col("hypothesis") == "emergence") & pl.col("success") & (pl.col("lam") > 0) & (pl.col("gamma") > 0)
    )
    points = [len(c.get_offsets()) for c in ax.collections if not isinstance(c, QuadMesh)]
    assert points == ([usable.height] if usable.height else [])
    assert f"t0 = {usable['t0'].median() if usable.height else 1:.3g} " in ax.get_title()


def test_fig8_masks_exactly_where_the_peak_comes_before_step_0():
    t0 = 5.0
    fig = figures.fig8_peak_surface(t0=t0)
    (ax,) = plot_axes(fig)
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    mask = np.ma.getmaskarray(mesh.get_array()).reshape(200, 200)  # rows: gamma, columns: lambda
    assert (mask == mask[:1]).all()  # the peak's x* = gamma t + t0 does not depend on gamma
    lam = np.geomspace(1e-3, 10.0, 200)
    # lam x log x increases for x > 1, so x* > t0 (a peak after step 0) exactly when lam t0 log t0 < 1.
    assert mask[0].sum() == (lam * t0 * np.log(t0) >= 1).sum() > 0
    assert "no peak after step 0" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert not caveat_shown(fig)


@pytest.mark.parametrize("function, target", [(figures.fig9_explain_K, "K"), (figures.fig10_explain_lambda, "lam")])
def test_fig9_fig10_without_shap_use_permutation_importance(function, target, predictor, family, monkeypatch):
    from dynamics.figures import explain

    monkeypatch.setattr(explain, "shap_available", lambda: False)
    fits, architectures = family
    fig = function(predictor, fits, architectures)
    importance, *partial = plot_axes(fig)
    assert len(partial) == 2
    assert len(importance.patches) == len(predictor.feature_names)
    assert "permutation importance" in fig._suptitle.get_text()
    for ax in partial:
        (curve,) = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert np.isfinite(curve.get_ydata()).all() and len(curve.get_xdata()) > 1


def test_shap_drawings_on_given_values():
    from dynamics.figures.explain import _beeswarm, _waterfall

    rng = np.random.default_rng(0)
    values, X = rng.normal(size=(12, 3)), rng.normal(size=(12, 3))
    fig = Figure()
    summary, waterfall = fig.subplots(1, 2)
    _beeswarm(fig, summary, values, X, ["a", "b", "c"], "K")
    _waterfall(waterfall, values[0], 1.0, X[0], ["a", "b", "c"], "K", "one layer")
    assert sum(len(c.get_offsets()) for c in summary.collections) == values.size
    assert len(waterfall.patches) == 3
    prediction = waterfall.get_lines()[-1].get_xdata()[0]
    assert prediction == pytest.approx(1.0 + values[0].sum())


def test_fig9_on_the_shipped_data(embedded, embedded_fits):
    """The shipped fits explain a predictor trained on them, or say why they cannot train one."""
    import warnings

    from predictors.dataset import training_table
    from predictors.regressors import EmergencePredictor
    from predictors.trained import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            table = training_table(embedded_fits, embedded.architectures)
        except UserError:
            pytest.skip("the shipped fits have no layer a predictor can learn from")
        trained = train(table, EmergencePredictor(n_estimators=10, random_state=0))
        if table.height < 5:
            with pytest.raises(UserError, match=f"give {table.height} layers to explain"):
                figures.fig9_explain_K(trained, embedded_fits, embedded.architectures)
            return
        fig = figures.fig9_explain_K(trained, embedded_fits, embedded.architectures)
    assert f"{table.height} layers" in fig._suptitle.get_text()
    assert caveat_shown(fig)


def test_table1_fit_quality(case):
    table = figures.table1_fit_quality(case.fits)
    eq9 = case.fits.filter(pl.col("hypothesis") == "emergence")
    assert table["model"].to_list() == sorted(eq9["model"].unique())
    assert table["layers"].sum() == eq9.height
    first = eq9.filter((pl.col("model") == table["model"][0]) & pl.col("success"))
    assert table["mean_r2"][0] == pytest.approx(first["r2"].mean())


def test_table5_hypotheses(case):
    table = figures.table5_hypotheses(case.fits)
    assert table.columns == ["model", *sorted(case.fits["hypothesis"].unique()), "2nd order = 1st"]
    assert table.height == case.fits["model"].n_unique()
    assert table["emergence"].to_list() == pytest.approx(figures.table1_fit_quality(case.fits)["mean_r2"].to_list())


def test_table5_needs_several_hypotheses(case):
    with pytest.raises(UserError, match="--hypotheses all"):
        figures.table5_hypotheses(case.fits.filter(pl.col("hypothesis") == "emergence"))


def test_table3_regressors(family):
    fits, architectures = family
    table = figures.table3_regressors(fits, architectures, kinds=("ridge", "random_forest"), n_estimators=10)
    assert table.height == 2 * 2 * 5
    assert set(table["protocol"]) == {"paper", "leave-one-model-out"}
    assert table["r2"].is_finite().all()
    from dynamics.figures.tables import table3_blocks

    blocks = table3_blocks(table)
    assert [title.split(":")[0] for title, _ in blocks] == ["paper", "leave-one-model-out"]
    assert all(rows.columns == ["target", "ridge", "random_forest"] and rows.height == 5 for _, rows in blocks)


def test_markdown_table():
    from dynamics.figures.tables import markdown

    text = markdown(pl.DataFrame({"model": ["a", "b"], "r2": [0.98765, None]}))
    assert text.splitlines() == ["| model | r2 |", "|---|---|", "| a | 0.9877 |", "| b | - |"]
