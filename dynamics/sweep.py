"""Walk a checkpoint series: plan what is missing, then fetch, measure, record and evict revision by revision.

Every revision ends as one ledger row (ok | missing | corrupt | duplicate | non_finite | failed), and a
measured revision as one measurement shard; both are written atomically under the store lock, so a sweep
killed at any point resumes where it stopped and a rerun measures only what is missing. The next revision is
fetched in a background thread while the current one is measured, so at most two snapshots are on disk.
"""

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from dynamics import store
from dynamics.measure import measure
from dynamics.models import load_model, load_tokenizer, load_weights, resolve_device, resolve_dtype
from dynamics.probes import ProbeSet, make_probes, resolve_seq_len
from dynamics.revisions import PYTHIA, Scheme, select
from dynamics.sources import CheckpointSource, CorruptCheckpoint, HubSource, MissingCheckpoint, check_weights
from fitting.errors import UserError


@dataclass(frozen=True)
class Settings:
    """How each revision is measured (the `measure` options of the CLI)."""

    probe: str = "auto"
    probe_text: tuple[Path, ...] = ()
    n_seq: int = 10
    seq_len: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 1
    reduce_dtype: str = "float32"
    bos: bool = False


@dataclass
class Plan:
    """What a sweep will do: revisions to measure (in step order), and those settled without measuring."""

    model: str
    probe: ProbeSet
    to_measure: dict[str, int]
    settled: list[dict] = field(default_factory=list)  # ledger rows of missing and duplicate revisions
    already: int = 0  # selected revisions that the store already holds


def plan(source: CheckpointSource, root: Path, selection: str, settings: Settings, scheme: Scheme = PYTHIA) -> Plan:
    """Select revisions, drop those measured with the same probe, and flag duplicates from weight hashes.

    Duplicates (weights byte-identical to another revision's, PAPER.md §6) are found from the fingerprints,
    before any download; the lowest step of each group is measured, the others point to it.
    """
    revisions = source.revisions()
    if not revisions:
        raise UserError(f"{source.model} has no revisions; check the repo id or folder")
    chosen = select(revisions, selection, scheme)
    probe = _probe(source, next(reversed(chosen)), settings)
    held = store.measured_revisions(root, source.model, probe.probe_id)
    done = set(held["revision"])
    result = Plan(model=source.model, probe=probe, to_measure={}, already=sum(rev in done for rev in chosen))
    # weights sha256 -> the lowest-step revision already measured with them
    known = {sha: rev for rev, _, sha in reversed(held.rows())}
    recorded = _recorded(root, source.model, probe.probe_id)
    for rev, step in chosen.items():
        if rev in done:
            if rev not in recorded:  # killed between writing the shard and its ledger row
                result.settled.append(_ledger_row(source.model, rev, step, probe.probe_id, "ok",
                                                  "ledger row restored from the measurement shard"))
            continue
        try:
            sha = source.fingerprint(rev).weights_sha256
        except MissingCheckpoint as err:
            result.settled.append(_ledger_row(source.model, rev, step, probe.probe_id, "missing", str(err)))
            continue
        if sha in known:
            result.settled.append(
                _ledger_row(source.model, rev, step, probe.probe_id, "duplicate",
                            f"weights identical to {known[sha]} (sha256 {sha[:12]})", duplicate_of=known[sha])
            )
            continue
        known[sha] = rev
        result.to_measure[rev] = step
    return result


