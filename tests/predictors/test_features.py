import json
import math

import numpy as np
import polars as pl
import pytest

from dynamics.corpus import DATA_DIR
from fitting.contracts import Architecture, from_config, from_spec
from fitting.errors import UserError
from predictors.dataset import architectures_by_model
from predictors.features import FEATURES, layer_features

# docs/science.md §6: layers, d_model, heads, params.
PYTHIA = {
    "14m": (6, 128, 4, 14_067_712),
    "70m": (6, 512, 8, 70_426_624),
    "160m": (12, 768, 12, 162_322_944),
    "410m": (24, 1024, 16, 405_334_016),
    "1b": (16, 2048, 8, 1_011_781_632),
    "1.4b": (24, 2048, 16, 1_414_647_808),
    "2.8b": (32, 2560, 32, 2_775_208_960),
    "6.9b": (32, 4096, 32, 6_857_302_016),
    "12b": (36, 5120, 40, 11_846_072_320),
}


def test_features_follow_table_4_with_one_based_layers():
    X = layer_features(Architecture(24, 1024, 16, 4096))
    assert X.shape == (24, len(FEATURES))
    first, last = dict(zip(FEATURES, X[0])), dict(zip(FEATURES, X[-1]))
    assert first["l/L"] == pytest.approx(1 / 24) and last["l/L"] == 1.0
    assert first["(l/L)^2"] == pytest.approx(1 / 24**2) and first["(l/L)^3"] == pytest.approx(1 / 24**3)
    assert first["sqrt(l/L)"] == pytest.approx(math.sqrt(1 / 24))
    assert first["H/d"] == 16 / 1024 and first["d_ff/d"] == 4.0 and first["d/L"] == 1024 / 24
    assert first["H/L"] == 16 / 24 and first["log d"] == pytest.approx(math.log(1024))
    assert first["l*L"] == 24 and last["l*L"] == 24 * 24


def test_features_of_chosen_layers():
    arch = Architecture(6, 128, 4, 512)
    np.testing.assert_array_equal(layer_features(arch, [5, 0]), layer_features(arch)[[5, 0]])
    with pytest.raises(UserError, match="0..5"):
        layer_features(arch, [6])


def test_spec_defaults_ffn_to_four_times_hidden():
    assert from_spec(24, 1024, 16) == Architecture(24, 1024, 16, 4096)
    assert from_spec(24, 1024, 16, 2816) == Architecture(24, 1024, 16, 2816)


@pytest.mark.parametrize(
    "spec, message",
    [
        ((0, 128, 4), "n_layers must be a positive integer, got 0"),
        ((-2, 128, 4), "n_layers must be a positive integer, got -2"),
        ((4, 128, 0), "n_heads must be a positive integer"),
        ((4, 128, 3), "n_heads=3 does not divide d_model=128"),
        ((4, 128.0, 4), "d_model must be a positive integer"),
    ],
)
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        from_spec(*spec)


def test_transformers_configs_of_three_families():
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    neox = GPTNeoXConfig(num_hidden_layers=6, hidden_size=128, num_attention_heads=4, intermediate_size=512)
    llama = LlamaConfig(num_hidden_layers=4, hidden_size=256, num_attention_heads=8, intermediate_size=688)
    assert from_config(neox) == Architecture(6, 128, 4, 512)
    assert from_config(llama) == Architecture(4, 256, 8, 688)
    assert from_config(GPT2Config(n_layer=3, n_embd=96, n_head=6)) == Architecture(3, 96, 6, 384)
    assert from_config(GPT2Config(n_layer=3, n_embd=96, n_head=6, n_inner=200)) == Architecture(3, 96, 6, 200)


def test_config_json_by_file_or_folder(tmp_path):
    fields = {"num_hidden_layers": 8, "hidden_size": 256, "num_attention_heads": 8, "intermediate_size": 1024}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    assert from_config(tmp_path / "config.json") == from_config(tmp_path) == Architecture(8, 256, 8, 1024)


def test_config_json_missing_field_names_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 1024}))
    with pytest.raises(UserError, match="no hidden_size or n_embd"):
        from_config(path)
    with pytest.raises(UserError, match="no config file"):
        from_config(tmp_path / "absent.json")
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        from_config(path)


def test_shipped_architectures_are_the_nine_pythia_models():
    table = pl.read_csv(DATA_DIR / "architectures.csv")
    assert table.columns == [
        "model",
        "n_layers",
        "d_model",
        "n_heads",
        "d_ff",
        "n_params",
        "total_steps",
        "peak_lr",
        "tokens_per_step",
        "source",
    ]
    assert table["model"].to_list() == [f"EleutherAI/pythia-{size}" for size in PYTHIA]
    for row in table.iter_rows(named=True):
        layers, d, heads, params = PYTHIA[row["model"].removeprefix("EleutherAI/pythia-")]
        assert (row["n_layers"], row["d_model"], row["n_heads"], row["d_ff"], row["n_params"]) == (
            layers,
            d,
            heads,
            4 * d,
            params,
        )
        assert "docs/science.md §6" in row["source"]
        assert (row["total_steps"], row["tokens_per_step"]) == (143000, 2097152) and 1e-4 <= row["peak_lr"] <= 1e-3
    assert table["n_layers"].sum() == 188  # the paper's 188 samples
    assert len(architectures_by_model(table)) == 9
