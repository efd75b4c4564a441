"""Adaptive revision selection (`mdyn sweep --steps adaptive:N`): measure the revisions that sharpen the curves most.

A design starts from a few log-spaced revisions (`Budget.n_start`). Then, round after round, it fits Eq. 9 to
every layer, scores every unmeasured revision by `fitting.design`'s criterion (how much measuring it lowers the
predicted variance of log f between this design's fit and the full series' fit, averaged over the schedule's
steps and summed over layers) and measures the best; one download serves every layer. It stops once N
revisions are measured, once every layer's band is narrower than `Budget.until_band`, or when nothing is left.

The loop takes a `Measure` callable, ({revision: step}, {revision: note}) -> the measurement rows of those that
could be measured: `engine` measures with the sweep engine (any local or hub source), `Replay` serves the rows of
a table measured before (tests and benchmarks, where no model runs). The Slurm executor plans one round with
`next_round`, submits it as one array (`submit_round`), and a rerun plans the next from what the store holds.

Its record: each pick's ledger row starts with why it was chosen ("adaptive pick 9 of 24: predicted variance
reduction 3.1e-05"), and the design (rounds, picks, criterion values, bands, stop reason) is kept in
STORE/adaptive/<model>--<probe_id>.json, written atomically under the store lock.
"""

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from dynamics import store
from dynamics.files import write_atomic
from dynamics.revisions import ADAPTIVE, PYTHIA, Scheme, log_spaced
from fitting.contracts import FIT_INPUT_COLUMNS, MEASURED
from fitting.curves import emergence
from fitting.design import LayerDesign, choose, error_model, layer_design, series_and_noise
from fitting.errors import UserError
from fitting.model import CurveFit, EmergenceModel, fit_curve
from fitting.table import layer_stats

if TYPE_CHECKING:  # dynamics.sweep imports torch; `mdyn status` reads designs without it
    from dynamics.slurm import Resources
    from dynamics.sources import CheckpointSource
    from dynamics.sweep import Plan, Settings

START_MIN, START_MAX = 6, 8  # log-spaced revisions to start from; Eq. 9 needs 6 distinct steps
COLUMNS = ("revision", *FIT_INPUT_COLUMNS)
CRITERION = (
    "I-optimal: predicted drop of the variance of log f(design fit) - log f(full-series fit), averaged over the "
    "schedule's steps and summed over layers (fitting.design)"
)
STOPS = {
    "budget": "the budget of revisions is measured",
    "band": "every layer's band is narrower than --until-band",
    "exhausted": "no revision is left to measure",
}

Measure = Callable[[dict[str, int], dict[str, str]], pl.DataFrame]


def parse(selection: str) -> int | None:
    """N of an `adaptive:N` selection; None for any other selection; UserError for a bad N."""
    kind, sep, arg = selection.strip().partition(":")
    if kind != ADAPTIVE:
        return None
    if not (sep and arg.isdigit() and int(arg) > START_MIN):
        raise UserError(
            f"bad selection {selection!r}: adaptive:N needs a whole number N >= {START_MIN + 1}, the revisions to "
            f"measure in all ({START_MIN} or more log-spaced ones to start from); use log:N for fewer"
        )
    return int(arg)


