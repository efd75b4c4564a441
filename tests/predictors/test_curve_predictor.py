"""The curve predictor (the default target): knots, held-out skill and coverage on a family with known truth,
the baseline and seed floor, persistence, and the `mdyn train` / `mdyn predict` contract."""

import warnings

import numpy as np
import polars as pl
import pytest
from synthetic_family import family_measurements

from dynamics.cli.train import DEFAULT_CURVE_KIND
from dynamics.learning import train_curves
from fitting.contracts import Architecture
from fitting.errors import ExtrapolationWarning
from fitting.table import series_table
from predictors.bands import half_widths
from predictors.dataset import curve_table
from predictors.features import FEATURES
from predictors.knots import KNOT_COLUMNS, curve, describe, knot_steps, series_at_knots
from predictors.predict import predict_architecture
from predictors.regressors import CurveRegressor
from predictors.skill import blind_baseline, hold_out, seed_floor, summarise
from predictors.trained import load, save
from tests.cli import run_main


def train_cli(capsys, measurements, architectures, n_estimators, out):
    """`mdyn train` of the default kind alone on two files; (exit code, captured output)."""
    args = ["--store", measurements, "--architectures", architectures, "--n-estimators", n_estimators, "--out", out]
    return run_main(["train", "--no-compare", *args], capsys)


@pytest.fixture(scope="module")
def synthetic():
    measurements, architectures = family_measurements()
    table, excluded = curve_table(measurements, architectures)
    return measurements, architectures, table, excluded


@pytest.fixture(scope="module")
def small(synthetic):
    """Six of the family's models: enough for the mechanics, quick to hold out one by one."""
    measurements, architectures, _, _ = synthetic
    models = architectures["model"].to_list()[:6]
    return measurements.filter(pl.col("model").is_in(models)), architectures.filter(pl.col("model").is_in(models))


@pytest.fixture(scope="module")
def heldout(synthetic):
    measurements, _, table, _ = synthetic
    estimator = CurveRegressor(DEFAULT_CURVE_KIND, random_state=0, n_estimators=100)
    return hold_out(table, series_table(measurements), FEATURES, estimator)


def test_knots_interpolate_and_rebuild_the_curve():
    steps = np.array([0, 1, 2, 4, 8, 16, 100, 500, 1000])
    log_values = np.log1p(steps) * 0.3 + 1.0  # linear in log(1 + step): the smoothing and interpolation keep it
    knots = series_at_knots(steps, log_values, 1000)
    np.testing.assert_allclose(knots[1:-1], np.log1p(knot_steps(1000))[1:-1] * 0.3 + 1.0, rtol=1e-2)
    assert np.isnan(series_at_knots(steps, log_values, 2000)[-1])  # a run longer than the data: not covered
    rebuilt = curve(knots, 1000, knot_steps(1000))
    np.testing.assert_allclose(rebuilt, knots, atol=1e-12)  # PCHIP passes through the knots
    between = curve(knots, 1000, np.linspace(0, 1000, 500))
    assert (np.diff(between) >= -1e-12).all()  # and never overshoots a monotone curve


def test_descriptors_of_a_rise_and_of_a_peak():
    total = 1024.0
    x = np.log1p(knot_steps(total))
    rise = np.log(5.0 + 15.0 / (1.0 + np.exp(-(x - np.log1p(100.0)) * 4)))
    peak = np.log(5.0 + 20.0 * np.exp(-((x - np.log1p(100.0)) ** 2)))
    got = describe(np.stack([rise, peak]), total)
    assert got["final"][0] == pytest.approx(20.0, rel=0.02) and np.isnan(got["peak_step"][0])
    assert 60 < got["half_rise_step"][0] < 160
    assert 60 < got["peak_step"][1] < 160 and got["peak_height"][1] > got["final"][1] * 1.5


def test_held_out_models_are_predicted_within_five_percent_with_calibrated_bands(synthetic, heldout):
    _, _, table, excluded = synthetic
    assert not excluded and table.height == 170
    summary = summarise(heldout, table)
    assert summary["error"] <= 0.05, summary  # median |log predicted - log measured| on unseen architectures
    assert summary["skill"] >= 0.5, summary  # against the architecture-blind baseline
    assert 0.80 <= summary["coverage"] <= 0.97, summary


