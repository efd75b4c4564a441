"""`mdyn sweep` and `mdyn status`: measure a whole checkpoint series, and report the sweep's ledger."""

import os
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options


def sweep(
    target: Annotated[str, typer.Argument(help="A hub repo id (EleutherAI/pythia-160m) or a folder of stepN/ model folders.")],
    store_dir: Annotated[Path, typer.Option("--store", help="Store folder (created if missing); reruns add only what is missing.")],
    steps: Annotated[str, typer.Option(help="Which revisions: all, every:K, log:N, paper (~37 steps as in the paper), or a list like 0,1000,step143000.")] = "all",
    probe: options.Probe = "auto",
    probe_text: options.ProbeText = None,
    n_seq: options.NSeq = 10,
    seq_len: options.SeqLen = None,
    dtype: options.Dtype = "auto",
    reduce_dtype: options.ReduceDtype = "float32",
    device: options.Device = "auto",
    batch_size: options.BatchSize = 1,
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep each revision's files in the HF cache instead of evicting them after measuring (eviction keeps at most two snapshots on disk).")] = False,
    offline: options.Offline = False,
) -> None:
    """Measure every selected revision of a model's training checkpoints, resumably.

    The next revision downloads while the current one is measured; each measured revision is written to the
    store at once and then evicted from the cache. Revisions whose weights are byte-identical to another's are
    flagged as duplicates before download and measured once. A revision that is missing, corrupt or fails is
    recorded in the ledger (see `mdyn status`) and the sweep goes on; rerun the same command to retry it.
    Exits 1 only when nothing at all could be measured.
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    from rich.console import Console

    from dynamics import store
    from dynamics.sources import open_source
    from dynamics.sweep import Settings, plan, run
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    console = Console(stderr=True)
    store.check_store(store_dir)
    settings = Settings(probe=probe, probe_text=tuple(probe_text or ()), n_seq=n_seq, seq_len=seq_len, dtype=dtype,
                        device=device, batch_size=batch_size, reduce_dtype=reduce_dtype)
    source = open_source(target, offline=offline or None)
    the_plan = plan(source, store_dir, steps, settings)
    console.print(f"{source.model}: {len(the_plan.to_measure)} to measure, {the_plan.already} already in {store_dir}, "
                  f"{len(the_plan.settled)} settled without download; probe {the_plan.probe.source} "
                  f"({the_plan.probe.n_seq} x {the_plan.probe.seq_len}, id {the_plan.probe.probe_id})")
    ledger = run(source, store_dir, the_plan, settings, keep_checkpoints=keep_checkpoints)
    _print_outcome(console, ledger)
    if ledger.height and not ledger["status"].is_in(["ok", "non_finite"]).any() and the_plan.to_measure:
        raise typer.Exit(1)


def status(
    store_dir: Annotated[Path, typer.Option("--store", help="Store folder written by `mdyn sweep`.")],
) -> None:
    """Print a store's ledger: how many revisions are ok, missing, corrupt, duplicate or failed, and which."""
    from rich.console import Console

    from dynamics import store

    root = store.open_store(store_dir, create=False)
    ledger = store.load(root, "ledger")
    console = Console()
    if ledger.is_empty():
        console.print(f"{root}: no sweep recorded yet ({store.load(root).height} measurement rows)")
        return
    _print_outcome(console, ledger)


def _print_outcome(console, ledger) -> None:
    import polars as pl
    from rich.table import Table

    from dynamics.store import STATUSES

    counts = ledger.group_by("model", "status").len().pivot(on="status", index="model", values="len").fill_null(0)
    counts = counts.select("model", *[s for s in STATUSES if s in counts.columns])
    table = Table(title="revisions by status")
    for name in counts.columns:
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in counts.sort("model").iter_rows():
        table.add_row(*map(str, row))
    console.print(table)
    problems = ledger.filter(~pl.col("status").is_in(["ok"])).sort("model", "step")
    for r in problems.iter_rows(named=True):
        extra = f" -> {r['duplicate_of']}" if r["duplicate_of"] else ""
        console.print(f"  {r['status']:<10} {r['model']} {r['revision']}{extra}: {r['detail']}")
