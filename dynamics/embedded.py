"""The shipped tiny-suite data (data/tiny-suite) and the shipped architecture tables.

`data/tiny-suite/` holds the sweep of the full tiny suite (`mdyn suite build --preset full`, then `mdyn sweep`
of every model on the embedded held-out probe): measurements.parquet, ledger.parquet, architectures.csv and
the suite's manifest.json. These are toy GPT-NeoX models trained on a CPU: their top-1/median ratio shows
outlier-channel emergence, not the massive activations of the paper's Pythia models (docs/science.md §9).
"""

import json
from dataclasses import dataclass

import polars as pl

from dynamics.corpus import DATA_DIR
from dynamics.suite import PRESETS

TINY_SUITE_DIR = DATA_DIR / "tiny-suite"
# The `predict` preset's sweep: the design built to answer the prediction question, `mdyn train`'s default data.
PREDICT_SUITE_DIR = DATA_DIR / "tiny-suite-predict"
ARCHITECTURE_FILES = (
    DATA_DIR / "architectures.csv",
    TINY_SUITE_DIR / "architectures.csv",
    PREDICT_SUITE_DIR / "architectures.csv",
)
TINY_SUITE_CAVEAT = (
    "Tiny suite: toy GPT-NeoX models trained from scratch on a CPU. Their rising top-1/median ratio is "
    "outlier-channel emergence in small models, not a reproduction of the paper's numbers "
    "(Pythia's final ratios run from about 83 at 14M to about 3200 at 12B)."
)


@dataclass(frozen=True)
class Embedded:
    """The shipped tables: measurements and ledger (store contracts), architectures, and the suite manifest."""

    measurements: pl.DataFrame
    ledger: pl.DataFrame
    architectures: pl.DataFrame
    manifest: dict


def load_embedded() -> Embedded:
    """The shipped tiny-suite tables from data/tiny-suite."""
    return Embedded(
        measurements=pl.read_parquet(TINY_SUITE_DIR / "measurements.parquet"),
        ledger=pl.read_parquet(TINY_SUITE_DIR / "ledger.parquet"),
        architectures=pl.read_csv(TINY_SUITE_DIR / "architectures.csv"),
        manifest=json.loads((TINY_SUITE_DIR / "manifest.json").read_text()),
    )


def shipped_architectures() -> pl.DataFrame:
    """The nine Pythia models (data/architectures.csv) and the tiny suite's models in one table."""
    return pl.concat([pl.read_csv(path) for path in ARCHITECTURE_FILES if path.is_file()], how="diagonal_relaxed")


def is_tiny_suite(model: str) -> bool:
    """True for a repo of one of the tiny suite's presets (org tiny-suite, tiny-suite-demo, tiny-suite-micro)."""
    return model.split("/", 1)[0] in {preset.org for preset in PRESETS.values()}