def test_the_baseline_is_the_mean_curve_at_the_same_relative_depth():
    rows = []
    for model, L in (("a", 2), ("b", 4)):
        for layer in range(L):
            depth = (layer + 1) / L
            rows.append({"model": model, "l/L": depth, **{c: depth * (k + 1) for k, c in enumerate(KNOT_COLUMNS)}})
    train = pl.DataFrame(rows)
    baseline = blind_baseline(train, np.array([0.5, 0.75]))
    # Every training model's curves are linear in depth, so at depth 0.5 both give 0.5 * (k + 1).
    np.testing.assert_allclose(baseline[0], 0.5 * np.arange(1, len(KNOT_COLUMNS) + 1))
    np.testing.assert_allclose(baseline[1], 0.75 * np.arange(1, len(KNOT_COLUMNS) + 1))


def test_seed_floor_is_the_median_difference_between_seeds_of_one_design():
    table = pl.DataFrame({"model": ["a", "b", "c"], "group": ["g", "g", "h"]})
    series = pl.DataFrame(
        {
            "model": ["a", "a", "b", "b", "c", "c"],
            "layer": [0, 0, 0, 0, 0, 0],
            "step": [0, 10, 0, 10, 0, 10],
            "value": [10.0, 20.0, 10.0 * np.exp(0.1), 20.0 * np.exp(0.3), 5.0, 5.0],
        }
    )
    assert seed_floor(table, series) == pytest.approx({"median": 0.2, "mean": 0.2, "perfect": 0.2 / np.sqrt(2)})
    assert seed_floor(table.with_columns(group=pl.Series(["g", "h", "i"])), series) is None


def test_the_perfect_predictor_floor_is_what_the_expected_curve_misses_a_run_by():
    """Runs = one expected curve times log-normal noise of known size: `perfect` is the true curve's error."""
    rng = np.random.default_rng(0)
    steps, sigma = np.arange(4000), 0.15
    truth = np.log(5 + np.log1p(steps))
    runs = {name: truth + rng.normal(0, sigma, steps.size) for name in ("a", "b")}
    series = pl.concat(
        pl.DataFrame({"model": name, "layer": 0, "step": steps, "value": np.exp(run)}) for name, run in runs.items()
    )
    floor = seed_floor(pl.DataFrame({"model": ["a", "b"], "group": ["g", "g"]}), series)
    truth_error = np.median(np.abs(runs["a"] - truth))
    assert floor["perfect"] == pytest.approx(truth_error, rel=0.06)
    assert floor["median"] > 1.3 * truth_error  # the raw seed difference overstates it


def test_a_planned_run_outside_the_training_lengths_is_said_to_extrapolate(small):
    measurements, architectures = small
    training = train_curves(measurements, architectures, "ridge", ("ridge",))
    lengths = training.trained.training_curves()["total_steps"]
    inside = Architecture(4, 128, 4, 512)  # within the family's features
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict_architecture(training.trained, inside, steps=int(lengths.max()))
    assert not [w for w in caught if "training runs'" in str(w.message)]
    with pytest.warns(ExtrapolationWarning, match="outside the training runs'"):
        predict_architecture(training.trained, inside, steps=10 * int(lengths.max()))


def test_conformal_half_widths_hold_the_stated_share():
    rng = np.random.default_rng(0)
    residuals = rng.normal(0.0, 0.1, 5000)
    knots = rng.integers(0, len(KNOT_COLUMNS), 5000)
    widths = half_widths(knots, residuals, 0.9)
    fresh = rng.normal(0.0, 0.1, 5000)
    assert 0.88 <= (np.abs(fresh) <= widths[rng.integers(0, len(KNOT_COLUMNS), 5000)]).mean() <= 0.92


def test_a_saved_predictor_predicts_identical_curves(small, tmp_path):
    measurements, architectures = small
    training = train_curves(measurements, architectures, DEFAULT_CURVE_KIND, (DEFAULT_CURVE_KIND,), n_estimators=50)
    path = save(training.trained, tmp_path / "p.skops")
    assert path.stat().st_size < 5e6
    planned = Architecture(6, 256, 8, 1024)
    first = predict_architecture(training.trained, planned, steps=50_000)
    again = predict_architecture(load(path), planned, steps=50_000)
    assert first.curves.equals(again.curves) and first.layers.equals(again.layers)
    curves = first.curves
    assert curves.columns == ["layer", "step", "ratio", "ratio_lo", "ratio_hi"]
    assert (curves["ratio_lo"] > 0).all() and (curves["ratio_lo"] <= curves["ratio"]).all()
    assert (curves["ratio"] <= curves["ratio_hi"]).all() and curves["step"].max() == pytest.approx(50_000)
    for name in ("final", "half_rise_step", "peak_step", "peak_height"):
        assert {name, f"{name}_lo", f"{name}_hi"} <= set(first.layers.columns)
    assert {"eq9_A", "eq9_lam", "eq9_gamma", "eq9_t0", "eq9_K", "eq14_A1", "eq9_r2"} <= set(first.layers.columns)


