"""The project's shared vocabulary, defined once at the bottom layer that every package imports.

Table contracts (column names and dtypes of the measurements, ledger and sites tables), the Eq. 9 parameter
names, the ledger statuses, the labels of the fitted series, the architecture record and the package version.
The store (dynamics), the fits (fitting) and the predictors (predictors) all read them from here, so that a
column added or renamed in one place is seen everywhere (docs/science.md §1 defines the statistics).
"""

import importlib.metadata
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

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

    def __post_init__(self):
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


def package_version() -> str:
    """The installed massive-dynamics version, or 'unknown' when running from a source tree that is not installed."""
    try:
        return importlib.metadata.version("massive-dynamics")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def require_columns(table: pl.DataFrame, columns, what: str) -> None:
    """Raise UserError unless `table` has every one of `columns`; `what` names the table in the message."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{what} lacks column(s) {', '.join(missing)}; it needs {', '.join(columns)}")
