"""`mdyn sweep` and `mdyn status`: measure whole checkpoint series, here or as a Slurm array, and report progress."""

import os
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options
from fitting.contracts import MEASURED, Status
from fitting.errors import UnreadableShardWarning, UserError

SLURM = "Slurm (with --executor slurm)"


def sweep(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Hub repo ids (EleutherAI/pythia-160m) or folders of stepN/ model folders; braces name a family: "
            "'EleutherAI/pythia-{14m,70m,160m}'."
        ),
    ],
    store_dir: Annotated[
        Path, typer.Option("--store", help="Store folder (created if missing); reruns add only what is missing.")
    ],
    steps: Annotated[
        str,
        typer.Option(
            help="Which revisions: all, every:K, log:N, paper (~37 steps as in the paper), a list like "
            "0,1000,step143000, or adaptive:N (N revisions, each chosen where it sharpens the fitted curves most)."
        ),
    ] = "all",
    until_band: Annotated[
        float | None,
        typer.Option(
            help="adaptive:N: stop before N once every layer's 95 % band (relative half-width) is narrower than this."
        ),
    ] = None,
    per_round: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="adaptive:N: revisions picked per round (default 1 here; with --executor slurm, one array per "
            "round of --array-parallelism or 4 picks).",
        ),
    ] = None,
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
    keep_checkpoints: options.KeepCheckpoints = False,
    evict: options.Evict = False,
    offline: options.Offline = False,
    cache_dir: options.CacheDir = None,
    model_name: options.Model = None,
    lock_timeout: options.LockTimeout = 300.0,
    executor: Annotated[
        str,
        typer.Option(
            help="local: measure here, one revision after another; slurm: submit one Slurm job array with one task "
            "per revision."
        ),
    ] = "local",
    partition: Annotated[
        str | None, typer.Option(help="Slurm partition (default: the cluster's default).", rich_help_panel=SLURM)
    ] = None,
    gpus_per_task: Annotated[int | None, typer.Option(min=0, help="GPUs per task.", rich_help_panel=SLURM)] = None,
    cpus_per_task: Annotated[int | None, typer.Option(min=1, help="CPUs per task.", rich_help_panel=SLURM)] = None,
    mem: Annotated[str | None, typer.Option(help="Memory per task, e.g. 16G.", rich_help_panel=SLURM)] = None,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="Time limit per task: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.",
            rich_help_panel=SLURM,
        ),
    ] = None,
    array_parallelism: Annotated[
        int | None, typer.Option(min=1, help="At most this many tasks run at once.", rich_help_panel=SLURM)
    ] = None,
    revisions_per_task: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Consecutive revisions one task measures (one model load, one start of Python). Default: sized "
            "from the model, so that a task's start is under a tenth of its time (dozens for tiny models, 1 for "
            "billions of parameters). Resubmission stays per revision.",
            rich_help_panel=SLURM,
        ),
    ] = None,
    slurm_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="Any other sbatch option as KEY=VALUE, e.g. account=proj or qos=long (repeat for several).",
            rich_help_panel=SLURM,
        ),
    ] = None,
) -> None:
    """Measure every selected revision of one or more models' training checkpoints, resumably.

    Locally the next revision downloads while the current one is measured; each measured revision is written
    to the store at once. Afterwards the sweep deletes from the HF cache only what it downloaded itself
    (--keep-checkpoints: nothing; --evict: the measured snapshots, also ones that were there before). Revisions
    whose weights are byte-identical to another's are flagged as duplicates before download and measured once.
    A revision that is missing, corrupt or fails is recorded in the ledger (see `mdyn status`) and the sweep goes
    on; rerun the same command to retry it. Several targets are swept one after another. Exits 1 only when
    nothing at all could be measured.

    With --executor slurm the same plan becomes one Slurm job array for all targets, a task per chunk of
    --revisions-per-task revisions; the job script and task table go to STORE/slurm/. `mdyn status` follows
    the array; rerunning the command submits only what is neither measured nor queued.

    With --steps adaptive:N the sweep chooses as it measures: from 6-8 log-spaced revisions, it fits every layer
    and measures next the revision that most narrows the fitted curves, until N are measured (or every layer's
    band is narrower than --until-band). With --executor slurm each command submits one round as one array;
    rerun it once the round is done to plan the next. The design is kept in STORE/adaptive/.
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    from rich.console import Console

    from dynamics import slurm, store
    from dynamics.cli.messages import warnings_as_messages
    from dynamics.sources import expand_targets

    options.quiet_transformers()
    console = Console(stderr=True)
    store.check_store(store_dir)
    resources = slurm.Resources(
        partition=partition,
        gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task,
        mem=mem,
        time=time_limit,
        array_parallelism=array_parallelism,
        extra=slurm.parse_slurm_args(slurm_arg or []),
        revisions_per_task=revisions_per_task,
    )
    if executor not in ("local", "slurm"):
        raise UserError(f"unknown --executor {executor!r}; use local or slurm")
    if executor == "local" and resources != slurm.Resources():
        raise UserError("Slurm options (--partition, --time, ...) need --executor slurm; add it or drop them")
    settings = options.settings(probe, probe_text, n_seq, seq_len, dtype, reduce_dtype, device, batch_size, bos, sites)
    policy = options.eviction(keep_checkpoints, evict)
    budget = _adaptive_budget(steps, until_band, per_round, executor, resources)
    max_array = slurm.check_cluster(resources) if executor == "slurm" else 0
    with warnings_as_messages():
        if budget is not None:
            from dynamics.cli.adaptive import sweep_adaptive

            args = (console, expand_targets(targets), store_dir, budget, settings, executor, resources, max_array)
            if not sweep_adaptive(
                *args, lock_timeout, offline=offline or None, cache_dir=cache_dir, eviction=policy, model=model_name
            ):
                raise typer.Exit(1)
            return
        plans = plan_targets(
            console,
            expand_targets(targets),
            store_dir,
            steps,
            settings,
            offline=offline or None,
            cache_dir=cache_dir,
            eviction=policy,
            model=model_name,
            lock_timeout=lock_timeout,
        )
        if executor == "slurm":
            _submit(console, store_dir, plans, settings, resources, max_array)
            return
        ledger = sweep_locally(console, plans, store_dir, settings, lock_timeout)
    if ledger.height and not ledger["status"].is_in(list(MEASURED)).any() and any(p.to_measure for _, p in plans):
        raise typer.Exit(1)


def _adaptive_budget(steps, until_band, per_round, executor, resources):
    """The budget of `--steps adaptive:N`, or None for a fixed selection (which takes no adaptive option)."""
    from dynamics.revisions import ADAPTIVE

    if steps.strip().partition(":")[0] != ADAPTIVE:
        if until_band is not None or per_round is not None:
            raise UserError("--until-band and --per-round need --steps adaptive:N; add it or drop them")
        return None
    # Only an adaptive sweep fits curves while measuring: a fixed one never imports the fitting code.
    from dynamics.adaptive import Budget, parse
    from dynamics.cli.adaptive import SLURM_PER_ROUND

    n = parse(steps)
    if until_band is not None and not until_band > 0:
        raise UserError(f"--until-band must be a relative half-width above 0, e.g. 0.05, not {until_band}")
    if per_round is None:
        per_round = (resources.array_parallelism or SLURM_PER_ROUND) if executor == "slurm" else 1
    return Budget(n, until_band, per_round)


def plan_targets(console, targets, store_dir, steps, settings, lock_timeout=300.0, **source_options):
    """(source, plan) of every target, each plan summarised in one line."""
    from dynamics.sources import open_source
    from dynamics.sweep import plan

    plans = []
    for target in targets:
        source = open_source(target, **source_options)
        the_plan = plan(source, store_dir, steps, settings, lock_timeout=lock_timeout)
        probe = the_plan.probe
        console.print(
            f"{source.model}: {len(the_plan.to_measure)} to measure, {the_plan.already} already in "
            f"{store_dir}, {len(the_plan.settled)} settled without download; probe {probe.source} "
            f"({probe.n_seq} x {probe.seq_len}, id {probe.probe_id})",
            markup=False,
            highlight=False,
        )
        plans.append((source, the_plan))
    return plans


def sweep_locally(console, plans, store_dir, settings, lock_timeout=300.0):
    """Run every plan here with a progress bar, then print the outcome; this run's ledger rows."""
    import polars as pl

    from dynamics.cli.progress import revision_bar
    from dynamics.sweep import run

    ledgers = []
    for source, the_plan in plans:
        with revision_bar(console, the_plan) as on_revision:
            ledgers.append(
                run(source, store_dir, the_plan, settings, on_revision=on_revision, lock_timeout=lock_timeout)
            )
    ledger = pl.concat(ledgers)
    if ledger.is_empty():
        console.print(f"nothing to do: every selected revision is already in {store_dir}", markup=False)
    else:
        _print_outcome(console, ledger)
    return ledger