@dataclass(frozen=True)
class Budget:
    """When a design stops: at `n` measured revisions, or once every layer's band is narrower than `until_band`
    (the 95 % relative half-width, `fitting.design.LayerDesign.band`). `per_round` picks are measured per round."""

    n: int
    until_band: float | None = None
    per_round: int = 1

    @property
    def n_start(self) -> int:
        """The log-spaced revisions a design starts from: 6 to 8, about a third of the budget."""
        return min(START_MAX, max(START_MIN, self.n // 3))


@dataclass(frozen=True)
class Pick:
    """One revision a round measures: pick `number` of the budget, why, and its criterion value (None at the start)."""

    revision: str
    step: int
    number: int
    why: str
    value: float | None = None


@dataclass(frozen=True)
class Round:
    """What a design does next: measure `picks`, or stop (`stop` names why, a key of STOPS).

    `bands`: each fitted layer's widest band before the picks; `fitted`/`layers`: layers with a fit, and all.
    """

    kind: str  # start | criterion | spread (no fit yet: the revision farthest from every measured one) | stop
    picks: list[Pick] = field(default_factory=list)
    bands: dict[int, float] = field(default_factory=dict)
    fitted: int = 0
    layers: int = 0
    seconds: float = 0.0
    stop: str | None = None

    def notes(self, budget: Budget) -> dict[str, str]:
        """Each pick's ledger note."""
        return {p.revision: f"adaptive pick {p.number} of {budget.n}: {p.why}" for p in self.picks}


def next_round(open_revisions: Mapping[str, int | None], measurements: pl.DataFrame, budget: Budget) -> Round:
    """The next round of a design, from what is measured (rows with COLUMNS) and what could be ({revision: step};
    revisions without a step cannot be placed on the schedule and are left out)."""
    start = time.perf_counter()
    held_steps, held = set(measurements["step"].to_list()), set(measurements["revision"].to_list())
    by_step: dict[int, str] = {}
    placed = {rev: step for rev, step in open_revisions.items() if step is not None}
    for rev, step in sorted(placed.items(), key=lambda item: item[1]):
        if step not in held_steps and rev not in held:
            by_step.setdefault(step, rev)
    n_held = len(held)
    if n_held >= budget.n:
        return Round("stop", stop="budget")
    if not by_step:
        return Round("stop", stop="exhausted")
    room = min(budget.n - n_held, len(by_step))
    domain = np.array(sorted(held_steps | set(by_step)), dtype=np.int64)

    def pick(i: int, step: int, why: str, value: float | None = None) -> Pick:
        return Pick(by_step[step], step, n_held + i + 1, why, value)

    if n_held < budget.n_start:
        targets = [s for s in log_spaced(domain.tolist(), budget.n_start) if s in by_step][: budget.n_start - n_held]
        if targets:
            why = f"log-spaced start ({budget.n_start} revisions)"
            chosen = [pick(i, s, why) for i, s in enumerate(targets)]
            return Round("start", chosen, seconds=time.perf_counter() - start)
    fits = layer_fits(measurements)
    designs = layer_designs(fits, domain)
    measured = np.isin(domain, list(held_steps))
    bands = {layer: float(design.band(measured).max()) for layer, design in designs.items()}
    every_band = bool(bands) and len(bands) == len(fits)
    if budget.until_band is not None and every_band and max(bands.values()) < budget.until_band:
        return Round("stop", [], bands, len(designs), len(fits), time.perf_counter() - start, "band")
    scored = choose(list(designs.values()), measured, np.isin(domain, list(by_step)), min(budget.per_round, room))
    if designs:
        kind = "criterion"
        picks = [pick(i, int(domain[j]), f"predicted variance reduction {v:.3g}", v) for i, (j, v) in enumerate(scored)]
    else:
        kind, why = "spread", "farthest from the measured revisions (no layer could be fitted yet)"
        picks = [pick(i, int(domain[j]), why) for i, (j, _) in enumerate(scored)]
    return Round(kind, picks, bands, len(designs), len(fits), time.perf_counter() - start)


def layer_fits(measurements: pl.DataFrame) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, CurveFit]]:
    """(layer, steps, ratio series, variance of its log, Eq. 9 fit) of every layer of one model's measurements."""
    fits = []
    for _, layer, steps, stats in layer_stats(measurements.select(FIT_INPUT_COLUMNS)):
        ratio, noise = series_and_noise(stats)
        fits.append((layer, steps, ratio, noise, fit_curve(EmergenceModel(), steps, ratio)))
    return fits


