"""The live tracker in a plain loop: schedule, rows in the store, no effect on the run, forecast, bad input, CLI."""

import json
import random
import re
import time
import warnings

import numpy as np
import polars as pl
import pytest
import torch

from dynamics import store
from dynamics.probes import embedded_probes
from dynamics.tracking import Rule, Schedule, Tracker, as_schedule, forecast, git_commit, live_runs, preserved_rng
from fitting.curves import emergence, t_peak
from fitting.errors import MassiveActivationWarning, StoreLocked, UserError
from fitting.synthetic import pythia_steps, synthetic_measurements
from fitting.table import series_table
from tests.cli import run_main
from tests.dynamics import tracking_setup as setup
from tests.tiny import tiny_config

CONTEXT, N_SEQ = setup.CONTEXT, setup.N_SEQ


@pytest.fixture(scope="module")
def tokenizer():
    return setup.tokenizer()


@pytest.fixture(scope="module")
def windows():
    return setup.windows()


@pytest.fixture(scope="module")
def probe():
    return setup.probe()


def plain_run(windows, tracker=None, steps=24):
    """(losses, model) of a plain loop whose batches draw from python's and numpy's global RNGs."""
    random.seed(0)
    np.random.seed(0)
    model = setup.neox()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    if tracker is not None:
        tracker.maybe_measure(0, model)
    for step in range(1, steps + 1):
        rows = [random.randrange(len(windows)), int(np.random.randint(len(windows)))]
        batch = windows[rows]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if tracker is not None:
            tracker.maybe_measure(step, model)
    return losses, model


@pytest.fixture(scope="module")
def tracked(windows, probe, tmp_path_factory):
    """A plain run tracked at 0, 1, 2, 4, 8, 16 and its last step 24 (schedule every 8 steps)."""
    root = tmp_path_factory.mktemp("tracked") / "store"
    tracker = Tracker(root, probe, "plain-run", schedule=8, total_steps=24, commit="c0ffee", fit=True)
    losses, model = plain_run(windows, tracker)
    return root, tracker, losses, model


def test_the_default_schedule_is_pythias():
    assert Schedule().upto(3000) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000]
    assert as_schedule(100).upto(300) == [0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300]
    assert as_schedule([5, 0, 7]).upto(10) == [0, 5, 7]
    assert 3 not in Schedule() and -1 not in Schedule() and 143000 in Schedule()


@pytest.mark.parametrize("spec", [0, -3, True, 2.5, "often", [], [-1, 4], [1.5], {"every": 10}])
def test_a_bad_schedule_is_one_line(spec, probe, tmp_path):
    with pytest.raises(UserError) as err:
        Tracker(tmp_path / "store", probe, "run", schedule=spec)
    assert "schedule" in str(err.value) and "\n" not in str(err.value)


def test_a_run_with_the_tracker_gives_bit_identical_losses(tracked, windows):
    _, tracker, losses, model = tracked
    again, untracked = plain_run(windows)
    assert losses == again
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), untracked.parameters()))
    assert model.training


def test_measuring_restores_train_mode_and_every_rng(probe, tmp_path):
    model = setup.neox()
    tracker = Tracker(tmp_path / "store", probe, "run", schedule=[3], commit="")
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    assert tracker.maybe_measure(3, model)
    assert model.training
    assert torch.equal(torch.rand(3), expected[0]) and (random.random(), np.random.rand()) == expected[1:]
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    with preserved_rng():
        torch.rand(5), random.random(), np.random.rand()
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert (np.random.get_state()[1] == states[2]).all()


def test_rows_follow_the_measurement_contract(tracked, probe):
    root, tracker, _, model = tracked
    rows = store.load(root)
    steps = [0, 1, 2, 4, 8, 16, 24]
    assert sorted(rows["step"].unique()) == steps
    assert set(rows["revision"]) == {f"step{s}" for s in steps}
    assert set(rows["model"]) == {"plain-run"} and set(rows["commit"]) == {"c0ffee"}
    assert set(rows["weights_sha256"]) == {""} and set(rows["probe_id"]) == {probe.probe_id}
    assert set(rows["dtype"]) == {"float32"} and set(rows["device"]) == {"cpu"}
    assert rows.height == len(steps) * N_SEQ * 3
    ledger = store.load(root, store.LEDGER).sort("step")
    assert ledger["step"].to_list() == steps and set(ledger["status"]) == {"ok"}
    recorded = json.loads((root / store.MODELS).read_text())["plain-run"]
    assert recorded == {"origin": "live:plain-run", "architecture": dict(n_layers=3, d_model=32, n_heads=4, d_ff=128)}
    assert live_runs(root)["plain-run"]["total_steps"] == 24
    # The last step's rows are what measuring the final model gives.
    from dynamics.measure import measure

    final = rows.filter(pl.col("step") == 24).sort("layer", "seq")
    direct = measure(model, probe.token_ids).sort("layer", "seq")
    assert final["top1"].to_list() == direct["top1"].to_list()


