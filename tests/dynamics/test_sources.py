import json
import shutil
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from dynamics.hubcache import repo_folder
from dynamics.sources import FolderSource, HubSource, open_source, with_retries
from dynamics.weights import check_weights, combine_sha256, file_sha256, folder_fingerprint, weight_files
from fitting.errors import CorruptCheckpoint, MissingCheckpoint, UserError


def offline(repo, **kwargs) -> HubSource:
    return HubSource(repo.repo_id, offline=True, cache_dir=repo.cache_dir, **kwargs)


def snapshots(repo) -> set[str]:
    return {p.name for p in (repo_folder(repo.cache_dir, repo.repo_id) / "snapshots").iterdir()}


def test_offline_cache_source_discovers_every_branch(tinyrepo):
    source = offline(tinyrepo)
    assert source.revisions() == list(tinyrepo.revisions)
    assert len(source.revisions()) == 22 and "main" in source.revisions()
    assert source.eviction == "keep" and source.model == tinyrepo.repo_id  # an offline cache is never pruned


def test_open_source_follows_hf_hub_offline_and_cache(tinyrepo):
    source = open_source(tinyrepo.repo_id)  # conftest set HF_HUB_OFFLINE and HF_HUB_CACHE before the import
    assert isinstance(source, HubSource) and source.offline and source.cache_dir == tinyrepo.cache_dir
    assert open_source(tinyrepo.repo_id, offline=False).offline is False


def test_a_relative_cache_dir_finds_the_same_weights(tinyrepo, monkeypatch):
    # As `--cache-dir .suite-cache/hub` passes it: relative to the working directory.
    monkeypatch.chdir(tinyrepo.cache_dir.parent)
    source = HubSource(tinyrepo.repo_id, offline=True, cache_dir=tinyrepo.cache_dir.name)
    assert source.cache_dir == tinyrepo.cache_dir
    assert check_weights(source.fetch("step1000")) and source.fingerprint("step1000") == offline(tinyrepo).fingerprint(
        "step1000"
    )


def test_fingerprints_match_exactly_for_repeated_weights(tinyrepo):
    source = offline(tinyrepo)
    good = [r for r in tinyrepo.revisions if r != tinyrepo.missing]
    prints = {rev: source.fingerprint(rev) for rev in good}
    for rev, original in tinyrepo.duplicates.items():
        assert prints[rev].weights_sha256 == prints[original].weights_sha256
        assert prints[rev].commit != prints[original].commit
    distinct = {prints[r].weights_sha256 for r in good if r not in tinyrepo.duplicates}
    assert len(distinct) == len(good) - len(tinyrepo.duplicates)
    ref = repo_folder(tinyrepo.cache_dir, tinyrepo.repo_id) / "refs" / "step1000"
    assert prints["step1000"].commit == ref.read_text()
    assert prints["step1000"].files == (("model.safetensors", prints["step1000"].weights_sha256),)


def test_cached_blob_names_agree_with_the_file_contents(tinyrepo):
    source = offline(tinyrepo)
    folder = source.fetch("step2000")
    assert source.fingerprint("step2000").weights_sha256 == file_sha256(folder / "model.safetensors")


