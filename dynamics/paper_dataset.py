"""Import the authors' released per-checkpoint statistics (docs/science.md §8) into a measurements store.

Layout of a local copy: `pythia_{size}/stats/exp2_pythia_{size}_step{N}`, each a plain-text nested Python list of
shape n_seq x 4 x L (the paper: 10 probe sequences; rows top-1, top-2, top-3 and median of |h_l|; one column per
layer), read with `ast.literal_eval`. The `params/` folders (the authors' own fits) are not read.

Each file becomes the measurement rows of model `EleutherAI/pythia-{size}`, revision `step{N}`: probe id
`PROBE_ID` (the paper's probe: 10 chunks of 2048 tokens of RedPajama-Data-1T-Sample, seed 1), dtype float16
(the paper's), column i as layer i (0-based block index, as the dataset orders them). What the dataset does not
record is null: commit, weights_sha256, device, top1_pos, top1_dim, n_nonfinite, measured_at. Every file also gets
a ledger row: ok, or corrupt with the reason when it cannot be read (such files are skipped).
"""

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dynamics import store
from dynamics.corpus import DATA_DIR
from fitting.contracts import Status, ledger_row, package_version
from fitting.errors import UserError

PROBE_ID = "paper-redpajama-10x2048"
DTYPE = "float16"
ROWS = ("top1", "top2", "top3", "median")
MODEL_DIR = re.compile(r"pythia_(?P<size>[0-9.]+[mb])")
STATS_FILE = re.compile(r"exp2_pythia_(?P<size>[0-9.]+[mb])_step(?P<step>[0-9]+)(\.txt)?")


@dataclass
class Imported:
    """What an import did: shards written (one per model and revision) and files skipped with the reason."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def model_id(size: str) -> str:
    return f"EleutherAI/pythia-{size}"


def parse_stats(text: str, n_layers: int | None = None) -> np.ndarray:
    """The statistics of one file as an array (n_seq, 4, L); ValueError saying what is wrong with it."""
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"not a Python literal ({type(err).__name__})") from None
    try:
        array = np.asarray(value, dtype=float)
    except (ValueError, TypeError):
        raise ValueError("not a nested list of numbers of one shape (n_seq x 4 x layers)") from None
    if array.ndim != 3 or array.shape[1] != len(ROWS) or 0 in array.shape:
        raise ValueError(f"has shape {array.shape}, expected (n_seq, 4, layers)")
    if n_layers is not None and array.shape[2] != n_layers:
        raise ValueError(f"has {array.shape[2]} layer columns, the model has {n_layers} layers")
    return array


def measurement_rows(stats: np.ndarray, model: str, step: int, version: str) -> pl.DataFrame:
    """One measurements row per (sequence, layer) of an (n_seq, 4, L) array, in the store's contract."""
    n_seq, _, n_layers = stats.shape
    columns = {name: stats[:, i, :].ravel() for i, name in enumerate(ROWS)}
    return store.conform(
        pl.DataFrame(
            {
                "model": model,
                "revision": f"step{step}",
                "step": step,
                "commit": None,
                "weights_sha256": None,
                "probe_id": PROBE_ID,
                "dtype": DTYPE,
                "device": None,
                "seq": np.repeat(np.arange(n_seq, dtype=np.int32), n_layers),
                "layer": np.tile(np.arange(n_layers, dtype=np.int32), n_seq),
                **columns,
                "top1_pos": None,
                "top1_dim": None,
                "n_nonfinite": None,
                "measured_at": None,
                "package_version": version,
            }
        ),
        store.MEASUREMENTS.schema,
    )


def stats_files(root: Path) -> tuple[list[tuple[str, int, Path]], list[tuple[Path, str]]]:
    """(size, step, path) of every statistics file under `root`, sorted; and files of stats/ folders that are not."""
    found, odd = [], []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and MODEL_DIR.fullmatch(p.name)):
        size = folder.name.removeprefix("pythia_")
        stats_dir = folder / "stats"
        for path in sorted(stats_dir.iterdir()) if stats_dir.is_dir() else []:
            match = STATS_FILE.fullmatch(path.name)
            if match and match["size"] == size and path.is_file():
                found.append((size, int(match["step"]), path))
            elif not path.name.startswith("."):
                odd.append((path, f"not a file named exp2_pythia_{size}_step<N>"))
    return sorted(found, key=lambda item: (item[0], item[1])), odd


def import_dataset(root: Path, store_root: Path) -> Imported:
    """Write every readable statistics file under `root` into the store at `store_root` (created if needed)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the local copy of the released dataset (with pythia_*/stats/)")
    files, odd = stats_files(root)
    if not files:
        raise UserError(
            f"no statistics files under {root}: expected "
            "pythia_{size}/stats/exp2_pythia_{size}_step{N}; download the dataset first (see the README)"
        )
    store_root = store.open_store(store_root)
    n_layers = dict(pl.read_csv(DATA_DIR / "architectures.csv").select("model", "n_layers").iter_rows())
    version = package_version()
    result = Imported(skipped=list(odd))
    with store.store_lock(store_root):
        for size, step, path in files:
            model = model_id(size)
            # The authors measured the hub's own checkpoint series, the one `mdyn sweep` of that repo reads.
            store.claim_model(store_root, model, f"hub:{model}")
            try:
                stats = parse_stats(path.read_text(encoding="utf-8"), n_layers.get(model))
            except ValueError as err:  # UnicodeDecodeError included
                result.skipped.append((path, str(err)))
                _ledger(store_root, model, step, Status.CORRUPT, f"{path.name}: {err}")
                continue
            result.written.append(
                store.write_shard(store_root, store.MEASUREMENTS, measurement_rows(stats, model, step, version))
            )
            _ledger(store_root, model, step, Status.OK, f"imported from {path.name}")
    return result


def _ledger(root: Path, model: str, step: int, status: Status, detail: str) -> None:
    row = ledger_row(model, f"step{step}", step, PROBE_ID, status, detail)
    store.write_shard(root, store.LEDGER, pl.DataFrame([row], schema=store.LEDGER.schema))
