"""The results store: a folder of parquet shards, one per (model, revision, probe) and table, written atomically.

Layout:
    STORE/mdyn-store.json                                 marker with the schema version
    STORE/measurements/<model>/<revision>--<probe_id>.parquet
    STORE/ledger/<model>/<revision>--<probe_id>.parquet   the sweep's record of each revision
    STORE/sites/<model>/<revision>--<probe_id>.parquet    sublayer sites and attention sinks (opt-in, --sites)
    STORE/.lock, STORE/.lock.owner                        held by writers (filelock), and who holds it
    STORE/.corrupt/<table>/<model>/...                    unreadable shards, set aside by the next sweep

A shard is written to a temporary file and renamed into place, so a reader (or a killed writer) never sees a
half-written file. Readers skip a shard that cannot be read, naming it in a warning, so one damaged file never
hides the rest; the next sweep sets it aside and measures that revision again.
"""

import dataclasses
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import polars as pl
from filelock import FileLock, Timeout

from dynamics.files import is_in_flight, write_atomic
from fitting.contracts import (
    ARCHITECTURE_COLUMNS,
    FIT_INPUT_COLUMNS,
    LEDGER_SCHEMA,
    MEASUREMENT_SCHEMA,
    SITE_SCHEMA,
    Architecture,
    Status,
    package_version,
    require_columns,
)
from fitting.errors import StoreLocked, UnreadableShardWarning, UserError

SCHEMA_VERSION = 1
MARKER = "mdyn-store.json"
CORRUPT_DIR = ".corrupt"
DESIGN_DIR = "adaptive"  # adaptive designs, one JSON per (model, probe): dynamics.adaptive
# A writer holds the lock for milliseconds per shard, so a long wait means another process is stuck.
DEFAULT_LOCK_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Table:
    """One kind of shard: its folder in the store and its columns."""

    name: str
    schema: dict


MEASUREMENTS = Table("measurements", MEASUREMENT_SCHEMA)
LEDGER = Table("ledger", LEDGER_SCHEMA)
SITES = Table("sites", SITE_SCHEMA)


def check_store(root: Path) -> bool:
    """True if `root` is a store, False if it is missing or an empty folder; an error for anything else."""
    root = Path(root)
    marker = root / MARKER
    if marker.is_file():
        try:
            version = json.loads(marker.read_text())["schema_version"]
        except (ValueError, KeyError):
            raise UserError(f"{marker} is damaged; restore it or start a new store in an empty folder") from None
        if version != SCHEMA_VERSION:
            raise UserError(
                f"store {root} has schema version {version}, this massive-dynamics reads version {SCHEMA_VERSION}; "
                "use a matching massive-dynamics or a new store folder"
            )
        return True
    # Another process creating this store (a DDP rank, a parallel sweep) may be between mkdir and the marker's
    # rename: its temporary marker alone still counts as empty.
    if root.exists() and (not root.is_dir() or any(not is_in_flight(p, marker) for p in root.iterdir())):
        what = "a file" if root.is_file() else f"not a massive-dynamics store (no {MARKER})"
        raise UserError(f"{root} is {what}; pass a store folder or an empty/new folder")
    return False


def open_store(root: Path, create: bool = True) -> Path:
    """The store at `root`, created in a missing or empty folder when `create`; returns it as a Path."""
    root = Path(root)
    if not check_store(root):
        if not create:
            raise UserError(f"no store at {root}; run `mdyn measure` or `mdyn sweep` into {root} first")
        try:
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(root / MARKER, json.dumps({"schema_version": SCHEMA_VERSION}).encode())
        except OSError as err:
            raise UserError(
                f"cannot create a store at {root} ({err.strerror or err}); choose a writable --store"
            ) from None
    return root


def check_writable(root: Path) -> Path:
    """The store at `root` (created if missing), after making sure this process can write into it."""
    root = open_store(root)
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"the store {root} is read-only for this user; choose a writable --store")
    return root


