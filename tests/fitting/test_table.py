"""The fits table: series definitions, one row per (model, layer, hypothesis), bootstrap, comparison, I/O."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fitting import table
from fitting.errors import UserError
from fitting.model import HYPOTHESES, EmergenceModel
from fitting.synthetic import paper_like_steps, synthetic_measurements
from fitting.table import (
    SCHEMA_KEY,
    compare_hypotheses,
    fit_table,
    hypothesis_summary,
    r2_summary,
    read_fits,
    series_table,
    write_fits,
)

CURVES = {
    ("pythia-a", 0): dict(A=0.19914, lam=0.12452, gamma=1.1244e-4, t0=0.62122, K=0.12193),
    ("pythia-a", 1): dict(A=50.0, lam=0.5, gamma=4e-4, t0=1.2, K=20.0),
    ("pythia-b", 0): dict(A=40.0, lam=1.0, gamma=1e-3, t0=0.1, K=60.0),
}
CONTRACT = {
    "model": pl.String,
    "layer": pl.Int32,
    "series": pl.String,
    "hypothesis": pl.String,
    **dict.fromkeys(("A", "lam", "gamma", "t0", "K"), pl.Float64),
    **{f"{name}_se": pl.Float64 for name in ("A", "lam", "gamma", "t0", "K")},
    "r2": pl.Float64,
    "aic": pl.Float64,
    "bic": pl.Float64,
    "n_points": pl.Int32,
    "success": pl.Boolean,
    "message": pl.String,
    "t_peak": pl.Float64,
}


def tiny_table():
    """Two steps, two sequences, written out by hand."""
    return pl.DataFrame(
        {
            "model": "m",
            "step": [0, 0, 10, 10],
            "seq": [0, 1, 0, 1],
            "layer": 0,
            "top1": [2.0, 4.0, 6.0, 10.0],
            "top2": [1.0, 2.0, 3.0, 3.0],
            "top3": [1.0, 1.0, 2.0, 2.0],
            "median": [1.0, 4.0, 2.0, 2.0],
        }
    )


@pytest.mark.parametrize(
    "series, expected",
    [
        ("ratio", [3.0 / 2.5, 8.0 / 2.0]),  # Eq. 8: mean top-1 / mean median
        ("ratio_mean", [(2.0 + 1.0) / 2, (3.0 + 5.0) / 2]),
        ("top1", [3.0, 8.0]),
        ("median", [2.5, 2.0]),
        ("top2_ratio", [1.5 / 2.5, 3.0 / 2.0]),
        ("top3_ratio", [1.0 / 2.5, 2.0 / 2.0]),
    ],
)
def test_series_definitions(series, expected):
    np.testing.assert_allclose(series_table(tiny_table(), series)["value"].to_numpy(), expected)


def test_series_omit_missing_values_and_average_repeated_rows():
    table = tiny_table()
    table = pl.concat(
        [
            table.with_columns(pl.when(pl.col("seq") == 1).then(float("nan")).otherwise(pl.col("top1")).alias("top1")),
            table.filter(pl.col("seq") == 0),  # the same (step, seq) again, e.g. step143000 and main
        ]
    )
    values = series_table(table, "top1")["value"].to_numpy()
    np.testing.assert_allclose(values, [2.0, 6.0])


def test_fits_table_follows_the_contract_and_recovers_the_curves():
    fits = fit_table(synthetic_measurements(CURVES, paper_like_steps()), hypotheses=[EmergenceModel])
    assert {c: fits.schema[c] for c in CONTRACT} == CONTRACT
    assert fits.height == len(CURVES)
    assert set(fits["hypothesis"]) == {"emergence"} and set(fits["series"]) == {"ratio"}
    assert fits["success"].all() and (fits["n_points"] == 37).all()
    for row in fits.iter_rows(named=True):
        truth = CURVES[(row["model"], row["layer"])]
        for name, value in truth.items():
            assert row[name] == pytest.approx(value, rel=1e-4)


def test_every_hypothesis_gets_a_row_and_alternatives_leave_eq9_columns_empty():
    measurements = synthetic_measurements({("m", 0): CURVES[("pythia-a", 1)]}, paper_like_steps())
    fits = fit_table(measurements, hypotheses=HYPOTHESES)
    assert sorted(fits["hypothesis"]) == sorted(cls.hypothesis for cls in HYPOTHESES)
    by = {row["hypothesis"]: row for row in fits.iter_rows(named=True)}
    assert by["log_rise"]["lam"] == 0.0 and by["log_rise"]["t0"] == 1.0 and by["log_rise"]["lam_se"] is None
    assert by["first_order_step"]["K"] is None and '"tau"' in by["first_order_step"]["params"]
    assert np.isnan(by["log_rise"]["t_peak"])


def test_a_layer_with_too_few_points_gets_a_failed_row():
    measurements = synthetic_measurements(CURVES, paper_like_steps())
    short = measurements.filter((pl.col("model") != "pythia-b") | (pl.col("step") <= 8))  # 5 steps left
    fits = fit_table(short, hypotheses=[EmergenceModel])
    failed = fits.filter(pl.col("model") == "pythia-b").row(0, named=True)
    assert not failed["success"] and "only 5 usable points" in failed["message"]
    assert failed["A"] is None and failed["r2"] is None
    assert fits.filter(pl.col("model") == "pythia-a")["success"].all()


def test_bootstrap_gives_intervals_around_the_estimate_and_is_reproducible():
    measurements = synthetic_measurements({("m", 0): CURVES[("pythia-a", 1)]}, paper_like_steps(), noise=0.07, seed=4)
    fits = fit_table(measurements, hypotheses=[EmergenceModel, HYPOTHESES[2]], bootstrap=12, seed=1)
    emergence = fits.filter(pl.col("hypothesis") == "emergence").row(0, named=True)
    assert emergence["n_boot"] == 12
    for name in ("A", "lam", "gamma", "t0", "K", "t_peak"):
        assert emergence[f"{name}_lo"] <= emergence[f"{name}_hi"]
    assert emergence["K_lo"] <= emergence["K"] <= emergence["K_hi"]
    assert emergence["t_peak_lo"] < emergence["t_peak"] < emergence["t_peak_hi"]
    step = fits.filter(pl.col("hypothesis") == "first_order_step").row(0, named=True)
    assert step["K_lo"] is None and step["n_boot"] is None
    again = fit_table(measurements, hypotheses=[EmergenceModel], bootstrap=12, seed=1)
    assert again["K_lo"][0] == emergence["K_lo"]


def test_two_processes_give_the_same_table_as_one(monkeypatch):
    measurements = synthetic_measurements(CURVES, paper_like_steps(), noise=0.07, seed=2)
    serial = fit_table(measurements, hypotheses=[EmergenceModel], n_jobs=1)
    monkeypatch.setattr(table, "POOL_MIN_FITS", 1)  # a pool even for three fits
    parallel = fit_table(measurements, hypotheses=[EmergenceModel], n_jobs=2)
    assert serial.equals(parallel)


CHATTER = """
import sys, threading
from fitting import table
from fitting.model import EmergenceModel
from tests.fitting.test_table import CURVES, paper_like_steps, synthetic_measurements