def test_status_fit_figures_and_report_read_a_live_run(tracked, tmp_path, capsys):
    root = tracked[0]
    code, out = run_main(["status", "--store", root], capsys)
    assert code == 0 and re.search(r"plain-run\s*│\s*7\s*│", out.out)
    code, out = run_main(["fit", "--store", root, "--out", tmp_path / "fits.parquet"], capsys)
    assert code == 0 and pl.read_parquet(tmp_path / "fits.parquet").height == 3
    code, out = run_main(
        ["figures", "--store", root, "--fits", tmp_path / "fits.parquet", "--out", tmp_path / "f"], capsys
    )
    assert code == 0 and list((tmp_path / "f").glob("*.png"))
    code, out = run_main(
        ["report", "--store", root, "--fits", tmp_path / "fits.parquet", "--out", tmp_path / "r"], capsys
    )
    assert code == 0 and "plain-run" in (tmp_path / "r" / "report.html").read_text()


def test_watch_prints_every_layer_and_its_forecast(tracked, capsys):
    code, out = run_main(["watch", "--store", tracked[0], "--once"], capsys)
    assert code == 0
    assert "plain-run: 7 steps measured, last step 24 of 24" in out.out
    assert "forecast ratio" in out.out and "peak step" in out.out
    for ratio, forecast_ratio in tracked[1].forecast_table.select("ratio", "forecast_ratio").iter_rows():
        assert f"{ratio:.4g}" in out.out and (forecast_ratio is None or f"{forecast_ratio:.4g}" in out.out)


def test_watch_on_an_empty_store_says_so(tmp_path, capsys):
    store.open_store(tmp_path / "empty")
    code, out = run_main(["watch", "--store", tmp_path / "empty", "--once"], capsys)
    assert code == 2 and "holds no measurements yet" in out.err


def test_the_forecast_table_and_scalars_of_each_measurement(tracked):
    tracker = tracked[1]
    table = tracker.forecast_table
    assert table["layer"].to_list() == [0, 1, 2] and set(table["n_points"]) == {7}
    assert set(table["target_step"]) == {24} and set(table["step"]) == {24}
    series = series_table(store.load(tracked[0])).filter(pl.col("step") == 24).sort("layer")
    assert table["ratio"].to_list() == pytest.approx(series["value"].to_list(), rel=1e-12)
    ok = table.filter(pl.col("forecast_ratio").is_not_null() & pl.col("forecast_ratio_lo").is_not_null())
    assert ok.height and (ok["forecast_ratio_lo"] <= ok["forecast_ratio"]).all()
    assert (ok["forecast_ratio"] <= ok["forecast_ratio_hi"]).all()


def test_a_resumed_run_forecasts_from_its_earlier_steps(tracked, probe):
    root = tracked[0]
    resumed = Tracker(root, probe, "plain-run", schedule=8, total_steps=32, commit="c0ffee")
    assert resumed.maybe_measure(32, tracked[3])
    assert set(resumed.forecast_table["n_points"]) == {8}
    assert store.load(root)["step"].n_unique() == 8


def test_forecast_converges_on_a_synthetic_eq9_series():
    # Pythia-410M layer 0's released fit (docs/science.md §2.5): its peak near step 38900 shows only late.
    truth = dict(A=0.19914, lam=0.12452, gamma=1.1244e-4, t0=0.62122, K=0.12193)
    measurements = synthetic_measurements({("syn", 0): truth}, pythia_steps(), n_seq=10, noise=0.02, seed=0)
    final, peak = emergence(143000, **truth), t_peak(truth["lam"], truth["gamma"], truth["t0"])
    rows = {
        upto: forecast(measurements.filter(pl.col("step") <= upto), 143000).row(0, named=True)
        for upto in (10000, 40000, 80000, 143000)
    }
    widths = [(r["forecast_ratio_hi"] - r["forecast_ratio_lo"]) / final for r in rows.values()]
    errors = [abs(r["forecast_ratio"] / final - 1) for r in rows.values()]
    assert widths == sorted(widths, reverse=True) and widths[0] > 1 > 0.05 > widths[-1]
    assert errors[-1] < 0.01 and errors[-2] < 0.02 < errors[0]
    for r in list(rows.values())[-2:]:
        assert r["forecast_ratio_lo"] <= final <= r["forecast_ratio_hi"]
        assert r["peak_step_lo"] <= peak <= r["peak_step_hi"]
    assert rows[143000]["peak_step"] == pytest.approx(peak, rel=0.01)


