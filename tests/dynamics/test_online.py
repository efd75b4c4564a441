"""`mdyn` online, end to end: the tiny series served by the local hub of tests/fixtures/hubserver.py.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE into its constants when first imported, and this test process
runs offline (tests/conftest.py), so every online client is a fresh Python process (`mdyn`, `engine`) with its own
HF_HOME and cache, pointed at a server that runs in a thread of this one. The server serves a copy of the session's
`tinyrepo` cache, so an offline sweep of `tinyrepo` is the reference an online sweep must equal.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import polars.selectors as cs
import pytest

from dynamics import slurm, store
from dynamics.hubcache import repo_folder
from dynamics.probes import PAPER_DATASET
from dynamics.sources import HubSource
from dynamics.sweep import plan, run
from tests.cli import run_main
from tests.dynamics.test_sweep import SETTINGS, SWEEP_ARGS, comparable
from tests.fixtures.hubdata import REDPAJAMA_FILES, publish_redpajama_standin
from tests.fixtures.hubserver import HubServer, Request, online_env
from tests.fixtures.tinyrepo import FINAL, TinyRepo

TOKEN = "hf_mdynTestTokenThatMustNotLeak0123"


@pytest.fixture(scope="module")
def served(tinyrepo, tmp_path_factory) -> TinyRepo:
    """What the server serves: a copy of the tiny series (same commits) and the paper's probe dataset stand-in."""
    repo = tinyrepo.copy(tmp_path_factory.mktemp("served") / "hub")
    publish_redpajama_standin(repo.cache_dir)
    return repo


@pytest.fixture
def hub(served):
    with HubServer(served.cache_dir) as server:
        yield server


@pytest.fixture(scope="module")
def reference(tinyrepo, tmp_path_factory) -> Path:
    """The store of an offline sweep of the whole tiny series, with the online sweeps' settings."""
    root = tmp_path_factory.mktemp("offline") / "store"
    source = HubSource(tinyrepo.repo_id, offline=True, cache_dir=tinyrepo.cache_dir)
    run(source, root, plan(source, root, "all", SETTINGS), SETTINGS)
    return root


def mdyn(hub: HubServer, home: Path, *args, **env: str) -> subprocess.CompletedProcess:
    """`mdyn ARGS` in a fresh Python, online against `hub`."""
    command = [sys.executable, "-m", "dynamics.cli.app", *map(str, args)]
    return subprocess.run(command, env=online_env(hub, home, **env), capture_output=True, text=True, timeout=600)


def commit(repo: TinyRepo, revision: str) -> str:
    return (repo_folder(repo.cache_dir, repo.repo_id) / "refs" / revision).read_text().strip()


def weight_gets(requests: list[Request], commit_id: str | None = None) -> list[Request]:
    return [
        r
        for r in requests
        if r.method == "GET" and r.path.endswith("/model.safetensors") and (commit_id is None or commit_id in r.path)
    ]


def left_in(cache: Path, repo_id: str) -> dict[str, list[str]]:
    """What a client cache holds of a repo besides empty folders: snapshot folders, blobs, refs, cached listings."""
    root = repo_folder(cache, repo_id)
    parts = ("snapshots", "blobs", "refs", "trees")
    return {part: sorted(p.name for p in (root / part).iterdir()) if (root / part).is_dir() else [] for part in parts}


NOTHING: dict[str, list[str]] = {"snapshots": [], "blobs": [], "refs": [], "trees": []}


def said(done: subprocess.CompletedProcess) -> str:
    """A command's stderr with its line wrapping undone (rich wraps at the terminal width)."""
    return " ".join(done.stderr.split())


def present_at(samples: list[tuple[float, frozenset[str]]], when: float) -> frozenset[str]:
    """The snapshot folders a `SnapshotWatcher` saw at time `when`."""
    return max(((t, names) for t, names in samples if t <= when), default=(0.0, frozenset()))[1]


def assert_no_partial_files(cache: Path) -> None:
    """Every blob holds what its name promises (sha256 or git blob id), and no download is left half-written."""
    for blob in cache.glob("*--*/blobs/*"):
        data = blob.read_bytes()
        git_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        assert blob.name in (hashlib.sha256(data).hexdigest(), git_id), blob
    assert not list(cache.rglob("*.incomplete"))


class SnapshotWatcher:
    """Records, from a thread, which snapshot folders a cached repo holds, every time that set changes."""

    def __init__(self, cache: Path, repo_id: str):
        self.folder = repo_folder(cache, repo_id) / "snapshots"
        self.samples: list[tuple[float, frozenset[str]]] = []  # (time.monotonic(), snapshot names)
        self._stop = threading.Event()

    def __enter__(self) -> "SnapshotWatcher":
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                names = frozenset(os.listdir(self.folder))
            except FileNotFoundError:
                names = frozenset()
            if not self.samples or self.samples[-1][1] != names:
                self.samples.append((time.monotonic(), names))
            time.sleep(0.0005)


