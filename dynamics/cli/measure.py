"""`mdyn measure`: one checkpoint, every layer, printed and stored."""

import os
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options


def measure(
    model: Annotated[str, typer.Argument(help="A hub repo id (e.g. EleutherAI/pythia-70m) or a local model folder.")],
    out: Annotated[Path, typer.Option("--out", help="Store folder to write into (created if missing).")],
    revision: Annotated[str, typer.Option(help="Hub revision (a branch), e.g. step1000. Ignored for a local folder.")] = "main",
    probe: options.Probe = "auto",
    probe_text: options.ProbeText = None,
    n_seq: options.NSeq = 10,
    seq_len: options.SeqLen = None,
    dtype: options.Dtype = "auto",
    reduce_dtype: options.ReduceDtype = "float32",
    device: options.Device = "auto",
    batch_size: options.BatchSize = 1,
    bos: options.Bos = False,
    offline: options.Offline = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Measure the peak activations of every layer of one checkpoint on a probe set.

    For each probe sequence and decoder block: top-1/2/3 and median of |h| over all positions and dimensions of
    the block's output (the residual stream), and where the top-1 sits. Prints a per-layer summary (means
    over sequences; ratio = mean top-1 / mean median, paper Eq. 8) and writes one parquet shard into the store.
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    from dynamics import store
    from dynamics.measure import measure as measure_model
    from dynamics.models import load_model, load_tokenizer, resolve_device, resolve_dtype
    from dynamics.probes import make_probes, resolve_seq_len
    from dynamics.revisions import PYTHIA
    from dynamics.sources import check_weights, local_checkpoint, open_source
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    store.check_store(out)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    folder, online = Path(model), False
    if folder.is_dir():
        model_id, revision, fingerprint = local_checkpoint(folder)
    else:
        source = open_source(model, offline=offline or None, cache_dir=cache_dir)
        model_id, folder, fingerprint = source.model, source.fetch(revision), source.fingerprint(revision)
        online = not source.offline
    check_weights(folder)
    net = load_model(folder, torch_dtype, torch_device)
    probes = make_probes(probe, probe_text, load_tokenizer(folder), n_seq, resolve_seq_len(net.config, seq_len),
                         hub_model=online, bos=bos)
    stats = measure_model(net, probes.token_ids, batch_size=batch_size, reduce_dtype=reduce_dtype)
    rows = store.as_measurements(
        stats, model=model_id, revision=revision, step=PYTHIA.step(revision), commit=fingerprint.commit,
        weights_sha256=fingerprint.weights_sha256, probe_id=probes.probe_id,
        dtype=str(torch_dtype).removeprefix("torch."), device=str(torch_device),
    )
    root = store.open_store(out)
    with store.store_lock(root):
        path = store.write_shard(root, "measurements", rows)
    _print_summary(rows, probes, path)


def _print_summary(rows, probes, path: Path) -> None:
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
    table = Table(title=f"{first['model']} @ {first['revision']}: {probes.n_seq} x {probes.seq_len} tokens, "
                        f"probe {probes.source} ({probes.probe_id})")
    for name in ("layer", "mean top1", "mean median", "ratio", "top1 pos (mode)", "top1 dim (mode)"):
        table.add_column(name, justify="right")
    for r in summary.iter_rows(named=True):
        table.add_row(str(r["layer"]), f"{r['top1']:.4g}", f"{r['median']:.4g}", f"{r['top1'] / r['median']:.4g}",
                      str(r["pos"]), str(r["dim"]))
    console = Console()
    console.print(table)
    if summary["nonfinite"].sum():
        console.print(f"[yellow]warning:[/] {summary['nonfinite'].sum()} non-finite entries (see n_nonfinite); "
                      "try --dtype float32")
    console.print(f"wrote {path}")
