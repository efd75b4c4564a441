"""`mdyn fit` end to end on a synthetic store, and its one-line errors."""

import sys

import polars as pl
import pytest

from dynamics.cli.app import main
from fitting.synthetic import paper_like_steps, synthetic_measurements
from fitting.table import read_fits

CURVES = {
    ("pythia-a", 0): dict(A=0.19914, lam=0.12452, gamma=1.1244e-4, t0=0.62122, K=0.12193),
    ("pythia-a", 1): dict(A=50.0, lam=0.5, gamma=4e-4, t0=1.2, K=20.0),
    ("pythia-b", 0): dict(A=40.0, lam=1.0, gamma=1e-3, t0=0.1, K=60.0),
}


def mdyn(monkeypatch, *args):
    """Run the console script in-process; returns its exit status."""
    monkeypatch.setattr(sys, "argv", ["mdyn", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code


@pytest.fixture
def store(tmp_path):
    """A store folder laid out as the sweep writes it: one shard per model under measurements/."""
    measurements = synthetic_measurements(CURVES, paper_like_steps(), noise=0.02, seed=0)
    for (model,), part in measurements.partition_by("model", as_dict=True).items():
        shard = tmp_path / "measurements" / model / "shard--synthetic.parquet"
        shard.parent.mkdir(parents=True)
        part.write_parquet(shard)
    return tmp_path


def test_fit_writes_the_table_into_the_store_and_prints_table1(monkeypatch, capsys, store):
    assert mdyn(monkeypatch, "fit", "--store", store, "--hypotheses", "all") == 0
    fits = read_fits(store / "fits.parquet")
    assert fits.height == 3 * 4 and fits["success"].all()
    out = capsys.readouterr().out
    assert "paper Table 1" in out and "paper Table 5" in out and "pythia-b" in out
    assert "wrote" in out and "fits.parquet" in out


def test_fit_of_a_single_file_writes_beside_it(monkeypatch, store, tmp_path):
    single = tmp_path / "one" / "measurements.parquet"
    single.parent.mkdir()
    pl.read_parquet(store / "measurements" / "pythia-b" / "shard--synthetic.parquet").write_parquet(single)
    assert mdyn(monkeypatch, "fit", "--store", single, "--series", "ratio_mean", "--bootstrap", "3") == 0
    fits = read_fits(single.parent / "fits.parquet")
    assert fits["series"].to_list() == ["ratio_mean"] and fits["n_boot"].to_list() == [3]


def test_plot_draws_one_layer(monkeypatch, capsys, store):
    assert mdyn(monkeypatch, "fit", "--store", store, "--plot", "pythia-a", "1") == 0
    png = store / "fit_pythia-a_layer1_ratio.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--store", "{missing}"], "does not exist"),
        (["--store", "{store}", "--series", "top4"], "unknown series 'top4'"),
        (["--store", "{store}", "--hypotheses", "some"], "unknown --hypotheses"),
        (["--store", "{empty}"], "no measurements in"),
        (["--store", "{store}", "--plot", "pythia-z", "0"], "no measurements for model 'pythia-z'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(monkeypatch, capsys, store, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "store": store, "empty": tmp_path / "empty"}
    assert mdyn(monkeypatch, "fit", *(a.format(**paths) for a in args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mdyn: error: ") and message in err
    assert err.count("\n") == 1