@dataclass(frozen=True)
class Swept:
    """One online `mdyn sweep` and what it left: the store, the client's HF_HOME, its output, the server's log."""

    root: Path
    home: Path
    done: subprocess.CompletedProcess
    requests: list[Request]
    snapshots: list[tuple[float, frozenset[str]]]


@pytest.fixture(scope="module")
def swept(served, tmp_path_factory) -> Swept:
    """`mdyn sweep` of the whole tiny series online, logged in with HF_TOKEN to the repo, which the server gates.

    Bodies are throttled to 4 MB/s, so that each revision's download (~0.05 s) overlaps its predecessor's
    measurement and the prefetch really holds two snapshots at once.
    """
    work = tmp_path_factory.mktemp("online")
    root, home = work / "store", work / "home"
    with HubServer(served.cache_dir) as server:
        server.gated[served.repo_id] = TOKEN
        server.bandwidth = 4_000_000
        with SnapshotWatcher(home / "hub", served.repo_id) as watcher:
            done = mdyn(server, home, "sweep", served.repo_id, "--store", root, *SWEEP_ARGS, HF_TOKEN=TOKEN)
        requests = server.requests
    assert done.returncode == 0, done.stderr[-3000:]
    return Swept(root, home, done, requests, watcher.samples)


def test_an_online_sweep_equals_the_offline_sweep_row_for_row(swept, reference):
    online, offline = comparable(swept.root), comparable(reference)
    assert online.height == offline.height > 0
    assert online.equals(offline)  # commit and weights_sha256 included
    statuses = ["revision", "step", "status", "duplicate_of"]
    assert (
        store.load(swept.root, store.LEDGER)
        .select(statuses)
        .sort("step")
        .equals(store.load(reference, store.LEDGER).select(statuses).sort("step"))
    )


def test_duplicates_are_flagged_from_lfs_sha256_without_downloading_them(swept, served):
    ledger = store.load(swept.root, store.LEDGER)
    (duplicate,) = ledger.filter(pl.col("status") == "duplicate").iter_rows(named=True)
    assert (duplicate["revision"], duplicate["duplicate_of"]) == ("step6000", "step5000")
    # No file of the duplicate is even asked for; its original's weights are downloaded once.
    assert not [r for r in swept.requests if "/resolve/" in r.path and commit(served, "step6000") in r.path]
    assert len(weight_gets(swept.requests, commit(served, "step5000"))) == 1
    assert "2 settled without download" in said(swept.done)


def test_planning_lists_the_revisions_concurrently(swept):
    listings = sorted((r.started, r.finished) for r in swept.requests if "/tree/" in r.path)
    assert len(listings) >= 20  # one listing per revision: fingerprints come from the LFS metadata
    overlapping = sum(later_start < finish for (_, finish), (later_start, _) in zip(listings, listings[1:]))
    assert overlapping > 0  # 154 Pythia revisions must not cost 154 sequential round trips


def test_missing_and_corrupt_revisions_are_recorded_and_not_measured(swept, served):
    ledger = {r["revision"]: r for r in store.load(swept.root, store.LEDGER).iter_rows(named=True)}
    assert ledger[served.missing]["status"] == "missing" and "no weight files" in ledger[served.missing]["detail"]
    assert ledger[served.corrupt]["status"] == "corrupt" and "model.safetensors" in ledger[served.corrupt]["detail"]
    assert not set(store.load(swept.root)["revision"]) & {served.missing, served.corrupt}
    assert not [r for r in swept.requests if "/resolve/" in r.path and commit(served, served.missing) in r.path]


def test_at_most_two_snapshots_are_in_the_cache_at_any_moment(swept, served):
    sizes = [len(names) for _, names in swept.snapshots]
    assert max(sizes) == 2, "the next revision downloads while the current one is measured, never more"
    # The planning fetch (the last revision's tokenizer) is gone before the first weights arrive, and its
    # snapshot only reappears when that revision itself is fetched to be measured.
    planned = commit(served, FINAL)
    first_weights = min(r.started for r in weight_gets(swept.requests))
    fetched_again = min(r.started for r in swept.requests if planned in r.path and r.started > first_weights)
    assert any(planned in names for t, names in swept.snapshots if t < first_weights)
    assert planned not in present_at(swept.snapshots, first_weights)
    assert not [names for t, names in swept.snapshots if first_weights <= t < fetched_again and planned in names]
    # Everything the sweep downloaded is deleted again (the client cache was empty before).
    assert left_in(swept.home / "hub", served.repo_id) == NOTHING