def layer_designs(fits: list, domain: np.ndarray) -> dict[int, LayerDesign]:
    """Every successfully fitted layer linearised over the schedule's steps, with its error model."""
    fitted = [(layer, steps, y, noise, fit) for layer, steps, y, noise, fit in fits if fit.success]
    with np.errstate(divide="ignore", invalid="ignore"):
        residuals = [np.log(y) - np.log(emergence(steps, **fit.params)) for _, steps, y, _, fit in fitted]
    noise = [float(np.nanmedian(n)) if np.isfinite(n).any() else math.nan for _, _, _, n, _ in fitted]
    models = error_model(residuals, noise, len(domain))
    designs = {}
    for (layer, *_, fit), model in zip(fitted, models):
        if (design := layer_design(domain, fit.params, model)) is not None:
            designs[layer] = design
    return designs


def run_design(
    open_revisions: Mapping[str, int | None],
    measurements: pl.DataFrame,
    measure: Measure,
    budget: Budget,
    design: dict,
    save: Callable[[dict], None] | None = None,
    on_round: Callable[[Round, pl.DataFrame], None] | None = None,
) -> dict:
    """Plan, measure and record round after round until the design stops; returns the design record.

    `measurements`: the rows already held (COLUMNS); `open_revisions`: what may still be measured. A pick that
    could not be measured is not picked again in this run. `save(design)` runs after every round,
    `on_round(round, new_rows)` too (and once at the stop, with no rows).
    """
    rows = measurements.select(COLUMNS)
    tried: set[str] = set()
    while True:
        todo = {rev: step for rev, step in open_revisions.items() if rev not in tried}
        the_round = next_round(todo, rows, budget)
        before = rows["revision"].n_unique()
        if the_round.stop is None:
            new = measure({p.revision: p.step for p in the_round.picks}, the_round.notes(budget)).select(COLUMNS)
            tried |= {p.revision for p in the_round.picks}
            rows = pl.concat([rows, new])
            add_round(design, the_round, before, measured=sorted(set(new["revision"])))
        else:
            new = rows.clear()
            end_design(design, the_round, before)
        if save is not None:
            save(design)
        if on_round is not None:
            on_round(the_round, new)
        if the_round.stop is not None:
            return design


def engine(
    source: "CheckpointSource",
    root: Path,
    the_plan: "Plan",
    settings: "Settings",
    lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S,
) -> Measure:
    """Measure picks with the sweep engine: fetched, measured, recorded (with their notes) and evicted like any."""
    from dynamics.sweep import run

    def measure(picks: dict[str, int], notes: dict[str, str]) -> pl.DataFrame:
        todo = dataclasses.replace(the_plan, to_measure=dict(picks), settled=[], notes=dict(notes))
        ledger = run(source, root, todo, settings, lock_timeout=lock_timeout)
        done = ledger.filter(pl.col("status").is_in(list(MEASURED)))["revision"].to_list()
        paths = [
            store.shard_path(root, store.MEASUREMENTS, the_plan.model, rev, the_plan.probe.probe_id) for rev in done
        ]
        return store.read_shards(paths, store.MEASUREMENTS.schema)

    return measure


class Replay:
    """Serves the revisions of one model's measurements taken before, as if measuring them: a design's stand-in
    for a checkpoint source, so that tests and benchmarks run no model. The measurements come from a store or a
    parquet file (`store.read_measurements`), one model and probe; `revisions` maps one revision per step to its
    step, `served` lists what it handed out (the downloads the design would have cost), `notes` each one's note."""

    def __init__(self, measurements: pl.DataFrame):
        self.table = measurements.select(COLUMNS)
        models = self.table["model"].unique().to_list()
        if len(models) != 1:
            raise ValueError(f"a replay serves one model's measurements; these hold {len(models)}")
        self.model = models[0]
        first: dict[int, str] = {}
        for rev, step in self.table.select("revision", "step").unique().sort("step", "revision").rows():
            first.setdefault(step, rev)
        self.revisions = {rev: step for step, rev in first.items()}
        self.served: list[str] = []
        self.notes: dict[str, str] = {}

    def __call__(self, picks: dict[str, int], notes: dict[str, str]) -> pl.DataFrame:
        self.served += list(picks)
        self.notes |= notes
        return self.table.filter(pl.col("revision").is_in(list(picks)))


