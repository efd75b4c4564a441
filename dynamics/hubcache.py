"""Write a local Hugging Face cache that serves any number of revisions offline.

The layout is the one huggingface_hub reads (`models--ORG--NAME/{blobs,refs/REV,snapshots/COMMIT}`), so
`from_pretrained(repo, revision="step1000")` with `HF_HUB_OFFLINE=1` takes exactly the code path it takes
online. Weight files are stored under their sha256, as the hub names LFS blobs; other files under their git
blob id.
"""

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dynamics.files import write_atomic

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def repo_folder(cache_dir: Path, repo_id: str, repo_type: str = "model") -> Path:
    """The cache folder of one repo, e.g. `models--EleutherAI--pythia-70m`."""
    return Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def blob_id(name: str, content: bytes) -> str:
    """sha256 for LFS-style files (weights), the git blob sha1 for everything else, as the hub does."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def publish_revision(
    cache_dir: Path,
    repo_id: str,
    revision: str,
    files: Mapping[str, bytes | Path],
    repo_type: str = "model",
) -> str:
    """Publish `files` (repo path -> content or a local file) as branch `revision`; returns its commit id."""
    root = repo_folder(cache_dir, repo_id, repo_type)
    contents = {name: Path(src).read_bytes() if isinstance(src, (str, Path)) else src for name, src in files.items()}
    blobs = {name: blob_id(name, data) for name, data in contents.items()}
    manifest = "\n".join(f"{name} {blobs[name]}" for name in sorted(blobs))
    commit = hashlib.sha1(f"{repo_id}@{revision}\n{manifest}".encode()).hexdigest()

    snapshot = root / "snapshots" / commit
    for name, data in contents.items():
        blob = root / "blobs" / blobs[name]
        if not blob.exists():
            write_atomic(blob, data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    # The hub's ref files hold the bare commit id with no trailing newline.
    write_atomic(root / "refs" / revision, commit.encode())
    return commit


def publish_folder(cache_dir: Path, repo_id: str, revision: str, folder: Path, repo_type: str = "model") -> str:
    """Publish every file below `folder` (e.g. a `save_pretrained` output) as branch `revision`."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return publish_revision(cache_dir, repo_id, revision, files, repo_type)


def publish_pretrained(cache_dir: Path, repo_id: str, revision: str, *objects) -> str:
    """Save transformers objects (model, tokenizer, config) with `save_pretrained` and publish them as one revision."""
    with tempfile.TemporaryDirectory() as tmp:
        for obj in objects:
            obj.save_pretrained(tmp)
        return publish_folder(cache_dir, repo_id, revision, Path(tmp))

