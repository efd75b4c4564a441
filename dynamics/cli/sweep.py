"""`mdyn sweep` and `mdyn status`: measure whole checkpoint series, here or as a Slurm array, and report progress."""

import os
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options
from fitting.errors import UserError


SLURM = "Slurm (with --executor slurm)"


def sweep(
    targets: Annotated[list[str], typer.Argument(help="Hub repo ids (EleutherAI/pythia-160m) or folders of stepN/ model folders; braces name a family: 'EleutherAI/pythia-{14m,70m,160m}'.")],
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
    bos: options.Bos = False,
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep each revision's files in the HF cache instead of evicting them after measuring (eviction keeps at most two snapshots on disk).")] = False,
    offline: options.Offline = False,
    cache_dir: options.CacheDir = None,
    executor: Annotated[str, typer.Option(help="local: measure here, one revision after another; slurm: submit one Slurm job array with one task per revision.")] = "local",
    partition: Annotated[str | None, typer.Option(help="Slurm partition (default: the cluster's default).", rich_help_panel=SLURM)] = None,
    gpus_per_task: Annotated[int | None, typer.Option(min=0, help="GPUs per task.", rich_help_panel=SLURM)] = None,
    cpus_per_task: Annotated[int | None, typer.Option(min=1, help="CPUs per task.", rich_help_panel=SLURM)] = None,
    mem: Annotated[str | None, typer.Option(help="Memory per task, e.g. 16G.", rich_help_panel=SLURM)] = None,
    time_limit: Annotated[str | None, typer.Option("--time", help="Time limit per task: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.", rich_help_panel=SLURM)] = None,
    array_parallelism: Annotated[int | None, typer.Option(min=1, help="At most this many tasks run at once.", rich_help_panel=SLURM)] = None,
    slurm_arg: Annotated[list[str] | None, typer.Option(help="Any other sbatch option as KEY=VALUE, e.g. account=proj or qos=long (repeat for several).", rich_help_panel=SLURM)] = None,
) -> None:
    """Measure every selected revision of one or more models' training checkpoints, resumably.

    Locally the next revision downloads while the current one is measured; each measured revision is written
    to the store at once and then evicted from the cache. Revisions whose weights are byte-identical to
    another's are flagged as duplicates before download and measured once. A revision that is missing, corrupt
    or fails is recorded in the ledger (see `mdyn status`) and the sweep goes on; rerun the same command to
    retry it. Several targets are swept one after another. Exits 1 only when nothing at all could be measured.

    With --executor slurm the same plan becomes one Slurm job array, one task per revision of all targets; the
    job script and task table go to STORE/slurm/. `mdyn status` follows the array; rerunning the command
    submits only what is neither measured nor queued.
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    from rich.console import Console

    from dynamics import slurm, store
    from dynamics.sources import expand_targets, open_source
    from dynamics.sweep import Settings, plan, run
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    console = Console(stderr=True)
    store.check_store(store_dir)
    resources = slurm.Resources(partition=partition, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
                                mem=mem, time=time_limit, array_parallelism=array_parallelism,
                                extra=slurm.parse_slurm_args(slurm_arg or []))
    if executor not in ("local", "slurm"):
        raise UserError(f"unknown --executor {executor!r}; use local or slurm")
    if executor == "local" and resources != slurm.Resources():
        raise UserError("Slurm options (--partition, --time, ...) need --executor slurm; add it or drop them")
    max_array = slurm.check_cluster(resources) if executor == "slurm" else 0
    settings = Settings(probe=probe, probe_text=tuple(probe_text or ()), n_seq=n_seq, seq_len=seq_len, dtype=dtype,
                        device=device, batch_size=batch_size, reduce_dtype=reduce_dtype, bos=bos)
    sources = [open_source(target, offline=offline or None, cache_dir=cache_dir) for target in expand_targets(targets)]
    plans = []
    for source in sources:
        the_plan = plan(source, store_dir, steps, settings)
        console.print(f"{source.model}: {len(the_plan.to_measure)} to measure, {the_plan.already} already in {store_dir}, "
                      f"{len(the_plan.settled)} settled without download; probe {the_plan.probe.source} "
                      f"({the_plan.probe.n_seq} x {the_plan.probe.seq_len}, id {the_plan.probe.probe_id})")
        plans.append((source, the_plan))
    if executor == "slurm":
        _submit(console, store_dir, plans, settings, resources, keep_checkpoints, max_array)
        return
    import polars as pl

    ledgers = [run(source, store_dir, the_plan, settings, keep_checkpoints=keep_checkpoints) for source, the_plan in plans]
    ledger = pl.concat(ledgers)
    _print_outcome(console, ledger)
    if ledger.height and not ledger["status"].is_in(["ok", "non_finite"]).any() and any(p.to_measure for _, p in plans):
        raise typer.Exit(1)


def _submit(console, store_dir, plans, settings, resources, keep_checkpoints, max_array) -> None:
    from dynamics import slurm

    plans, queued = slurm.exclude_in_flight(store_dir, plans)
    if queued:
        console.print(f"{queued} revisions are still queued or running from an earlier submission; not submitted again")
    submitted = slurm.submit(store_dir, plans, settings, resources, keep_checkpoints, max_array)
    if submitted is None:
        console.print(f"nothing to submit: every selected revision is measured, settled or queued; see mdyn status --store {store_dir}")
        return
    job, folder, n_tasks = submitted
    limit = f", at most {resources.array_parallelism} at a time" if resources.array_parallelism else ""
    console.print(f"submitted job array {job}: {n_tasks} tasks{limit}; script {folder / 'sweep.sbatch'}, "
                  f"logs in {folder / 'logs'}. Follow it with: mdyn status --store {store_dir}")


def sweep_task(
    tasks: Annotated[Path, typer.Option("--tasks", help="tasks.json of a submission (STORE/slurm/<id>/tasks.json).")],
    index: Annotated[int, typer.Option("--index", help="The task to run: its index in tasks.json ($SLURM_ARRAY_TASK_ID).")],
) -> None:
    """Measure one revision of a Slurm submission, as its job script does for each array task."""
    from dynamics.slurm import run_task
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    row = run_task(tasks, index)
    if row is None:
        print(f"task {index}: already measured")
        return
    print(f"task {index}: {row['model']} {row['revision']} {row['status']} {row['detail']}".rstrip())
    if row["status"] not in ("ok", "non_finite"):
        raise typer.Exit(1)


def status(
    store_dir: Annotated[Path, typer.Option("--store", help="Store folder written by `mdyn sweep`.")],
) -> None:
    """Print a store's ledger: how many revisions are ok, missing, corrupt, duplicate or failed, and which.

    For Slurm submissions also each revision's task: pending, running, done or failed (from the ledger,
    squeue, and sacct where the cluster keeps accounting).
    """
    from rich.console import Console

    from dynamics import slurm, store

    root = store.open_store(store_dir, create=False)
    ledger = store.load(root, "ledger")
    console = Console()
    if ledger.is_empty():
        console.print(f"{root}: no sweep recorded yet ({store.load(root).height} measurement rows)")
    else:
        _print_outcome(console, ledger)
    tasks = slurm.progress(root)
    if not tasks.is_empty():
        _print_progress(console, tasks)


def _print_progress(console, tasks) -> None:
    import polars as pl
    from rich.table import Table

    states = ["pending", "running", "done", "failed", "unknown"]
    counts = tasks.group_by("model").agg(pl.col("state").eq(s).sum().alias(s) for s in states).sort("model")
    table = Table(title="Slurm tasks by state (newest submission of each revision)")
    table.add_column("model")
    shown = [s for s in states if s != "unknown" or counts["unknown"].sum()]
    for name in shown:
        table.add_column(name, justify="right")
    for row in counts.iter_rows(named=True):
        table.add_row(row["model"], *(str(row[s]) for s in shown))
    console.print(table)
    for r in tasks.filter(pl.col("state") != "done").iter_rows(named=True):
        task = f" (task {r['task']})" if r["task"] else ""
        detail = f": {r['detail']}" if r["detail"] else ""
        console.print(f"  {r['state']:<10} {r['model']} {r['revision']}{task}{detail}")


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
