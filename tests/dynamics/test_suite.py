"""The tiny-suite trainer on its micro preset: reproducible, published as an offline HF cache, resumable."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from dynamics.corpus import corpus_hash
from dynamics.hubcache import repo_folder
from dynamics.suite import (
    ENTRY_NAME,
    PRESETS,
    TOKENS_REPO,
    Recipe,
    build_suite,
    checkpoint_steps,
    corpus_tokens,
    lr_factor,
    training_batch,
    write_suite_tables,
)
from dynamics.tokenizer import BOS, train_bpe

MICRO = PRESETS["micro"]
REPO = Path(__file__).resolve().parents[2]
MDYN = Path(sys.executable).with_name("mdyn")


def build(cache: Path) -> dict:
    return build_suite(MICRO, cache, device="cpu", threads=1)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    cache = tmp_path_factory.mktemp("suite") / "hub"
    return cache, build(cache)


def snapshot(cache: Path, model: dict, revision: str) -> Path:
    return repo_folder(cache, model["model"]) / "snapshots" / model["revisions"][revision]


def test_micro_build_is_byte_identical_for_a_fixed_seed(suite, tmp_path):
    cache, manifest = suite
    # Share the tokenized corpus, whose own reproducibility is the tokenizers library's business.
    tokens = repo_folder(cache, TOKENS_REPO, "dataset")
    shutil.copytree(tokens, repo_folder(tmp_path / "hub", TOKENS_REPO, "dataset"), symlinks=True)
    again = build(tmp_path / "hub")
    for first, second in zip(manifest["models"], again["models"]):
        for rev in ("step1", "step20"):
            a = (snapshot(cache, first, rev) / "model.safetensors").read_bytes()
            b = (snapshot(tmp_path / "hub", second, rev) / "model.safetensors").read_bytes()
            assert a == b
        assert first["revisions"] == second["revisions"]
    one = manifest["models"][0]
    assert (snapshot(cache, one, "step0") / "model.safetensors").read_bytes() != (
        snapshot(cache, one, "step20") / "model.safetensors"
    ).read_bytes()


def test_branches_load_offline_through_from_pretrained(suite):
    cache, manifest = suite
    repo = manifest["models"][0]["model"]
    script = f"""
import json, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from huggingface_hub import snapshot_download
out = {{}}
for rev in ("step4", "step20", "main"):
    model = AutoModelForCausalLM.from_pretrained({repo!r}, revision=rev)
    blob = load_file(snapshot_download({repo!r}, revision=rev) + "/model.safetensors")
    out[rev] = dict(
        same_as_blob=all(torch.equal(t, blob[k]) for k, t in model.state_dict().items() if k in blob),
        n_blob=len(blob),
        embed_sum=float(model.gpt_neox.embed_in.weight.sum()),
        parallel=model.config.use_parallel_residual,
        rotary=model.config.rope_parameters["partial_rotary_factor"],
        tied=model.config.tie_word_embeddings,
    )
tok = AutoTokenizer.from_pretrained({repo!r}, revision="step4")
out["bos"] = [tok.bos_token, tok.bos_token_id]
print(json.dumps(out))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home")}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for rev in ("step4", "step20", "main"):
        assert out[rev]["same_as_blob"] and out[rev]["n_blob"] > 0
        assert out[rev]["parallel"] is True and out[rev]["rotary"] == 0.25 and out[rev]["tied"] is False
    assert out["step4"]["embed_sum"] != out["step20"]["embed_sum"]
    assert out["step20"]["embed_sum"] == out["main"]["embed_sum"]
    assert out["bos"] == [BOS, manifest["tokenizer"]["bos_token_id"]]


def test_scan_cache_dir_lists_every_scheduled_branch(suite):
    from huggingface_hub import scan_cache_dir

    cache, manifest = suite
    info = scan_cache_dir(cache)
    assert not info.warnings
    refs = {
        repo.repo_id: {ref for rev in repo.revisions for ref in rev.refs}
        for repo in info.repos
        if repo.repo_type == "model"
    }
    assert set(refs) == {m["model"] for m in manifest["models"]}
    assert {(r.repo_id, r.repo_type) for r in info.repos if r.repo_type != "model"} == {(TOKENS_REPO, "dataset")}
    for model in manifest["models"]:
        assert refs[model["model"]] == {f"step{s}" for s in checkpoint_steps(20, 4)} | {"main"}


