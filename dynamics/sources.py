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
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import httpx2
from huggingface_hub import HfApi, constants, scan_cache_dir, snapshot_download
from huggingface_hub.errors import (
    CacheNotFound,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id

from dynamics.hubcache import BlobLeases, prune_snapshot, repo_blobs, repo_folder, snapshot_links
from dynamics.revisions import PYTHIA
from dynamics.weights import (
    Fingerprint,
    combine_sha256,
    file_sha256,
    folder_fingerprint,
    folder_weights,
    no_weights,
    weight_files,
    weights_and_index,
)
from fitting.errors import MissingCheckpoint, UserError, first_line

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
# Transport failures another try may cure (httpx2 is huggingface_hub's HTTP client): a refused or reset connection,
# a body that ends before its Content-Length, a timeout. Not a proxy error or a bad URL, which recur.
TRANSIENT = (httpx2.NetworkError, httpx2.RemoteProtocolError, httpx2.TimeoutException)


class CheckpointSource(Protocol):
    """What a sweep needs from a place that holds a series of checkpoints."""

    model: str  # the model id recorded in the tables
    origin: str  # where the checkpoints come from: hub:ORG/NAME or folder:/absolute/path

    def revisions(self) -> list[str]:
        """All revision names, sorted; UserError when there are none."""

    def fingerprint(self, revision: str) -> Fingerprint:
        """Commit and weight sha256 of one revision, without downloading it; MissingCheckpoint without weights."""

    def fetch(self, revision: str) -> Path:
        """A local folder holding the revision's config, weights and tokenizer; MissingCheckpoint without weights."""

    def fetch_tokenizer(self, revision: str) -> Path:
        """A local folder holding at least the revision's config and tokenizer (no weights are downloaded)."""

    def evict(self, revision: str, measured: bool = True) -> None:
        """Done with this revision (after measuring it, or only looking at it): release it, and delete what the
        source's own policy allows of its local copy."""


def with_retries(call: Callable[[], _T], *, retries: int = 5, backoff_s: float = 2.0) -> _T:
    """`call()`, retried up to `retries` times after backoff_s * 2**attempt seconds on a transient failure.

    Transient: HTTP 429 or 5xx, and a connection that fails, resets or ends early or times out (`TRANSIENT`).
    huggingface_hub 2.4 retries only some of these itself (429 on a download, 429/503 on a HEAD, a body cut short
    while data still arrives), never a 5xx on a download, a reset mid-body or any failure of an API call. A
    Retry-After header, when the hub sends one, lengthens the wait. The failure is looked up along the
    exception's cause chain, since huggingface_hub re-raises some errors as LocalEntryNotFoundError.
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


# What a sweep may delete from the HF cache after measuring a revision (README: "What a sweep may delete").
EVICTIONS = ("keep", "downloaded", "measured")


@dataclass
class _Fetched:
    """What one process's fetches of a revision added to its snapshot, which is all that `downloaded` may delete.

    The blobs come with the links: `downloaded` deletes a linked blob only if this source downloaded it.
    """

    links: dict[Path, str]  # snapshot file -> the blob it links to
    refs: set[str]
    listing: bool  # huggingface_hub's cached listing of the commit, trees/COMMIT.json


class HubSource:
    """The branches of a hub repo: listed and downloaded from the hub, or, offline, read from the local HF cache.

    Each fetch downloads (online) or finds (offline) one revision's snapshot in `cache_dir`. `eviction` says what
    `evict` may delete afterwards: `keep` nothing; `downloaded` (the default online) only the snapshot files,
    blobs, refs and cached file listing this source's own fetches added to the cache, failed fetches included (a
    blob counts as this source's if any of its fetches downloaded it, so the last revision using a shared blob
    deletes it); `measured` the revision's whole snapshot, for a user who asks to prune a cache (the default
    offline is `keep`, since there the cache is the only copy). Either way a blob that another process (or this
    source's prefetch of another revision) is reading stays: every fetch holds `BlobLeases` on its blobs until its
    revision is evicted.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        offline: bool | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        eviction: str | None = None,
        retries: int = 5,
        backoff_s: float = 2.0,
    ):
        self.model = repo_id
        self.origin = f"hub:{repo_id}"
        self.offline = constants.HF_HUB_OFFLINE if offline is None else offline
        self.cache_dir = Path(constants.HF_HUB_CACHE if cache_dir is None else cache_dir).expanduser().absolute()
        self.eviction = eviction or ("keep" if self.offline else "downloaded")
        if self.eviction not in EVICTIONS:
            raise ValueError(f"eviction must be one of {EVICTIONS}, not {self.eviction!r}")
        self.token = token
        self.retries = retries
        self.backoff_s = backoff_s
        self._branches: dict[str, str] | None = None
        self._files: dict[str, dict[str, str]] = {}  # revision -> {path: blob name}, from the listing or the cache
        self._fetched: dict[str, _Fetched] = {}
        self._downloaded: set[str] = set()  # blobs that some fetch of this source added to the cache
        self._leases = BlobLeases(self.cache_dir, repo_id)
        self._lock = threading.Lock()  # guards the bookkeeping between the sweep's thread and its prefetch

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
        weights, index = weights_and_index(self._weight_sha256(revision))
        return self._snapshot(revision, [*CONFIG_AND_TOKENIZER, *weights, index])

    def fetch_tokenizer(self, revision: str) -> Path:
        """The revision's snapshot folder with its config and tokenizer only."""
        self._commit(revision)
        return self._snapshot(revision, list(CONFIG_AND_TOKENIZER))

    def _snapshot(self, revision: str, patterns: list[str]) -> Path:
        commit = self._commit(revision)
        root = repo_folder(self.cache_dir, self.model)
        snapshot = root / "snapshots" / commit
        listing = root / "trees" / f"{commit}.json"
        links_before, blobs_before = set(snapshot_links(snapshot)), repo_blobs(self.cache_dir, self.model)
        refs_before, listing_before = _refs(root), listing.is_file()
        # Leases first, so that no other process deletes a blob between our download and our reading it.
        expected = [blob for path, blob in self._listing(revision).items() if _matches(path, patterns)]
        self._leases.hold(revision, [BlobLeases.snapshot_key(commit), *expected])
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
        finally:  # a failed download may have added files too, and they are this source's to delete
            now = snapshot_links(snapshot)
            self._leases.hold(revision, set(now.values()) - set(expected))
            with self._lock:
                added = {path: blob for path, blob in now.items() if path not in links_before}
                fetched = self._fetched.setdefault(revision, _Fetched({}, set(), False))
                fetched.links |= added
                fetched.refs |= _refs(root) - refs_before
                fetched.listing |= listing.is_file() and not listing_before
                self._downloaded |= set(added.values()) - blobs_before
        return Path(folder)

    def evict(self, revision: str, measured: bool = True) -> None:
        """Release the revision and delete what `eviction` allows of its snapshot (see the class docstring).

        `measured` False: the revision was only looked at (a sweep's planning fetch), so even `measured` eviction
        deletes no more than this source downloaded.
        """
        commit = self._commit(revision)
        with self._lock:
            fetched = self._fetched.pop(revision, _Fetched({}, set(), False))
            downloaded = set(self._downloaded)
        self._leases.release(revision)
        if self.eviction == "keep":
            return
        blobs = set(fetched.links.values()) & downloaded
        if self.eviction == "measured" and measured:
            links = snapshot_links(repo_folder(self.cache_dir, self.model) / "snapshots" / commit)
            refs = {r for r, c in self._branch_commits().items() if c == commit}
            fetched, blobs = _Fetched(links, refs, True), set(links.values())
        prune_snapshot(
            self.cache_dir,
            self.model,
            commit,
            set(fetched.links),
            blobs,
            fetched.refs,
            self._leases,
            listing=fetched.listing,
        )
        if self.offline:  # offline, the listing is the cache itself, which has just changed
            with self._lock:
                self._files.pop(revision, None)

    def _call(self, fn: Callable[..., _T], *args, **kwargs) -> _T:
        """`fn(...)` with retries; the hub's refusals and a hub that stays unreachable become one-line errors.

        A UserError stops the planning of a sweep; while measuring, the sweep records it as the revision's failure.
        """
        try:
            return with_retries(lambda: fn(*args, **kwargs), retries=self.retries, backoff_s=self.backoff_s)
        except GatedRepoError:
            raise UserError(
                f"repo {self.model} is gated: accept its conditions on its hub page, then log in (`hf auth login`) "
                "or set HF_TOKEN"
            ) from None
        except RepositoryNotFoundError:
            raise UserError(
                f"repo {self.model} not found on the hub (no folder of that name exists either); check the id, "
                "e.g. EleutherAI/pythia-160m, or log in (`hf auth login`) if it is private"
            ) from None
        except RevisionNotFoundError as err:
            raise MissingCheckpoint(
                f"a revision of {self.model} is no longer on the hub ({first_line(err)}); it was deleted or renamed "
                "after the sweep listed the branches"
            ) from None
        except OfflineModeIsEnabled:
            raise UserError(
                f"cannot reach the hub for {self.model}: HF_HUB_OFFLINE=1 is set; use offline mode (--offline) "
                "to read the local cache, or unset HF_HUB_OFFLINE"
            ) from None
        except Exception as err:
            if _retry_wait(err, 0.0) is None:
                raise
            raise UserError(
                f"the hub failed {self.retries + 1} times in a row for {self.model} ({type(err).__name__}: "
                f"{first_line(err)}); try again later (a rerun continues where this one stopped), or use --offline "
                "to read the local cache"
            ) from None

    def _branch_commits(self) -> dict[str, str]:
        """Branch -> commit id, asked once per source."""
        if self._branches is None:
            self._branches = self._cached_branches() if self.offline else self._hub_branches()
            if not self._branches:
                raise UserError(f"{self.model} has no branches{self._where()}; nothing to measure")
        return self._branches

    def _hub_branches(self) -> dict[str, str]:
        refs = self._call(HfApi().list_repo_refs, self.model, token=self.token)
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

    def _listing(self, revision: str) -> dict[str, str]:
        """Every file of the revision -> the name of its blob in the cache, listed once per source.

        Online from the hub's file listing at the commit (an LFS file's blob is its sha256, any other file's its
        git blob id, as the hub's ETags name them); offline from the cached snapshot's links.
        """
        with self._lock:
            known = self._files.get(revision)
        if known is None:
            commit = self._commit(revision)
            if self.offline:
                snapshot = repo_folder(self.cache_dir, self.model) / "snapshots" / commit
                known = {
                    p.relative_to(snapshot).as_posix(): b
                    for p, b in snapshot_links(snapshot).items()
                    if (snapshot / p).exists()
                }
            else:
                listing = self._call(
                    lambda: list(HfApi().list_repo_tree(self.model, revision=commit, recursive=True, token=self.token))
                )
                known = {f.path: f.lfs.sha256 if f.lfs else f.blob_id for f in listing if isinstance(f, RepoFile)}
            with self._lock:
                self._files[revision] = known
        return known

    def _weight_sha256(self, revision: str) -> dict[str, str]:
        """Weight file -> sha256 of one revision; MissingCheckpoint when there are none.

        Offline the blob name is the sha256 huggingface_hub stored the file under; a weight file kept outside LFS
        on the hub contributes `git-blob-<id>`, which identifies its content as well.
        """
        files = self._listing(revision)
        weights = weight_files(files)
        if not weights:
            raise no_weights(f"{self.model}@{revision}{self._where()}")
        if self.offline:
            snapshot = repo_folder(self.cache_dir, self.model) / "snapshots" / self._commit(revision)
            return {name: _cached_sha256(snapshot / name) for name in weights}
        return {name: files[name] if _SHA256.fullmatch(files[name]) else f"git-blob-{files[name]}" for name in weights}

    def _where(self) -> str:
        return f" in the offline cache {self.cache_dir}" if self.offline else " on the hub"