def test_the_token_reaches_the_server_as_a_header_and_nowhere_else(swept, served, tmp_path, capsys, monkeypatch):
    assert {r.authorization for r in swept.requests} == {f"Bearer {TOKEN}"}
    code, cap = run_main(["report", "--store", swept.root, "--out", tmp_path / "report"], capsys)
    assert code == 0, cap.err
    assert TOKEN not in swept.done.stdout + swept.done.stderr + cap.out + cap.err
    written = [p for folder in (swept.root, tmp_path / "report", swept.home) for p in folder.rglob("*") if p.is_file()]
    tables = [pl.read_parquet(p) for p in written if p.suffix == ".parquet"]
    assert len(tables) > len(served.steps) + len(store.load(swept.root)["revision"].unique())  # shards and fits
    assert [p for p in written if TOKEN.encode() in p.read_bytes()] == []
    for table in tables:  # parquet compresses, so the columns are read too
        text = table.select((cs.string(include_categorical=True) | cs.enum()).cast(pl.String))
        assert not [v for column in text.iter_columns() for v in column if v and TOKEN in v]
    # A Slurm submission from a logged-in shell: the job script and the task table name no token.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    script = slurm._script(tmp_path / "sub", swept.root, 3, 3, slurm.Resources(partition="gpu"), offline=False)
    task = slurm._reopen(HubSource(served.repo_id, offline=False, cache_dir=swept.home / "hub", token=TOKEN))
    assert "#SBATCH --partition=gpu" in script and TOKEN not in script + json.dumps(task)


