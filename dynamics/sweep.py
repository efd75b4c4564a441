"""Walk a checkpoint series: plan what is missing, then fetch, measure, record and evict revision by revision.

Every revision ends as one ledger row (a `Status`), and a measured revision as one measurement shard; both are
written atomically under the store lock, so a sweep killed at any point resumes where it stopped and a rerun
measures only what is missing. The next revision is fetched in a background thread while the current one is
measured, so at most two snapshots are on disk. `mdyn measure`, `mdyn sweep` and each Slurm task all run
revisions through `run`, so there is one measurement path. With `Settings.sites` beyond the residual stream, a
revision also gets a sites shard (`store.SITES`), and it counts as measured only once that shard holds every
requested site.
"""

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dynamics import store
from dynamics.probes import PROBE_KINDS, ProbeSet, make_probes, read_text_file, resolve_seq_len
from dynamics.revisions import PYTHIA, Scheme, select
from dynamics.sources import CheckpointSource, HubSource
from dynamics.sublayers import check_site_names
from dynamics.weights import Fingerprint, check_weights
from fitting.contracts import Architecture, Status, from_config, ledger_row
from fitting.errors import CorruptCheckpoint, MissingCheckpoint, UserError, first_line


@dataclass(frozen=True)
class Settings:
    """How each revision is measured (the `measure` options of the CLI)."""

    probe: str = "auto"
    probe_text: tuple[Path, ...] = ()
    n_seq: int = 10
    seq_len: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | None = None  # None: as many sequences per forward pass as fit (measure.auto_batch_size)
    reduce_dtype: str = "float32"
    bos: bool = False
    sites: tuple[str, ...] = ("residual",)  # fitting.contracts.SITES; the residual stream alone is the default

    def check(self) -> "Settings":
        """Itself, once every option is known to be usable; a UserError naming the first bad one otherwise.

        Checked before anything is planned or downloaded, so that a bad option never costs a download.
        """
        from dynamics.measure import REDUCE_DTYPES
        from dynamics.models import resolve_device, resolve_dtype

        choices = {"--probe": (self.probe, PROBE_KINDS), "--reduce-dtype": (self.reduce_dtype, tuple(REDUCE_DTYPES))}
        for option, (choice, allowed) in choices.items():
            if choice not in allowed:
                raise UserError(f"unknown {option} {choice!r}; use one of {', '.join(allowed)}")
        for option, count in (("--n-seq", self.n_seq), ("--batch-size", self.batch_size)):
            if count is not None and count < 1:
                raise UserError(f"{option} must be at least 1, got {count}")
        if self.seq_len is not None and self.seq_len < (2 if self.bos else 1):
            raise UserError(f"--seq-len must be at least {2 if self.bos else 1}, got {self.seq_len}")
        resolve_dtype(self.dtype, resolve_device(self.device))
        check_site_names(self.sites)
        for path in self.probe_text:
            read_text_file(path)
        return self

    def site_table(self) -> frozenset[str]:
        """The sites the sites table gets: none when only the residual stream (the measurements) is asked for,
        else every site asked for, the residual stream among them as the reference the others are read against."""
        return frozenset(self.sites) if set(self.sites) - {"residual"} else frozenset()


def complete(root: Path, model: str, revision: str, probe_id: str, settings: Settings) -> bool:
    """Whether the store holds everything `settings` asks of one revision: its measurements and requested sites."""
    if not store.shard_path(root, store.MEASUREMENTS, model, revision, probe_id).is_file():
        return False
    return settings.site_table() <= store.shard_sites(root, model, revision, probe_id)


