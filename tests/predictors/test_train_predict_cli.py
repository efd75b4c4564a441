"""`mdyn train` and `mdyn predict` through the console-script entry point, as a user runs them."""

import json
import sys

import polars as pl
import pytest

from dynamics.cli.app import main
from predictors.dataset import TARGETS
from predictors.trained import load


def mdyn(monkeypatch, capsys, *args):
    """Run `mdyn ARGS`; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mdyn", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def inputs(family, tmp_path_factory):
    fits, architectures = family
    folder = tmp_path_factory.mktemp("inputs")
    fits.write_parquet(folder / "fits.parquet")
    architectures.write_csv(folder / "architectures.csv")
    return folder


def test_train_prints_both_protocols_and_saves(monkeypatch, capsys, inputs, tmp_path):
    out = tmp_path / "predictor.skops"
    code, stdout, stderr = mdyn(
        monkeypatch,
        capsys,
        "train",
        "--target",
        "paper",
        "--fits",
        inputs / "fits.parquet",
        "--architectures",
        inputs / "architectures.csv",
        "--no-compare",
        "--n-estimators",
        20,
        "--out",
        out,
    )
    assert (code, stderr) == (0, "")
    assert "Training on 170 layers of 14 models" in stdout
    assert "Paper protocol" in stdout and "Leave one model out" in stdout
    assert sum(line.startswith("│ random_forest ") for line in stdout.splitlines()) == 2 * len(TARGETS)
    trained = load(out)
    assert (trained.kind, trained.series, trained.n_samples) == ("random_forest", "ratio", 170)


def test_predict_writes_a_table_and_a_figure(monkeypatch, capsys, predictor_file, tmp_path):
    code, stdout, stderr = mdyn(
        monkeypatch,
        capsys,
        "predict",
        "--predictor",
        predictor_file,
        "--layers",
        24,
        "--hidden",
        1024,
        "--heads",
        16,
        "--steps",
        20000,
        "--out",
        tmp_path,
    )
    assert (code, stderr) == (0, "")
    assert "L=24, d=1024, H=16, d_ff=4096" in stdout
    table = pl.read_parquet(tmp_path / "prediction.parquet")
    assert table["layer"].to_list() == list(range(24))
    assert {f"{t}{s}" for t in TARGETS for s in ("", "_lo", "_hi")} <= set(table.columns) and "t_peak" in table.columns
    assert pl.read_csv(tmp_path / "prediction.csv").height == 24
    assert pl.read_parquet(tmp_path / "prediction_curves.parquet")["step"].max() == 20000
    assert (tmp_path / "prediction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_from_config_json_warns_when_extrapolating(monkeypatch, capsys, predictor_file, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {"num_hidden_layers": 40, "hidden_size": 4096, "num_attention_heads": 32, "intermediate_size": 11008}
        )
    )
    code, stdout, stderr = mdyn(monkeypatch, capsys, "predict", "--predictor", predictor_file, "--config", config)
    assert code == 0 and "L=40, d=4096, H=32, d_ff=11008" in stdout
    assert stderr.startswith("mdyn: warning: the architecture lies outside what the predictor was trained on")
    assert len(stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("--layers", 0, "--hidden", 128, "--heads", 4), "n_layers must be a positive integer, got 0"),
        (("--layers", 4, "--hidden", 128, "--heads", 3), "n_heads=3 does not divide d_model=128"),
        (("--layers", 4, "--hidden", 128), "missing --heads"),
        (("--config", "CONFIG", "--layers", 4), "either --config or --layers"),
        (
            (
                "--config",
                "CONFIG",
            ),
            "has no num_attention_heads or n_head",
        ),
        (("--layers", 4, "--hidden", 128, "--heads", 4, "--steps", 0), "--steps must be a positive"),
    ],
)
def test_bad_architectures_give_one_line_and_status_2(monkeypatch, capsys, predictor_file, tmp_path, args, message):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 128, "intermediate_size": 512}))
    args = [config if a == "CONFIG" else a for a in args]
    code, stdout, stderr = mdyn(monkeypatch, capsys, "predict", "--predictor", predictor_file, *args)
    assert code == 2 and stdout == ""
    assert stderr.startswith("mdyn: error: ") and message in stderr and len(stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("--kind", "svm"), "unknown regressor kind 'svm'"),
        (("--protocol", "kfold"), "unknown protocol 'kfold'"),
        (("--series", "top9"), "no series 'top9'"),
    ],
)
def test_bad_training_options_give_one_line_and_status_2(monkeypatch, capsys, inputs, tmp_path, args, message):
    code, _, stderr = mdyn(
        monkeypatch,
        capsys,
        "train",
        "--target",
        "paper",
        "--fits",
        inputs / "fits.parquet",
        "--architectures",
        inputs / "architectures.csv",
        "--out",
        tmp_path / "p.skops",
        *args,
    )
    assert code == 2 and stderr.startswith("mdyn: error: ") and message in stderr
    assert len(stderr.splitlines()) == 1 and not (tmp_path / "p.skops").exists()


def test_missing_predictor_file_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, stderr = mdyn(
        monkeypatch,
        capsys,
        "predict",
        "--predictor",
        tmp_path / "none.skops",
        "--layers",
        4,
        "--hidden",
        128,
        "--heads",
        4,
    )
    assert (
        code == 2
        and stderr
        == f"mdyn: error: no predictor file at {tmp_path / 'none.skops'}: pass a file written by `mdyn train --out`\n"
    )