table.POOL_MIN_FITS = 1
measurements = synthetic_measurements(CURVES, paper_like_steps(), noise=0.07, seed=2)
serial = table.fit_table(measurements, hypotheses=[EmergenceModel], n_jobs=1)
quiet, stop = open("/dev/null", "w"), threading.Event()
sys.stderr = quiet


def chatter():  # a spinner that never stops redrawing: its stream's lock is taken most of the time
    while not stop.is_set():
        quiet.write("frame" * 100)


thread = threading.Thread(target=chatter)
thread.start()
try:
    same = all(table.fit_table(measurements, hypotheses=[EmergenceModel], n_jobs=2).equals(serial) for _ in range(5))
finally:
    stop.set()
    thread.join()
print(same)
"""


def test_workers_forked_while_another_thread_writes_still_finish():
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", CHATTER], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0 and done.stdout.split() == ["True"], done.stderr[-2000:]


def test_provenance_columns_are_carried():
    measurements = synthetic_measurements({("m", 0): CURVES[("pythia-a", 0)]}, paper_like_steps())
    measurements = measurements.with_columns(
        dtype=pl.lit("float16"), device=pl.when(pl.col("step") < 1000).then(pl.lit("cuda:0")).otherwise(pl.lit("cpu"))
    )
    row = fit_table(measurements, hypotheses=[EmergenceModel]).row(0, named=True)
    assert (row["probe_id"], row["dtype"], row["device"]) == ("synthetic", "float16", "cpu,cuda:0")


def test_bad_requests_raise_user_errors():
    with pytest.raises(UserError, match="unknown series"):
        fit_table(tiny_table(), series="top4")
    with pytest.raises(UserError, match="lacks column"):
        fit_table(tiny_table().drop("median"))


def test_fits_round_trip_with_their_schema_version(tmp_path):
    fits = fit_table(
        synthetic_measurements({("m", 0): CURVES[("pythia-a", 0)]}, paper_like_steps()), hypotheses=[EmergenceModel]
    )
    path = tmp_path / "fits.parquet"
    write_fits(fits, path)
    assert pl.read_parquet_metadata(path)[SCHEMA_KEY] == "1"
    assert read_fits(path).equals(fits)
    # A table filtered and saved again with polars loses the mark; it is judged by its columns.
    fits.filter(pl.col("layer") == 0).write_parquet(tmp_path / "plain.parquet")
    assert read_fits(tmp_path / "plain.parquet").equals(fits.filter(pl.col("layer") == 0))
    fits.write_parquet(tmp_path / "other.parquet", metadata={SCHEMA_KEY: "7"})
    with pytest.warns(UserWarning, match="schema version 7"):
        assert read_fits(tmp_path / "other.parquet").equals(fits)
    fits.drop("lam").write_parquet(tmp_path / "short.parquet")
    with pytest.raises(UserError, match=r"lacks column\(s\) lam"):
        read_fits(tmp_path / "short.parquet")


def handmade_fits():
    rows = [
        ("a", 0, "emergence", 0.99, -100.0, True),
        ("a", 0, "log_rise", 0.80, -50.0, True),
        ("a", 1, "emergence", 0.85, -90.0, True),
        ("a", 1, "log_rise", 0.95, -95.0, True),
        ("a", 2, "emergence", None, None, False),
        ("a", 2, "log_rise", 0.5, 10.0, True),
        ("b", 0, "emergence", 0.97, -10.0, True),
        ("b", 0, "log_rise", 0.2, 5.0, True),
    ]
    fits = pl.DataFrame(rows, schema=["model", "layer", "hypothesis", "r2", "aic", "success"], orient="row")
    return fits.with_columns(series=pl.lit("ratio"), bic=pl.col("aic") + 1.0)


def test_table1_analogue():
    summary = r2_summary(handmade_fits())
    assert summary.to_dicts() == [
        {"model": "a", "layers": 3, "mean_r2": pytest.approx(0.92), "layers_r2_below_0_9": 1, "failed": 1},
        {"model": "b", "layers": 1, "mean_r2": pytest.approx(0.97), "layers_r2_below_0_9": 0, "failed": 0},
    ]


def test_table5_analogue_and_per_layer_comparison():
    wide = compare_hypotheses(handmade_fits())
    assert wide.columns[:3] == ["model", "layer", "series"]
    assert {"r2_emergence", "aic_log_rise", "bic_emergence"} <= set(wide.columns)
    assert wide["best_aic"].to_list() == ["emergence", "log_rise", "log_rise", "emergence"]
    summary = {(r["hypothesis"], r["model"]): r for r in hypothesis_summary(handmade_fits()).iter_rows(named=True)}
    assert summary[("log_rise", "a")]["mean_r2"] == pytest.approx((0.80 + 0.95 + 0.5) / 3)
    assert summary[("log_rise", "a")]["layers_best_aic"] == 2
    assert summary[("emergence", "b")]["layers_best_aic"] == 1
