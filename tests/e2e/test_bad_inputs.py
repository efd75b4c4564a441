"""Issue 18, cases 1-10: bad inputs a new user gives, each answered in one line (exit 2) or handled, nothing lost.

Every test runs `mdyn` in process on the offline tiny series (`tinyrepo`), on tiny local model folders, or on
the shipped tables. Test names carry the issue's case number.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dynamics import store
from dynamics.sources import HubSource
from dynamics.sweep import Settings, plan, run
from tests.cli import run_main

REPO = Path(__file__).resolve().parents[2]
PROBE = ["--probe", "embedded", "--n-seq", "2", "--seq-len", "32"]
STEPS = "0,1,2,4,8,16,32"  # 7 revisions: enough points for an Eq. 9 fit (6)
PLAIN, BOS = Settings(probe="embedded", n_seq=2, seq_len=32), Settings(probe="embedded", n_seq=2, seq_len=32, bos=True)
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 40


def error_line(code, captured, *words, warnings: bool = False) -> str:
    """The one `mdyn: error:` line of a run that exited 2 (after `mdyn: warning:` lines, when `warnings`), after
    checking it names every one of `words`."""
    assert code == 2, (captured.out[-2000:], captured.err[-2000:])
    lines = [line for line in captured.err.strip().splitlines() if not (warnings and line.startswith("mdyn: warning:"))]
    assert len(lines) == 1 and lines[0].startswith("mdyn: error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def sweep_into(root: Path, source: HubSource, settings: Settings) -> pl.DataFrame:
    return run(source, root, plan(source, root, STEPS, settings), settings)


@pytest.fixture(scope="module")
def tokenizer():
    from dynamics.tokenizer import train_bpe

    return train_bpe([TEXT], vocab_size=300)


@pytest.fixture
def model_folder(tokenizer):
    """Save a tiny random GPT-NeoX (3 blocks, seeded) with a tokenizer into a folder; returns the folder."""
    from tests.tiny import tiny_model

    def save(folder: Path, seed: int = 0) -> Path:
        tiny_model("gpt_neox", seed=seed, vocab=len(tokenizer)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return save


@pytest.fixture(scope="module")
def two_probes(tinyrepo, tmp_path_factory):
    """The tiny series swept over 7 revisions with and without --bos into one store: (store, {"plain", "bos"} ids)."""
    root = tmp_path_factory.mktemp("two-probes") / "store"
    source = HubSource(tinyrepo.repo_id, offline=True, cache_dir=tinyrepo.cache_dir)
    ids = {}
    for name, settings in (("plain", PLAIN), ("bos", BOS)):
        sweep_into(root, source, settings)
        ids[name] = plan(source, root, STEPS, settings).probe.probe_id
    return root, ids


# 1. Two local folders with the same name never overwrite each other's results.


def test_1_a_second_folder_of_the_same_name_is_refused_until_given_another_name(model_folder, tmp_path, capsys):
    first, second = model_folder(tmp_path / "a" / "my-model", seed=0), model_folder(tmp_path / "b" / "my-model", 1)
    root = tmp_path / "store"
    code, captured = run_main(["measure", first, *PROBE, "--store", root], capsys)
    assert code == 0, captured.err
    (shard,) = store.shards(root)
    kept = shard.read_bytes()

    code, captured = run_main(["measure", second, *PROBE, "--store", root], capsys)
    error_line(code, captured, "my-model", str(tmp_path / "a" / "my-model"), "--model NAME")
    assert store.shards(root) == [shard] and shard.read_bytes() == kept

    code, captured = run_main(["measure", second, *PROBE, "--store", root, "--model", "other"], capsys)
    assert code == 0, captured.err
    rows = store.load(root)
    assert shard.read_bytes() == kept
    assert sorted(rows["model"].unique()) == ["my-model", "other"]
    assert rows.group_by("model").agg(pl.col("weights_sha256").first())["weights_sha256"].n_unique() == 2


# 2. `mdyn fit` does not pool different probes unless asked to.


def test_2_fit_refuses_to_mix_probes_and_takes_one_or_all(two_probes, tmp_path, capsys):
    root, ids = two_probes
    code, captured = run_main(["fit", "--store", root, "--out", tmp_path / "mixed.parquet", "--jobs", 1], capsys)
    error_line(code, captured, ids["plain"], ids["bos"], "--probe-id")
    assert not (tmp_path / "mixed.parquet").exists()

    for chosen, expected in ((ids["bos"], ids["bos"]), ("all", ",".join(sorted(ids.values())))):
        out = tmp_path / f"{chosen}.parquet"
        code, captured = run_main(["fit", "--store", root, "--probe-id", chosen, "--out", out, "--jobs", 1], capsys)
        assert code == 0, captured.err
        fits = pl.read_parquet(out)
        assert fits["probe_id"].unique().to_list() == [expected] and fits.height == 2  # one fit per layer


# 3. A truncated shard is named, listed by `mdyn status`, skipped by readers, and measured again by the next sweep.


def test_3_a_truncated_shard_is_named_listed_skipped_and_measured_again(tinyrepo, two_probes, tmp_path, capsys):
    root = tmp_path / "store"
    shutil.copytree(two_probes[0], root)
    plain = two_probes[1]["plain"]
    shard = store.shard_path(root, store.MEASUREMENTS, tinyrepo.repo_id, "step4", plain)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    code, captured = run_main(["status", "--store", root], capsys)
    assert code == 0 and "Traceback" not in captured.err, captured.err
    assert "1 unreadable shard(s)" in captured.out and str(shard) in captured.out

    fits = tmp_path / "fits.parquet"
    code, captured = run_main(["fit", "--store", root, "--probe-id", plain, "--out", fits, "--jobs", 1], capsys)
    assert code == 0, captured.err
    (warning,) = captured.err.strip().splitlines()
    assert warning.startswith("mdyn: warning: skipped unreadable shard") and str(shard) in warning
    assert (pl.read_parquet(fits)["n_points"] == 6).all()  # the other six revisions

    figures = tmp_path / "figures"
    code, captured = run_main(
        ["figures", "--store", root, "--probe-id", plain, "--fits", fits, "--out", figures], capsys
    )
    assert code == 0 and str(shard) in captured.err and "Traceback" not in captured.err, captured.err
    assert (figures / "fig1_overview.png").is_file()

    args = ["sweep", tinyrepo.repo_id, "--steps", STEPS, *PROBE, "--offline", "--keep-checkpoints", "--store", root]
    code, captured = run_main(args, capsys)
    assert code == 0, captured.err
    assert "1 to measure" in captured.err + captured.out
    (aside,) = (root / store.CORRUPT_DIR).rglob("*.parquet")
    assert aside.name.startswith(f"step4--{plain}.") and aside.stat().st_size < shard.stat().st_size
    assert pl.read_parquet(shard).height == 2 * 2 and store.unreadable(root) == []


# 4. A store locked by another writer: say who holds it, wait, then give up in one line.

HOLD = """
import sys, time
from dynamics import store
with store.store_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_4_a_locked_store_names_its_holder_and_times_out(tinyrepo, tmp_path, capsys):
    root = store.open_store(tmp_path / "store")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], cwd=REPO, stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        commands = (["measure", tinyrepo.repo_id, "--revision", "step1"], ["sweep", tinyrepo.repo_id, "--steps", "1"])
        for command in commands:
            code, captured = run_main([*command, *PROBE, "--offline", "--store", root, "--lock-timeout", "0.3"], capsys)
            assert code == 2, captured.err
            waiting, failed = captured.err.strip().splitlines()
            assert waiting.startswith("mdyn: warning: ") and f"process {holder.pid}" in waiting
            assert "waiting up to 0.3 s" in waiting
            assert failed.startswith("mdyn: error: ") and f"process {holder.pid}" in failed
            assert "--lock-timeout" in failed
        assert store.shards(root) == [] and store.shards(root, store.LEDGER) == []
    finally:
        holder.kill()
        holder.wait()


