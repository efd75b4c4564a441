"""The local hub server of tests/fixtures/hubserver.py, driven by the real huggingface_hub and transformers.

The test session runs with HF_HUB_OFFLINE=1 (tests/conftest.py), and huggingface_hub reads HF_ENDPOINT and
HF_HUB_OFFLINE into its constants when first imported, so every online client runs in a fresh Python process
(`client`), pointed at a server that runs in a thread of this one. Each test gets its own server (fresh faults and
log) and its own client cache.
"""

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from dynamics.hubcache import publish_revision, repo_folder
from tests.fixtures.hubserver import HubServer

MODEL, DATASET, BIG = "org/tiny", "org/corpus", "org/big"
WEIGHT_SIZE = 200_000
CHUNK = 10 * 1024 * 1024  # huggingface_hub's DOWNLOAD_CHUNK_SIZE: it writes to disk in pieces this large

PRELUDE = """
import json
def report(value):
    print(json.dumps(value))
def attempt(call):
    try:
        return {"value": call()}
    except Exception as err:
        response = getattr(err, "response", None)
        return {"error": [c.__name__ for c in type(err).__mro__], "status": getattr(response, "status_code", None)}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """A cache with `org/tiny` (branches main, step1, step2), the dataset `org/corpus` and `org/big` (24 MiB)."""
    cache = tmp_path_factory.mktemp("served")
    for step in (1, 2):
        files = {
            "config.json": json.dumps({"step": step}).encode(),
            "model.safetensors": random.Random(step).randbytes(WEIGHT_SIZE),
            "notes/README.md": b"# tiny\n",
        }
        publish_revision(cache, MODEL, f"step{step}", files)
    publish_revision(cache, MODEL, "main", files)  # step2's files, under a commit of its own
    corpus = {"data/train.jsonl": b'{"text": "To be"}\n{"text": "or not"}\n', "README.md": b"# corpus\n"}
    publish_revision(cache, DATASET, "main", corpus, repo_type="dataset")
    publish_revision(cache, BIG, "main", {"big.bin": random.Random(0).randbytes(24 << 20)})
    return cache


@pytest.fixture
def hub(served):
    with HubServer(served) as server:
        yield server


def client(hub: HubServer, tmp_path: Path, script: str, **env: str):
    """Run `script` online against `hub` in a fresh Python, caching in `tmp_path/client`; returns what it reported."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # no token or cache of ours leaks in
    clean.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_OFFLINE="0",
        HF_HUB_CACHE=str(tmp_path / "client"),
        HF_HOME=str(tmp_path / "home"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    clean.update(env)
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + script], env=clean, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def snapshot(cache: Path, revision: str, repo_id: str = MODEL, repo_type: str = "model") -> Path:
    root = repo_folder(cache, repo_id, repo_type)
    return root / "snapshots" / (root / "refs" / revision).read_text()


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def assert_no_wrong_files(cache: Path) -> None:
    """Every blob in a client cache holds what its name promises, and nothing half-written is left."""
    for blob in cache.glob("*--*/blobs/*"):
        data = blob.read_bytes()
        assert blob.name in (hashlib.sha256(data).hexdigest(), git_blob_id(data)), blob
    assert not list(cache.rglob("*.incomplete"))


def resolves(hub: HubServer, name: str, method: str = "GET") -> list:
    return [r for r in hub.requests if r.method == method and "/resolve/" in r.path and r.path.endswith(name)]


def test_list_repo_refs_and_repo_info_name_every_branch_with_its_commit(hub, served, tmp_path):
    out = client(
        hub,
        tmp_path,
        f"""
from huggingface_hub import HfApi
api = HfApi()
refs = api.list_repo_refs({MODEL!r})
info = api.model_info({MODEL!r}, revision="step1", files_metadata=True)
data = api.repo_info({DATASET!r}, repo_type="dataset")
report({{
    "branches": {{b.name: [b.ref, b.target_commit] for b in refs.branches}},
    "sha": info.sha,
    "siblings": {{s.rfilename: [s.size, s.blob_id, s.lfs and s.lfs.sha256] for s in info.siblings}},
    "dataset": [data.sha, sorted(s.rfilename for s in data.siblings)],
}})
""",
    )
    refs = repo_folder(served, MODEL) / "refs"
    assert out["branches"] == {b: [f"refs/heads/{b}", (refs / b).read_text()] for b in ("main", "step1", "step2")}
    assert out["sha"] == snapshot(served, "step1").name
    weights = (snapshot(served, "step1") / "model.safetensors").read_bytes()
    assert out["siblings"]["model.safetensors"][0::2] == [WEIGHT_SIZE, hashlib.sha256(weights).hexdigest()]
    config = (snapshot(served, "step1") / "config.json").read_bytes()
    assert out["siblings"]["config.json"] == [len(config), git_blob_id(config), None]
    assert out["dataset"] == [snapshot(served, "main", DATASET, "dataset").name, ["README.md", "data/train.jsonl"]]


