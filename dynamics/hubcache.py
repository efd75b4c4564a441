"""Write a local Hugging Face cache that serves any number of revisions offline, and prune one safely.

The layout is the one huggingface_hub reads (`models--ORG--NAME/{blobs,refs/REV,snapshots/COMMIT}`), so
`from_pretrained(repo, revision="step1000")` with `HF_HUB_OFFLINE=1` takes exactly the code path it takes
online. Weight files are stored under their sha256, as the hub names LFS blobs; other files under their git
blob id.

Pruning deletes only what a caller names and no process is reading (`BlobLeases`), so a sweep removes what it
downloaded itself and nothing a user or another process put there.
"""

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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


def snapshot_links(snapshot: Path) -> dict[Path, str]:
    """Every file of a cached snapshot (a link into blobs/) -> the name of the blob it points to."""
    snapshot = Path(snapshot)
    if not snapshot.is_dir():
        return {}
    return {path: Path(os.readlink(path)).name for path in snapshot.rglob("*") if path.is_symlink()}


def repo_blobs(cache_dir: Path, repo_id: str, repo_type: str = "model") -> set[str]:
    """Names of the blobs a cached repo holds."""
    blobs = repo_folder(cache_dir, repo_id, repo_type) / "blobs"
    return {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()


class BlobLeases:
    """Shared locks on the snapshots and blobs this process is reading, visible to every process on the cache.

    A reader holds a shared flock on `.locks/<repo>/<key>.mdyn-inuse` for its revision's snapshot and for each of
    its blobs, taken before the download starts. A process may unlink a snapshot's files only while it holds the
    snapshot's exclusive lock, and delete a blob only while it holds the blob's, which it cannot get while anyone
    reads them. The kernel drops the locks of a process that dies, so a killed sweep never leaves anything
    pinned. (filelock has no shared flock; its SQLite ReadWriteLock would hold one transaction per blob.)
    """

    def __init__(self, cache_dir: Path, repo_id: str, repo_type: str = "model"):
        self.folder = Path(cache_dir) / ".locks" / repo_folder(cache_dir, repo_id, repo_type).name
        self._held: dict[str, list[int]] = {}  # revision -> open descriptors holding a shared lock

    @staticmethod
    def snapshot_key(commit: str) -> str:
        return f"snapshot-{commit}"

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.mdyn-inuse"

    def hold(self, revision: str, keys: Iterable[str]) -> None:
        """Take a shared lock on each key (a blob name or a `snapshot_key`) for `revision`, waiting while another
        process deletes one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for key in keys:
            fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._held.setdefault(revision, []).append(fd)

    def release(self, revision: str) -> None:
        """Drop the locks `hold` took for `revision`."""
        for fd in self._held.pop(revision, []):
            os.close(fd)  # closing the descriptor releases its lock

    @contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        """Yield True while holding the key's exclusive lock, or False (at once) when anyone holds it shared."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def prune_snapshot(
    cache_dir: Path,
    repo_id: str,
    commit: str,
    links: set[Path],
    blobs: set[str],
    refs: set[str],
    leases: BlobLeases,
    listing: bool = False,
) -> None:
    """Delete from a cached repo only what the caller names: `links` of snapshot `commit`, the `blobs` no remaining
    link uses and no process reads, and the `refs` (and with `listing` huggingface_hub's cached file listing of the
    commit, `trees/COMMIT.json`) once the snapshot is empty.

    Nothing happens while another process reads the snapshot; a blob another reader (of another revision) holds
    stays, for the last of them to delete.
    """
    root = repo_folder(cache_dir, repo_id)
    snapshot = root / "snapshots" / commit
    with leases.exclusive(BlobLeases.snapshot_key(commit)) as free:
        if not free:
            return
        own = snapshot_links(snapshot)
        for link in links & set(own):
            link.unlink()
            del own[link]
        others = [p for p in (root / "snapshots").iterdir() if p != snapshot] if (root / "snapshots").is_dir() else []
        elsewhere = {blob for other in others for blob in snapshot_links(other).values()}
        for blob in sorted(blobs - elsewhere - set(own.values())):
            with leases.exclusive(blob) as unread:
                if unread:
                    (root / "blobs" / blob).unlink(missing_ok=True)
        if own:
            return
        if snapshot.is_dir():
            shutil.rmtree(snapshot)
        if listing:
            (root / "trees" / f"{commit}.json").unlink(missing_ok=True)
        for ref in refs:
            ref_file = root / "refs" / ref
            if ref_file.is_file() and ref_file.read_text().strip() == commit:
                ref_file.unlink()
