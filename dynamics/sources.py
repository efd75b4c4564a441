"""Where checkpoints come from: a hub repo (online or from the offline HF cache), or a folder of `stepN/` folders.

A source lists its revisions, fingerprints one (commit + sha256 of its weight files) before anything is
downloaded, fetches it to a local folder holding config, weights and tokenizer, and evicts that folder again
when it owns the copy. The hub and the offline cache are one class, `HubSource`, with two discovery modes:
online it asks the hub (branches, LFS metadata) and downloads; offline it reads the cache that huggingface_hub
writes (`scan_cache_dir()` refs, blobs named by sha256) and never opens a connection.

huggingface_hub copies HF_HUB_OFFLINE and HF_HUB_CACHE into `huggingface_hub.constants` when it is first
imported, so setting the variables later has no effect on this process. A `HubSource` therefore takes
`cache_dir` and `offline` explicitly (defaulting to those constants) and passes `cache_dir=` and, offline,
`local_files_only=True` to every huggingface_hub call.
"""

import fnmatch
import hashlib
import json
import os
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from huggingface_hub import HfApi, constants, scan_cache_dir, snapshot_download
from huggingface_hub.errors import (
    CacheNotFound,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id

from dynamics.hubcache import repo_folder
from dynamics.revisions import PYTHIA
from fitting.errors import UserError

# Weight files as transformers names them (one file, or shards plus an index), safetensors first: a
# revision that has both is fetched and fingerprinted by its safetensors only. Other weight-like files
# (training_args.bin, consolidated.safetensors) are never loaded by from_pretrained, so never fetched.
WEIGHT_FORMATS = (
    ("model*.safetensors", "model.safetensors.index.json"),
    ("pytorch_model*.bin", "pytorch_model.bin.index.json"),
)
CONFIG_AND_TOKENIZER = (
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
)
# The hub names an LFS blob by the sha256 of its content, and the HF cache keeps that name.
_SHA256 = re.compile(r"[0-9a-f]{64}")
_T = TypeVar("_T")


class MissingCheckpoint(UserError):
    """A revision exists but its weight files do not (the sweep records it as `missing`)."""


class CorruptCheckpoint(UserError):
    """A weight file is there but unreadable, e.g. a truncated download (the sweep records it as `corrupt`)."""


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a revision's weights, known before they are loaded."""

    commit: str  # the revision's git commit; "" for a folder source
    weights_sha256: str  # all weight files in one id, see `combine_sha256`
    files: tuple[tuple[str, str], ...]  # (weight file, its sha256), by file name


class CheckpointSource(Protocol):
    """What a sweep needs from a place that holds a series of checkpoints."""

    model: str  # the model id recorded in the tables
    owns_copy: bool  # fetch() makes a local copy that evict() deletes; False: checkpoints are read in place

    def revisions(self) -> list[str]:
        """All revision names, sorted; UserError when there are none."""

    def fingerprint(self, revision: str) -> Fingerprint:
        """Commit and weight sha256 of one revision, without downloading it; MissingCheckpoint without weights."""

    def fetch(self, revision: str) -> Path:
        """A local folder holding the revision's config, weights and tokenizer; MissingCheckpoint without weights."""

    def fetch_tokenizer(self, revision: str) -> Path:
        """A local folder holding at least the revision's config and tokenizer (no weights are downloaded)."""

    def evict(self, revision: str) -> None:
        """Delete the local copy fetch() made of this revision (nothing when the source does not own copies)."""


def weight_files(names: Iterable[str]) -> list[str]:
    """The weight files transformers loads among a revision's file names: the safetensors when any, else the .bin."""
    return _weights_and_index(names)[0]


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


def check_weights(folder: Path) -> list[Path]:
    """The weight files of a fetched folder after opening each one's header.

    MissingCheckpoint when there are none or a shard in the index is absent; CorruptCheckpoint naming the
    file when a safetensors header does not parse or does not cover the file (truncation), or a .bin is not
    the zip archive `torch.save` writes.
    """
    folder = Path(folder)
    weights, index = _weights_and_index(_folder_files(folder))
    if not weights:
        raise _no_weights(str(folder))
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


def with_retries(call: Callable[[], _T], *, retries: int = 5, backoff_s: float = 2.0) -> _T:
    """`call()`, retried up to `retries` times on HTTP 429 or 5xx after backoff_s * 2**attempt seconds.

    A Retry-After header, when the hub sends one, lengthens the wait. The status is looked up along the
    exception's cause chain, since huggingface_hub re-raises some HTTP errors as LocalEntryNotFoundError.
    """
    attempt = 0
    while True:
        try:
            return call()
        except Exception as err:
            wait = _retry_wait(err, backoff_s * 2**attempt) if attempt < retries else None
            if wait is None:
                raise
            time.sleep(wait)
            attempt += 1


class HubSource:
    """The branches of a hub repo: listed and downloaded from the hub, or, offline, read from the local HF cache.

    Each fetch downloads (online) or finds (offline) one revision's snapshot in `cache_dir`; evict deletes that
    snapshot and the blobs no other cached revision uses. Offline, the cache is the only copy: keep checkpoints
    there when they are to be measured again. Fetch and evict hold one lock, so a prefetch running in another
    thread never sees a shared blob (tokenizer, config) disappear mid-download.
    """

    owns_copy = True

    def __init__(
        self,
        repo_id: str,
        *,
        offline: bool | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        retries: int = 5,
        backoff_s: float = 2.0,
    ):
        self.model = repo_id
        self.offline = constants.HF_HUB_OFFLINE if offline is None else offline
        self.cache_dir = Path(constants.HF_HUB_CACHE if cache_dir is None else cache_dir).expanduser()
        self.token = token
        self.retries = retries
        self.backoff_s = backoff_s
        self._branches: dict[str, str] | None = None
        self._weights: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def revisions(self) -> list[str]:
        """Branch names: from the hub online, from the cache's refs offline."""
        return sorted(self._branch_commits())

    def fingerprint(self, revision: str) -> Fingerprint:
        """Commit and weight sha256 from hub LFS metadata online, from the cached blob names offline."""
        weights = self._weight_sha256(revision)
        return Fingerprint(self._commit(revision), combine_sha256(weights), tuple(weights.items()))

    def fetch(self, revision: str) -> Path:
        """The revision's snapshot folder (named by its commit) with config, tokenizer and preferred-format weights.

        The branch name goes to snapshot_download as given, so the cache records the ref and serves it offline later.
        """
        weights, index = _weights_and_index(self._weight_sha256(revision))
        return self._snapshot(revision, [*CONFIG_AND_TOKENIZER, *weights, index])

    def fetch_tokenizer(self, revision: str) -> Path:
        """The revision's snapshot folder with its config and tokenizer only."""
        self._commit(revision)
        return self._snapshot(revision, list(CONFIG_AND_TOKENIZER))

    def _snapshot(self, revision: str, patterns: list[str]) -> Path:
        with self._lock:
            try:
                folder = self._call(
                    snapshot_download,
                    self.model,
                    revision=revision,
                    cache_dir=self.cache_dir,
                    allow_patterns=patterns,
                    local_files_only=self.offline,
                    token=self.token,
                )
            except LocalEntryNotFoundError as err:
                if not self.offline:
                    raise
                raise MissingCheckpoint(
                    f"{self.model}@{revision} is missing from the offline cache {self.cache_dir}, or incomplete "
                    "there; fetch it again with network access"
                ) from err
        return Path(folder)

    def evict(self, revision: str) -> None:
        """Delete the revision's snapshot, its refs and the blobs no other cached revision of the repo links to.

        Branches pointing at the same commit lose their snapshot with it.
        """
        commit = self._commit(revision)
        with self._lock:
            try:
                cache = scan_cache_dir(self.cache_dir)
            except CacheNotFound:
                return
            if any(rev.commit_hash == commit for repo in cache.repos for rev in repo.revisions):
                cache.delete_revisions(commit).execute()

    def _call(self, fn: Callable[..., _T], *args, **kwargs) -> _T:
        return with_retries(lambda: fn(*args, **kwargs), retries=self.retries, backoff_s=self.backoff_s)

    def _branch_commits(self) -> dict[str, str]:
        """Branch -> commit id, asked once per source."""
        if self._branches is None:
            self._branches = self._cached_branches() if self.offline else self._hub_branches()
            if not self._branches:
                raise UserError(f"{self.model} has no branches{self._where()}; nothing to measure")
        return self._branches

    def _hub_branches(self) -> dict[str, str]:
        try:
            refs = self._call(HfApi().list_repo_refs, self.model, token=self.token)
        except RepositoryNotFoundError:
            raise UserError(
                f"repo {self.model} not found on the hub (no folder of that name exists either); check the id, "
                "e.g. EleutherAI/pythia-160m, or log in (`hf auth login`) if it is private or gated"
            ) from None
        except OfflineModeIsEnabled:
            raise UserError(
                f"cannot list the branches of {self.model}: HF_HUB_OFFLINE=1 is set; use offline mode (--offline) "
                "to read the local cache, or unset HF_HUB_OFFLINE"
            ) from None
        return {branch.name: branch.target_commit for branch in refs.branches}

    def _cached_branches(self) -> dict[str, str]:
        try:
            repos = scan_cache_dir(self.cache_dir).repos
        except CacheNotFound:
            repos = frozenset()
        repo = next((r for r in repos if r.repo_id == self.model and r.repo_type == "model"), None)
        if repo is None:
            raise UserError(
                f"repo {self.model} is not in the offline cache {self.cache_dir}; download it with network access "
                "first, point HF_HUB_CACHE at the cache holding it, or drop --offline / HF_HUB_OFFLINE"
            )
        # Pull-request refs (refs/pr/N) are not checkpoints; branch names never contain a slash on the hub.
        return {ref: rev.commit_hash for rev in repo.revisions for ref in rev.refs if "/" not in ref}

    def _commit(self, revision: str) -> str:
        branches = self._branch_commits()
        if revision not in branches:
            shown = ", ".join(sorted(branches)[:5]) + (" ..." if len(branches) > 5 else "")
            raise UserError(
                f"revision {revision!r} is not a branch of {self.model}{self._where()} (it has {shown}); "
                "pick one of its branches"
            )
        return branches[revision]

    def _weight_sha256(self, revision: str) -> dict[str, str]:
        """Weight file -> sha256 of one revision, listed once per source; MissingCheckpoint when there are none."""
        if revision not in self._weights:
            commit = self._commit(revision)
            weights = self._cached_weights(commit) if self.offline else self._hub_weights(commit)
            if not weights:
                raise _no_weights(f"{self.model}@{revision}{self._where()}")
            self._weights[revision] = weights
        return self._weights[revision]

    def _hub_weights(self, commit: str) -> dict[str, str]:
        """From the hub's file listing at the commit; a weight file outside LFS contributes its git blob id."""
        listing = self._call(lambda: list(HfApi().list_repo_tree(self.model, revision=commit, token=self.token)))
        files = {f.path: f for f in listing if isinstance(f, RepoFile)}
        return {
            name: files[name].lfs.sha256 if files[name].lfs else f"git-blob-{files[name].blob_id}"
            for name in weight_files(files)
        }

    def _cached_weights(self, commit: str) -> dict[str, str]:
        snapshot = repo_folder(self.cache_dir, self.model) / "snapshots" / commit
        return {name: _cached_sha256(snapshot / name) for name in _folder_weights(snapshot)}

    def _where(self) -> str:
        return f" in the offline cache {self.cache_dir}" if self.offline else " on the hub"


class FolderSource:
    """Checkpoints saved as sub-folders of one directory (`step0/`, `step1000/`, ...), read in place, never deleted."""

    owns_copy = False

    def __init__(self, root: str | Path, model: str | None = None):
        self.root = Path(root).expanduser()
        self.model = model or self.root.resolve().name

    def revisions(self) -> list[str]:
        """The names of the sub-folders (hidden ones excepted)."""
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise UserError(
                f"{self.root} has no sub-folders; put each checkpoint in its own folder (step0/, step1000/, ...)"
            )
        return names

    def fingerprint(self, revision: str) -> Fingerprint:
        """Commit "" (a folder has no commit) and the sha256 of the weight files, computed by reading them."""
        return folder_fingerprint(self.fetch(revision))

    def fetch(self, revision: str) -> Path:
        """The revision's own folder."""
        if revision not in self.revisions():
            raise UserError(f"revision {revision!r} is not a sub-folder of {self.root}; pick one of its sub-folders")
        folder = self.root / revision
        if not _folder_weights(folder):
            raise _no_weights(str(folder))
        return folder

    def fetch_tokenizer(self, revision: str) -> Path:
        """The revision's own folder."""
        return self.root / revision

    def evict(self, revision: str) -> None:
        """Nothing: a folder source never deletes the user's checkpoints."""


def folder_fingerprint(folder: Path) -> Fingerprint:
    """Commit "" (a folder has no commit) and the sha256 of the folder's weight files, computed by reading them."""
    weights = {name: file_sha256(Path(folder) / name) for name in _folder_weights(Path(folder))}
    return Fingerprint("", combine_sha256(weights), tuple(weights.items()))


def local_checkpoint(folder: Path) -> tuple[str, str, Fingerprint]:
    """(model id, revision, fingerprint) of one local model folder.

    A folder named like a checkpoint (`runs/neox/step1000`) is revision `step1000` of model `neox`; any other
    folder is revision `local` of a model named after the folder.
    """
    folder = Path(folder).resolve()
    if PYTHIA.step(folder.name) is not None:
        return folder.parent.name, folder.name, folder_fingerprint(folder)
    return folder.name, "local", folder_fingerprint(folder)


def open_source(
    target: str | Path,
    *,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
) -> CheckpointSource:
    """The source TARGET names: an existing folder of checkpoint folders, else a hub repo id (ORG/NAME).

    `offline` None follows HF_HUB_OFFLINE; `cache_dir` None is HF_HUB_CACHE (both as huggingface_hub read them).
    """
    path = Path(target).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            raise UserError(
                f"{target} is a single model (it holds config.json), not a folder of checkpoints; put each "
                "checkpoint in its own sub-folder (step0/, step1000/, ...) and pass the parent folder"
            )
        return FolderSource(path)
    if path.exists():
        raise UserError(
            f"{target} is a file; pass a folder of checkpoint folders or a hub repo id such as EleutherAI/pythia-160m"
        )
    try:
        validate_repo_id(str(target))
    except HFValidationError:
        raise UserError(
            f"{target} is neither an existing folder nor a hub repo id (ORG/NAME, e.g. EleutherAI/pythia-160m); "
            "check the path"
        ) from None
    return HubSource(str(target), offline=offline, cache_dir=cache_dir, token=token)


def expand_targets(targets: Iterable[str]) -> list[str]:
    """Targets with shell-style braces expanded, repeats dropped: `org/pythia-{14m,70m}` -> org/pythia-14m, org/pythia-70m."""
    return list(dict.fromkeys(name for target in targets for name in _expand_braces(target)))


def _expand_braces(text: str) -> list[str]:
    """The alternatives of the first brace group holding a top-level comma, each expanded in turn (as bash does).

    Braces without a comma and unbalanced braces stay as they are.
    """
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char == "{":
            start = i if depth == 0 else start
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            parts = _top_level_split(text[start + 1 : i]) if depth == 0 else []
            if len(parts) > 1:
                head, tail = text[:start], text[i + 1 :]
                return [name for part in parts for name in _expand_braces(head + part + tail)]
    return [text]


def _top_level_split(text: str) -> list[str]:
    """`text` split at the commas outside nested braces."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "{") - (char == "}")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _weights_and_index(names: Iterable[str]) -> tuple[list[str], str]:
    """The preferred format's weight files among `names` and that format's shard index name."""
    names = sorted(names)
    for pattern, index in WEIGHT_FORMATS:
        if found := fnmatch.filter(names, pattern):
            return found, index
    return [], ""


def _folder_files(folder: Path) -> list[str]:
    """Names of the files in a folder; a dangling link (its blob evicted) does not count."""
    return [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []


def _folder_weights(folder: Path) -> list[str]:
    return weight_files(_folder_files(folder))


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


def _no_weights(what: str) -> MissingCheckpoint:
    return MissingCheckpoint(
        f"{what} has no weight files (model*.safetensors or pytorch_model*.bin); this checkpoint cannot be measured"
    )


def _cached_sha256(path: Path) -> str:
    """sha256 of a cached file: the name of the blob it links to when that is a sha256, else read from the file."""
    blob = Path(os.readlink(path)).name if path.is_symlink() else ""
    return blob if _SHA256.fullmatch(blob) else file_sha256(path)


def _retry_wait(err: BaseException, backoff_s: float) -> float | None:
    """Seconds to wait before retrying after `err`, or None when it is no 429/5xx along its cause chain."""
    while err is not None and not isinstance(err, HfHubHTTPError):
        err = err.__cause__ or err.__context__
    if err is None or not (err.response.status_code == 429 or err.response.status_code >= 500):
        return None
    retry_after = err.response.headers.get("retry-after", "")
    return max(backoff_s, float(retry_after) if retry_after.isdigit() else 0.0)
