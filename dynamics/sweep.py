"""Walk a checkpoint series: plan what is missing, then fetch, measure, record and evict revision by revision.

Every revision ends as one ledger row (a `Status`), and a measured revision as one measurement shard; both are
written atomically under the store lock, so a sweep killed at any point resumes where it stopped and a rerun
measures only what is missing. The next revision is fetched in a background thread while the current one is
measured, so at most two snapshots are on disk. `mdyn measure`, `mdyn sweep` and each Slurm task all run
revisions through `run`, so there is one measurement path.
"""

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dynamics import store
from dynamics.probes import PROBE_KINDS, ProbeSet, make_probes, resolve_seq_len
from dynamics.revisions import PYTHIA, Scheme, select
from dynamics.sources import CheckpointSource, HubSource
from dynamics.weights import Fingerprint, check_weights
from fitting.contracts import Status, ledger_row
from fitting.errors import CorruptCheckpoint, MissingCheckpoint, UserError


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

    def check(self) -> "Settings":
        """Itself, once every option is known to be usable; a UserError naming the first bad one otherwise.

        Checked before anything is planned or downloaded, so that a bad option never costs a download.
        """
        from dynamics.measure import REDUCE_DTYPES
        from dynamics.models import resolve_device, resolve_dtype

        choices = {"--probe": (self.probe, PROBE_KINDS), "--reduce-dtype": (self.reduce_dtype, tuple(REDUCE_DTYPES))}
        for option, (value, allowed) in choices.items():
            if value not in allowed:
                raise UserError(f"unknown {option} {value!r}; use one of {', '.join(allowed)}")
        for option, value in (("--n-seq", self.n_seq), ("--batch-size", self.batch_size)):
            if value < 1:
                raise UserError(f"{option} must be at least 1, got {value}")
        if self.seq_len is not None and self.seq_len < (2 if self.bos else 1):
            raise UserError(f"--seq-len must be at least {2 if self.bos else 1}, got {self.seq_len}")
        resolve_dtype(self.dtype, resolve_device(self.device))
        return self


@dataclass
class Plan:
    """What a sweep will do: revisions to measure (in step order), and those settled without measuring."""

    model: str
    probe: ProbeSet
    to_measure: dict[str, int | None]
    settled: list[dict] = field(default_factory=list)  # ledger rows of missing and duplicate revisions
    already: int = 0  # selected revisions that the store already holds


def plan(
    source: CheckpointSource,
    root: Path,
    selection: str,
    settings: Settings,
    scheme: Scheme = PYTHIA,
    lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S,
) -> Plan:
    """Select revisions (`mdyn sweep --steps`), then `plan_revisions`."""
    return plan_revisions(source, root, select(source.revisions(), selection, scheme), settings, lock_timeout)


def plan_revisions(
    source: CheckpointSource,
    root: Path,
    chosen: dict[str, int | None],
    settings: Settings,
    lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S,
) -> Plan:
    """Drop the revisions measured with the same probe, and flag duplicates from weight hashes.

    The probe is built (and the architecture checked) before the store is touched, so bad input writes nothing.
    Duplicates (weights byte-identical to another revision's, docs/science.md §7) are found from the fingerprints,
    before any download; the lowest step of each group is measured, the others point to it.
    """
    probe = _probe(source, next(reversed(chosen)), settings)
    root = store.check_writable(root)
    with store.store_lock(root, lock_timeout):
        store.claim_model(root, source.model, source.origin)
        store.set_aside_unreadable(root, source.model)
    held = store.measured_revisions(root, source.model, probe.probe_id)
    done = set(held["revision"])
    result = Plan(model=source.model, probe=probe, to_measure={}, already=sum(rev in done for rev in chosen))
    # weights sha256 -> the lowest-step revision already measured with them
    known = {sha: rev for rev, _, sha in reversed(held.rows())}
    for rev, step in chosen.items():
        if rev in done:
            if not store.shard_path(root, store.LEDGER, source.model, rev, probe.probe_id).is_file():
                # killed between writing the shard and its ledger row
                result.settled.append(
                    ledger_row(
                        source.model,
                        rev,
                        step,
                        probe.probe_id,
                        Status.OK,
                        "ledger row restored from the measurement shard",
                    )
                )
            continue
        try:
            sha = source.fingerprint(rev).weights_sha256
        except MissingCheckpoint as err:
            result.settled.append(ledger_row(source.model, rev, step, probe.probe_id, Status.MISSING, str(err)))
            continue
        if sha in known:
            result.settled.append(
                ledger_row(
                    source.model,
                    rev,
                    step,
                    probe.probe_id,
                    Status.DUPLICATE,
                    f"weights identical to {known[sha]} (sha256 {sha[:12]})",
                    duplicate_of=known[sha],
                )
            )
            continue
        known[sha] = rev
        result.to_measure[rev] = step
    return result


@dataclass(frozen=True)
class Fetched:
    """A fetched revision: its folder and fingerprint, or the error that fetching it raised."""

    folder: Path | None
    fingerprint: Fingerprint | None
    seconds: float | None
    error: Exception | None = None