@contextmanager
def store_lock(root: Path, timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the store's writer lock; waits up to `timeout` seconds (saying who holds it), then StoreLocked."""
    root = Path(root)
    lock = FileLock(str(root / ".lock"))
    owner = root / ".lock.owner"
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = _read_owner(owner)
            warnings.warn(f"the store {root} is locked by {holder}; waiting up to {timeout:g} s for it", stacklevel=3)
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise StoreLocked(
                    f"the store {root} stayed locked by {holder} for {timeout:g} s; wait for that process to finish, "
                    f"or stop it, then run again (--lock-timeout sets the wait)"
                ) from None
    except StoreLocked:
        raise  # a TimeoutError, hence an OSError, but no sign of an unwritable store
    except OSError as err:
        raise UserError(f"cannot lock the store {root} ({err.strerror or err}); choose a writable --store") from None
    try:
        owner.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.time(),
                    "command": " ".join(sys.argv[:3]),
                }
            )
        )
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _read_owner(owner: Path) -> str:
    try:
        info = json.loads(owner.read_text())
    except (OSError, ValueError):
        return "another process"
    since = datetime.fromtimestamp(info["since"], UTC).strftime("%H:%M:%S UTC")
    return f"process {info['pid']} on {info['host']} ({info['command']}, since {since})"


def shard_name(revision: str, probe_id: str) -> str:
    return f"{quote(revision, safe='')}--{probe_id}.parquet"


def model_dir(model: str) -> str:
    return quote(model.replace("/", "--"), safe="")


def conform(df: pl.DataFrame, schema: dict) -> pl.DataFrame:
    """`df` with exactly the columns of `schema`, in its order and dtypes; missing columns are an error."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}")
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


def measured_status(stats: pl.DataFrame) -> tuple[Status, str]:
    """The ledger status and detail of one revision's `measure()` rows: non_finite when any |h| entry was."""
    nonfinite = int(stats["n_nonfinite"].sum())
    return (Status.NON_FINITE, f"{nonfinite} non-finite entries in |h|") if nonfinite else (Status.OK, "")


def as_measurements(stats: pl.DataFrame, **provenance) -> pl.DataFrame:
    """`measure()` rows stamped with provenance (model, revision, step, commit, weights_sha256, probe_id, dtype,
    device) and the time and package version."""
    return _stamped(stats, MEASUREMENT_SCHEMA, provenance)


def as_sites(rows: pl.DataFrame, **provenance) -> pl.DataFrame:
    """`measure_sites()` rows stamped as `as_measurements` stamps them; the provenance also names seq_len, the
    probe's tokens per sequence."""
    return _stamped(rows, SITE_SCHEMA, provenance)


def _stamped(rows: pl.DataFrame, schema: dict, provenance: dict) -> pl.DataFrame:
    constants = {"measured_at": datetime.now(UTC), "package_version": package_version(), **provenance}
    return conform(rows.with_columns(**{k: pl.lit(v) for k, v in constants.items()}), schema)


def shard_path(root: Path, table: Table, model: str, revision: str, probe_id: str) -> Path:
    """Where the shard of one (model, revision, probe) of `table` lives."""
    return Path(root) / table.name / model_dir(model) / shard_name(revision, probe_id)


def write_shard(root: Path, table: Table, df: pl.DataFrame) -> Path:
    """Atomically write the rows of one (model, revision, probe) into `table`."""
    df = conform(df, table.schema)
    keys = df.select("model", "revision", "probe_id").unique()
    if keys.height != 1:
        raise ValueError(f"a shard holds one (model, revision, probe); got {keys.height}")
    model, revision, probe_id = keys.row(0)
    path = shard_path(root, table, model, revision, probe_id)
    meta = {"mdyn_schema_version": str(SCHEMA_VERSION), "mdyn_table": table.name}
    write_atomic(path, lambda f: df.write_parquet(f, metadata=meta))
    return path


def shards(root: Path, table: Table = MEASUREMENTS, model: str | None = None) -> list[Path]:
    """The shard files of `table`, of one model or of all."""
    folder = Path(root) / table.name
    return sorted((folder / model_dir(model)).glob("*.parquet") if model else folder.glob("*/*.parquet"))


