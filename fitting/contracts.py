"""The project's shared vocabulary, defined once at the bottom layer that every package imports.

Table contracts (column names and dtypes of the measurements, ledger and sites tables), the Eq. 9 parameter
names, the ledger statuses, the labels of the fitted series, the architecture record and the package version.
The store (dynamics), the fits (fitting) and the predictors (predictors) all read them from here, so that a
column added or renamed in one place is seen everywhere (docs/science.md §1 defines the statistics).
"""

import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from fitting.errors import UserError

# Statistics of |h| per (revision, sequence, layer), in the order the measurement code produces them.
STATS = ("top1", "top2", "top3", "median")
# What fitting and the figures need of a measurements table; the store writes the full MEASUREMENT_SCHEMA.
FIT_INPUT_COLUMNS = ("model", "step", "seq", "layer", *STATS)

MEASUREMENT_SCHEMA = {
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

# Where in a decoder block a statistic is read (docs/science.md §10): the block output (the measurements), the
# attention and MLP sublayer outputs, the input of the MLP's output projection (the super-weight channel) and the
# attention paid to position 0 (the sink).
SITES = ("residual", "attn", "mlp", "mlp_in", "sink")


def _insert_after(schema: dict, key: str, **columns: pl.DataType | type[pl.DataType]) -> dict:
    """`schema` with `columns` inserted right after `key`, keeping the order of everything else."""
    items = list(schema.items())
    at = [name for name, _ in items].index(key) + 1
    return dict(items[:at] + list(columns.items()) + items[at:])


# One row per (revision, sequence, layer, site). top1 ... n_nonfinite are the |x| statistics of MEASUREMENT_SCHEMA
# (null for the sink); sink_mass and sink_rate only for the sink (null elsewhere), and n_nonfinite of a sink row
# counts its non-finite per-head shares. seq_len (tokens per probe sequence) is kept because a sink rate depends on it
# (docs/science.md §10.1).
SITE_SCHEMA = _insert_after(
    _insert_after(MEASUREMENT_SCHEMA, "layer", site=pl.String),
    "n_nonfinite",
    sink_mass=pl.Float64,
    sink_rate=pl.Float64,
    seq_len=pl.Int32,
)


class Status(StrEnum):
    """What became of one revision in a sweep (the ledger's `status`)."""

    OK = "ok"
    MISSING = "missing"  # no weight files on that branch
    CORRUPT = "corrupt"  # weights there but unreadable
    DUPLICATE = "duplicate"  # weights byte-identical to another revision's (duplicate_of names it)
    NON_FINITE = "non_finite"  # measured, with NaN or inf entries in |h|
    FAILED = "failed"  # anything else went wrong


# Statuses whose revision has measurement rows; statuses that the next sweep tries again (a new download may
# repair a corrupt file); the rest (missing, duplicate) are settled from metadata and never retried.
MEASURED = frozenset({Status.OK, Status.NON_FINITE})
RETRIED = frozenset({Status.CORRUPT, Status.FAILED})

LEDGER_SCHEMA = {
    "model": pl.String,
    "revision": pl.String,
    "step": pl.Int64,
    "probe_id": pl.String,
    "status": pl.String,  # a Status
    "detail": pl.String,
    "duplicate_of": pl.String,
    "seconds_fetch": pl.Float64,
    "seconds_measure": pl.Float64,
    "recorded_at": pl.Datetime("us", "UTC"),
}


def ledger_row(
    model: str,
    revision: str,
    step: int | None,
    probe_id: str,
    status: Status,
    detail: str = "",
    *,
    duplicate_of: str | None = None,
    seconds_fetch: float | None = None,
    seconds_measure: float | None = None,
) -> dict:
    """One ledger row, stamped with the current time."""
    return {
        "model": model,
        "revision": revision,
        "step": step,
        "probe_id": probe_id,
        "status": str(Status(status)),
        "detail": detail,
        "duplicate_of": duplicate_of,
        "seconds_fetch": seconds_fetch,
        "seconds_measure": seconds_measure,
        "recorded_at": datetime.now(UTC),
    }


# The five parameters of paper Eq. 9, f(t) = A exp(-lam x) log(x) + K with x = gamma t + t0.
EQ9_PARAMS = ("A", "lam", "gamma", "t0", "K")

# What readers of a fits table need (fitting.table writes many more columns; see its module docstring).
FITS_COLUMNS = ("model", "layer", "series", "hypothesis", "success", "r2", *EQ9_PARAMS)

# What each fitted series is (fitting.table.SERIES computes them), as axis labels.
SERIES_LABELS = {
    "ratio": "mean top-1 / mean median of |h| (Eq. 8)",
    "ratio_mean": "mean over sequences of top-1 / median of |h|",
    "top1": "mean top-1 of |h|",
    "median": "mean median of |h|",
    "top2_ratio": "mean top-2 / mean median of |h|",
    "top3_ratio": "mean top-3 / mean median of |h|",
}

ARCHITECTURE_COLUMNS = ("model", "n_layers", "d_model", "n_heads", "d_ff")
FIELD_MEANINGS = {
    "n_layers": "number of decoder blocks (--layers, num_hidden_layers)",
    "d_model": "hidden size (--hidden, hidden_size)",
    "n_heads": "number of attention heads (--heads, num_attention_heads)",
    "d_ff": "MLP width (--ffn, intermediate_size)",
}


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer's shape: decoder blocks L, hidden size d, attention heads H, MLP width d_ff."""

    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_ff"):
            value = getattr(self, name)
            # numpy integers come from tables; a bool is an int to Python but never a layer count.
            if isinstance(value, bool) or not hasattr(value, "__index__") or value <= 0:
                raise UserError(
                    f"{name} must be a positive integer, got {value!r}: give the model's {FIELD_MEANINGS[name]}"
                )
        if self.d_model % self.n_heads:
            raise UserError(
                f"n_heads={self.n_heads} does not divide d_model={self.d_model}: choose a head count that divides "
                "the hidden size"
            )


# Config field names per quantity, across GPT-NeoX / LLaMA-family (first) and GPT-2 (second) configs.
CONFIG_FIELDS = {
    "n_layers": ("num_hidden_layers", "n_layer"),
    "d_model": ("hidden_size", "n_embd"),
    "n_heads": ("num_attention_heads", "n_head"),
    "d_ff": ("intermediate_size", "n_inner"),
}


def from_spec(layers: int, hidden: int, heads: int, ffn: int | None = None) -> Architecture:
    """An architecture from the command-line spec; the MLP width defaults to 4 * hidden."""
    return Architecture(layers, hidden, heads, 4 * hidden if ffn is None else ffn)


class ConfigObject(Protocol):
    """What `from_config` reads of a transformers config (PretrainedConfig has it)."""

    def to_dict(self) -> dict[str, Any]: ...


def from_config(config: ConfigObject | Mapping[str, Any] | str | Path) -> Architecture:
    """An architecture from a transformers config object, a config dict, or the path of a config.json (or its folder).

    GPT-2's `n_inner: null` means 4 * n_embd, as in transformers.
    """
    if isinstance(config, (str, Path)):
        fields, where = _read_config_json(Path(config))
    elif isinstance(config, Mapping):
        fields, where = dict(config), "the config"
    elif hasattr(config, "to_dict"):
        fields, where = config.to_dict(), f"the {type(config).__name__}"
    else:
        raise UserError(
            f"cannot read an architecture from a {type(config).__name__}: pass a transformers config, a dict, "
            "or the path of a config.json"
        )
    values = {}
    for name, keys in CONFIG_FIELDS.items():
        key = next((k for k in keys if k in fields), None)
        if key is None:
            raise UserError(f"{where} has no {' or '.join(keys)}: add the {FIELD_MEANINGS[name]} to it")
        values[name] = fields[key]
    if values["d_ff"] is None:  # GPT-2 writes n_inner: null for the default width
        values["d_ff"] = 4 * values["d_model"]
    return Architecture(**values)


def _read_config_json(path: Path) -> tuple[dict, str]:
    """The fields of a config.json given as the file or its folder."""
    if path.is_dir():
        path = path / "config.json"
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no config file at {path}: pass the path of a model's config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}): pass a model's config.json") from None
    if not isinstance(fields, dict):
        raise UserError(f"{path} holds a JSON {type(fields).__name__}, not an object: pass a model's config.json")
    return fields, str(path)


def package_version() -> str:
    """The installed massive-dynamics version, or 'unknown' when running from a source tree that is not installed."""
    try:
        return importlib.metadata.version("massive-dynamics")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def require_columns(table: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise UserError unless `table` has every one of `columns`; `what` names the table in the message."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{what} lacks column(s) {', '.join(missing)}; it needs {', '.join(columns)}")
