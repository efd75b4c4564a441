"""`mdyn sweep` over the offline tiny series: statuses, duplicates, resume after SIGKILL, disk, bad input."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from dynamics import store
from dynamics.sources import HubSource
from dynamics.sweep import Settings, plan, run
from fitting.errors import UserError
from tests.cli import run_main

SETTINGS = Settings(probe="embedded", n_seq=2, seq_len=32)
SWEEP_ARGS = ["--probe", "embedded", "--n-seq", "2", "--seq-len", "32"]


def comparable(root):
    """A store's measurements without the wall-clock column, in a fixed order."""
    return store.load(root).drop("measured_at").sort("revision", "seq", "layer")


@pytest.fixture(scope="module")
def swept(tinyrepo, tmp_path_factory):
    """One uninterrupted sweep of the whole series (kept checkpoints: the session cache is shared)."""
    root = tmp_path_factory.mktemp("swept") / "store"
    source = HubSource(tinyrepo.repo_id, offline=True, cache_dir=tinyrepo.cache_dir)
    the_plan = plan(source, root, "all", SETTINGS)
    ledger = run(source, root, the_plan, SETTINGS)
    return root, ledger


def test_statuses_duplicates_and_rows(swept, tinyrepo):
    root, ledger = swept
    by_status = dict(ledger.group_by("status").len().iter_rows())
    n_steps = len(tinyrepo.steps)
    assert by_status == {"ok": n_steps - 3, "duplicate": 1, "missing": 1, "corrupt": 1}
    dup = ledger.filter(pl.col("status") == "duplicate").row(0, named=True)
    assert (dup["revision"], dup["duplicate_of"]) == ("step6000", "step5000")
    corrupt = ledger.filter(pl.col("status") == "corrupt").row(0, named=True)
    assert corrupt["revision"] == tinyrepo.corrupt and "model.safetensors" in corrupt["detail"]
    assert ledger.filter(pl.col("status") == "missing")["revision"].to_list() == [tinyrepo.missing]
    df = store.load(root)
    assert df.height == (n_steps - 3) * 2 * 2  # revisions x sequences x layers
    assert df.group_by("revision", "seq", "layer").len()["len"].max() == 1
    assert store.load(root, store.LEDGER).height == n_steps
    ok = ledger.filter(pl.col("status") == "ok")
    assert (ok["seconds_fetch"] >= 0).all() and (ok["seconds_measure"] > 0).all()


def test_rerun_plans_nothing_new(swept, tinyrepo):
    root, _ = swept
    source = HubSource(tinyrepo.repo_id, offline=True, cache_dir=tinyrepo.cache_dir)
    again = plan(source, root, "all", SETTINGS)
    # Only the corrupt revision is tried again (a new download may repair it); missing and duplicate are
    # settled from metadata without downloading anything.
    assert again.to_measure == {tinyrepo.corrupt: tinyrepo.steps[tinyrepo.corrupt]}
    assert {r["status"] for r in again.settled} <= {"missing", "duplicate"}
    assert again.already == len(tinyrepo.steps) - 3


def cache_files(cache_dir):
    """Every path below an HF cache (locks aside), with each file's bytes: what a user would miss if deleted."""
    return {
        p.relative_to(cache_dir): (p.read_bytes() if p.is_file() else None)
        for p in sorted(cache_dir.rglob("*"))
        if ".locks" not in p.parts
    }


def test_an_offline_sweep_never_touches_the_cache(tinyrepo_copy, tmp_path, capsys):
    before = cache_files(tinyrepo_copy.cache_dir)
    root = tmp_path / "store"
    for _ in range(2):  # the documented command, twice: the second run must still find everything
        code, cap = run_main(
            [
                "sweep",
                tinyrepo_copy.repo_id,
                "--offline",
                "--cache-dir",
                tinyrepo_copy.cache_dir,
                "--store",
                root,
                "--steps",
                "0,1,2,4",
                *SWEEP_ARGS,
            ],
            capsys,
        )
        assert code == 0, cap.err
    assert cache_files(tinyrepo_copy.cache_dir) == before
    assert store.load(root)["revision"].n_unique() == 4