def _refs(root: Path) -> set[str]:
    """The branch names a cached repo has refs for."""
    return {p.name for p in (root / "refs").iterdir()} if (root / "refs").is_dir() else set()


def _matches(path: str, patterns: list[str]) -> bool:
    """Whether snapshot_download's allow_patterns select `path` (fnmatch on the path, as huggingface_hub does)."""
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns if pattern)


class FolderSource:
    """Checkpoints saved as sub-folders of one directory (`step0/`, `step1000/`, ...), read in place, never deleted."""

    def __init__(self, root: str | Path, model: str | None = None):
        self.root = Path(root).expanduser()
        self.model = model or self.root.resolve().name
        self.origin = f"folder:{self.root.resolve()}"
        # revision -> (name, size, mtime of each weight file; their fingerprint): planning and fetching both ask
        # for it, and it reads every weight byte.
        self._fingerprints: dict[str, tuple[tuple, Fingerprint]] = {}

    def revisions(self) -> list[str]:
        """The names of the sub-folders (hidden ones excepted)."""
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise UserError(
                f"{self.root} has no sub-folders; put each checkpoint in its own folder (step0/, step1000/, ...)"
            )
        return names

    def fingerprint(self, revision: str) -> Fingerprint:
        """Commit "" (a folder has no commit) and the sha256 of the weight files, computed by reading them once
        (again only when a weight file's size or modification time changed)."""
        folder = self.fetch(revision)
        stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder_weights(folder))
        known = self._fingerprints.get(revision)
        if known is None or known[0] != stamp:
            known = self._fingerprints[revision] = (stamp, folder_fingerprint(folder))
        return known[1]

    def fetch(self, revision: str) -> Path:
        """The revision's own folder."""
        if revision not in self.revisions():
            raise UserError(f"revision {revision!r} is not a sub-folder of {self.root}; pick one of its sub-folders")
        folder = self.root / revision
        if not folder_weights(folder):
            raise no_weights(str(folder))
        return folder

    def fetch_tokenizer(self, revision: str) -> Path:
        """The revision's own folder."""
        return self.root / revision

    def evict(self, revision: str, measured: bool = True) -> None:
        """Nothing: a folder source never deletes the user's checkpoints."""