@pytest.fixture(scope="module")
def synthetic_files(small, tmp_path_factory):
    measurements, architectures = small
    folder = tmp_path_factory.mktemp("synthetic")
    measurements.write_parquet(folder / "m.parquet")
    architectures.write_csv(folder / "a.csv")
    return folder


def test_train_prints_error_baseline_skill_and_coverage_and_predict_writes_the_contract(
    synthetic_files, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "100")
    code, cap = train_cli(capsys, synthetic_files / "m.parquet", synthetic_files / "a.csv", 50, tmp_path / "p.skops")
    assert code in (0, None), cap.err
    assert "Leave one model out" in cap.out and "baseline" in cap.out and "skill" in cap.out
    assert f"{DEFAULT_CURVE_KIND}: skill +" in cap.out and "held" in " ".join(cap.out.split())
    assert max(map(len, cap.out.splitlines())) <= 100
    code, cap = run_main(
        [
            "predict",
            "--predictor",
            tmp_path / "p.skops",
            "--layers",
            10,
            "--hidden",
            320,
            "--heads",
            8,
            "--out",
            tmp_path / "plan",
        ],
        capsys,
    )
    assert code in (0, None), cap.err
    assert max(map(len, cap.out.splitlines())) <= 100 and "final ratio" in cap.out
    prediction = pl.read_parquet(tmp_path / "plan" / "prediction.parquet")
    assert prediction["layer"].to_list() == list(range(10))
    assert pl.read_csv(tmp_path / "plan" / "prediction.csv").height == 10
    assert pl.read_parquet(tmp_path / "plan" / "prediction_curves.parquet").columns == [
        "layer",
        "step",
        "ratio",
        "ratio_lo",
        "ratio_hi",
    ]
    assert (tmp_path / "plan" / "prediction.png").read_bytes()[:4] == b"\x89PNG"


def test_a_family_the_architecture_does_not_explain_is_said_plainly(small, tmp_path, capsys):
    measurements, architectures = small
    # Every model gets the first model's curves, layer by relative depth: nothing left for architecture.
    same = measurements.join(architectures.select("model", "n_layers"), on="model").with_columns(
        value=((pl.col("layer") + 1) / pl.col("n_layers"))
    )
    flat = same.with_columns(top1=pl.col("median") * (10.0 + 5.0 * pl.col("value") * pl.col("step").log1p()))
    flat.drop("value", "n_layers").write_parquet(tmp_path / "m.parquet")
    architectures.write_csv(tmp_path / "a.csv")
    code, cap = train_cli(capsys, tmp_path / "m.parquet", tmp_path / "a.csv", 30, tmp_path / "p.skops")
    assert code in (0, None), cap.err
    summary = load(tmp_path / "p.skops").evaluation
    assert summary["skill"] <= 0.2  # the baseline is already right
    # The plain-words verdict is printed exactly when skill is at or below 0.
    assert ("explains little of this data's variation" in " ".join(cap.out.split())) == (summary["skill"] <= 0)


@pytest.mark.parametrize(
    "case, message",
    [
        ("one model", "training needs at least 2 models"),
        ("nan values", None),
        ("one layer each", None),
    ],
)
def test_any_measurements_train_or_say_why_in_one_line(small, tmp_path, capsys, case, message):
    measurements, architectures = small
    models = architectures["model"].to_list()
    if case == "one model":
        data = measurements.filter(pl.col("model") == models[0])
    elif case == "nan values":
        data = measurements.with_columns(top1=pl.when(pl.col("step") == 1000).then(float("nan")).otherwise("top1"))
        data = data.with_columns(median=pl.when(pl.col("step") == 2).then(float("inf")).otherwise("median"))
    else:
        data = measurements.filter(pl.col("layer") == 0)
    data.write_parquet(tmp_path / "m.parquet")
    architectures.write_csv(tmp_path / "a.csv")
    code, cap = train_cli(capsys, tmp_path / "m.parquet", tmp_path / "a.csv", 10, tmp_path / "p.skops")
    if message is None:
        assert code in (0, None), cap.err
        assert load(tmp_path / "p.skops").n_samples > 0
    else:
        lines = cap.err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0]
        assert not (tmp_path / "p.skops").exists()


def test_curve_regressor_follows_the_estimator_contract():
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(CurveRegressor("ridge"))