def read_shards(files: list[Path], schema: dict, columns: list[str] | None = None) -> pl.DataFrame:
    """The rows of every readable file (empty, with `schema`, when none); each unreadable file is skipped with
    an UnreadableShardWarning that names it."""
    if not files:
        return pl.DataFrame(schema={c: schema[c] for c in columns} if columns else schema)
    try:
        return _scan(files, columns).collect()
    except (OSError, pl.exceptions.PolarsError):
        pass
    # One file is bad: find it (them), say so, and read the others.
    good = []
    for path, reason in _check_files(files):
        if reason is None:
            good.append(path)
        else:
            warnings.warn(
                f"skipped unreadable shard {path} ({reason}); the next `mdyn sweep` into this store "
                "sets it aside and measures that revision again",
                UnreadableShardWarning,
                stacklevel=2,
            )
    return read_shards(good, schema, columns) if good else read_shards([], schema, columns)


def _scan(files: list[Path], columns: list[str] | None) -> pl.LazyFrame:
    frame = pl.scan_parquet(files)
    return frame.select(columns) if columns else frame


def _check_files(files: list[Path]) -> Iterator[tuple[Path, str | None]]:
    for path in files:
        try:
            pl.read_parquet(path)
            yield path, None
        except (OSError, pl.exceptions.PolarsError) as err:
            yield path, " ".join(str(err).split())[:160]


def load(root: Path, table: Table = MEASUREMENTS, model: str | None = None) -> pl.DataFrame:
    """Every readable shard of `table` (of one model, or all) as one DataFrame, with the table's schema."""
    return read_shards(shards(root, table, model), table.schema)


def unreadable(root: Path, table: Table = MEASUREMENTS) -> list[tuple[Path, str]]:
    """(path, reason) of every shard of `table` that cannot be read."""
    return [(path, reason) for path, reason in _check_files(shards(root, table)) if reason is not None]


def set_aside_unreadable(root: Path, model: str) -> list[Path]:
    """Move the model's unreadable shards (of every table) into STORE/.corrupt/, so its revisions count as unmeasured.

    Only files the store itself wrote are moved, and never deleted. Returns where they went.
    """
    moved = []
    for table in (MEASUREMENTS, LEDGER, SITES):
        for path, reason in _check_files(shards(root, table, model)):
            if reason is None:
                continue
            folder = Path(root) / CORRUPT_DIR / table.name / path.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            # Stamped, so that a shard damaged twice keeps both copies.
            target = folder / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}{path.suffix}"
            os.replace(path, target)
            moved.append(target)
    return moved


def _parquet_file(path: Path, what: str) -> pl.DataFrame:
    """One parquet file of `what` (measurements, sites) a user passed instead of a store folder."""
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise UserError(
            f"cannot read {what} from {path} ({' '.join(str(err).split())[:160]}); pass a store folder or a "
            f"{what} parquet file written by massive-dynamics or polars"
        ) from None


def read_measurements(path: Path) -> pl.DataFrame:
    """The measurements of a store folder, or of one parquet file (e.g. data/tiny-suite/measurements.parquet).

    The table needs at least the columns fitting uses (`FIT_INPUT_COLUMNS`); unreadable shards are skipped with a
    warning naming them.
    """
    path = Path(path)
    if path.is_dir():
        files = shards(path)
        if not files:
            raise UserError(
                f"no measurements in {path}: expected parquet files under {path / MEASUREMENTS.name}; "
                "run `mdyn sweep` into this store first, or pass one measurements parquet file"
            )
        table = read_shards(files, MEASUREMENT_SCHEMA)
        if table.is_empty():
            raise UserError(
                f"no shard under {path / MEASUREMENTS.name} can be read; run `mdyn sweep` into this "
                "store again, which sets the damaged shards aside and measures them again"
            )
    elif path.is_file():
        table = _parquet_file(path, "measurements")
    else:
        raise UserError(f"--store {path} does not exist; pass a store folder or a measurements parquet file")
    require_columns(table, FIT_INPUT_COLUMNS, f"the measurements in {path}")
    return table