def test_fetch_brings_config_weights_and_tokenizer_of_that_revision(tinyrepo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = offline(tinyrepo)
    a, b = source.fetch("step1000"), source.fetch("step4")
    assert a.name == source.fingerprint("step1000").commit  # the snapshot of that branch's commit
    model_a, model_b = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    assert (model_a.config.training_step, model_b.config.training_step) == (1000, 4)
    weights_a, weights_b = model_a.state_dict(), model_b.state_dict()
    assert weights_a.keys() == weights_b.keys()
    assert not any(weights_a[k].equal(weights_b[k]) for k in weights_a if k.endswith("query_key_value.weight"))
    assert AutoTokenizer.from_pretrained(a)("To be, or not").input_ids  # from the same snapshot as the config


def test_a_revision_without_weights_is_missing(tinyrepo):
    source = offline(tinyrepo)
    with pytest.raises(MissingCheckpoint, match=f"{tinyrepo.missing}.*no weight files"):
        source.fingerprint(tinyrepo.missing)
    with pytest.raises(MissingCheckpoint):
        source.fetch(tinyrepo.missing)
    assert issubclass(MissingCheckpoint, UserError)


def test_check_weights_flags_the_truncated_file(tinyrepo):
    source = offline(tinyrepo)
    assert check_weights(source.fetch("step512")) == [source.fetch("step512") / "model.safetensors"]
    with pytest.raises(CorruptCheckpoint, match=r"model\.safetensors .*truncated") as err:
        check_weights(source.fetch(tinyrepo.corrupt))
    assert "\n" not in str(err.value)


def test_check_weights_reports_an_absent_shard(tmp_path):
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    index = {"metadata": {}, "weight_map": shards}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(MissingCheckpoint, match="model-00002-of-00002.safetensors"):
        check_weights(tmp_path)
    with pytest.raises(MissingCheckpoint, match="no weight files"):
        check_weights(tmp_path / "nothing")


def test_evict_removes_exactly_that_revision(tinyrepo_copy):
    source = offline(tinyrepo_copy, eviction="measured")
    before = snapshots(tinyrepo_copy)
    commit = source.fingerprint("step5000").commit
    source.fetch("step5000")
    source.evict("step5000")
    assert snapshots(tinyrepo_copy) == before - {commit}
    assert not (repo_folder(tinyrepo_copy.cache_dir, tinyrepo_copy.repo_id) / "refs" / "step5000").exists()
    assert "step5000" not in offline(tinyrepo_copy).revisions()
    # step6000 shares step5000's weight blob and every revision shares the tokenizer blob: both survive.
    assert check_weights(source.fetch("step6000"))
    assert (source.fetch("step0") / "tokenizer.json").is_file()
    with pytest.raises(MissingCheckpoint):
        source.fetch("step5000")  # gone from an offline cache for good


def test_folder_source_reads_in_place_and_never_deletes(tinyrepo, tmp_path):
    hub = offline(tinyrepo)
    for rev in ("step0", "step1000", tinyrepo.missing):
        shutil.copytree(hub.fetch(rev) if rev != tinyrepo.missing else _snapshot(tinyrepo, rev), tmp_path / rev)
    (tmp_path / ".cache").mkdir()
    source = open_source(tmp_path)
    assert isinstance(source, FolderSource) and source.model == tmp_path.name
    assert source.revisions() == ["step0", "step1000", tinyrepo.missing]
    fingerprint = source.fingerprint("step1000")
    assert fingerprint.commit == "" and fingerprint.weights_sha256 == hub.fingerprint("step1000").weights_sha256
    source.evict("step1000")
    assert source.fetch("step1000") == tmp_path / "step1000" and check_weights(tmp_path / "step1000")
    with pytest.raises(MissingCheckpoint):
        source.fetch(tinyrepo.missing)


def test_a_folder_revision_is_hashed_once_until_its_weights_change(tinyrepo, tmp_path, monkeypatch):
    """Planning and fetching both ask for the fingerprint, which reads every weight byte of the user's folder."""
    from dynamics import sources

    shutil.copytree(offline(tinyrepo).fetch("step0"), tmp_path / "step0", symlinks=False)
    hashed = []
    monkeypatch.setattr(sources, "folder_fingerprint", lambda f: hashed.append(f) or folder_fingerprint(f))
    source = FolderSource(tmp_path)
    first = source.fingerprint("step0")
    assert source.fingerprint("step0") == first and len(hashed) == 1
    weights = tmp_path / "step0" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # the user replaced the checkpoint
    assert source.fingerprint("step0").weights_sha256 != first.weights_sha256 and len(hashed) == 2


def _snapshot(repo, rev) -> Path:
    folder = repo_folder(repo.cache_dir, repo.repo_id)
    return folder / "snapshots" / (folder / "refs" / rev).read_text()


def test_weight_files_prefer_safetensors_and_skip_other_binaries():
    both = ["config.json", "model.safetensors", "pytorch_model.bin", "training_args.bin"]
    assert weight_files(both) == ["model.safetensors"]
    assert weight_files(["pytorch_model.bin", "training_args.bin"]) == ["pytorch_model.bin"]
    shards = ["model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json"]
    assert weight_files(shards) == sorted(shards[:2])
    assert weight_files(["consolidated.safetensors", "config.json"]) == []


def test_combined_sha256_keeps_a_single_file_and_ignores_order():
    assert combine_sha256({"model.safetensors": "ab" * 32}) == "ab" * 32
    shards = {"model-00001-of-00002.safetensors": "1" * 64, "model-00002-of-00002.safetensors": "2" * 64}
    combined = combine_sha256(shards)
    assert combined == combine_sha256(dict(reversed(shards.items()))) and len(combined) == 64
    assert combined != combine_sha256({**shards, "model-00002-of-00002.safetensors": "3" * 64})


def http_error(status: int, headers=None) -> HfHubHTTPError:
    request = httpx2.Request("GET", "http://localhost/api/models/x")
    return HfHubHTTPError(f"{status}", response=httpx2.Response(status, headers=headers, request=request))


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_retried(status):
    failures = [http_error(status), http_error(status)]

    def call():
        if failures:
            raise failures.pop()
        return "ok"

    assert with_retries(call, retries=2, backoff_s=0.0) == "ok"


def test_retries_look_through_wrapping_errors_and_give_up():
    calls = []

    def call():
        calls.append(1)
        try:
            raise http_error(429)
        except HfHubHTTPError as err:
            raise LocalEntryNotFoundError("cannot reach the hub") from err

    with pytest.raises(LocalEntryNotFoundError):
        with_retries(call, retries=3, backoff_s=0.0)
    assert len(calls) == 4


def test_client_errors_are_not_retried():
    calls = []

    def call():
        calls.append(1)
        raise http_error(404)

    with pytest.raises(HfHubHTTPError):
        with_retries(call, retries=3, backoff_s=0.0)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "error, tries",
    [
        (httpx2.ReadError("Connection reset by peer"), 4),  # mid-body; huggingface_hub does not retry it
        (httpx2.RemoteProtocolError("peer closed connection without sending complete message body"), 4),
        (httpx2.ConnectError("Connection refused"), 4),
        (httpx2.ReadTimeout("timed out"), 4),
        (httpx2.ProxyError("407 Proxy Authentication Required"), 1),  # a setting, which another try repeats
        (httpx2.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'"), 1),
    ],
)
def test_transport_failures_are_retried_but_not_a_proxy_or_a_bad_url(error, tries):
    calls = []

    def call():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        with_retries(call, retries=3, backoff_s=0.0)
    assert len(calls) == tries


def test_bad_targets_and_revisions_are_user_errors(tinyrepo, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "one-model").mkdir()
    (tmp_path / "one-model" / "config.json").write_text("{}")
    cache = tinyrepo.cache_dir
    cases = {
        lambda: open_source(tmp_path / "does" / "not" / "exist"): "neither an existing folder nor a hub repo id",
        lambda: open_source(tmp_path / "file.txt"): "is a file",
        lambda: open_source(tmp_path / "one-model"): "single model",
        lambda: open_source(tmp_path / "empty").revisions(): "no sub-folders",
        lambda: open_source("tiny/absent", offline=True, cache_dir=cache).revisions(): "not in the offline cache",
        lambda: HubSource("tiny/absent", offline=True, cache_dir=tmp_path / "none").revisions(): "not in the offline",
        lambda: offline(tinyrepo).fetch("step999"): "not a branch of tiny/neox-sweep",
        lambda: offline(tinyrepo).evict("step999"): "not a branch",
        lambda: FolderSource(tmp_path).fetch("nothing"): "not a sub-folder",
    }
    for case, message in cases.items():
        with pytest.raises(UserError, match=message) as err:
            case()
        assert "\n" not in str(err.value)


def test_the_fixture_serves_from_pretrained_by_revision_offline(tinyrepo):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tinyrepo.repo_id, revision="step256", cache_dir=tinyrepo.cache_dir)
    assert config.training_step == 256
    assert tinyrepo.env["HF_HUB_OFFLINE"] == "1" and tinyrepo.env["HF_HUB_CACHE"] == str(tinyrepo.cache_dir)
