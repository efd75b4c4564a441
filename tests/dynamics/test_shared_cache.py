"""Two processes on one HF cache: what one is reading, the other's eviction never deletes (`BlobLeases`).

The reader is a separate Python process holding a fetched revision of a private copy of the tiny series; the
other process is this one, sweeping with `--evict` (eviction `measured`, the policy that deletes the most).
"""

import hashlib
import json
import subprocess
import sys

from dynamics.hubcache import repo_blobs, repo_folder, snapshot_links
from dynamics.sources import HubSource
from tests.cli import run_main
from tests.dynamics.test_sweep import SWEEP_ARGS

HOLDER = """
import hashlib, json, sys
from pathlib import Path
from dynamics.sources import HubSource
cache, repo, revision = sys.argv[1:]
source = HubSource(repo, offline=True, cache_dir=cache, eviction="measured")
folder = source.fetch(revision)
print("fetched", flush=True)
sys.stdin.readline()  # the test's go-ahead, after the other process swept
read = {p.name: [p.resolve().name, p.read_bytes().hex()] for p in sorted(folder.iterdir())}
source.evict(revision)
print(json.dumps(read), flush=True)
"""


def hold(cache, repo_id: str, revision: str) -> subprocess.Popen:
    """A process that fetches `revision`, says so, and reads and evicts it once told to go on."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cache), repo_id, revision],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "fetched"
    return holder


def snapshot(repo, revision: str):
    root = repo_folder(repo.cache_dir, repo.repo_id)
    return root / "snapshots" / (root / "refs" / revision).read_text().strip()


def names_its_content(blob: str, data: bytes) -> bool:
    """Whether a blob name is the sha256 (an LFS file) or the git blob id of `data`."""
    return blob in (hashlib.sha256(data).hexdigest(), hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())


def test_an_eviction_keeps_what_another_process_reads_until_it_is_done(tinyrepo_copy, tmp_path, capsys):
    repo = tinyrepo_copy
    held = snapshot_links(snapshot(repo, "step1"))
    others = {rev: snapshot_links(snapshot(repo, rev)) for rev in ("step2", "step4")}
    holder = hold(repo.cache_dir, repo.repo_id, "step1")
    try:
        # The other process measures the held revision too, and two more, evicting each after measuring it.
        args = ["sweep", repo.repo_id, "--offline", "--evict", "--cache-dir", repo.cache_dir, "--steps", "1,2,4"]
        code, cap = run_main([*args, "--store", tmp_path / "store", *SWEEP_ARGS], capsys)
        assert code == 0, cap.err
        assert snapshot_links(snapshot(repo, "step1")) == held  # not one link of the held snapshot went
        assert set(held.values()) <= repo_blobs(repo.cache_dir, repo.repo_id)
        left = set(HubSource(repo.repo_id, offline=True, cache_dir=repo.cache_dir).revisions())
        assert "step1" in left and not {"step2", "step4"} & left  # what nobody else reads is pruned
        unique = {blob for links in others.values() for blob in links.values()} - set(held.values())
        assert unique and not unique & repo_blobs(repo.cache_dir, repo.repo_id)
    finally:
        out, _ = holder.communicate("go\n", timeout=120)
    assert holder.returncode == 0
    read = json.loads(out)
    assert set(read) == {link.name for link in held} and all(
        names_its_content(b, bytes.fromhex(d)) for b, d in read.values()
    )
    # Once the reader evicts, the revision goes; blobs other cached revisions link to stay.
    assert "step1" not in HubSource(repo.repo_id, offline=True, cache_dir=repo.cache_dir).revisions()
    still_linked = {
        b for p in repo_folder(repo.cache_dir, repo.repo_id).glob("snapshots/*") for b in snapshot_links(p).values()
    }
    assert repo_blobs(repo.cache_dir, repo.repo_id) & set(held.values()) == still_linked & set(held.values())
    assert set(held.values()) - still_linked  # step1's own weights were deleted


def test_a_killed_reader_pins_nothing(tinyrepo_copy):
    repo = tinyrepo_copy
    holder = hold(repo.cache_dir, repo.repo_id, "step1")
    pruner = HubSource(repo.repo_id, offline=True, cache_dir=repo.cache_dir, eviction="measured")
    pruner.fetch("step1")
    pruner.evict("step1")
    assert "step1" in HubSource(repo.repo_id, offline=True, cache_dir=repo.cache_dir).revisions()
    holder.kill()  # the kernel drops a dead process's locks
    holder.wait()
    pruner.fetch("step1")
    pruner.evict("step1")
    assert "step1" not in HubSource(repo.repo_id, offline=True, cache_dir=repo.cache_dir).revisions()
