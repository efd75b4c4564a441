"""Adaptive revision selection: the criterion (fitting.design), the design loop replayed on known series (no model
runs), its record, and `mdyn sweep --steps adaptive:N` end to end on the offline tiny series."""

import json

import numpy as np
import polars as pl
import pytest

from dynamics import adaptive, store
from dynamics.adaptive import Budget, Replay, run_design, start_design
from dynamics.revisions import log_spaced, parse_selection
from fitting.design import BAND_Z, ErrorModel, choose, layer_design, series_and_noise
from fitting.errors import UserError
from fitting.synthetic import pythia_steps, synthetic_measurements
from fitting.table import layer_stats
from tests.cli import run_main

STEPS = pythia_steps()
# Rises between steps 1000 and 10000, peaks near step 27000, then decays slowly.
RISE = {"A": 10.0, "lam": 0.3, "gamma": 9.4e-5, "t0": 0.5, "K": 12.0}
EARLY_PEAK = {"A": 30.0, "lam": 2.0, "gamma": 2e-3, "t0": 0.2, "K": 20.0}
NOISE_ONLY = ErrorModel(noise=0.02**2, misfit=0.0, length=15.0)
START = np.isin(STEPS, [0, 4, 32, 256, 1000, 5000, 27000, 143000])
SWEEP_ARGS = ["--probe", "embedded", "--n-seq", "2", "--seq-len", "32", "--keep-checkpoints", "--offline"]


def series(n_steps=40, noise=0.03, seed=0) -> pl.DataFrame:
    """One model, two layers (a rise, an early peak) on the first `n_steps` Pythia steps, 10 probe sequences."""
    curves = {("replayed", 0): RISE, ("replayed", 1): EARLY_PEAK}
    return synthetic_measurements(curves, STEPS[:n_steps], n_seq=10, noise=noise, seed=seed)


def replayed(table, budget):
    """(replay, design record) of a design run to its end on `table`."""
    replay = Replay(table)
    design = start_design(None, replay.model, "synthetic", budget, len(replay.revisions))
    run_design(replay.revisions, table.clear(), replay, budget, design)
    return replay, design


def test_the_criterion_picks_inside_a_sparse_rise_not_in_a_flat_gap():
    layer = layer_design(STEPS, RISE, NOISE_ONLY)
    position = np.arange(STEPS.size)
    rise = (STEPS >= 2000) & (STEPS <= 12000)  # 11 unmeasured revisions where the curve climbs
    flat = (position >= STEPS.size - 30) & (position < STEPS.size - 19)  # 11 where it has long settled
    measured = ~(rise | flat)
    picks = choose([layer], measured, ~measured, 3)
    assert [bool(rise[i]) for i, _ in picks] == [True, True, True]
    assert all(value > 0 for _, value in picks)


def test_a_candidates_score_equals_the_risk_of_the_design_with_it():
    layer = layer_design(STEPS, RISE, ErrorModel(noise=0.02**2, misfit=0.03**2, length=15.0))
    now, after = layer.risks(START, ~START)
    for k in (0, 40, 140):
        j = np.flatnonzero(~START)[k]
        with_j = START.copy()
        with_j[j] = True
        assert after[k] == pytest.approx(layer.risks(with_j, ~with_j)[0], rel=1e-8)
    # The risk is the mean over steps of the band's variance, which vanishes once every revision is measured.
    assert now == pytest.approx(np.mean((layer.band(START) / BAND_Z) ** 2), rel=1e-8)
    assert np.abs(layer.band(np.ones(STEPS.size, bool))).max() < 1e-6 < layer.band(START).max()


def test_misfit_correlated_over_revisions_spreads_a_round_of_picks():
    def closest_pair(model):
        picks = sorted(i for i, _ in choose([layer_design(STEPS, RISE, model)], START, ~START, 6))
        return int(np.diff(picks).min())

    assert closest_pair(NOISE_ONLY) == 1  # noise alone: I-optimal picks cluster where they inform most
    assert closest_pair(ErrorModel(noise=0.02**2, misfit=0.05**2, length=15.0)) > 5


def test_the_noise_of_the_log_ratio_comes_from_the_spread_over_sequences():
    (_, _, _, stats), *_ = layer_stats(series(noise=0.07))
    ratio, variance = series_and_noise(stats)
    assert np.all(ratio > 0)
    assert 0.6 < np.median(variance) / (0.07**2 / 10) < 1.6


def test_a_design_stops_at_its_budget_and_says_why_it_chose_each_pick():
    table = series()
    budget = Budget(12)
    replay, design = replayed(table, budget)
    assert len(replay.served) == len(set(replay.served)) == 12
    start, *later = design["rounds"]
    steps = sorted(replay.revisions.values())
    assert [p["step"] for p in start["picks"]] == log_spaced(steps, budget.n_start) and budget.n_start == 6
    assert [r["kind"] for r in later] == ["criterion"] * 6 and all(len(r["picks"]) == 1 for r in later)
    assert design["stop"] == design["stop"] | {"reason": "budget", "measured": 12}
    notes = [replay.notes[rev] for rev in replay.served]
    assert notes[0] == "adaptive pick 1 of 12: log-spaced start (6 revisions)"
    for k, note in enumerate(notes[6:], start=7):
        head, _, value = note.rpartition(" ")
        assert head == f"adaptive pick {k} of 12: predicted variance reduction" and float(value) > 0
    assert all(r["widest_band"] and r["seconds_planning"] > 0 for r in later)