def test_list_repo_tree_gives_lfs_sha256_equal_to_the_blob_names(hub, served, tmp_path):
    out = client(
        hub,
        tmp_path,
        f"""
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile
api = HfApi()
def listing(entries):
    return {{e.path: [e.size, e.blob_id, e.lfs and [e.lfs.sha256, e.lfs.size, e.lfs.pointer_size], e.xet_hash]
            if isinstance(e, RepoFile) else "folder" for e in entries}}
report({{
    "recursive": listing(api.list_repo_tree({MODEL!r}, revision="step2", recursive=True)),
    "top": listing(api.list_repo_tree({MODEL!r}, revision="step2")),
    "notes": listing(api.list_repo_tree({MODEL!r}, "notes", revision="step2")),
    "paths": listing(api.get_paths_info({MODEL!r}, ["config.json", "notes", "absent.txt"], revision="step2")),
}})
""",
    )
    folder = snapshot(served, "step2")
    expected = {}
    for name, data in contents(folder).items():
        blob = (folder / name).resolve().name
        if name.endswith(".safetensors"):
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob}\nsize {len(data)}\n".encode()
            assert blob == hashlib.sha256(data).hexdigest()
            expected[name] = [len(data), git_blob_id(pointer), [blob, len(data), len(pointer)], None]
        else:
            assert blob == git_blob_id(data)
            expected[name] = [len(data), blob, None, None]
    assert out["recursive"] == {**expected, "notes": "folder"}
    assert out["top"] == {**{n: expected[n] for n in ("config.json", "model.safetensors")}, "notes": "folder"}
    assert out["notes"] == {"notes/README.md": expected["notes/README.md"]}
    assert out["paths"] == {"config.json": expected["config.json"], "notes": "folder"}


