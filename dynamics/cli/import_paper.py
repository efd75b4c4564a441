"""`mdyn import-paper`: the authors' released per-checkpoint statistics into a measurements store."""

from pathlib import Path
from typing import Annotated

import typer


def import_paper(
    path: Annotated[
        Path,
        typer.Argument(
            help="Local copy of the released dataset: the folder holding "
            "pythia_{size}/stats/exp2_pythia_{size}_step{N}."
        ),
    ],
    store: Annotated[Path, typer.Option(help="Store to write into (created when missing or empty).")],
) -> None:
    """Import the statistics of Gallego-Feliciano et al. (10 probe sequences x top-1/2/3/median x layers, per
    Pythia model and checkpoint) as measurements, so that `mdyn fit`, `mdyn train` and `mdyn figures` run on them.

    Rows get model EleutherAI/pythia-{size}, revision step{N}, probe id paper-redpajama-10x2048 and dtype float16;
    the dataset has no commit, weight hash, device or top-1 position/dimension, so those are empty. Files that
    cannot be read are skipped, recorded as corrupt in the ledger and listed at the end.
    """
    from rich.console import Console

    from dynamics.paper_dataset import import_dataset

    console = Console(soft_wrap=True)
    with console.status(f"importing {path}"):
        result = import_dataset(path, store)
    console.print(f"imported {len(result.written)} checkpoints into {store}", markup=False)
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} files:", markup=False)
        for skipped, reason in result.skipped:
            console.print(f"  {skipped}: {reason}", markup=False)