def measured_revisions(root: Path, model: str, probe_id: str) -> pl.DataFrame:
    """(revision, step, weights_sha256) of what the store holds for one model and probe, in step order.

    Reads only those columns of the model's own shards, so planning stays cheap in a large store.
    """
    columns = ["model", "probe_id", "revision", "step", "weights_sha256"]
    held = read_shards(shards(root, MEASUREMENTS, model), MEASUREMENT_SCHEMA, columns)
    return (
        held.filter((pl.col("model") == model) & (pl.col("probe_id") == probe_id))
        .select("revision", "step", "weights_sha256")
        .unique()
        .sort("step")
    )


def measured(root: Path) -> set[tuple[str, str, str]]:
    """The (model, revision, probe_id) keys that already have a measurement shard."""
    keys = read_shards(shards(root), MEASUREMENT_SCHEMA, ["model", "revision", "probe_id"]).unique()
    return set(keys.iter_rows())


MODELS = "models.json"


def claim_model(root: Path, model: str, origin: str, architecture: Architecture | None = None) -> None:
    """Record that `model`'s rows come from `origin` (hub:ORG/NAME, folder:/path, ...) and, when known, its
    architecture (which `mdyn train` and the figures then find without a table); call it under the lock.

    Two different checkpoint series under one model id would mix their rows and overwrite each other's
    shards, so a second origin for a known model id is a UserError that asks for another name.
    """
    path = Path(root) / MODELS
    models = _recorded_models(root)
    known = models.get(model, {}).get("origin")
    if known is not None and known != origin:
        raise UserError(
            f"the store {root} already holds model {model!r} from {known.split(':', 1)[1]}, not from "
            f"{origin.split(':', 1)[1]}; pass --model NAME to store these checkpoints under another name"
        )
    entry = {"origin": origin, **({"architecture": dataclasses.asdict(architecture)} if architecture else {})}
    merged = {**models.get(model, {}), **entry}
    if merged != models.get(model):
        write_atomic(path, json.dumps({**models, model: merged}, indent=1, sort_keys=True).encode())


def _recorded_models(root: Path) -> dict[str, dict]:
    """STORE/models.json as {model: {"origin": ..., "architecture": {...}}}; a store written before architectures
    were recorded holds {model: origin}, read as {model: {"origin": origin}}."""
    path = Path(root) / MODELS
    models = json.loads(path.read_text()) if path.is_file() else {}
    return {m: e if isinstance(e, dict) else {"origin": e} for m, e in models.items()}


def recorded_architectures(root: Path) -> pl.DataFrame:
    """The architectures the store recorded while measuring (model and `ARCHITECTURE_COLUMNS`); empty if none."""
    models = _recorded_models(root)
    rows = [{"model": m, **e["architecture"]} for m, e in sorted(models.items()) if "architecture" in e]
    return pl.DataFrame(rows, schema={c: pl.String if c == "model" else pl.Int64 for c in ARCHITECTURE_COLUMNS})


def shard_sites(root: Path, model: str, revision: str, probe_id: str) -> set[str]:
    """The sites that the sites shard of one (model, revision, probe) holds; empty when it is missing or unreadable."""
    path = shard_path(root, SITES, model, revision, probe_id)
    try:
        return set(pl.read_parquet(path, columns=["site"])["site"].unique())
    except (OSError, pl.exceptions.PolarsError):
        return set()


def read_sites(path: Path, site: str) -> pl.DataFrame:
    """The rows of one site from a store folder's sites table, or from one sites parquet file.

    A UserError naming the sites held when there are none of `site`.
    """
    path = Path(path)
    if path.is_dir():
        table = load(path, SITES)
    elif path.is_file():
        table = _parquet_file(path, "sites")
        require_columns(table, (*FIT_INPUT_COLUMNS, "site"), f"the sites in {path}")
    else:
        raise UserError(f"--store {path} does not exist; pass a store folder swept with --sites")
    held = sorted(table["site"].unique().to_list())
    if site not in held:
        hint = f"it holds {', '.join(held)}" if held else "it has no sites table"
        raise UserError(f"no {site!r} rows in {path} ({hint}); sweep it with --sites {site}, or choose another --site")
    return table.filter(pl.col("site") == site)