def test_rate_limits_and_server_errors_are_retried(hub, served, reference, tmp_path):
    commits = {rev: commit(served, rev) for rev in ("step0", "step1", "step2", "step4")}
    hub.add_fault("status", match="/refs$", status=429, retry_after=1, times=1)  # API: retried by mdyn
    hub.add_fault("status", match="/revision/step2$", status=503, times=1)  # repo_info inside snapshot_download
    hub.add_fault("status", match=f"{commits['step0']}/model.safetensors", method="GET", status=500, times=1)
    hub.add_fault("status", match=f"{commits['step4']}/model.safetensors", method="GET", status=429, times=1)
    hub.add_fault("reset", match=f"{commits['step1']}/model.safetensors", times=1)
    hub.add_fault("truncate", match=f"{commits['step2']}/model.safetensors", times=1)
    root = tmp_path / "store"
    done = mdyn(hub, tmp_path / "home", "sweep", served.repo_id, "--store", root, "--steps", "0,1,2,4", *SWEEP_ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = comparable(reference).filter(pl.col("revision").is_in(list(commits)))
    assert comparable(root).equals(expected)
    requests = hub.requests
    refs = [r.status for r in requests if r.path.endswith("/refs")]
    infos = [r.status for r in requests if r.path.endswith("/revision/step2")]
    weights = {
        rev: [(r.status, r.sent if r.status == 200 else 0) for r in weight_gets(requests, c)]
        for rev, c in commits.items()
    }
    assert refs == [429, 200] and infos[:2] == [503, 200]
    size = weights["step4"][-1][1]
    assert weights == {
        "step0": [(500, 0), (200, size)],  # retried by mdyn
        "step1": [(200, size // 2), (200, size)],  # reset mid-body: retried by mdyn
        "step2": [(200, size // 2), (200, size)],  # cut short: huggingface_hub downloads it again
        "step4": [(429, 0), (200, size)],  # retried by huggingface_hub
    }
    assert_no_partial_files(tmp_path / "home" / "hub")
    assert left_in(tmp_path / "home" / "hub", served.repo_id) == NOTHING


ENGINE = """
import sys
from pathlib import Path
from dynamics.sources import HubSource
from dynamics.sweep import Settings, plan, run
repo, root, steps = sys.argv[1:]
source = HubSource(repo, eviction="keep", retries=1, backoff_s=0.1)
settings = Settings(probe="embedded", n_seq=2, seq_len=32)
run(source, Path(root), plan(source, Path(root), steps, settings), settings)
"""


def test_a_download_that_keeps_failing_is_recorded_as_failed_and_never_measured(hub, served, reference, tmp_path):
    home, root = tmp_path / "home", tmp_path / "store"
    commits = {rev: commit(served, rev) for rev in ("step0", "step1", "step2")}
    hub.add_fault("reset", match=f"{commits['step1']}/model.safetensors")
    hub.add_fault("status", match=f"{commits['step2']}/model.safetensors", method="GET", status=500)
    # The sweep engine itself with one retry a tenth of a second later, and keeping what it fetched, to look at it.
    engine = [sys.executable, "-c", ENGINE, served.repo_id, str(root), "0,1,2"]
    done = subprocess.run(engine, env=online_env(hub, home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ledger = {r["revision"]: r for r in store.load(root, store.LEDGER).iter_rows(named=True)}
    assert {rev: r["status"] for rev, r in ledger.items()} == {"step0": "ok", "step1": "failed", "step2": "failed"}
    assert "the hub failed 2 times in a row" in ledger["step1"]["detail"] and "ReadError" in ledger["step1"]["detail"]
    assert "500" in ledger["step2"]["detail"]
    assert set(store.load(root)["revision"]) == {"step0"}
    gets = [(r.status, r.sent) for r in weight_gets(hub.requests, commits["step1"])]
    assert len(gets) == 2 and all(status == 200 and 0 < sent < 200_000 for status, sent in gets)
    # The cache keeps what did arrive (config, tokenizer) but no byte of the weights that did not.
    cache = home / "hub"
    step1 = repo_folder(cache, served.repo_id) / "snapshots" / commits["step1"]
    assert (step1 / "config.json").is_file() and not (step1 / "model.safetensors").exists()
    assert_no_partial_files(cache)
    kept = left_in(cache, served.repo_id)

    # Once the hub serves again, the default `mdyn sweep` measures the failed revisions and then deletes only
    # what it downloaded itself: what the first run left stays.
    hub.clear_faults()
    again = mdyn(hub, home, "sweep", served.repo_id, "--store", root, "--steps", "0,1,2", *SWEEP_ARGS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert comparable(root).equals(comparable(reference).filter(pl.col("revision").is_in(list(commits))))
    assert left_in(cache, served.repo_id) == kept


def test_the_paper_probe_downloads_the_sample_once_and_then_works_offline(hub, served, tmp_path):
    home = tmp_path / "home"
    args = ["sweep", served.repo_id, "--steps", "0,1", "--probe", "paper", "--n-seq", "2", "--seq-len", "32"]
    online = mdyn(hub, home, *args, "--store", tmp_path / "online", "--keep-checkpoints")
    assert online.returncode == 0, online.stderr[-3000:]
    dataset = [r for r in hub.requests if r.method == "GET" and r.path.startswith(f"/datasets/{PAPER_DATASET}/")]
    gets = sorted(r.path.rsplit("/", 1)[1] for r in dataset)
    assert gets == sorted(REDPAJAMA_FILES)  # the JSON Lines only, not the README or the loading script
    asked = len(hub.requests)
    offline = mdyn(hub, home, *args, "--store", tmp_path / "offline", "--offline", HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert len(hub.requests) == asked  # the offline sweep asked the hub nothing
    measured = {name: store.load(tmp_path / name) for name in ("online", "offline")}
    assert measured["online"]["probe_id"].unique().to_list() == measured["offline"]["probe_id"].unique().to_list()
    assert "probe paper (2 x 32" in said(online) and "probe paper (2 x 32" in said(offline)
    assert comparable(tmp_path / "online").equals(comparable(tmp_path / "offline"))


RUNNER = """
import contextlib, io, json, sys
from dynamics.cli.app import main
answers = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["mdyn", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code
    answers.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(answers))
"""


def test_a_missing_repo_or_revision_and_a_gated_repo_without_token_are_one_line_exit_2(hub, served, tmp_path):
    store_args = ["--store", str(tmp_path / "store"), *SWEEP_ARGS]
    cases = {
        "not found on the hub": ["sweep", "tiny/absent", *store_args],
        "'step31337' is not a branch of tiny/neox-sweep on the hub": [
            "measure",
            served.repo_id,
            "--revision",
            "step31337",
            *store_args,
        ],
        "31337": ["sweep", served.repo_id, "--steps", "31337", *store_args],
        "repo tiny/neox-sweep is gated": ["sweep", served.repo_id, *store_args],
    }
    hub.gated[served.repo_id] = TOKEN
    command = [sys.executable, "-c", RUNNER, json.dumps(list(cases.values()))]
    done = subprocess.run(command, env=online_env(hub, tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    for message, (code, out, err) in zip(cases, json.loads(done.stdout)):
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith("mdyn: error: ") and message in err
    assert {r.status for r in hub.requests if "/resolve/" in r.path} == {401}
    assert left_in(tmp_path / "home" / "hub", served.repo_id) == NOTHING  # nor a ref or listing of the refusal