class Measurer:
    """Measures revisions into the store, copying each one's weights into one reused model skeleton.

    The skeleton (built from the first revision, rebuilt when a revision's weights do not fit it) is the state.
    """

    def __init__(
        self,
        model_id: str,
        root: Path,
        probe: ProbeSet,
        settings: Settings,
        lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S,
    ):
        from dynamics.models import resolve_device, resolve_dtype

        self.model_id, self.root, self.probe, self.settings = model_id, root, probe, settings
        self.lock_timeout = lock_timeout
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.model = None

    def __call__(self, revision: str, step: int | None, fetched: Fetched) -> dict:
        """The ledger row of one revision, after writing its measurement shard when it could be measured."""
        from dynamics.measure import measure
        from dynamics.weights import load_weights

        seconds_measure = None
        try:
            if fetched.error is not None:
                raise fetched.error
            check_weights(fetched.folder)
            start = time.perf_counter()
            if self.model is None or not load_weights(self.model, fetched.folder):
                from dynamics.models import load_model

                self.model = load_model(fetched.folder, self.dtype, self.device)
            stats = measure(
                self.model,
                self.probe.token_ids,
                batch_size=self.settings.batch_size,
                reduce_dtype=self.settings.reduce_dtype,
            )
            rows = store.as_measurements(
                stats,
                model=self.model_id,
                revision=revision,
                step=step,
                commit=fetched.fingerprint.commit,
                weights_sha256=fetched.fingerprint.weights_sha256,
                probe_id=self.probe.probe_id,
                dtype=str(self.dtype).removeprefix("torch."),
                device=str(self.device),
            )
            with store.store_lock(self.root, self.lock_timeout):
                store.write_shard(self.root, store.MEASUREMENTS, rows)
            seconds_measure = time.perf_counter() - start
            nonfinite = int(stats["n_nonfinite"].sum())
            status, detail = (
                (Status.NON_FINITE, f"{nonfinite} non-finite entries in |h|") if nonfinite else (Status.OK, "")
            )
        except MissingCheckpoint as err:
            status, detail = Status.MISSING, str(err)
        except CorruptCheckpoint as err:
            status, detail = Status.CORRUPT, str(err)
        except Exception as err:  # a long sweep records any failure and goes on
            status, detail = Status.FAILED, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return ledger_row(
            self.model_id,
            revision,
            step,
            self.probe.probe_id,
            status,
            detail,
            seconds_fetch=fetched.seconds,
            seconds_measure=seconds_measure,
        )


def run(
    source: CheckpointSource,
    root: Path,
    the_plan: Plan,
    settings: Settings,
    prefetch: bool = True,
    on_revision: Callable[[str, dict], None] | None = None,
    lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S,
) -> pl.DataFrame:
    """Carry out a plan; returns this run's ledger rows. A failing revision is recorded and the sweep goes on.

    `on_revision(revision, row)` is called after each measured revision (a progress display, say).
    """
    root = store.check_writable(root)
    rows = record_settled(root, the_plan, lock_timeout)
    measure_one = Measurer(source.model, root, the_plan.probe, settings, lock_timeout)
    order = list(the_plan.to_measure.items())

    def fetch(rev: str) -> Fetched:
        start = time.perf_counter()
        try:
            folder = source.fetch(rev)
            return Fetched(folder, source.fingerprint(rev), time.perf_counter() - start)
        except Exception as err:  # measured (recorded) by the main thread, like any failure
            return Fetched(None, None, time.perf_counter() - start, err)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future | None = pool.submit(fetch, order[0][0]) if order else None
        for i, (rev, step) in enumerate(order):
            current, pending = pending, None
            if prefetch and i + 1 < len(order):
                pending = pool.submit(fetch, order[i + 1][0])
            row = measure_one(rev, step, current.result())
            rows.append(row)
            write_ledger(root, row, lock_timeout)
            source.evict(rev)
            if not prefetch and i + 1 < len(order):
                pending = pool.submit(fetch, order[i + 1][0])
            if on_revision is not None:
                on_revision(rev, row)
    return pl.DataFrame(rows, schema=store.LEDGER.schema)


def record_settled(root: Path, the_plan: Plan, lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S) -> list[dict]:
    """Write the ledger rows of the revisions a plan settles without measuring; returns them."""
    for row in the_plan.settled:
        write_ledger(root, row, lock_timeout)
    return list(the_plan.settled)


def write_ledger(root: Path, row: dict, lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S) -> None:
    """Write one revision's ledger row as its own shard."""
    with store.store_lock(root, lock_timeout):
        store.write_shard(root, store.LEDGER, pl.DataFrame([row], schema=store.LEDGER.schema))


def _probe(source: CheckpointSource, revision: str, settings: Settings) -> ProbeSet:
    """The probe set of a sweep, built with the tokenizer and context of one of its revisions.

    `--probe auto` means the paper's probe for a hub repo read online and the embedded corpus otherwise
    (an offline cache or folder rarely holds the paper's probe dataset). The revision's config must name a
    supported architecture. The tokenizer-only snapshot this fetches is evicted again (as the source's policy
    allows), so that it never sits beside the two snapshots a sweep keeps.
    """
    from transformers import AutoConfig

    from dynamics.layers import check_model_type
    from dynamics.models import load_tokenizer

    folder = source.fetch_tokenizer(revision)
    try:
        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(
                f"cannot read the config of {source.model}@{revision} ({str(err).splitlines()[0][:160]}); "
                "check that its config.json names a model type transformers supports"
            ) from None
        check_model_type(config)
        seq_len = resolve_seq_len(config, settings.seq_len)
        online = isinstance(source, HubSource) and not source.offline
        return make_probes(
            settings.probe,
            list(settings.probe_text),
            load_tokenizer(folder),
            settings.n_seq,
            seq_len,
            hub_model=online,
            bos=settings.bos,
        )
    finally:
        source.evict(revision, measured=False)