@dataclass
class Plan:
    """What a sweep will do: revisions to measure (in step order), and those settled without measuring."""

    model: str
    probe: ProbeSet
    to_measure: dict[str, int | None]
    settled: list[dict] = field(default_factory=list)  # ledger rows of missing and duplicate revisions
    already: int = 0  # selected revisions that the store already holds
    notes: dict[str, str] = field(default_factory=dict)  # why a revision is measured, put before its ledger detail
    n_params: int | None = None  # the model's parameter count, from its config (Slurm sizes its tasks by it)


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
    chosen: Mapping[str, int | None],
    settings: Settings,
    lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S,
) -> Plan:
    """Drop the revisions measured with the same probe, and flag duplicates from weight hashes.

    The probe is built (and the architecture checked) before the store is touched, so bad input writes nothing.
    Duplicates (weights byte-identical to another revision's, docs/science.md §7) are found from the fingerprints,
    before any download; the lowest step of each group is measured, the others point to it.
    """
    probe, architecture, n_params = _probe(source, list(chosen)[-1], settings)
    root = store.check_writable(root)
    with store.store_lock(root, lock_timeout):
        store.claim_model(root, source.model, source.origin, architecture)
        store.set_aside_unreadable(root, source.model)
    held = store.measured_revisions(root, source.model, probe.probe_id)
    measured = set(held["revision"])
    done = {rev for rev in measured if complete(root, source.model, rev, probe.probe_id, settings)}
    result = Plan(
        model=source.model, probe=probe, to_measure={}, already=sum(rev in done for rev in chosen), n_params=n_params
    )
    # weights sha256 -> the lowest-step revision already measured with them
    known = {sha: rev for rev, _, sha in reversed(held.rows())}
    prints = fingerprints(source, [rev for rev in chosen if rev not in measured])

    def settle(rev: str, step: int | None, status: Status, detail: str, **columns) -> None:
        result.settled.append(ledger_row(source.model, rev, step, probe.probe_id, status, detail, **columns))

    for rev, step in chosen.items():
        if rev in done:
            if not store.shard_path(root, store.LEDGER, source.model, rev, probe.probe_id).is_file():
                # killed between writing the shard and its ledger row
                settle(rev, step, Status.OK, "ledger row restored from the measurement shard")
            continue
        if rev in measured:  # measured before without some requested site
            result.to_measure[rev] = step
            continue
        sha = prints[rev]
        if isinstance(sha, MissingCheckpoint):
            settle(rev, step, Status.MISSING, str(sha))
            continue
        if sha in known:
            settle(
                rev,
                step,
                Status.DUPLICATE,
                f"weights identical to {known[sha]} (sha256 {sha[:12]})",
                duplicate_of=known[sha],
            )
            continue
        known[sha] = rev
        result.to_measure[rev] = step
    return result


# Fingerprints ask the hub for one file listing per revision; a few at a time hide the round trips' latency.
FINGERPRINT_WORKERS = 8