def test_each_layer_warns_once_when_it_meets_the_rule(probe, tmp_path):
    model = setup.neox(dropout=0.0)
    # A threshold every random model meets, to see the warnings: |a| > 0 and ratio >= 1.
    tracker = Tracker(tmp_path / "store", probe, "run", schedule=1, rule=Rule(magnitude=0, ratio=1), commit="")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            tracker.maybe_measure(step, model)
    massive = [str(w.message) for w in caught if w.category is MassiveActivationWarning]
    assert len(massive) == 3 and all("has a massive activation at step 0" in m for m in massive)
    assert all(f"in {N_SEQ} of {N_SEQ} probe sequences" in m for m in massive)
    # Attributed to the training loop that called maybe_measure, where the user looks.
    assert {w.filename for w in caught if w.category is MassiveActivationWarning} == {__file__}
    default = Tracker(tmp_path / "store2", probe, "run", schedule=1, commit="")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MassiveActivationWarning)  # a random model is far from Sun et al.'s rule
        default.maybe_measure(0, model)


def test_a_probe_longer_than_the_context_is_one_line(tokenizer, tmp_path):
    long_probe = embedded_probes(tokenizer, 2, CONTEXT + 1)
    model = setup.neox()
    with pytest.raises(UserError) as err:
        Tracker(tmp_path / "store", long_probe, "run", model=model)
    assert f"context is {CONTEXT}" in str(err.value) and "\n" not in str(err.value)
    tracker = Tracker(tmp_path / "store", long_probe, "run")
    with pytest.raises(UserError, match="seq_len=64 or less"):
        tracker.maybe_measure(0, model)
    assert not (tmp_path / "store").exists()


def test_a_wrapped_model_is_tracked_through_the_module_it_wraps(probe, tmp_path):
    """DataParallel (as DDP) forwards no attributes: the tracker is handed the wrapper and measures the module."""
    model = setup.neox()
    tracker = Tracker(tmp_path / "store", probe, "run", model=torch.nn.DataParallel(model))
    assert tracker.model is model
    assert tracker.maybe_measure(0)
    assert store.load(tmp_path / "store")["step"].unique().to_list() == [0]


def test_a_probe_of_another_tokenizer_is_one_line(probe, tmp_path):
    from transformers import GPTNeoXForCausalLM

    small = GPTNeoXForCausalLM(tiny_config("gpt_neox", vocab=50, context=CONTEXT))
    with pytest.raises(UserError, match="run's own tokenizer"):
        Tracker(tmp_path / "store", probe, "run", model=small)


def test_a_locked_store_stops_after_the_lock_timeout(probe, tmp_path):
    root = store.open_store(tmp_path / "store")
    tracker = Tracker(root, probe, "run", commit="", lock_timeout=0.3)
    with store.store_lock(root):
        start = time.monotonic()
        with pytest.raises(StoreLocked) as err, pytest.warns(UserWarning, match="waiting up to 0.3 s"):
            tracker.maybe_measure(0, setup.neox())
        assert time.monotonic() - start < 5
    assert "stayed locked" in str(err.value) and "\n" not in str(err.value)
    assert not store.shards(root)


def test_a_folder_that_is_not_a_store_fails_before_training(probe, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a massive-dynamics store"):
        Tracker(tmp_path, probe, "run")


def test_other_bad_arguments_are_one_line(probe, tmp_path):
    for kwargs, words in (
        ({"run_name": ""}, "run_name"),
        ({"total_steps": 0}, "total_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"reduce_dtype": "int8"}, "reduce_dtype"),
    ):
        with pytest.raises(UserError, match=words):
            Tracker(tmp_path / "s", probe, **({"run_name": "run"} | kwargs))
    with pytest.raises(UserError, match="ProbeSet"):
        Tracker(tmp_path / "s", probe.token_ids, "run")
    with pytest.raises(UserError, match="no model to measure"):
        Tracker(tmp_path / "s", probe, "run").maybe_measure(0)


def test_the_commit_is_the_work_trees_head(tmp_path):
    from pathlib import Path

    head = git_commit(Path(__file__).parent)
    assert len(head) == 40 and int(head, 16) >= 0
    assert git_commit(tmp_path) == ""