def test_a_design_stops_once_every_layers_band_is_narrower_than_asked():
    table = series()
    _, full = replayed(table, Budget(14))
    widest = [max(r["widest_band"].values()) for r in full["rounds"][1:]]
    threshold = min(widest[1:-1]) * 1.0001  # reached before the budget
    replay, design = replayed(table, Budget(14, until_band=threshold))
    assert design["stop"]["reason"] == "band" and len(replay.served) < 14
    assert max(design["stop"]["widest_band"].values()) < threshold
    assert all(max(r["widest_band"].values()) >= threshold for r in design["rounds"][1:])
    assert len(design["stop"]["widest_band"]) == 2  # every layer, not just one


def test_a_pick_that_cannot_be_measured_is_not_picked_again():
    table = series()
    bad = f"step{log_spaced(sorted(table['step'].unique().to_list()), 6)[2]}"

    class Failing(Replay):
        def __call__(self, picks, notes):
            return super().__call__(picks, notes).filter(pl.col("revision") != bad)

    replay = Failing(table)
    budget = Budget(9)
    design = start_design(None, replay.model, "synthetic", budget, len(replay.revisions))
    run_design(replay.revisions, table.clear(), replay, budget, design)
    assert replay.served.count(bad) == 1 and len(replay.served) == 10
    assert design["rounds"][0]["measured"] == sorted(set(replay.served[:6]) - {bad})
    assert design["stop"] == design["stop"] | {"reason": "budget", "measured": 9}


def test_without_a_fit_the_pick_fills_the_widest_gap():
    flat = {"A": 0.0, "lam": 0.1, "gamma": 1e-3, "t0": 1.0, "K": 8.0}  # a constant ratio: Eq. 9 cannot be fitted
    table = synthetic_measurements({("flat", 0): flat}, STEPS[:40], n_seq=3)
    replay, design = replayed(table, Budget(8))
    assert [r["kind"] for r in design["rounds"]] == ["start", "spread", "spread"]
    held = [p["step"] for p in design["rounds"][0]["picks"]]
    position = {step: i for i, step in enumerate(sorted(replay.revisions.values()))}
    gaps = {s: min(abs(position[s] - position[h]) for h in held) for s in position if s not in held}
    assert gaps[design["rounds"][1]["picks"][0]["step"]] == max(gaps.values())


def test_adaptive_is_no_fixed_selection():
    with pytest.raises(UserError, match="adaptive: it chooses revisions while measuring.*mdyn sweep --steps"):
        parse_selection("adaptive:24")
    assert adaptive.parse("log:24") is None and adaptive.parse(" adaptive:24") == 24
    with pytest.raises(UserError, match="N >= 7"):
        adaptive.parse("adaptive:6")


def sweep(capsys, tinyrepo, root, n, *extra):
    """`mdyn sweep --steps adaptive:N` of the offline tiny series (random weights: its curve is noise, the mechanics
    are what is tested); the captured output."""
    code, cap = run_main(
        ["sweep", tinyrepo.repo_id, "--store", root, "--steps", f"adaptive:{n}", *SWEEP_ARGS, *extra], capsys
    )
    assert code == 0, cap.err
    return cap


def test_mdyn_sweep_adaptive_measures_records_and_resumes(tinyrepo, tmp_path, capsys):
    root = tmp_path / "store"
    cap = sweep(capsys, tinyrepo, root, 8)
    ledger = store.load(root, store.LEDGER)
    ok = ledger.filter(pl.col("status") == "ok")
    assert ok.height == 8 and ok["detail"].str.starts_with("adaptive pick ").all()
    # settled from metadata, never downloaded nor picked
    assert set(ledger.filter(pl.col("status").is_in(["missing", "duplicate"]))["revision"]) == {
        tinyrepo.missing,
        "step6000",
    }
    assert "design stopped: the budget of revisions is measured" in cap.err
    path = adaptive.design_path(root, tinyrepo.repo_id, ok["probe_id"][0])
    first = json.loads(path.read_text())
    assert [r["kind"] for r in first["rounds"]][:1] == ["start"] and first["stop"]["measured"] == 8

    sweep(capsys, tinyrepo, root, 10)
    ok = store.load(root, store.LEDGER).filter(pl.col("status") == "ok")
    assert ok.height == 10
    assert {d.split(":")[0] for d in ok["detail"]} >= {"adaptive pick 9 of 10", "adaptive pick 10 of 10"}
    design = json.loads(path.read_text())
    assert design["rounds"][: len(first["rounds"])] == first["rounds"] and design["budget"] == 10
    assert design["stop"]["reason"] == "budget" and design["stop"]["measured"] == 10

    cap = sweep(capsys, tinyrepo, root, 10)  # nothing left within the budget: nothing downloaded
    assert store.load(root, store.LEDGER).filter(pl.col("status") == "ok").height == 10
    assert "10 already in" in cap.err and "adaptive pick" not in cap.err

    code, cap = run_main(["status", "--store", root], capsys)
    assert code == 0 and f"adaptive design of {tinyrepo.repo_id}" in cap.out, cap.out
    assert "10 of 10 revisions measured" in cap.out and "criterion" in cap.out and "start" in cap.out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "adaptive:3"], "adaptive:N needs a whole number N >= 7"),
        (["--steps", "adaptive:many"], "adaptive:N needs a whole number N >= 7"),
        (["--until-band", "0.1"], "--until-band and --per-round need --steps adaptive:N"),
        (["--steps", "log:5", "--per-round", "2"], "--until-band and --per-round need --steps adaptive:N"),
        (["--steps", "adaptive:9", "--until-band", "0"], "--until-band must be a relative half-width above 0"),
    ],
)
def test_bad_adaptive_input_is_one_line_exit_2(tinyrepo, tmp_path, capsys, extra, message):
    code, cap = run_main(["sweep", tinyrepo.repo_id, "--store", tmp_path / "store", *SWEEP_ARGS, *extra], capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], cap.err
    assert not (tmp_path / "store").exists()