def test_manifest_holds_every_documented_key(suite, tmp_path):
    cache, manifest = suite
    assert set(manifest) == {
        "format",
        "preset",
        "suite",
        "corpus",
        "tokenizer",
        "architecture_family",
        "design",
        "models",
    }
    assert manifest["corpus"]["sha256"] == corpus_hash("train")
    assert manifest["corpus"]["n_tokens"] > 0 and manifest["tokenizer"]["vocab_size"] == MICRO.vocab_size
    assert manifest["architecture_family"]["use_parallel_residual"] is True
    model_keys = {
        "model",
        "n_layers",
        "d_model",
        "n_heads",
        "d_ff",
        "n_params",
        "recipe",
        "schedule",
        "revisions",
        "final_loss",
        "train_seconds",
        "device",
        "threads",
        "versions",
        "key",
    }
    recipe_keys = {
        "steps",
        "lr",
        "batch_size",
        "seq_len",
        "warmup_frac",
        "min_warmup_steps",
        "final_lr_frac",
        "weight_decay",
        "betas",
        "eps",
        "grad_clip",
        "seed",
        "data_seed",
        "n_even_checkpoints",
    }
    for model in manifest["models"]:
        assert set(model) == model_keys and set(model["recipe"]) == recipe_keys
        assert set(model["versions"]) == {"torch", "transformers", "tokenizers", "massive-dynamics"}
        assert model["schedule"] == checkpoint_steps(20, 4)
        assert set(model["revisions"]) == {f"step{s}" for s in model["schedule"]} | {"main"}
        assert model["d_ff"] == 4 * model["d_model"] and model["threads"] == 1
        from safetensors.torch import load_file

        weights = load_file(snapshot(cache, model, "main") / "model.safetensors")
        assert model["n_params"] == sum(t.numel() for t in weights.values())
        entry = json.loads((repo_folder(cache, model["model"]) / ENTRY_NAME).read_text())
        assert entry["key"] == model["key"] and entry["corpus"] == manifest["corpus"]
    manifest_path, csv_path = write_suite_tables(manifest, tmp_path)
    assert json.loads(manifest_path.read_text()) == manifest
    table = pl.read_csv(csv_path)
    assert table.columns == [
        "model",
        "n_layers",
        "d_model",
        "n_heads",
        "d_ff",
        "n_params",
        "total_steps",
        "peak_lr",
        "tokens_per_step",
        "seed",
        "source",
    ]
    assert table["total_steps"].to_list() == [20, 20] and table["peak_lr"].to_list() == [3e-3, 3e-3]
    assert table["model"].to_list() == [m["model"] for m in manifest["models"]]
    assert table["n_heads"].to_list() == [2, 4]


def test_a_second_build_reuses_and_an_interrupted_one_resumes(suite):
    cache, manifest = suite
    first, second = (repo_folder(cache, m["model"]) for m in manifest["models"])
    stamp = (first / ENTRY_NAME).stat().st_mtime_ns
    assert build(cache) == manifest
    assert (first / ENTRY_NAME).stat().st_mtime_ns == stamp
    # Killed while training the second model: no entry yet, and a branch the new schedule lacks.
    (second / ENTRY_NAME).unlink()
    (second / "refs" / "step999").write_text(manifest["models"][1]["revisions"]["main"])
    resumed = build(cache)
    assert resumed["models"][0] == manifest["models"][0]
    assert resumed["models"][1]["revisions"] == manifest["models"][1]["revisions"]
    assert (first / ENTRY_NAME).stat().st_mtime_ns == stamp
    assert (second / ENTRY_NAME).is_file() and not (second / "refs" / "step999").exists()


def test_every_training_sequence_starts_with_bos():
    tokenizer = train_bpe(["to be or not to be", "that is the question"], vocab_size=300)
    bos = tokenizer.convert_tokens_to_ids(BOS)
    tokens = corpus_tokens(tokenizer, ["to be or not to be", "that is the question"])
    assert tokens[0] == bos and (tokens == bos).sum() == 2
    generator = torch.Generator().manual_seed(0)
    for seq_len in (2, 8, len(tokens) + 1):
        batch = training_batch(tokens, bos, 32, seq_len, generator)
        assert batch.shape == (32, seq_len) and (batch[:, 0] == bos).all()
        text = tokens.tolist()
        for row in batch[:, 1:].tolist():
            assert any(text[i : i + len(row)] == row for i in range(len(text) - len(row) + 1))


