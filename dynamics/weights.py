"""A checkpoint's weight files: which files they are, their sha256, whether they open, and reading them.

One definition serves both what a sweep fingerprints and what it loads, so the two can never disagree. Weight
files are named as transformers names them (one file, or shards plus an index), safetensors first: a revision
that has both is fingerprinted and loaded by its safetensors only. Other weight-like files
(training_args.bin, consolidated.safetensors) are never loaded by from_pretrained, so they are never fetched,
hashed or read.
"""

import fnmatch
import hashlib
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fitting.errors import CorruptCheckpoint, MissingCheckpoint

WEIGHT_FORMATS = (
    ("model*.safetensors", "model.safetensors.index.json"),
    ("pytorch_model*.bin", "pytorch_model.bin.index.json"),
)


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a revision's weights, known before they are loaded."""

    commit: str  # the revision's git commit; "" for a folder source
    weights_sha256: str  # all weight files in one id, see `combine_sha256`
    files: tuple[tuple[str, str], ...]  # (weight file, its sha256), by file name


def weights_and_index(names: Iterable[str]) -> tuple[list[str], str]:
    """The preferred format's weight files among `names` and that format's shard index name."""
    names = sorted(names)
    for pattern, index in WEIGHT_FORMATS:
        if found := fnmatch.filter(names, pattern):
            return found, index
    return [], ""


def weight_files(names: Iterable[str]) -> list[str]:
    """The weight files transformers loads among a revision's file names: the safetensors when any, else the .bin."""
    return weights_and_index(names)[0]


def folder_files(folder: Path) -> list[str]:
    """Names of the files in a folder; a dangling link (its blob evicted) does not count."""
    folder = Path(folder)
    return [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []


def folder_weights(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, as `weight_files` chooses them."""
    return [Path(folder) / name for name in weight_files(folder_files(folder))]


def combine_sha256(files: Mapping[str, str]) -> str:
    """One sha256 for a revision's weight files: the file's own when there is one, else over `name sha256` lines.

    A single file keeps the sha256 the hub shows for it. Shards are combined as the sha256 of the UTF-8 text
    of one `name sha256\\n` line per file, sorted by name, so the id does not depend on listing order.
    """
    if len(files) == 1:
        return next(iter(files.values()))
    lines = "".join(f"{name} {files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 of a file's content, read in chunks so that memory stays flat for multi-GB weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> Fingerprint:
    """Commit "" (a folder has no commit) and the sha256 of the folder's weight files, computed by reading them."""
    weights = {path.name: file_sha256(path) for path in folder_weights(folder)}
    return Fingerprint("", combine_sha256(weights), tuple(weights.items()))


def no_weights(what: str) -> MissingCheckpoint:
    return MissingCheckpoint(
        f"{what} has no weight files (model*.safetensors or pytorch_model*.bin); this checkpoint cannot be measured"
    )


def check_weights(folder: Path) -> list[Path]:
    """The weight files of a fetched folder after opening each one's header.

    MissingCheckpoint when there are none or a shard in the index is absent; CorruptCheckpoint naming the
    file when a safetensors header does not parse or does not cover the file (truncation), or a .bin is not
    the zip archive `torch.save` writes.
    """
    folder = Path(folder)
    weights, index = weights_and_index(folder_files(folder))
    if not weights:
        raise no_weights(str(folder))
    if (folder / index).is_file():
        absent = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()) - set(weights))
        if absent:
            raise MissingCheckpoint(f"{folder} lacks shard(s) {', '.join(absent)} listed in {index}; fetch it again")
    for name in weights:
        if problem := _unreadable(folder / name):
            raise CorruptCheckpoint(
                f"{name} in {folder} is unreadable ({problem}); the file is truncated or corrupt, fetch it again"
            )
    return [folder / name for name in weights]


def _unreadable(path: Path) -> str | None:
    """Why a weight file cannot be read (one line), or None when its header opens."""
    from safetensors import SafetensorError, safe_open

    if path.suffix != ".safetensors":
        return None if zipfile.is_zipfile(path) else "not the zip archive that torch.save writes"
    try:
        with safe_open(path, framework="numpy") as fh:
            fh.keys()
    except (SafetensorError, OSError) as err:
        return " ".join(str(err).split())
    return None


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's weight files; a pickle is read with `weights_only=True`, never fully unpickled."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in folder_weights(folder):
        if path.suffix == ".safetensors":
            state.update(load_file(path))
        else:
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state


def load_weights(model: torch.nn.Module, folder: Path) -> bool:
    """Copy a checkpoint's weights into `model` in place; False (model untouched) if they do not fit its skeleton.

    Reusing one skeleton across a sweep's revisions avoids building a new model per revision. Every parameter
    of the base model (the decoder stack that measurement runs) must be in the file under its own name, with
    its shape; keys the model names differently (transformers renames some LM heads at load) are skipped,
    since measurement never runs the head.
    """
    state = read_state_dict(folder)
    own = model.state_dict()
    prefix = f"{model.base_model_prefix}." if model.base_model is not model else ""
    needed = [name for name, _ in model.named_parameters() if name.startswith(prefix)]
    if any(name not in state or state[name].shape != own[name].shape for name in needed):
        return False
    with torch.no_grad():
        for key in state.keys() & own.keys():
            own[key].copy_(state[key])
    return True