def prepare(
    source: "CheckpointSource",
    root: Path,
    settings: "Settings",
    scheme: Scheme = PYTHIA,
    lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S,
) -> tuple["Plan", pl.DataFrame]:
    """The plan over every revision of a source (its missing and duplicate revisions recorded as settled), and the
    measurements the store already holds for its model and probe: where a design starts or resumes."""
    from dynamics.sweep import plan, record_settled

    the_plan = plan(source, root, "all", settings, scheme, lock_timeout)
    record_settled(root, the_plan, lock_timeout)
    held = store.load(root, store.MEASUREMENTS, the_plan.model)
    return the_plan, held.filter(pl.col("probe_id") == the_plan.probe.probe_id).select(COLUMNS)


def submit_round(
    root: Path,
    rounds: list[tuple["CheckpointSource", "Plan", Round, Budget]],
    settings: "Settings",
    resources: "Resources",
    max_array_size: int = 1001,
) -> tuple[str, Path, int] | None:
    """Submit the picks of one round of every design (each with its budget) as one Slurm array: (job id, folder,
    tasks), None if none."""
    from dynamics import slurm

    plans = [
        (
            source,
            dataclasses.replace(
                the_plan, to_measure={p.revision: p.step for p in r.picks}, settled=[], notes=r.notes(budget)
            ),
        )
        for source, the_plan, r, budget in rounds
    ]
    return slurm.submit(root, plans, settings, resources, max_array_size)


def design_path(root: Path, model: str, probe_id: str) -> Path:
    """Where the design of one model and probe is kept."""
    return Path(root) / store.DESIGN_DIR / f"{store.model_dir(model)}--{probe_id}.json"


def load_design(root: Path, model: str, probe_id: str) -> dict | None:
    """The design recorded for a model and probe, or None."""
    path = design_path(root, model, probe_id)
    return json.loads(path.read_text()) if path.is_file() else None


def designs(root: Path) -> list[dict]:
    """Every design recorded in a store, by model."""
    found = [json.loads(p.read_text()) for p in sorted((Path(root) / store.DESIGN_DIR).glob("*.json"))]
    return sorted(found, key=lambda d: (d["model"], d["probe_id"]))


def save_design(root: Path, design: dict, lock_timeout: float = store.DEFAULT_LOCK_TIMEOUT_S) -> None:
    """Write a design record atomically under the store lock."""
    with store.store_lock(root, lock_timeout):
        write_atomic(design_path(root, design["model"], design["probe_id"]), json.dumps(design, indent=1).encode())


def start_design(earlier: dict | None, model: str, probe_id: str, budget: Budget, available: int) -> dict:
    """The record a run continues: the earlier one (its rounds kept) or a new one, with this run's budget."""
    design = earlier or {"model": model, "probe_id": probe_id, "criterion": CRITERION, "rounds": []}
    return design | {
        "budget": budget.n,
        "until_band": budget.until_band,
        "per_round": budget.per_round,
        "available": available,
        "stop": None,
    }


def add_round(design: dict, the_round: Round, measured_before: int, **extra) -> dict:
    """Append a round (picks, criterion values, bands before it, planning time) to a design record; returns it."""
    entry = {
        "round": len(design["rounds"]) + 1,
        "kind": the_round.kind,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "measured_before": measured_before,
        "seconds_planning": round(the_round.seconds, 4),
        "layers_fitted": the_round.fitted,
        "layers": the_round.layers,
        "widest_band": {str(layer): round(band, 5) for layer, band in the_round.bands.items()},
        "picks": [
            {"revision": p.revision, "step": p.step, "pick": p.number, "value": p.value, "why": p.why}
            for p in the_round.picks
        ],
        **extra,
    }
    design["rounds"].append(entry)
    return entry


def end_design(design: dict, the_round: Round, measured: int) -> None:
    """Record why and where a design stopped."""
    design["stop"] = {
        "reason": the_round.stop,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "measured": measured,
        "widest_band": {str(layer): round(band, 5) for layer, band in the_round.bands.items()},
    }


def widest(bands: Mapping[str, float]) -> tuple[str, float] | None:
    """(layer, band) of the widest band, or None without bands."""
    return max(bands.items(), key=lambda item: item[1]) if bands else None
