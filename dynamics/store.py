"""The results store: a folder of parquet shards, one per (model, revision, probe), written atomically.

Layout:
    STORE/mdyn-store.json                         marker with the schema version
    STORE/measurements/<model>/<revision>--<probe_id>.parquet
    STORE/ledger/<model>/<revision>--<probe_id>.parquet   the sweep's record of each revision
    STORE/.lock                                   held by writers (filelock)

A shard is written to a temporary file and renamed into place, so a reader (or a killed writer) never
leaves a half-written file behind; `load` reads every shard into one polars DataFrame.
"""

import json
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from urllib.parse import quote

import polars as pl
from filelock import FileLock

from dynamics.files import write_atomic
from fitting.errors import UserError

SCHEMA_VERSION = 1
MARKER = "mdyn-store.json"

MEASUREMENTS = {
    "model": pl.String,
    "revision": pl.String,
    "step": pl.Int64,
    "commit": pl.String,
    "weights_sha256": pl.String,
    "probe_id": pl.String,
    "dtype": pl.String,
    "device": pl.String,
    "seq": pl.Int32,
    "layer": pl.Int32,
    "top1": pl.Float64,
    "top2": pl.Float64,
    "top3": pl.Float64,
    "median": pl.Float64,
    "top1_pos": pl.Int32,
    "top1_dim": pl.Int32,
    "n_nonfinite": pl.Int64,
    "measured_at": pl.Datetime("us", "UTC"),
    "package_version": pl.String,
}

LEDGER = {
    "model": pl.String,
    "revision": pl.String,
    "step": pl.Int64,
    "probe_id": pl.String,
    "status": pl.String,  # ok | missing | corrupt | duplicate | non_finite | failed
    "detail": pl.String,
    "duplicate_of": pl.String,
    "seconds_fetch": pl.Float64,
    "seconds_measure": pl.Float64,
    "recorded_at": pl.Datetime("us", "UTC"),
}
STATUSES = ("ok", "missing", "corrupt", "duplicate", "non_finite", "failed")


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
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root} is not a massive-dynamics store (no {MARKER}); pass a store folder or an empty/new folder")
    return False


def open_store(root: Path, create: bool = True) -> Path:
    """The store at `root`, created in a missing or empty folder when `create`; returns it as a Path."""
    root = Path(root)
    if not check_store(root):
        if not create:
            raise UserError(f"no store at {root}; run `mdyn measure` or `mdyn sweep` into {root} first")
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / MARKER, json.dumps({"schema_version": SCHEMA_VERSION}).encode())
    return root


def store_lock(root: Path, timeout: float = -1) -> FileLock:
    """The lock writers hold while they change the store; timeout -1 waits for ever."""
    return FileLock(str(Path(root) / ".lock"), timeout=timeout)


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


def as_measurements(stats: pl.DataFrame, **provenance) -> pl.DataFrame:
    """`measure()` rows stamped with provenance (model, revision, step, commit, weights_sha256, probe_id, dtype, device)."""
    constants = {"measured_at": datetime.now(timezone.utc), "package_version": version("massive-dynamics"), **provenance}
    return conform(stats.with_columns(**{k: pl.lit(v) for k, v in constants.items()}), MEASUREMENTS)


def shard_path(root: Path, table: str, model: str, revision: str, probe_id: str) -> Path:
    """Where the shard of one (model, revision, probe) of `table` lives."""
    return Path(root) / table / model_dir(model) / shard_name(revision, probe_id)


def write_shard(root: Path, table: str, df: pl.DataFrame) -> Path:
    """Atomically write the rows of one (model, revision, probe) into `table` ('measurements' or 'ledger')."""
    schema = MEASUREMENTS if table == "measurements" else LEDGER
    df = conform(df, schema)
    keys = df.select("model", "revision", "probe_id").unique()
    if keys.height != 1:
        raise ValueError(f"a shard holds one (model, revision, probe); got {keys.height}")
    model, revision, probe_id = keys.row(0)
    path = shard_path(root, table, model, revision, probe_id)
    meta = {"mdyn_schema_version": str(SCHEMA_VERSION), "mdyn_table": table}
    write_atomic(path, lambda f: df.write_parquet(f, metadata=meta))
    return path


def load(root: Path, table: str = "measurements") -> pl.DataFrame:
    """Every shard of `table` as one DataFrame (empty, with the schema, when there is none)."""
    schema = MEASUREMENTS if table == "measurements" else LEDGER
    files = sorted((Path(root) / table).glob("*/*.parquet"))
    if not files:
        return pl.DataFrame(schema=schema)
    return pl.scan_parquet(files).collect()


def measured_revisions(root: Path, model: str, probe_id: str) -> pl.DataFrame:
    """(revision, step, weights_sha256) of what the store holds for one model and probe, in step order.

    Reads only those columns of the model's own shards, so planning stays cheap in a large store.
    """
    files = sorted((Path(root) / "measurements" / model_dir(model)).glob("*.parquet"))
    columns = {"revision": pl.String, "step": pl.Int64, "weights_sha256": pl.String}
    if not files:
        return pl.DataFrame(schema=columns)
    return (pl.scan_parquet(files).filter((pl.col("model") == model) & (pl.col("probe_id") == probe_id))
            .select(*columns).unique().sort("step").collect())


def measured(root: Path) -> set[tuple[str, str, str]]:
    """The (model, revision, probe_id) keys that already have a measurement shard."""
    files = sorted((Path(root) / "measurements").glob("*/*.parquet"))
    if not files:
        return set()
    keys = pl.scan_parquet(files).select("model", "revision", "probe_id").unique().collect()
    return set(keys.iter_rows())