def fingerprints(source: CheckpointSource, revisions: list[str]) -> dict[str, str | MissingCheckpoint]:
    """Each revision's weights sha256 (or the MissingCheckpoint saying it has none), asked concurrently."""

    def one(rev: str) -> str | MissingCheckpoint:
        try:
            return source.fingerprint(rev).weights_sha256
        except MissingCheckpoint as err:
            return err

    if len(revisions) < 2:
        return {rev: one(rev) for rev in revisions}
    with ThreadPoolExecutor(min(FINGERPRINT_WORKERS, len(revisions))) as pool:
        return dict(zip(revisions, pool.map(one, revisions)))


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
        from dynamics.measure import MEASURE_COLUMNS, auto_batch_size, measure_sites
        from dynamics.weights import load_weights

        seconds_measure = None
        try:
            if fetched.error is not None:
                raise fetched.error
            assert fetched.folder is not None and fetched.fingerprint is not None  # a fetch without an error has both
            check_weights(fetched.folder)
            start = time.perf_counter()
            if self.model is None or not load_weights(self.model, fetched.folder):
                from dynamics.models import load_model

                self.model = load_model(fetched.folder, self.dtype, self.device)
            sites = self.settings.site_table()
            batch_size = self.settings.batch_size or auto_batch_size(self.model, *self.probe.token_ids.shape)
            measured = measure_sites(
                self.model,
                self.probe.token_ids,
                ("residual", *sites),
                batch_size=batch_size,
                reduce_dtype=self.settings.reduce_dtype,
            )
            stats = measured.filter(pl.col("site") == "residual").select(MEASURE_COLUMNS)
            provenance = {
                "model": self.model_id,
                "revision": revision,
                "step": step,
                "commit": fetched.fingerprint.commit,
                "weights_sha256": fetched.fingerprint.weights_sha256,
                "probe_id": self.probe.probe_id,
                "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(self.device),
            }
            with store.store_lock(self.root, self.lock_timeout):
                shard = store.shard_path(self.root, store.MEASUREMENTS, self.model_id, revision, self.probe.probe_id)
                if not shard.is_file():  # else measured before without some site: its measurements stay as they were
                    store.write_shard(self.root, store.MEASUREMENTS, store.as_measurements(stats, **provenance))
                if sites:
                    self._write_sites(measured.filter(pl.col("site").is_in(list(sites))), revision, provenance)
            seconds_measure = time.perf_counter() - start
            status, detail = store.measured_status(stats)
        except MissingCheckpoint as err:
            status, detail = Status.MISSING, str(err)
        except CorruptCheckpoint as err:
            status, detail = Status.CORRUPT, str(err)
        except Exception as err:  # a long sweep records any failure and goes on
            status, detail = Status.FAILED, f"{type(err).__name__}: {first_line(err)}"
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

    def _write_sites(self, rows: pl.DataFrame, revision: str, provenance: dict) -> None:
        """Write the sites shard of one revision, keeping the rows of sites an earlier sweep measured and this one
        did not; call it under the store lock."""
        stamped = store.as_sites(rows, seq_len=self.probe.seq_len, **provenance)
        path = store.shard_path(self.root, store.SITES, self.model_id, revision, self.probe.probe_id)
        if path.is_file():
            earlier = store.conform(pl.read_parquet(path), store.SITES.schema)
            stamped = pl.concat([earlier.filter(~pl.col("site").is_in(list(rows["site"].unique()))), stamped])
        store.write_shard(self.root, store.SITES, stamped)


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
            assert current is not None  # each revision's fetch was submitted before its turn
            if prefetch and i + 1 < len(order):
                pending = pool.submit(fetch, order[i + 1][0])
            row = measure_one(rev, step, current.result())
            if the_plan.notes.get(rev):
                row["detail"] = "; ".join(filter(None, [the_plan.notes[rev], row["detail"]]))
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


def parameter_count(arch: Architecture, vocab_size: int) -> int:
    """About how many parameters a decoder of this shape has: attention and MLP weights per block, untied
    input and output embeddings (biases and norms are a rounding error)."""
    return arch.n_layers * (4 * arch.d_model**2 + 2 * arch.d_model * arch.d_ff) + 2 * vocab_size * arch.d_model


def _probe(
    source: CheckpointSource, revision: str, settings: Settings
) -> tuple[ProbeSet, Architecture | None, int | None]:
    """The probe set of a sweep, built with the tokenizer and context of one of its revisions, the architecture
    its config describes and its parameter count (both None when the config does not say).

    `--probe auto` means the paper's probe for a hub repo read online and the embedded corpus otherwise
    (an offline cache or folder rarely holds the paper's probe dataset). The revision's config must name a
    supported architecture. The tokenizer-only snapshot this fetches is evicted again (as the source's policy
    allows), so that it never sits beside the two snapshots a sweep keeps.
    """
    from transformers import AutoConfig

    from dynamics.models import load_tokenizer
    from dynamics.sublayers import check_sites

    try:
        folder = source.fetch_tokenizer(revision)
        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(
                f"cannot read the config of {source.model}@{revision} ({first_line(err, 160)}); "
                "check that its config.json names a model type transformers supports"
            ) from None
        seq_len = resolve_seq_len(config, settings.seq_len)
        check_sites(config, settings.sites, seq_len)
        online = isinstance(source, HubSource) and not source.offline
        probe = make_probes(
            settings.probe,
            list(settings.probe_text),
            load_tokenizer(folder),
            settings.n_seq,
            seq_len,
            hub_model=online,
            bos=settings.bos,
        )
        try:
            architecture = from_config(config)
        except UserError:  # recorded for `mdyn train` where the config says; measurement does not need it
            return probe, None, None
        return probe, architecture, parameter_count(architecture, getattr(config, "vocab_size", 0) or 0)
    finally:
        source.evict(revision, measured=False)
