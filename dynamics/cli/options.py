"""Command-line options shared by the commands that measure (`measure`, `sweep`)."""

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
SeqLen = Annotated[
    int | None, typer.Option(help="Tokens per sequence. Default: the model's context, capped at 2048.")
]
Dtype = Annotated[
    str,
    typer.Option(help="Weights dtype: auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16, float64."),
]
ReduceDtype = Annotated[
    str, typer.Option(help="Precision of the on-device reductions: float32 or float64 (the paper's statistics).")
]
Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Sequences per forward pass; results do not depend on it.")]
Offline = Annotated[
    bool,
    typer.Option(help="Use only the local Hugging Face cache (as HF_HUB_OFFLINE=1 does); revisions come from the cache."),
]
Bos = Annotated[
    bool,
    typer.Option(help="Start every probe sequence with the tokenizer's BOS token, for models trained that way (the "
                 "tiny suite). Off by default, as the paper's protocol tokenizes without special tokens."),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(help="Hugging Face hub cache to download into and read from. Default: $HF_HUB_CACHE (~/.cache/huggingface/hub)."),
]