def test_evict_prunes_an_offline_cache_only_when_asked(tinyrepo_copy, tmp_path):
    source = HubSource(tinyrepo_copy.repo_id, offline=True, cache_dir=tinyrepo_copy.cache_dir, eviction="measured")
    root = tmp_path / "store"
    run(source, root, plan(source, root, "0,1,2", SETTINGS), SETTINGS)
    left = set(HubSource(tinyrepo_copy.repo_id, offline=True, cache_dir=tinyrepo_copy.cache_dir).revisions())
    assert {"step0", "step1", "step2"}.isdisjoint(left) and "step4" in left
    # The tokenizer blob every revision shares stays for the others.
    assert (
        HubSource(tinyrepo_copy.repo_id, offline=True, cache_dir=tinyrepo_copy.cache_dir).fetch("step4")
        / "tokenizer.json"
    ).is_file()


def start_sweep(tinyrepo, root):
    env = {**os.environ, **tinyrepo.env, "PYTHONUNBUFFERED": "1"}
    code = "from dynamics.cli.app import main; main()"
    args = ["sweep", tinyrepo.repo_id, "--store", str(root), "--keep-checkpoints", *SWEEP_ARGS]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def kill_after(proc, root, shards, timeout=60.0):
    """SIGKILL the sweep as soon as the store holds at least `shards` measurement shards."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((root / "measurements").glob("*/*.parquet"))) >= shards:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_twice_then_resumed_equals_uninterrupted(swept, tinyrepo, tmp_path):
    reference, _ = swept
    root = tmp_path / "store"
    for shards in (2, 9):
        kill_after(start_sweep(tinyrepo, root), root, shards)
    partial = len(list((root / "measurements").glob("*/*.parquet")))
    assert 2 <= partial < len(tinyrepo.steps) - 3, "the kills landed mid-sweep"
    proc = start_sweep(tinyrepo, root)
    assert proc.wait(timeout=120) == 0
    resumed, expected = comparable(root), comparable(reference)
    assert resumed.drop("package_version").equals(expected.drop("package_version"))
    ledger = store.load(root, store.LEDGER)
    assert ledger.height == len(tinyrepo.steps) and ledger["revision"].n_unique() == ledger.height


def test_status_prints_the_ledger(swept, capsys):
    root, _ = swept
    code, cap = run_main(["status", "--store", root], capsys)
    assert code == 0
    assert "corrupt" in cap.out and "step6000 -> step5000" in cap.out and "missing" in cap.out


@pytest.mark.parametrize(
    "args, message",
    [
        (["tiny/not-there"], "not in the offline cache"),
        (["tiny/neox-sweep", "--steps", "31337"], "31337"),
        (["tiny/neox-sweep", "--steps", "sometimes"], "all, every:K, log:N, paper"),
        (["EMPTY_DIR"], "has no sub-folders"),
        (["tiny/neox-sweep", "--store", "NOT_A_STORE"], "not a massive-dynamics store"),
    ],
)
def test_bad_input_is_one_line_exit_2(tinyrepo, tmp_path, capsys, args, message):
    (tmp_path / "EMPTY_DIR").mkdir()
    (tmp_path / "NOT_A_STORE").mkdir()
    (tmp_path / "NOT_A_STORE" / "data.csv").write_text("a,b\n")
    args = [str(tmp_path / a) if a in ("EMPTY_DIR", "NOT_A_STORE") else a for a in args]
    if "--store" not in args:
        args += ["--store", str(tmp_path / "store")]
    code, cap = run_main(["sweep", *args, *SWEEP_ARGS, "--keep-checkpoints"], capsys)
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], cap.err


def test_the_sweep_path_imports_no_fitting_learning_or_plotting_library(tinyrepo, tmp_path):
    """A Slurm task or a sweep pays for every import at its start: lmfit, scikit-learn and matplotlib stay out."""
    code = (
        "import sys\n"
        "from dynamics.cli.app import main\n"
        f"sys.argv = ['mdyn', 'sweep', {tinyrepo.repo_id!r}, '--store', {str(tmp_path / 'store')!r}, '--steps', '0,1',"
        " '--offline', '--probe', 'embedded', '--n-seq', '2', '--seq-len', '32']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lmfit', 'sklearn', 'matplotlib', 'skops'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **tinyrepo.env}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert store.load(tmp_path / "store")["revision"].n_unique() == 2


@pytest.mark.parametrize("field", ["n_seq", "batch_size"])
def test_settings_refuse_a_count_below_one(field):
    """The CLI's options stop 0 already; the Python API must as well (batch_size None means automatic)."""
    with pytest.raises(UserError, match="must be at least 1, got 0"):
        dataclasses.replace(SETTINGS, **{field: 0}).check()
    assert dataclasses.replace(SETTINGS, batch_size=None).check().batch_size is None
