"""Command-line options shared by the commands that measure (`measure`, `sweep`), and what they turn into."""

from pathlib import Path
from typing import Annotated

import typer

Probe = Annotated[
    str,
    typer.Option(
        help="Probe text: [bold]paper[/] (500 RedPajama-1T-Sample documents, seed 1: the paper's protocol), "
        "[bold]embedded[/] (held-out Shakespeare plays shipped in data/, works offline), or [bold]auto[/] "
        "(paper for hub models, embedded for local folders).",
    ),
]
ProbeText = Annotated[
    list[Path] | None,
    typer.Option("--probe-text", help="Measure on these UTF-8 text files instead (repeat the option for several)."),
]
NSeq = Annotated[int, typer.Option(help="Number of probe sequences (the paper uses 10).")]
SeqLen = Annotated[int | None, typer.Option(help="Tokens per sequence. Default: the model's context, capped at 2048.")]
Dtype = Annotated[
    str,
    typer.Option(help="Weights dtype: auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16, float64."),
]
ReduceDtype = Annotated[
    str, typer.Option(help="Precision of the on-device reductions: float32 or float64 (the paper's statistics).")
]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")]
BatchSize = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Sequences per forward pass; results do not depend on it. Default: all the probe's sequences, as far "
        "as their activations fit (1 GiB on the CPU, half the free memory of a GPU).",
    ),
]
Offline = Annotated[
    bool,
    typer.Option(
        help="Use only the local Hugging Face cache (as HF_HUB_OFFLINE=1 does); revisions come from the cache."
    ),
]
Bos = Annotated[
    bool,
    typer.Option(
        help="Start every probe sequence with the tokenizer's BOS token, for models trained that way (the "
        "tiny suite). Off by default, as the paper's protocol tokenizes without special tokens."
    ),
]
Sites = Annotated[
    str,
    typer.Option(
        help="Where in each block to measure, comma-separated, or all: residual (the block output, as always), attn "
        "and mlp (what each sublayer adds to the residual stream), mlp_in (the input of the MLP's output "
        "projection: the super-weight channel), sink (attention mass on position 0 and the share of heads above "
        "0.3, Gu et al.). Asked for beyond residual, they go to the store's sites table, with the residual rows as "
        "their reference (docs/science.md §10).",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        help="Hugging Face hub cache to download into and read from. Default: $HF_HUB_CACHE (~/.cache/huggingface/hub)."
    ),
]
Store = Annotated[Path, typer.Option("--store", help="Store folder to write into (created if missing).")]
# `mdyn suite` and `mdyn demo` called the cache --cache; it stays as a hidden alias of --cache-dir there.
OldCache = Annotated[Path | None, typer.Option("--cache", hidden=True)]
# `mdyn measure --out` was the store's old name there; it stays as a hidden alias.
OldOut = Annotated[Path | None, typer.Option("--out", hidden=True)]
LockTimeout = Annotated[
    float,
    typer.Option(
        min=0,
        help="Seconds to wait for the store's writer lock when another process holds it, saying "
        "who does, before giving up.",
    ),
]
Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Model name to record a local folder's checkpoints under. Default: the folder's name (the "
        "parent's for a stepN folder); a store refuses a second folder of the same name.",
    ),
]
KeepCheckpoints = Annotated[
    bool,
    typer.Option(
        help="Keep every revision's files in the HF cache. Default: delete after measuring only what this "
        "sweep downloaded itself (online); an offline cache is never touched."
    ),
]
Evict = Annotated[
    bool,
    typer.Option(
        help="Delete each measured revision's snapshot from the HF cache, even if it was there before the "
        "sweep (e.g. to prune an offline cache you filled yourself); blobs other revisions or processes "
        "still use stay."
    ),
]


def eviction(keep_checkpoints: bool, evict: bool) -> str | None:
    """The HubSource eviction policy the two flags ask for (None: the source's default)."""
    from fitting.errors import UserError

    if keep_checkpoints and evict:
        raise UserError("--keep-checkpoints and --evict contradict each other; pass one of them")
    return "keep" if keep_checkpoints else "measured" if evict else None


def settings(probe, probe_text, n_seq, seq_len, dtype, reduce_dtype, device, batch_size, bos, sites="residual"):
    """The checked measurement settings of the measuring commands' options (`sites` as --sites spells it)."""
    from dynamics.sublayers import parse_sites
    from dynamics.sweep import Settings

    return Settings(
        probe=probe,
        probe_text=tuple(probe_text or ()),
        n_seq=n_seq,
        seq_len=seq_len,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        reduce_dtype=reduce_dtype,
        bos=bos,
        sites=parse_sites(sites),
    ).check()


def quiet_transformers() -> None:
    """No transformers log lines or progress bars between the command's own output."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