def _submit(console, store_dir, plans, settings, resources, max_array) -> None:
    from dynamics import slurm

    plans, queued = slurm.exclude_in_flight(store_dir, plans)
    if queued:
        console.print(f"{queued} revisions are still queued or running from an earlier submission; not submitted again")
    submitted = slurm.submit(store_dir, plans, settings, resources, max_array)
    if submitted is None:
        console.print(
            "nothing to submit: every selected revision is measured, settled or queued; "
            f"see mdyn status --store {store_dir}"
        )
        return
    job, folder, n_tasks = submitted
    n_revisions = sum(len(the_plan.to_measure) for _, the_plan in plans)
    limit = f", at most {resources.array_parallelism} at a time" if resources.array_parallelism else ""
    console.print(
        f"submitted job array {job}: {n_tasks} tasks for {n_revisions} revisions{limit}; script "
        f"{folder / 'sweep.sbatch'}, logs in {folder / 'logs'}. Follow it with: mdyn status --store {store_dir}",
        markup=False,
    )


def sweep_task(
    tasks: Annotated[Path, typer.Option("--tasks", help="tasks.json of a submission (STORE/slurm/<id>/tasks.json).")],
    index: Annotated[
        int, typer.Option("--index", help="The task to run: its index in tasks.json ($SLURM_ARRAY_TASK_ID).")
    ],
) -> None:
    """Measure the revisions of one Slurm array task, as its job script does for each array index."""
    from dynamics.slurm import run_task

    options.quiet_transformers()
    rows = run_task(tasks, index)
    if not rows:
        print(f"task {index}: already measured")
        return
    for row in rows:
        print(f"task {index}: {row['model']} {row['revision']} {row['status']} {row['detail']}".rstrip())
    if any(row["status"] not in MEASURED for row in rows):
        raise typer.Exit(1)


