"""`mdyn sweep --steps adaptive:N`: a design per target, measured here or one Slurm round per command; its status."""

from dataclasses import replace
from pathlib import Path

from dynamics.store import DEFAULT_LOCK_TIMEOUT_S

SLURM_PER_ROUND = 4  # picks per Slurm round without --per-round or --array-parallelism


def sweep_adaptive(
    console,
    targets: list[str],
    store_dir: Path,
    budget,
    settings,
    executor: str,
    resources,
    max_array: int,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    **source_options,
) -> bool:
    """Run (locally) or advance by one round (Slurm) the design of every target; False when picks were tried
    here and none could be measured."""
    from dynamics import adaptive
    from dynamics.sources import open_source

    prepared = []
    for target in targets:
        source = open_source(target, **source_options)
        the_plan, held = adaptive.prepare(source, store_dir, settings, lock_timeout=lock_timeout)
        available = len(the_plan.to_measure) + held["revision"].n_unique()
        # A budget above what the repo holds is the whole series, measured in the design's order.
        own = replace(budget, n=min(budget.n, available))
        design = adaptive.start_design(
            adaptive.load_design(store_dir, the_plan.model, the_plan.probe.probe_id),
            the_plan.model,
            the_plan.probe.probe_id,
            own,
            available,
        )
        probe = the_plan.probe
        size = f"at most {own.n} of {available}" if own.n < available else f"all {available} (adaptive:{budget.n})"
        console.print(
            f"{the_plan.model}: adaptive design of {size} revisions, "
            f"{held['revision'].n_unique()} "
            f"already in {store_dir}, {len(the_plan.settled)} settled without download; probe {probe.source} "
            f"({probe.n_seq} x {probe.seq_len}, id {probe.probe_id})",
            markup=False,
            highlight=False,
        )
        prepared.append((source, the_plan, held, design, own))
    if executor == "slurm":
        _submit_round(console, store_dir, prepared, settings, resources, max_array, lock_timeout)
        return True
    tried = measured = 0
    for source, the_plan, held, design, own in prepared:
        counts = [0, 0]

        def on_round(the_round, new, model=the_plan.model, counts=counts, own=own):
            counts[0] += len(the_round.picks)
            counts[1] += new["revision"].n_unique()
            _print_round(console, model, the_round, new, own)

        adaptive.run_design(
            the_plan.to_measure,
            held,
            adaptive.engine(source, store_dir, the_plan, settings, lock_timeout),
            own,
            design,
            save=lambda d: adaptive.save_design(store_dir, d, lock_timeout),
            on_round=on_round,
        )
        tried, measured = tried + counts[0], measured + counts[1]
    return measured > 0 or tried == 0


def _print_round(console, model, the_round, new, budget) -> None:
    from dynamics.adaptive import STOPS, widest

    if the_round.stop is not None:
        band = widest({str(k): v for k, v in the_round.bands.items()})
        extra = f"; widest band {band[1]:.3f} (layer {band[0]})" if band else ""
        console.print(f"{model}: design stopped: {STOPS[the_round.stop]}{extra}", markup=False, highlight=False)
        return
    done = set(new["revision"].to_list())
    for pick, note in zip(the_round.picks, the_round.notes(budget).values()):
        outcome = "measured" if pick.revision in done else "not measured (see mdyn status)"
        console.print(f"{model} {pick.revision}: {note}: {outcome}", markup=False, highlight=False)


def _submit_round(console, store_dir, prepared, settings, resources, max_array, lock_timeout) -> None:
    """Plan the next round of every design whose last round has finished, and submit them all as one array."""
    from dynamics import adaptive, slurm

    flying = slurm.in_flight(store_dir)
    rounds = []
    for source, the_plan, held, design, budget in prepared:
        waiting = sum((the_plan.model, rev, the_plan.probe.probe_id) in flying for rev in the_plan.to_measure)
        if waiting:
            console.print(
                f"{the_plan.model}: {waiting} picks of the last round are still queued or running; rerun this "
                f"command once they finish (mdyn status --store {store_dir}) to plan the next round",
                markup=False,
            )
            continue
        the_round = adaptive.next_round(the_plan.to_measure, held, budget)
        if the_round.stop is not None:
            adaptive.end_design(design, the_round, held["revision"].n_unique())
            adaptive.save_design(store_dir, design, lock_timeout)
            _print_round(console, the_plan.model, the_round, held.clear(), budget)
            continue
        rounds.append((source, the_plan, held, design, the_round, budget))
    submitted = adaptive.submit_round(
        store_dir, [(s, p, r, b) for s, p, _, _, r, b in rounds], settings, resources, max_array
    )
    if submitted is None:
        return
    job, folder, n_tasks = submitted
    for _, the_plan, held, design, the_round, budget in rounds:
        adaptive.add_round(design, the_round, held["revision"].n_unique(), job=job, submission=folder.name)
        adaptive.save_design(store_dir, design, lock_timeout)
        for note in the_round.notes(budget).values():
            console.print(f"{the_plan.model}: {note}", markup=False, highlight=False)
    console.print(
        f"submitted job array {job}: {n_tasks} picks of {len(rounds)} design(s); logs in {folder / 'logs'}. "
        f"Once it finishes, rerun this command to plan the next round (mdyn status --store {store_dir} shows both)",
        markup=False,
    )


def print_designs(console, root: Path) -> None:
    """The adaptive designs recorded in a store, one table each: rounds, picks, criterion values, widest band."""
    from rich.table import Table

    from dynamics import adaptive, store

    for design in adaptive.designs(root):
        held = store.measured_revisions(root, design["model"], design["probe_id"]).height
        stop = design.get("stop")
        state = f"stopped: {adaptive.STOPS.get(stop['reason'], stop['reason'])}" if stop else "in progress"
        table = Table(
            title=f"adaptive design of {design['model']} (probe {design['probe_id']}): {held} of {design['budget']} "
            f"revisions measured, {design.get('available', '?')} available; {state}"
        )
        for name in ("round", "kind", "picks", "criterion", "widest band"):
            table.add_column(name, justify="right" if name in ("round", "criterion") else "left")
        for entry in design["rounds"]:
            values = [p["value"] for p in entry["picks"] if p["value"] is not None]
            band = adaptive.widest(entry["widest_band"])
            table.add_row(
                str(entry["round"]),
                entry["kind"] + (f" (job {entry['job']})" if "job" in entry else ""),
                " ".join(p["revision"] for p in entry["picks"]),
                " ".join(f"{v:.3g}" for v in values) or "-",
                f"{band[1]:.3f} (layer {band[0]})" if band else "-",
            )
        console.print(table)