def test_schedule_and_learning_rate_follow_pythia_scaled_down():
    steps = checkpoint_steps(2000, 20)
    assert steps[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200]
    assert steps[-3:] == [1800, 1900, 2000] and 512 in steps and steps == sorted(set(steps))
    assert checkpoint_steps(300, 20)[-1] == 300 and 512 not in checkpoint_steps(300, 20)
    recipe = Recipe(steps=1000, lr=1e-3)
    assert recipe.warmup_steps == 10
    assert lr_factor(0, recipe) == pytest.approx(0.1) and lr_factor(9, recipe) == pytest.approx(1.0)
    assert lr_factor(10, recipe) == pytest.approx(1.0) and lr_factor(999, recipe) == pytest.approx(0.1, abs=1e-4)
    assert all(lr_factor(s, recipe) >= lr_factor(s + 1, recipe) for s in range(10, 999))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--preset", "micro", "--cache", "{file}/hub"], "cannot write to the suite cache"),
        (["--preset", "micro", "--steps", "100000000"], "the training corpus holds"),
        (["--preset", "micro", "--steps", "3", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(suite, tmp_path, args, message):
    (tmp_path / "file").write_text("not a folder")
    # HF_HUB_CACHE is the default --cache: the built micro suite, whose tokenized corpus the size check reads.
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(suite[0])}
    args = [a.format(file=tmp_path / "file") for a in args]
    run = subprocess.run([str(MDYN), "suite", "build", *args], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("mdyn: error: ") and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_micro_suite_sweeps_end_to_end(suite, tmp_path):
    """Micro suite -> sweep: one row per (revision, sequence, layer) and a complete ledger."""
    from dynamics import store
    from dynamics.sources import HubSource
    from dynamics.sweep import Settings, plan, run

    cache, manifest = suite
    settings = Settings(probe="embedded", n_seq=3, seq_len=32)
    root = tmp_path / "store"
    for model in manifest["models"]:
        source = HubSource(model["model"], offline=True, cache_dir=cache)
        ledger = run(source, root, plan(source, root, "all", settings), settings)
        assert ledger["status"].unique().to_list() == ["ok"]
        assert sorted(ledger["step"].to_list()) == model["schedule"]
    measurements = store.load(root)
    expected = sum(len(m["schedule"]) * m["n_layers"] * 3 for m in manifest["models"])
    assert measurements.height == expected
    assert measurements.group_by("model", "revision", "seq", "layer").len()["len"].max() == 1
    assert store.load(root, store.LEDGER).height == sum(len(m["schedule"]) for m in manifest["models"])


def ship(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [str(MDYN), "suite", "ship", "--preset", "micro", "--cache-dir", str(cache), "--n-seq", "2", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_ship_writes_its_own_folder_and_never_another_suites(suite, tmp_path):
    cache, manifest = suite
    out = tmp_path / "shipped"
    first = ship(cache, "--out", str(out))
    assert first.returncode == 0 and "Loading weights" not in first.stderr, first.stderr
    shipped = pl.read_parquet(out / "measurements.parquet")
    assert shipped["model"].unique().sort().to_list() == sorted(m["model"] for m in manifest["models"])
    assert json.loads((out / "manifest.json").read_text())["suite"] == MICRO.org
    assert ship(cache, "--out", str(out)).returncode == 0  # re-shipping the same suite is a refresh

    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"suite": "tiny-suite"}))
    (other / "measurements.parquet").write_bytes(b"the user's data")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "measurements.parquet").write_bytes(b"the user's data")
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "architectures.csv").write_bytes(b"the user's data")
    cases = [
        (other, "measurements.parquet", "holds the shipped 'tiny-suite' suite"),
        (tmp_path / "mine", "measurements.parquet", "no `mdyn suite"),
        (tmp_path / "table", "architectures.csv", "no `mdyn suite"),
    ]
    for folder, name, message in cases:
        run = ship(cache, "--out", str(folder))
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert (folder / name).read_bytes() == b"the user's data"