def status(
    store_dir: Annotated[Path, typer.Option("--store", help="Store folder written by `mdyn sweep`.")],
) -> None:
    """Print a store's ledger: how many revisions are ok, missing, corrupt, duplicate or failed, and which.

    Also which sites (--sites) the store holds for each model.

    For Slurm submissions also each revision's task: pending, running, done or failed (from the ledger,
    squeue, and sacct where the cluster keeps accounting). For adaptive sweeps (--steps adaptive:N) also the
    design so far: its rounds, picks, criterion values and widest band.
    """
    import warnings

    from rich.console import Console

    from dynamics import slurm, store

    root = store.open_store(store_dir, create=False)
    console = Console(soft_wrap=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableShardWarning)  # listed below, with what happens to them
        ledger = store.load(root, store.LEDGER)
        bad = [
            pair for table in (store.MEASUREMENTS, store.LEDGER, store.SITES) for pair in store.unreadable(root, table)
        ]
        if ledger.is_empty():
            console.print(f"{root}: no sweep recorded yet ({store.load(root).height} measurement rows)", markup=False)
        else:
            _print_outcome(console, ledger)
        _print_sites(console, store.read_shards(store.shards(root, store.SITES), store.SITES.schema, SITE_KEYS))
    if bad:
        console.print(
            f"{len(bad)} unreadable shard(s); the next `mdyn sweep` into this store sets them aside in "
            f"{root / store.CORRUPT_DIR} and measures those revisions again:",
            markup=False,
        )
        for path, reason in bad:
            console.print(f"  {path}: {reason}", markup=False)
    tasks = slurm.progress(root)
    if not tasks.is_empty():
        _print_progress(console, tasks)
    if (root / store.DESIGN_DIR).is_dir():  # only then: dynamics.adaptive imports lmfit, about a second
        from dynamics.cli.adaptive import print_designs

        print_designs(console, root)


SITE_KEYS = ["model", "revision", "site"]


def _print_sites(console, sites) -> None:
    """Per model, which sites its sites table holds and for how many revisions (nothing when there is none)."""
    import polars as pl

    counts = sites.group_by("model", "site").agg(pl.col("revision").n_unique().alias("n")).sort("model", "site")
    for (model,), part in counts.group_by("model", maintain_order=True):
        held = ", ".join(f"{site} ({n} revisions)" for site, n in part.select("site", "n").iter_rows())
        console.print(f"sites of {model}: {held}", markup=False)


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

    counts = ledger.group_by("model", "status").len().pivot(on="status", index="model", values="len").fill_null(0)
    counts = counts.select("model", *[s for s in Status if s in counts.columns])
    table = Table(title="revisions by status")
    for name in counts.columns:
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in counts.sort("model").iter_rows():
        table.add_row(*map(str, row))
    console.print(table)
    problems = ledger.filter(pl.col("status") != Status.OK).sort("model", "step")
    for r in problems.iter_rows(named=True):
        extra = f" -> {r['duplicate_of']}" if r["duplicate_of"] else ""
        console.print(f"  {r['status']:<10} {r['model']} {r['revision']}{extra}: {r['detail']}", markup=False)