def run(
    source: CheckpointSource,
    root: Path,
    the_plan: Plan,
    settings: Settings,
    keep_checkpoints: bool = False,
    prefetch: bool = True,
    progress: bool = True,
) -> pl.DataFrame:
    """Carry out a plan; returns this run's ledger rows. A failing revision is recorded and the sweep goes on."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    root = store.open_store(root)
    rows = record_settled(root, the_plan)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    order = list(the_plan.to_measure.items())
    evict = source.owns_copy and not keep_checkpoints
    model = None

    def fetch(rev: str):
        start = time.perf_counter()
        folder = source.fetch(rev)
        return folder, source.fingerprint(rev), time.perf_counter() - start

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[timing]}"))
    with ThreadPoolExecutor(max_workers=1) as pool, Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(the_plan.model, total=len(order), timing="")
        pending: Future | None = pool.submit(fetch, order[0][0]) if order else None
        for i, (rev, step) in enumerate(order):
            bar.update(task, description=f"{the_plan.model} {rev} (step {step})")
            current, pending = pending, None
            if prefetch and i + 1 < len(order):
                pending = pool.submit(fetch, order[i + 1][0])
            row, model = _measure_one(source, root, rev, step, current, model, the_plan.probe, settings, dtype, device)
            rows.append(row)
            _write_ledger(root, row)
            if evict:
                source.evict(rev)
            if not prefetch and i + 1 < len(order):
                pending = pool.submit(fetch, order[i + 1][0])
            bar.update(task, advance=1, timing=f"fetch {row['seconds_fetch'] or 0:.1f}s  measure {row['seconds_measure'] or 0:.1f}s")
    return pl.DataFrame(rows, schema=store.LEDGER)


def record_settled(root: Path, the_plan: Plan) -> list[dict]:
    """Write the ledger rows of the revisions a plan settles without measuring; returns them."""
    for row in the_plan.settled:
        _write_ledger(root, row)
    return list(the_plan.settled)


def _measure_one(source, root, rev, step, fetched: Future, model, probe, settings, dtype, device):
    """Fetch result -> weights -> measurement shard; returns the ledger row and the (reused) model."""
    pid, seconds_fetch, seconds_measure = probe.probe_id, None, None
    try:
        folder, fingerprint, seconds_fetch = fetched.result()
        check_weights(folder)
        start = time.perf_counter()
        if model is None or not load_weights(model, folder):
            model = load_model(folder, dtype, device)
        stats = measure(model, probe.token_ids, batch_size=settings.batch_size, reduce_dtype=settings.reduce_dtype)
        rows = store.as_measurements(
            stats, model=source.model, revision=rev, step=step, commit=fingerprint.commit,
            weights_sha256=fingerprint.weights_sha256, probe_id=pid, dtype=str(dtype).removeprefix("torch."),
            device=str(device),
        )
        with store.store_lock(root):
            store.write_shard(root, "measurements", rows)
        seconds_measure = time.perf_counter() - start
        nonfinite = int(stats["n_nonfinite"].sum())
        status, detail = ("non_finite", f"{nonfinite} non-finite entries in |h|") if nonfinite else ("ok", "")
    except MissingCheckpoint as err:
        status, detail = "missing", str(err)
    except CorruptCheckpoint as err:
        status, detail = "corrupt", str(err)
    except Exception as err:  # a long sweep records any failure and goes on
        status, detail = "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return _ledger_row(source.model, rev, step, pid, status, detail, seconds_fetch=seconds_fetch,
                       seconds_measure=seconds_measure), model


def _probe(source: CheckpointSource, revision: str, settings: Settings) -> ProbeSet:
    """The probe set of a sweep, built with the tokenizer and context of one of its revisions.

    `--probe auto` means the paper's probe for a hub repo read online and the embedded corpus otherwise
    (an offline cache or folder rarely holds the paper's probe dataset).
    """
    from transformers import AutoConfig

    folder = source.fetch_tokenizer(revision)
    seq_len = resolve_seq_len(AutoConfig.from_pretrained(folder), settings.seq_len)
    online = isinstance(source, HubSource) and not source.offline
    return make_probes(settings.probe, list(settings.probe_text), load_tokenizer(folder), settings.n_seq, seq_len,
                       hub_model=online, bos=settings.bos)


def _recorded(root: Path, model: str, probe_id: str) -> set[str]:
    """Revisions of this model and probe that have a ledger row."""
    ledger = store.load(root, "ledger")
    return set(ledger.filter((pl.col("model") == model) & (pl.col("probe_id") == probe_id))["revision"])


def _ledger_row(model, revision, step, probe_id, status, detail, duplicate_of=None, seconds_fetch=None,
                seconds_measure=None) -> dict:
    return {"model": model, "revision": revision, "step": step, "probe_id": probe_id, "status": status,
            "detail": detail, "duplicate_of": duplicate_of, "seconds_fetch": seconds_fetch,
            "seconds_measure": seconds_measure, "recorded_at": datetime.now(timezone.utc)}


def _write_ledger(root: Path, row: dict) -> None:
    with store.store_lock(root):
        store.write_shard(root, "ledger", pl.DataFrame([row], schema=store.LEDGER))
