"""`mdyn measure`: one checkpoint, every layer, printed and stored (a one-revision plan of the sweep engine)."""

import os
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options
from fitting.errors import UserError


def measure(
    model: Annotated[str, typer.Argument(help="A hub repo id (e.g. EleutherAI/pythia-70m) or a local model folder.")],
    store_dir: Annotated[
        Path | None, typer.Option("--store", help="Store folder to write into (created if missing; required).")
    ] = None,
    revision: Annotated[
        str, typer.Option(help="Hub revision (a branch), e.g. step1000. Ignored for a local folder.")
    ] = "main",
    probe: options.Probe = "auto",
    probe_text: options.ProbeText = None,
    n_seq: options.NSeq = 10,
    seq_len: options.SeqLen = None,
    dtype: options.Dtype = "auto",
    reduce_dtype: options.ReduceDtype = "float32",
    device: options.Device = "auto",
    batch_size: options.BatchSize = None,
    bos: options.Bos = False,
    sites: options.Sites = "residual",
    offline: options.Offline = False,
    cache_dir: options.CacheDir = None,
    model_name: options.Model = None,
    lock_timeout: options.LockTimeout = 300.0,
    out: options.OldOut = None,
) -> None:
    """Measure the peak activations of every layer of one checkpoint on a probe set.

    For each probe sequence and decoder block: top-1/2/3 and median of |h| over all positions and dimensions of
    the block's output (the residual stream), and where the top-1 sits. Prints a per-layer summary (means
    over sequences; ratio = mean top-1 / mean median, paper Eq. 8) and writes one parquet shard into the store.
    A checkpoint the store already holds with this probe is not measured again: its stored rows are shown.
    With --sites, also the sublayer sites and the attention sink of every layer (the store's sites table).
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    store_dir = store_dir or out
    if store_dir is None:
        raise UserError("missing --store: give the store folder to write into")
    from dynamics import store
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.revisions import PYTHIA
    from dynamics.sources import ModelFolderSource, open_source
    from dynamics.sweep import plan_revisions, run
    from fitting.contracts import MEASURED

    options.quiet_transformers()
    settings = options.settings(probe, probe_text, n_seq, seq_len, dtype, reduce_dtype, device, batch_size, bos, sites)
    store.check_store(store_dir)
    source = open_source(
        model, offline=offline or None, cache_dir=cache_dir, eviction="keep", model=model_name, one_model=True
    )
    if isinstance(source, ModelFolderSource):
        revision = source.revision
    with warnings_as_messages():
        the_plan = plan_revisions(source, store_dir, {revision: PYTHIA.step(revision)}, settings, lock_timeout)
        ledger = run(source, store_dir, the_plan, settings, prefetch=False, lock_timeout=lock_timeout)
    row = ledger.filter(ledger["revision"] == revision).row(0, named=True) if ledger.height else None
    if row is not None and row["status"] not in MEASURED:
        raise UserError(f"{source.model}@{revision} was not measured ({row['status']}): {row['detail']}")
    rows = store.load(store_dir, store.MEASUREMENTS, source.model)
    rows = rows.filter((rows["revision"] == revision) & (rows["probe_id"] == the_plan.probe.probe_id))
    path = store.shard_path(store_dir, store.MEASUREMENTS, source.model, revision, the_plan.probe.probe_id)
    _print_summary(rows, the_plan.probe, path, fresh=row is not None)
    if settings.site_table():
        path = store.shard_path(store_dir, store.SITES, source.model, revision, the_plan.probe.probe_id)
        _print_sites(store.read_shards([path], store.SITES.schema), settings.sites, path)


def _print_sites(rows, sites, path: Path) -> None:
    """Per layer and site: the mean top-1 and the most frequent channel of the top-1; for the sink, rate and mass."""
    import polars as pl
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    summary = (
        rows.group_by("layer", "site")
        .agg(
            pl.col("top1").mean(),
            pl.col("top1_dim").mode().first(),
            pl.col("sink_rate").mean(),
            pl.col("sink_mass").mean(),
        )
        .sort("layer")
    )
    table = Table(title=escape("sites: mean top-1 [channel of the top-1, mode]; sink: rate (mass)"))
    table.add_column("layer", justify="right")
    for site in sites:
        table.add_column(site, justify="right")
    for (layer,), part in summary.group_by("layer", maintain_order=True):
        cells = {r["site"]: r for r in part.iter_rows(named=True)}
        table.add_row(
            str(layer),
            *(
                f"{cells[s]['sink_rate']:.2f} ({cells[s]['sink_mass']:.3f})"
                if s == "sink"
                else escape(f"{cells[s]['top1']:.4g} [{cells[s]['top1_dim']}]")
                for s in sites
            ),
        )
    console = Console()
    console.print(table)
    console.print(f"sites in {path}", markup=False)


def _print_summary(rows, probes, path: Path, fresh: bool) -> None:
    import polars as pl
    from rich.console import Console
    from rich.table import Table

    summary = (
        rows.group_by("layer")
        .agg(
            pl.col("top1").mean().alias("top1"),
            pl.col("median").mean().alias("median"),
            pl.col("top1_pos").mode().first().alias("pos"),
            pl.col("top1_dim").mode().first().alias("dim"),
            pl.col("n_nonfinite").sum().alias("nonfinite"),
        )
        .sort("layer")
    )
    first = rows.row(0, named=True)
    table = Table(
        title=f"{first['model']} @ {first['revision']}: {probes.n_seq} x {probes.seq_len} tokens, "
        f"probe {probes.source} ({probes.probe_id})"
    )
    for name in ("layer", "mean top1", "mean median", "ratio", "top1 pos (mode)", "top1 dim (mode)"):
        table.add_column(name, justify="right")
    for r in summary.iter_rows(named=True):
        table.add_row(
            str(r["layer"]),
            f"{r['top1']:.4g}",
            f"{r['median']:.4g}",
            f"{r['top1'] / r['median']:.4g}",
            str(r["pos"]),
            str(r["dim"]),
        )
    console = Console()
    console.print(table)
    if summary["nonfinite"].sum():
        console.print(
            f"[yellow]warning:[/] {summary['nonfinite'].sum()} non-finite entries (see n_nonfinite); "
            "try --dtype float32"
        )
    if fresh:
        console.print(f"wrote {path}", markup=False)
    else:
        console.print(f"already in the store, measured {first['measured_at']:%Y-%m-%d %H:%M} UTC: {path}", markup=False)
