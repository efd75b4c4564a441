"""`mdyn demo` end to end on the micro preset: every stage runs and leaves its output."""

import polars as pl

from tests.cli import run_main


def test_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    code, cap = run_main(
        ["demo", "--preset", "micro", "--out", out, "--cache", tmp_path / "hub", "--threads", "1"], capsys
    )
    assert code in (0, None), cap.err
    measured = pl.read_parquet(out / "measurements.parquet")
    micro = [m for m in measured["model"].unique() if m.startswith("tiny-suite-micro/")]
    assert len(micro) == 2
    fits = pl.read_parquet(out / "fits.parquet")
    assert set(micro) <= set(fits["model"])
    prediction = pl.read_parquet(out / "prediction" / "prediction.parquet")
    assert prediction.height == 5 and {"final", "final_lo", "final_hi", "half_rise_step"} <= set(prediction.columns)
    assert (prediction["final_lo"] <= prediction["final"]).all() and (
        prediction["final"] <= prediction["final_hi"]
    ).all()
    assert (out / "predictor.skops").is_file()
    assert (out / "report.html").is_file() and (out / "figures" / "fig1_overview.png").is_file()
    assert (out / "figures" / "table1_fit_quality.md").is_file()
    assert "demo finished" in cap.out and "total" in cap.out