class ModelFolderSource(FolderSource):
    """One local model folder (config.json, weights, tokenizer) as a source of one revision, read in place.

    A folder named like a checkpoint (`runs/neox/step1000`) is revision `step1000` of model `neox`; any other
    folder is revision `local` of a model named after the folder, unless `model` names it.
    """

    def __init__(self, folder: str | Path, model: str | None = None):
        self.folder = Path(folder).expanduser().resolve()
        named_step = PYTHIA.step(self.folder.name) is not None
        self.revision = self.folder.name if named_step else "local"
        super().__init__(self.folder.parent, model or (self.folder.parent.name if named_step else self.folder.name))
        self.origin = f"folder:{self.folder}"

    def revisions(self) -> list[str]:
        """The folder's one revision."""
        return [self.revision]

    def fetch(self, revision: str) -> Path:
        """The folder itself."""
        if revision != self.revision:
            raise UserError(f"{self.folder} holds one checkpoint, revision {self.revision!r}, not {revision!r}")
        if not folder_weights(self.folder):
            raise no_weights(str(self.folder))
        return self.folder

    def fetch_tokenizer(self, revision: str) -> Path:
        """The folder itself."""
        return self.folder


def open_source(
    target: str | Path,
    *,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    eviction: str | None = None,
    model: str | None = None,
    one_model: bool = False,
) -> CheckpointSource:
    """The source TARGET names: an existing folder, else a hub repo id (ORG/NAME).

    A folder is a folder of checkpoint folders, or with `one_model` a single model folder. `model` renames a
    folder's model in the tables. `offline` None follows HF_HUB_OFFLINE; `cache_dir` None is HF_HUB_CACHE (both
    as huggingface_hub read them); `eviction` is HubSource's (None: its default).
    """
    path = Path(target).expanduser()
    if path.is_dir():
        single = (path / "config.json").is_file()
        if one_model:
            if not single:
                raise UserError(f"{target} has no config.json; pass a transformers model folder or a hub repo id")
            return ModelFolderSource(path, model)
        if single:
            raise UserError(
                f"{target} is a single model (it holds config.json), not a folder of checkpoints; put each "
                "checkpoint in its own sub-folder (step0/, step1000/, ...) and pass the parent folder, or use "
                "`mdyn measure` for one model"
            )
        return FolderSource(path, model)
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
    if model is not None:
        raise UserError(f"--model names local folders only; {target} is recorded under its repo id")
    return HubSource(str(target), offline=offline, cache_dir=cache_dir, token=token, eviction=eviction)


def expand_targets(targets: Iterable[str]) -> list[str]:
    """Targets with shell-style braces expanded, repeats dropped: `org/pythia-{14m,70m}` -> org/pythia-14m, -70m."""
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


def _cached_sha256(path: Path) -> str:
    """sha256 of a cached file: the name of the blob it links to when that is a sha256, else read from the file."""
    blob = Path(os.readlink(path)).name if path.is_symlink() else ""
    return blob if _SHA256.fullmatch(blob) else file_sha256(path)


def _retry_wait(err: BaseException | None, backoff_s: float) -> float | None:
    """Seconds to wait before retrying after `err`, or None when its cause chain holds no transient failure.

    The first HTTP error along the chain decides: a 4xx other than 429 is the hub's answer, not a failure.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:  # a chain may loop back on itself
        seen.add(id(err))
        if isinstance(err, HfHubHTTPError):
            status = err.response.status_code
            if not (status == 429 or status >= 500):
                return None
            retry_after = err.response.headers.get("retry-after", "")
            return max(backoff_s, float(retry_after) if retry_after.isdigit() else 0.0)
        if isinstance(err, TRANSIENT):
            return backoff_s
        err = err.__cause__ or err.__context__
    return None
