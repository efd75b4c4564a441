"""Several targets in one `mdyn sweep`, named one by one or as a brace family, swept locally one after another."""

import polars as pl

from dynamics import store
from dynamics.sources import expand_targets
from tests.cli import run_main

SWEEP_ARGS = ["--probe", "embedded", "--n-seq", "2", "--seq-len", "32", "--keep-checkpoints"]


def test_braces_expand_as_a_shell_would():
    assert expand_targets(["EleutherAI/pythia-{14m,70m,160m}"]) == [
        "EleutherAI/pythia-14m",
        "EleutherAI/pythia-70m",
        "EleutherAI/pythia-160m",
    ]
    assert expand_targets(["o/{a,b}-{1,2}", "o/a-1"]) == ["o/a-1", "o/a-2", "o/b-1", "o/b-2"]
    assert expand_targets(["o/{a,{b,c}}x"]) == ["o/ax", "o/bx", "o/cx"]
    assert expand_targets(["o/{a}", "o/{a,b", "runs/step{0}"]) == ["o/{a}", "o/{a,b", "runs/step{0}"]


def test_local_sweep_of_a_family_measures_each_model(tiny_family, tmp_path, capsys):
    root = tmp_path / "store"
    code, cap = run_main(["sweep", "tiny/neox-{sweep,twin}", "--store", root, "--steps", "0,1", *SWEEP_ARGS], capsys)
    assert code == 0, cap.err
    df = store.load(root)
    assert dict(df.group_by("model").len().iter_rows()) == dict.fromkeys(tiny_family, 2 * 2 * 2)
    # The twin is a byte copy, so both models' rows agree in everything but the model name.
    first, twin = (
        df.filter(pl.col("model") == m).drop("model", "measured_at").sort("revision", "seq", "layer")
        for m in tiny_family
    )
    assert first.equals(twin)
    assert store.load(root, store.LEDGER).height == 4