def test_resolve_sends_the_hub_headers_and_serves_byte_ranges(hub, served):
    folder = snapshot(served, "step1")
    data = (folder / "model.safetensors").read_bytes()
    url = f"{hub.endpoint}/{MODEL}/resolve/step1/model.safetensors"
    head = httpx2.head(url).headers
    sha256 = hashlib.sha256(data).hexdigest()
    assert (head["X-Repo-Commit"], head["ETag"], head["X-Linked-Etag"]) == (folder.name, f'"{sha256}"', f'"{sha256}"')
    assert head["X-Linked-Size"] == head["Content-Length"] == str(WEIGHT_SIZE)
    assert not [h for h in head if h.lower().startswith("x-xet")]  # or huggingface_hub would try the Xet protocol
    config = httpx2.head(f"{hub.endpoint}/{MODEL}/resolve/step1/config.json").headers
    config_id = git_blob_id((folder / "config.json").read_bytes())
    assert config["ETag"] == f'"{config_id}"' and "X-Linked-Etag" not in config
    for ask, part, answer in [
        ("bytes=10-19", data[10:20], f"bytes 10-19/{WEIGHT_SIZE}"),
        ("bytes=199990-", data[199990:], f"bytes 199990-199999/{WEIGHT_SIZE}"),
        ("bytes=-5", data[-5:], f"bytes 199995-199999/{WEIGHT_SIZE}"),
    ]:
        got = httpx2.get(url, headers={"Range": ask})
        assert (got.status_code, got.content, got.headers["Content-Range"]) == (206, part, answer)
    beyond = httpx2.get(url, headers={"Range": f"bytes={WEIGHT_SIZE}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{WEIGHT_SIZE}"


def test_faults_fire_on_every_kth_matching_request_at_most_times(hub):
    url = f"{hub.endpoint}/{MODEL}/resolve/step1/config.json"
    fault = hub.add_fault("status", match="config", method="GET", status=429, retry_after=7, every=2, times=2)
    answers = [httpx2.get(url) for _ in range(6)]
    assert [a.status_code for a in answers] == [200, 429, 200, 429, 200, 200]
    assert answers[1].headers["Retry-After"] == "7" and httpx2.head(url).status_code == 200
    assert (fault.seen, fault.fired) == (6, 2)
    hub.add_fault("status", match="config", status=500)
    assert httpx2.head(url).status_code == 500
    hub.clear_faults()
    assert httpx2.get(url).status_code == 200
    assert [r.status for r in hub.requests] == [200, 429, 200, 429, 200, 200, 200, 500, 200]


def test_snapshot_download_is_byte_identical_and_then_serves_offline(hub, served, tmp_path):
    download = f"""
from huggingface_hub import hf_hub_download, snapshot_download
report([snapshot_download({MODEL!r}, revision="step1"), hf_hub_download({MODEL!r}, "config.json", revision="step1")])
"""
    folder, config = client(hub, tmp_path, download)
    assert contents(Path(folder)) == contents(snapshot(served, "step1"))
    assert Path(config) == Path(folder) / "config.json"
    served_blobs = {(snapshot(served, "step1") / name).resolve().name for name in contents(Path(folder))}
    assert {p.name for p in (repo_folder(tmp_path / "client", MODEL) / "blobs").iterdir()} == served_blobs
    assert not [r for r in hub.requests if "xet" in r.path]
    asked = len(hub.requests)
    assert client(hub, tmp_path, download, HF_HUB_OFFLINE="1") == [folder, config]
    assert len(hub.requests) == asked


def test_snapshot_download_with_allow_patterns_fetches_only_those_files(hub, served, tmp_path):
    folder = client(
        hub,
        tmp_path,
        f"""
from huggingface_hub import snapshot_download
report(snapshot_download({MODEL!r}, revision="step2", allow_patterns=["*.json"]))
""",
    )
    assert contents(Path(folder)) == {"config.json": b'{"step": 2}'}
    assert not [r for r in hub.requests if r.path.endswith("model.safetensors")]


def test_a_dataset_repo_downloads(hub, served, tmp_path):
    folder, listed, readme = client(
        hub,
        tmp_path,
        f"""
from pathlib import Path
from huggingface_hub import hf_hub_download, snapshot_download
folder = snapshot_download({DATASET!r}, repo_type="dataset", allow_patterns=["*.jsonl"])
listed = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
report([folder, listed, hf_hub_download({DATASET!r}, "README.md", repo_type="dataset")])
""",
    )
    assert listed == ["data/train.jsonl"]
    assert contents(Path(folder)) == contents(snapshot(served, "main", DATASET, "dataset"))
    assert Path(readme) == Path(folder) / "README.md"
    assert all(r.path.startswith(("/datasets/", "/api/datasets/")) for r in hub.requests)


def test_from_pretrained_loads_the_weights_of_the_asked_revision(tinyrepo, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    with HubServer(tinyrepo.cache_dir) as hub:
        out = client(
            hub,
            tmp_path,
            f"""
import hashlib
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({tinyrepo.repo_id!r}, revision="step1000")
report({{
    "step": model.config.training_step,
    "weights": {{k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in model.state_dict().items()}},
    "tokens": AutoTokenizer.from_pretrained({tinyrepo.repo_id!r}, revision="step1000")("To be, or not").input_ids,
    "config_step": AutoConfig.from_pretrained({tinyrepo.repo_id!r}, revision="step4").training_step,
}})
""",
        )
    folder = snapshot(tinyrepo.cache_dir, "step1000", tinyrepo.repo_id)
    weights = load_file(folder / "model.safetensors")
    served = {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in weights.items()}
    assert sorted(out["weights"].values()) == sorted(served.values())  # transformers 5 renames embed_out to lm_head
    assert (out["step"], out["config_step"]) == (1000, 4)
    assert out["tokens"] == AutoTokenizer.from_pretrained(folder)("To be, or not").input_ids


DOWNLOAD_STEP1 = f"""
from huggingface_hub import snapshot_download
report(attempt(lambda: snapshot_download({MODEL!r}, revision="step1")))
"""


def test_429_on_a_download_is_waited_out_and_retried(hub, served, tmp_path):
    hub.add_fault("status", match="model.safetensors", method="GET", status=429, retry_after=1, times=1)
    hub.add_fault("status", match="config.json", method="HEAD", status=429, retry_after=1, times=1)
    out = client(hub, tmp_path, DOWNLOAD_STEP1)
    assert contents(Path(out["value"])) == contents(snapshot(served, "step1"))
    gets, heads = resolves(hub, "model.safetensors"), resolves(hub, "config.json", "HEAD")
    # hf_hub_download asks for the metadata again at once; http_get waits Retry-After plus one second.
    assert [r.status for r in gets] == [429, 200] and [r.status for r in heads] == [429, 200]
    assert gets[1].started - gets[0].finished >= 1.9


def test_429_on_the_api_surfaces_as_an_http_error_without_retry(hub, tmp_path):
    hub.add_fault("status", match="/refs", status=429, retry_after=1, times=1)
    out = client(
        hub,
        tmp_path,
        f"""
from huggingface_hub import HfApi
report([attempt(lambda: [b.name for b in HfApi().list_repo_refs({MODEL!r}).branches]) for _ in range(2)])
""",
    )
    assert out[0]["status"] == 429 and "HfHubHTTPError" in out[0]["error"]
    assert sorted(out[1]["value"]) == ["main", "step1", "step2"]
    assert [r.status for r in hub.requests] == [429, 200]


@pytest.mark.parametrize(
    "method, status, retried",
    [("HEAD", 503, True), ("GET", 500, False), ("GET", 503, False)],
)
def test_a_server_error_is_retried_on_head_but_fails_a_download(hub, served, tmp_path, method, status, retried):
    hub.add_fault("status", match="model.safetensors", method=method, status=status, times=1)
    out = client(hub, tmp_path, DOWNLOAD_STEP1)
    if retried:
        assert contents(Path(out["value"])) == contents(snapshot(served, "step1"))
    else:
        assert out["status"] == status and "HfHubHTTPError" in out["error"]
        left = repo_folder(tmp_path / "client", MODEL) / "snapshots" / snapshot(served, "step1").name
        assert "model.safetensors" not in contents(left)
    assert [r.status for r in resolves(hub, "model.safetensors", method)] == ([status, 200] if retried else [status])
    assert_no_wrong_files(tmp_path / "client")


def test_a_reset_mid_body_fails_the_download_without_a_retry(hub, served, tmp_path):
    hub.add_fault("reset", match="model.safetensors", times=1)
    out = client(hub, tmp_path, DOWNLOAD_STEP1)
    # http_get resumes on RemoteProtocolError, ConnectError and timeouts, but a reset is a ReadError.
    assert out["error"][:2] == ["ReadError", "NetworkError"]
    assert [(r.status, r.sent) for r in resolves(hub, "model.safetensors")] == [(200, WEIGHT_SIZE // 2)]
    assert not list((tmp_path / "client").rglob("model.safetensors"))
    assert_no_wrong_files(tmp_path / "client")


def test_a_truncated_body_is_downloaded_again_from_the_start(hub, served, tmp_path):
    hub.add_fault("truncate", match="model.safetensors", times=1)
    out = client(hub, tmp_path, DOWNLOAD_STEP1)
    assert contents(Path(out["value"])) == contents(snapshot(served, "step1"))
    # Nothing reached the disk before the 10 MiB chunk filled, so there was nothing to resume with a Range.
    gets = resolves(hub, "model.safetensors")
    assert [(r.status, r.sent) for r in gets] == [(200, WEIGHT_SIZE // 2), (200, WEIGHT_SIZE)]
    assert_no_wrong_files(tmp_path / "client")


def test_a_body_truncated_every_time_ends_in_an_error_and_no_file(hub, tmp_path):
    hub.add_fault("truncate", match="model.safetensors")
    out = client(hub, tmp_path, DOWNLOAD_STEP1)
    assert out["error"][:2] == ["RemoteProtocolError", "ProtocolError"]
    assert len(resolves(hub, "model.safetensors")) == 6  # the first try and http_get's five resumes, 1 s apart
    assert not list((tmp_path / "client").rglob("model.safetensors"))
    assert_no_wrong_files(tmp_path / "client")


def test_a_truncated_large_body_resumes_with_a_range_request(hub, served, tmp_path):
    hub.add_fault("truncate", match="big.bin", times=1)
    path = client(
        hub,
        tmp_path,
        f"""
from huggingface_hub import hf_hub_download
report(hf_hub_download({BIG!r}, "big.bin"))
""",
    )
    data = (snapshot(served, "main", BIG) / "big.bin").read_bytes()
    assert Path(path).read_bytes() == data
    gets = resolves(hub, "big.bin")
    assert [(r.status, r.sent) for r in gets] == [(200, len(data) // 2), (206, len(data) - CHUNK)]
    assert_no_wrong_files(tmp_path / "client")


def test_a_bandwidth_limit_slows_a_download_measurably(hub, served, tmp_path):
    fetch = f"""
from huggingface_hub import hf_hub_download
report(hf_hub_download({MODEL!r}, "model.safetensors", revision="step1"))
"""
    client(hub, tmp_path / "free", fetch)
    hub.bandwidth = 100_000
    path = client(hub, tmp_path / "limited", fetch)
    assert Path(path).read_bytes() == (snapshot(served, "step1") / "model.safetensors").read_bytes()
    free, limited = (r.finished - r.started for r in resolves(hub, "model.safetensors"))
    assert limited >= 0.9 * WEIGHT_SIZE / hub.bandwidth
    assert free < limited / 4


def test_a_gated_repo_needs_the_token(hub, tmp_path):
    hub.gated[MODEL] = "hf_open_sesame"
    tries = f"""
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
report([attempt(lambda: snapshot_download({MODEL!r}, revision="step1")),
        attempt(lambda: hf_hub_download({MODEL!r}, "config.json", token="hf_wrong")),
        attempt(lambda: HfApi().model_info({MODEL!r}).gated)])
"""
    anonymous, wrong, info = client(hub, tmp_path, tries)
    assert "GatedRepoError" in anonymous["error"] and anonymous["status"] == 401
    assert "GatedRepoError" in wrong["error"] and wrong["status"] == 403
    assert info["value"] == "manual"  # as on the hub, a gated repo's metadata stays public
    assert {r.authorization for r in hub.requests} == {None, "Bearer hf_wrong"}
    allowed, _, _ = client(hub, tmp_path, tries, HF_TOKEN="hf_open_sesame")
    assert "value" in allowed
    downloads = [r for r in hub.requests if "/resolve/" in r.path and r.status == 200]
    assert downloads and {r.authorization for r in downloads} == {"Bearer hf_open_sesame"}


def test_missing_file_revision_and_repo_raise_the_hub_errors(hub, served, tmp_path):
    out = client(
        hub,
        tmp_path,
        f"""
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
report([
    attempt(lambda: hf_hub_download({MODEL!r}, "absent.txt", revision="step1")),
    attempt(lambda: hf_hub_download({MODEL!r}, "config.json", revision="step9")),
    attempt(lambda: snapshot_download({MODEL!r}, revision="step9")),
    attempt(lambda: hf_hub_download("org/absent", "config.json")),
    attempt(lambda: snapshot_download("org/absent")),
    attempt(lambda: HfApi().list_repo_refs("org/absent", token="hf_any")),
])
""",
    )
    no_file, no_rev, no_rev_snapshot, no_repo, no_repo_snapshot, no_repo_token = out
    assert "EntryNotFoundError" in no_file["error"] and no_file["status"] == 404
    assert no_rev["error"][0] == no_rev_snapshot["error"][0] == "RevisionNotFoundError"
    for err, status in [(no_repo, 401), (no_repo_snapshot, 401), (no_repo_token, 404)]:
        assert err["error"][0] == "RepositoryNotFoundError" and err["status"] == status
    # X-Repo-Commit on the 404 lets huggingface_hub remember the absence.
    no_exist = repo_folder(tmp_path / "client", MODEL) / ".no_exist" / snapshot(served, "step1").name / "absent.txt"
    assert no_exist.is_file()
