"""The shipped tiny-suite data (data/tiny-suite, data/tiny-suite-predict): table contracts, agreement with the
manifests, emergence, and the predict preset's design."""

import json

import numpy as np
import polars as pl
import pytest

from dynamics import store
from dynamics.corpus import DATA_DIR, corpus_hash

PRESET_FOLDERS = {"full": "tiny-suite", "predict": "tiny-suite-predict"}
DESIGN = ["n_layers", "d_model", "n_heads", "d_ff/d"]


def read(folder: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict]:
    shipped = DATA_DIR / folder
    return (
        pl.read_parquet(shipped / "measurements.parquet"),
        pl.read_parquet(shipped / "ledger.parquet"),
        pl.read_csv(shipped / "architectures.csv"),
        json.loads((shipped / "manifest.json").read_text()),
    )


@pytest.fixture(scope="module", params=sorted(PRESET_FOLDERS))
def shipped(request):
    return read(PRESET_FOLDERS[request.param])


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
    assert PRESET_FOLDERS[manifest["preset"]] == manifest["suite"]
    assert manifest["corpus"]["sha256"] == corpus_hash("train")
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


def test_the_predict_design_varies_architecture_alone():
    """One recipe, 16 architectures with uncorrelated depth, width, heads and d_ff/d, 4 of them seeded twice."""
    measurements, _, architectures, manifest = read(PRESET_FOLDERS["predict"])
    seedless = [{k: v for k, v in m["recipe"].items() if k not in ("seed", "data_seed")} for m in manifest["models"]]
    recipes = {json.dumps(recipe) for recipe in seedless}
    assert len(recipes) == 1
    design = architectures.with_columns((pl.col("d_ff") / pl.col("d_model")).alias("d_ff/d")).unique(DESIGN)
    assert design.height == manifest["design"]["architectures"] >= 16
    correlation = design.select(DESIGN).corr().to_numpy()
    assert np.abs(correlation - np.eye(4)).max() < 1e-9
    assert np.abs(correlation - np.array(manifest["design"]["correlation"])).max() < 1e-9
    seeds = architectures.group_by(DESIGN[:3], "d_ff").agg(pl.col("seed").n_unique())
    assert (seeds["seed"] == 2).sum() >= 4
    steps = measurements.group_by("model").agg(pl.col("step").n_unique())["step"]
    assert steps.min() >= 25 and steps.max() <= 35
