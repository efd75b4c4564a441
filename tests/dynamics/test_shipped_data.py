"""The shipped tiny-suite data (data/tiny-suite): table contracts, agreement with its manifest, and emergence."""

import json

import polars as pl
import pytest

from dynamics import store
from dynamics.corpus import DATA_DIR, corpus_hash

SHIPPED = DATA_DIR / "tiny-suite"


@pytest.fixture(scope="module")
def shipped():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    return (
        pl.read_parquet(SHIPPED / "measurements.parquet"),
        pl.read_parquet(SHIPPED / "ledger.parquet"),
        pl.read_csv(SHIPPED / "architectures.csv"),
        manifest,
    )


def test_tables_follow_the_contracts(shipped):
    measurements, ledger, architectures, _ = shipped
    assert measurements.schema == pl.Schema(store.MEASUREMENTS.schema)
    assert ledger.schema == pl.Schema(store.LEDGER.schema)
    assert {"model", "n_layers", "d_model", "n_heads", "d_ff", "n_params", "source"} <= set(architectures.columns)
    assert measurements.group_by("model", "revision", "seq", "layer").len()["len"].max() == 1
    assert measurements["probe_id"].n_unique() == 1 and measurements["probe_id"].null_count() == 0
    assert (measurements["n_nonfinite"] == 0).all()


def test_tables_agree_with_the_manifest(shipped):
    measurements, ledger, architectures, manifest = shipped
    assert manifest["preset"] == "full" and manifest["corpus"]["sha256"] == corpus_hash("train")
    models = {m["model"]: m for m in manifest["models"]}
    assert len(models) >= 8
    assert set(measurements["model"]) == set(models) == set(architectures["model"])
    for name, entry in models.items():
        rows = measurements.filter(pl.col("model") == name)
        assert sorted(rows["step"].unique().to_list()) == entry["schedule"]
        assert rows["layer"].n_unique() == entry["n_layers"]
        arch = architectures.filter(pl.col("model") == name).row(0, named=True)
        assert (arch["n_layers"], arch["d_model"], arch["n_heads"]) == (
            entry["n_layers"],
            entry["d_model"],
            entry["n_heads"],
        )
        assert set(rows["commit"]) <= set(entry["revisions"].values())
    assert (ledger["status"] == "ok").all() and ledger.height == measurements.select("model", "revision").n_unique()


def test_middle_layer_ratios_rise_at_least_threefold_in_half_the_models(shipped):
    """Median over middle layers (all layers when L < 3) of mean top-1 / mean median, last step vs step 0."""
    measurements, _, _, _ = shipped
    ratio = (
        measurements.group_by("model", "step", "layer")
        .agg(pl.col("top1").mean() / pl.col("median").mean())
        .rename({"top1": "ratio"})
    )
    n_layers = measurements.group_by("model").agg(pl.col("layer").max() + 1).rename({"layer": "L"})
    middle = ratio.join(n_layers, on="model").filter(
        (pl.col("L") < 3) | ((pl.col("layer") > 0) & (pl.col("layer") < pl.col("L") - 1))
    )
    ends = middle.group_by("model", "step").agg(pl.col("ratio").median()).sort("step")
    rise = ends.group_by("model").agg(pl.col("ratio").last() / pl.col("ratio").first()).rename({"ratio": "rise"})
    assert (rise["rise"] >= 3).sum() >= rise.height / 2, rise.sort("rise")
