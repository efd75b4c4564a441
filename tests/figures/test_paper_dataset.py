"""`mdyn import-paper` on a fixture in the released dataset's exact format (docs/science.md §8)."""

import numpy as np
import polars as pl
import pytest

from dynamics import store
from dynamics.paper_dataset import PROBE_ID, import_dataset, parse_stats
from fitting.errors import UserError
from tests.cli import run_main

# The paper's sample: Pythia-14M, step 22000, first sequence (docs/science.md §8).
TOP1_14M = [1.1227, 1.5168, 8.0052, 4.6246, 7.9382, 5.6903]
MEDIAN_14M = [0.08807, 0.09663, 0.13320, 0.13885, 0.16350, 0.23085]
STEPS = (0, 512, 22000)


def stats(step, n_layers, seed):
    """10 x 4 x L statistics: top-1 >= top-2 >= top-3 > median, different per sequence and step."""
    rng = np.random.default_rng([seed, step])
    median = rng.uniform(0.05, 0.3, (10, 1, n_layers))
    top = np.sort(rng.uniform(1, 10, (10, 3, n_layers)), axis=1)[:, ::-1]
    return np.concatenate([top, median], axis=1)


@pytest.fixture
def released(tmp_path):
    """pythia_14m (6 layers) and pythia_70m (6 layers) at three steps each, and one malformed file."""
    root = tmp_path / "pma"
    expected = {}
    for size, seed in (("14m", 1), ("70m", 2)):
        folder = root / f"pythia_{size}" / "stats"
        folder.mkdir(parents=True)
        (root / f"pythia_{size}" / "params").mkdir()
        (root / f"pythia_{size}" / "params" / "layer_fit_params_ratio.json").write_text("{}")
        for step in STEPS:
            values = stats(step, 6, seed)
            if (size, step) == ("14m", 22000):
                values[0, 0], values[0, 3] = TOP1_14M, MEDIAN_14M
            expected[(f"EleutherAI/pythia-{size}", step)] = values
            # Written as the authors' files are: str() of nested Python lists.
            (folder / f"exp2_pythia_{size}_step{step}").write_text(str(values.tolist()))
    truncated = str(stats(1000, 6, 3).tolist())[:-40]
    (root / "pythia_70m" / "stats" / "exp2_pythia_70m_step1000").write_text(truncated)
    return root, expected


def test_import_writes_one_shard_per_checkpoint_with_the_values(tmp_path, released):
    root, expected = released
    result = import_dataset(root, tmp_path / "store")
    assert len(result.written) == 6
    assert [(p.name, reason.split(" (")[0]) for p, reason in result.skipped] == [
        ("exp2_pythia_70m_step1000", "not a Python literal")
    ]
    m = store.load(tmp_path / "store")
    assert m.height == 6 * 10 * 6
    assert set(m["probe_id"]) == {PROBE_ID} and set(m["dtype"]) == {"float16"}
    assert m["commit"].is_null().all() and m["top1_pos"].is_null().all() and m["top1_dim"].is_null().all()
    for (model, step), values in expected.items():
        part = m.filter((pl.col("model") == model) & (pl.col("step") == step)).sort("seq", "layer")
        assert set(part["revision"]) == {f"step{step}"}
        for i, column in enumerate(("top1", "top2", "top3", "median")):
            np.testing.assert_array_equal(part[column].to_numpy().reshape(10, 6), values[:, i, :])
    sample = m.filter((pl.col("model") == "EleutherAI/pythia-14m") & (pl.col("step") == 22000) & (pl.col("seq") == 0))
    assert sample.sort("layer")["top1"].to_list() == TOP1_14M
    ledger = store.load(tmp_path / "store", store.LEDGER)
    assert sorted(ledger["status"].to_list()) == ["corrupt"] + ["ok"] * 6
    assert ledger.filter(pl.col("status") == "corrupt")["revision"].to_list() == ["step1000"]


def test_a_file_with_the_wrong_layer_count_is_skipped(tmp_path, released):
    root, _ = released
    (root / "pythia_14m" / "stats" / "exp2_pythia_14m_step1").write_text(str(stats(1, 5, 0).tolist()))
    result = import_dataset(root, tmp_path / "store")
    reasons = {p.name: reason for p, reason in result.skipped}
    assert reasons["exp2_pythia_14m_step1"] == "has 5 layer columns, the model has 6 layers"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[[[1.0, 2.0]]]", "has shape (1, 1, 2), expected (n_seq, 4, layers)"),
        ("[[[1, 2], [1, 2], [1], [1, 2]]]", "not a nested list of numbers of one shape"),
        ("__import__('os')", "not a Python literal"),
    ],
)
def test_parse_stats_says_what_is_wrong(text, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_stats(text)


def test_command_imports_then_lists_the_skipped_files(tmp_path, released, capsys):
    root, _ = released
    status, captured = run_main(["import-paper", root, "--store", tmp_path / "store"], capsys)
    assert not status
    assert f"imported 6 checkpoints into {tmp_path / 'store'}" in captured.out
    assert captured.out.rstrip().splitlines()[-2:] == [
        "skipped 1 files:",
        f"  {root / 'pythia_70m' / 'stats' / 'exp2_pythia_70m_step1000'}: not a Python literal (SyntaxError)",
    ]


def test_command_refuses_a_folder_without_the_dataset(tmp_path, capsys):
    status, captured = run_main(["import-paper", tmp_path, "--store", tmp_path / "store"], capsys)
    assert status == 2 and "no statistics files under" in captured.err
    with pytest.raises(UserError, match="is not a folder"):
        import_dataset(tmp_path / "missing", tmp_path / "store")