# 5 and 8. Options are checked before anything is planned or downloaded: a bad --reduce-dtype, a binary probe text.


@pytest.mark.parametrize("command", ["measure", "sweep"])
@pytest.mark.parametrize(
    "case, words",
    [
        ("reduce-dtype", ["--reduce-dtype", "'float16'", "float32"]),
        ("nul bytes", ["is binary", "NUL byte", "--probe-text"]),
        ("latin-1", ["not UTF-8 text", "0xe9", "--probe-text"]),
    ],
)
def test_5_and_8_bad_options_are_one_line_before_anything_is_done(tinyrepo, tmp_path, capsys, command, case, words):
    binary = {"nul bytes": b"weights\x00\x01\x02" * 500, "latin-1": TEXT.encode() + "café".encode("latin-1")}
    extra = ["--reduce-dtype", "float16"]
    if case in binary:
        (tmp_path / "probe.txt").write_bytes(binary[case])
        extra = ["--probe-text", tmp_path / "probe.txt"]
    root = tmp_path / "store"
    code, captured = run_main([command, tinyrepo.repo_id, *PROBE, *extra, "--offline", "--store", root], capsys)
    error_line(code, captured, *words)
    assert not root.exists()


def test_8_a_utf8_probe_text_with_accents_is_measured(tinyrepo, tmp_path, capsys):
    text = tmp_path / "probe.txt"
    text.write_text("Ça, c'est la vérité: naïve façade, Œuvre complète. " * 60, encoding="utf-8")
    root = tmp_path / "store"
    args = ["measure", tinyrepo.repo_id, "--revision", "step1", *PROBE, "--probe-text", text, "--offline"]
    code, captured = run_main([*args, "--store", root], capsys)
    assert code == 0, captured.err
    assert store.load(root).height == 2 * 2


# 6. Output paths are checked before the work starts.


def test_6_a_store_that_cannot_be_written_is_one_line_in_measure_and_sweep(tinyrepo, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    locked = store.open_store(tmp_path / "locked")
    (locked / ".lock").mkdir()  # the lock file cannot be opened, as in a read-only store
    cases = {
        tmp_path / "file" / "store": "cannot create a store",
        tmp_path / "file": "is a file",
        locked: "cannot lock the store",
    }
    commands = (["measure", tinyrepo.repo_id, "--revision", "step1"], ["sweep", tinyrepo.repo_id, "--steps", "1"])
    for root, words in cases.items():
        for command in commands:
            code, captured = run_main([*command, *PROBE, "--offline", "--store", root], capsys)
            error_line(code, captured, str(root), words)
    assert store.shards(locked) == [] and store.shards(locked, store.LEDGER) == []


def test_6_a_store_without_write_permission_is_refused_unless_the_user_may_write_anyway(model_folder, tmp_path, capsys):
    root = store.open_store(tmp_path / "store")
    root.chmod(0o555)
    try:
        code, captured = run_main(["measure", model_folder(tmp_path / "my-model"), *PROBE, "--store", root], capsys)
        if os.access(root, os.W_OK):  # root: file permissions do not bind it, so the store is writable after all
            assert code == 0 and len(store.shards(root)) == 1, captured.err
        else:
            error_line(code, captured, str(root), "read-only")
            assert list(root.iterdir()) == [root / store.MARKER]
    finally:
        root.chmod(0o755)


def test_6_a_store_the_user_may_not_write_is_one_line_and_untouched(model_folder, tmp_path, capsys, monkeypatch):
    """The refusal itself, also where the tests run as root (whom file permissions do not bind): the store asks
    os.access, answered here as for another user."""
    root = store.open_store(tmp_path / "store")

    class AnotherUsersOs:  # the store's view of `os` only; the CLI's own path checks still see the real one
        access = staticmethod(lambda path, mode: False)

        def __getattr__(self, name):
            return getattr(os, name)

    monkeypatch.setattr(store, "os", AnotherUsersOs())
    code, captured = run_main(["measure", model_folder(tmp_path / "my-model"), *PROBE, "--store", root], capsys)
    error_line(code, captured, str(root), "read-only")
    assert list(root.iterdir()) == [root / store.MARKER]


def test_6_output_paths_are_refused_before_the_work(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    measurements = REPO / "data" / "tiny-suite" / "measurements.parquet"
    cases = [
        (["figures", "--store", measurements, "--out", tmp_path / "file"], "is a file"),
        (["report", "--store", measurements, "--out", tmp_path / "file"], "is a file"),
        (["fit", "--store", measurements, "--out", tmp_path / "folder"], "is a folder"),
        (["train", "--out", tmp_path / "folder"], "is a folder"),
        (["train", "--out", tmp_path / "file" / "p.skops"], "cannot create"),
        (["train", "--target", "paper", "--fits", measurements, "--out", tmp_path / "folder"], "is a folder"),
    ]
    for args, words in cases:
        code, captured = run_main(args, capsys)
        error_line(code, captured, "--out", words)
        assert "Learned" not in captured.out and "fitted" not in captured.out and "Training" not in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_6_predict_refuses_a_file_as_its_output_folder(predictor_file, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    args = ["predict", "--predictor", predictor_file, "--layers", 4, "--hidden", 64, "--heads", 4]
    code, captured = run_main([*args, "--out", tmp_path / "file"], capsys)
    error_line(code, captured, "--out", "is a file")
    assert "Predicted" not in captured.out and (tmp_path / "file").read_text() == "not a folder"


# 7. `mdyn figures` on checkpoints without a training step (a model folder measured alone).


def test_7_figures_of_a_model_folder_measured_alone_is_one_line(model_folder, tmp_path, capsys):
    root = tmp_path / "store"
    code, captured = run_main(["measure", model_folder(tmp_path / "my-model"), *PROBE, "--store", root], capsys)
    assert code == 0, captured.err
    assert store.load(root)["step"].null_count() == store.load(root).height
    for command in ("figures", "report"):
        code, captured = run_main([command, "--store", root, "--out", tmp_path / command], capsys)
        error_line(code, captured, "my-model@local", "has a training step", "stepN")
        assert not (tmp_path / command / "fits.parquet").exists()


def test_7_steps_beside_a_folder_without_one_draw_the_stepped_models(two_probes, model_folder, tmp_path, capsys):
    from dynamics.figures import ITEMS, Inputs, build_all

    root = tmp_path / "store"
    code, captured = run_main(["measure", model_folder(tmp_path / "my-model"), *PROBE, "--store", root], capsys)
    assert code == 0, captured.err
    swept = store.load(two_probes[0]).filter(pl.col("probe_id") == two_probes[1]["plain"])
    both = pl.concat([store.load(root), swept])
    chosen = [item for item in ITEMS if item.name in ("Fig 1", "Fig 3", "Fig 4", "Fig 5")]
    with pytest.warns(UserWarning, match="left my-model@local out of the figures"):
        built = list(build_all(Inputs(both), chosen))
    assert [b.skipped for b in built] == [None] * 4


# 9. Models swept by the tool are found by `mdyn train` without an architectures table.


def test_9_train_finds_the_architectures_the_sweep_recorded(tinyrepo, model_folder, tmp_path, capsys):
    from dynamics.embedded import shipped_architectures
    from dynamics.sources import open_source

    for step in map(int, STEPS.split(",")):  # a second design: 3 blocks, random weights seeded by the step
        model_folder(tmp_path / "series" / f"step{step}", seed=step)
    root = tmp_path / "store"
    sources = [
        HubSource(tinyrepo.repo_id, offline=True, cache_dir=tinyrepo.cache_dir),
        open_source(tmp_path / "series"),
    ]
    for source in sources:
        sweep_into(root, source, PLAIN)
    models = sorted(source.model for source in sources)
    assert not set(models) & set(shipped_architectures()["model"])
    recorded = store.recorded_architectures(root).sort("model")
    assert recorded["model"].to_list() == models and recorded["n_layers"].to_list() == [3, 2]

    args = ["train", "--store", root, "--no-compare", "--n-estimators", 10, "--out", tmp_path / "curve.skops"]
    code, captured = run_main(args, capsys)
    assert code == 0, captured.err
    assert "2 models" in captured.out and (tmp_path / "curve.skops").is_file()

    code, captured = run_main(["fit", "--store", root, "--jobs", 1], capsys)
    assert code == 0, captured.err
    paper = ["train", "--target", "paper", "--fits", root / "fits.parquet", "--no-compare", "--n-estimators", 10]
    code, captured = run_main([*paper, "--out", tmp_path / "paper.skops"], capsys)
    error_line(code, captured, "at least 10 fitted layers", "--protocol lomo", warnings=True)
    code, captured = run_main([*paper, "--protocol", "lomo", "--out", tmp_path / "paper.skops"], capsys)
    assert code == 0, captured.err
    assert (tmp_path / "paper.skops").is_file()


# 10. A fits table filtered and saved again with polars is read by its columns.


def test_10_a_fits_table_saved_again_by_polars_is_accepted(tmp_path, capsys):
    from fitting.table import SCHEMA_KEY, read_fits

    measurements = REPO / "data" / "tiny-suite" / "measurements.parquet"
    small = tmp_path / "measurements.parquet"
    pl.read_parquet(measurements).filter(pl.col("model").str.contains("-L2-")).write_parquet(small)
    code, captured = run_main(["fit", "--store", small, "--out", tmp_path / "fits.parquet", "--jobs", 1], capsys)
    assert code == 0, captured.err
    resaved = tmp_path / "resaved.parquet"
    pl.read_parquet(tmp_path / "fits.parquet").filter(pl.col("layer") == 0).write_parquet(resaved)
    assert pl.read_parquet_metadata(tmp_path / "fits.parquet").get(SCHEMA_KEY) is not None
    assert pl.read_parquet_metadata(resaved).get(SCHEMA_KEY) is None
    assert read_fits(resaved).height == 3
    code, captured = run_main(["figures", "--store", small, "--fits", resaved, "--out", tmp_path / "figures"], capsys)
    assert code == 0, captured.err
    assert "schema version" not in captured.err and (tmp_path / "figures" / "table1_fit_quality.csv").is_file()
