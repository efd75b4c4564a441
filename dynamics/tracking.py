"""Live tracking of a training run: measure the model at scheduled steps into a store, and forecast each layer.

A `Tracker` holds what one run needs: the probe, the store, the schedule, the run's name and its forecast so far.
`maybe_measure(step)` measures (paper Eqs. 4-7, through `dynamics.measure.measure`) when the schedule says so,
writes the rows as the measurement shard of revision `step<N>` of model = the run's name, with its ledger row,
so that `mdyn status`, `fit`, `figures` and `report` read a live run like a sweep; then it fits Eq. 9 to every
layer's ratio series so far and extrapolates it to the run's last step (`forecast`). The run itself is not
touched: the model is measured in eval mode under no_grad, its train mode and every RNG state are restored,
and under torch.distributed only rank 0 measures. Adapters: `dynamics.callbacks` (transformers Trainer),
`dynamics.lightning_callback` (PyTorch Lightning); a plain loop calls `maybe_measure` itself.

Step N means "after N optimizer updates", as in Pythia: step 0 is the initialisation.
"""

import json
import math
import operator
import os
import random
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, SupportsIndex

import numpy as np
import polars as pl
import torch

from dynamics import store
from dynamics.files import write_atomic
from dynamics.probes import ProbeSet, context_length
from fitting.contracts import from_config, ledger_row
from fitting.curves import emergence, t_peak
from fitting.errors import MassiveActivationWarning, UserError
from fitting.model import EmergenceModel, fit_curve
from fitting.table import SERIES, layer_stats

# STORE/live/<model>.json: what a tracked run plans (its last step), for `mdyn watch`.
LIVE_DIR = "live"
Z95 = 1.959963984540054  # two-sided 95 % normal quantile
# A writer holds the store lock for milliseconds; a training run should not stall for minutes behind a stuck one.
DEFAULT_LOCK_TIMEOUT_S = 60.0
SCALARS = (
    "ratio",
    "top1",
    "forecast_ratio",
    "forecast_ratio_lo",
    "forecast_ratio_hi",
    "peak_step",
    "peak_step_lo",
    "peak_step_hi",
)


def _integer(value: object) -> int | None:
    """`value` as an int when it is an integer (numpy's too), else None; a bool is not a step."""
    return None if isinstance(value, bool) or not isinstance(value, SupportsIndex) else operator.index(value)


@dataclass(frozen=True)
class Schedule:
    """The steps to measure: 0, the powers of two up to `doubling_until`, then every multiple of `every`
    (Pythia's checkpoints with every=1000); or exactly `steps` when given."""

    every: int = 1000
    doubling_until: int = 512
    steps: frozenset[int] | None = None

    def __post_init__(self):
        if self.steps is not None:
            if not self.steps or not all((n := _integer(s)) is not None and n >= 0 for s in self.steps):
                raise UserError(
                    f"schedule steps must be a non-empty list of steps >= 0, got {sorted(self.steps, key=str)!r}"
                )
            return
        for name, low in (("every", 1), ("doubling_until", 0)):
            value = getattr(self, name)
            if (n := _integer(value)) is None or n < low:
                raise UserError(f"schedule {name} must be an integer >= {low}, got {value!r}")

    def __contains__(self, step: object) -> bool:
        n = _integer(step)
        if n is None or n < 0:
            return False
        if self.steps is not None:
            return n in self.steps
        return n == 0 or (n <= self.doubling_until and n & (n - 1) == 0) or n % self.every == 0

    def upto(self, last: int) -> list[int]:
        """The scheduled steps from 0 to `last`, in order."""
        return [s for s in range(last + 1) if s in self]


def as_schedule(spec: "Schedule | int | Iterable[int] | None") -> Schedule:
    """A Schedule from None (Pythia's), an int k (Pythia's doubling, then every k steps) or a list of steps."""
    if spec is None:
        return Schedule()
    if isinstance(spec, Schedule):
        return spec
    every = _integer(spec)
    if every is not None:
        return Schedule(every=every)
    if isinstance(spec, Iterable) and not isinstance(spec, str | bytes):
        steps = [_integer(s) for s in spec]
        if all(s is not None for s in steps):
            return Schedule(steps=frozenset(s for s in steps if s is not None))
    raise UserError(
        f"unknown schedule {spec!r}; pass None (0, 1, 2, 4 ... 512, then every 1000 steps), an integer k "
        "(the same, then every k steps), or a list of steps"
    )


@dataclass(frozen=True)
class Rule:
    """When an activation is massive: |a| > magnitude and |a| / median(|h|) >= ratio (docs/science.md §1.4)."""

    magnitude: float = 100.0
    ratio: float = 1000.0


SUN_RULE = Rule()

FORECAST_SCHEMA = {
    "model": pl.String,
    "layer": pl.Int32,
    "step": pl.Int64,  # the last measured step
    "n_points": pl.Int32,
    "ratio": pl.Float64,  # Eq. 8 at the last step
    "top1": pl.Float64,  # mean top-1 at the last step
    "massive_seqs": pl.Int32,  # probe sequences meeting the rule at the last step
    "target_step": pl.Int64,
    "forecast_ratio": pl.Float64,
    "forecast_ratio_lo": pl.Float64,
    "forecast_ratio_hi": pl.Float64,
    "peak_step": pl.Float64,
    "peak_step_lo": pl.Float64,
    "peak_step_hi": pl.Float64,
    "r2": pl.Float64,
    "forecast_massive": pl.Boolean,
    "message": pl.String,
}


def forecast(
    measurements: pl.DataFrame, target_step: int | None = None, rule: Rule = SUN_RULE, fit: bool = True
) -> pl.DataFrame:
    """Per (model, layer): the last measured ratio and top-1, and Eq. 9 fitted to the ratio series so far,
    extrapolated to `target_step` (default: each layer's last step) with its peak step.

    Intervals are 95 %, by the delta method on the log scale from the fit's covariance: they say how well the
    steps so far pin the curve down, the uncertainty that dominates an extrapolation. `forecast_massive` is true
    when the interval's low end meets the rule, the magnitude taken as that ratio times the last mean median.
    """
    rows = []
    for model, layer, steps, stats in layer_stats(measurements):
        ones = np.ones(stats["top1"].shape[1])
        ratio, top1 = SERIES["ratio"](stats, ones), SERIES["top1"](stats, ones)
        last_top1, last_median = stats["top1"][-1], stats["median"][-1]
        with np.errstate(invalid="ignore"):
            massive = int(np.sum((last_top1 > rule.magnitude) & (last_top1 >= rule.ratio * last_median)))
        target = int(steps[-1] if target_step is None else target_step)
        row: dict[str, Any] = {
            "model": model,
            "layer": layer,
            "step": int(steps[-1]),
            "n_points": int(np.isfinite(ratio).sum()),
            "ratio": float(ratio[-1]),
            "top1": float(top1[-1]),
            "massive_seqs": massive,
            "target_step": target,
            "forecast_massive": False,
            "message": "",
        }
        if fit:
            row |= _extrapolate(steps, ratio, target)
            low, median = row.get("forecast_ratio_lo"), float(np.nanmean(last_median))
            row["forecast_massive"] = bool(low is not None and low >= rule.ratio and low * median > rule.magnitude)
        rows.append(row)
    return pl.DataFrame(rows, schema=FORECAST_SCHEMA)


def _extrapolate(steps: np.ndarray, ratio: np.ndarray, target: int) -> dict:
    """The forecast columns of one layer (those of a failed fit left null, its reason in `message`)."""
    fit = fit_curve(EmergenceModel(), steps, ratio)
    if not fit.success:
        return {"message": fit.message}
    with np.errstate(all="ignore"):  # far extrapolations overflow to inf, which the interval then shows
        final = _delta(lambda p: emergence(target, **p), fit.params, fit.covar)
        peak = _delta(lambda p: t_peak(p["lam"], p["gamma"], p["t0"]), fit.params, fit.covar)
    columns = {"r2": fit.r2, "message": "" if fit.covar is not None else fit.message}
    for name, (value, low, high) in (("forecast_ratio", final), ("peak_step", peak)):
        columns |= {name: value, f"{name}_lo": low, f"{name}_hi": high}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in columns.items()}


def _delta(fn: Callable[[dict], float], params: dict, covar: np.ndarray | None) -> tuple[float, float, float]:
    """fn(params) and its 95 % interval exp(log fn -/+ z sd(log fn)); the interval is NaN without a covariance
    or for a value <= 0. The gradient is a central difference (relative step 1e-6)."""
    value = float(fn(params))
    if covar is None or not math.isfinite(value) or value <= 0:
        return value, math.nan, math.nan
    names = list(params)
    grad = np.empty(len(names))
    for i, name in enumerate(names):
        h = 1e-6 * max(abs(params[name]), 1e-12)
        up, down = float(fn({**params, name: params[name] + h})), float(fn({**params, name: params[name] - h}))
        grad[i] = (up - down) / (2 * h)
    sd = math.sqrt(max(float(grad @ covar @ grad), 0.0)) / value
    if not math.isfinite(sd):
        return value, math.nan, math.nan
    with np.errstate(over="ignore"):
        spread = float(np.exp(Z95 * sd))  # inf for a forecast the points do not constrain at all
    return value, value / spread, value * spread


def scalars(table: pl.DataFrame) -> dict[str, float]:
    """The finite values of a forecast table as logger scalars: `massive/<quantity>/layer<l>`."""
    out = {}
    for row in table.iter_rows(named=True):
        for name in SCALARS:
            value = row[name]
            if value is not None and math.isfinite(value):
                out[f"massive/{name}/layer{row['layer']}"] = float(value)
    return out


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the RNG states of torch (CPU, and CUDA when it is in use), numpy and python's random on exit."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    states = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None)
    legacy, python = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        if states[1] is not None:
            torch.cuda.set_rng_state_all(states[1])
        np.random.set_state(legacy)
        random.setstate(python)


def git_commit(folder: Path | None = None) -> str:
    """The HEAD commit of the git work tree at `folder` (default: the working directory), or "" outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def is_rank_zero() -> bool:
    """True unless torch.distributed runs and this process is not rank 0."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def live_runs(root: Path) -> dict[str, dict]:
    """The plans of the runs tracked into a store (run name -> its STORE/live/ record)."""
    folder = Path(root) / LIVE_DIR
    runs = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            runs[record["run"]] = record
        except (OSError, ValueError, KeyError):
            continue  # a record is a convenience; the shards are the data
    return runs


class Tracker:
    """Measures one training run's model at the scheduled steps into a store, and forecasts every layer.

    The state is the run's measurements so far (reloaded from the store when a run resumes), the forecast
    table of the last measurement and the warnings already given. The store is opened at the first
    measurement, on rank 0 only, so a tracker can be made before torch.distributed is set up.
    """

    def __init__(
        self,
        store_dir: str | Path,
        probe: ProbeSet,
        run_name: str,
        *,
        schedule: "Schedule | int | Iterable[int] | None" = None,
        total_steps: int | None = None,
        model: torch.nn.Module | None = None,
        commit: str | None = None,
        rule: Rule = SUN_RULE,
        fit: bool = True,
        batch_size: int | None = None,
        reduce_dtype: str = "float32",
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
    ):
        """`total_steps`: the run's planned last step, measured too and the forecast's target (the adapters
        take it from the trainer). `commit`: the training code's git commit (default: the working directory's
        HEAD, "" outside a git work tree). `rule`: Sun et al.'s by default, or a threshold of your own.
        `fit=False` skips the forecast. `batch_size`: probe sequences per forward pass (None: as many as fit).
        `lock_timeout`: seconds to wait for the store lock, then StoreLocked."""
        from dynamics.measure import REDUCE_DTYPES

        if not isinstance(probe, ProbeSet):
            raise UserError(
                f"probe must be a ProbeSet (dynamics.probes.embedded_probes ...), got {type(probe).__name__}"
            )
        if not isinstance(run_name, str) or not run_name.strip():
            raise UserError(f"run_name must be a non-empty string, got {run_name!r}")
        if total_steps is not None and ((n := _integer(total_steps)) is None or n < 1):
            raise UserError(f"total_steps must be a positive integer or None, got {total_steps!r}")
        if reduce_dtype not in REDUCE_DTYPES:
            raise UserError(f"unknown reduce_dtype {reduce_dtype!r}; use one of {', '.join(REDUCE_DTYPES)}")
        if batch_size is not None and ((n := _integer(batch_size)) is None or n < 1):
            raise UserError(f"batch_size must be at least 1, got {batch_size!r}")
        self.store_dir = Path(store_dir)
        store.check_store(self.store_dir)  # a wrong folder fails now, before training starts
        self.probe, self.run_name = probe, run_name
        self.schedule = as_schedule(schedule)
        self.total_steps = total_steps
        self.commit, self.rule, self.fit = commit, rule, fit
        self.batch_size, self.reduce_dtype, self.lock_timeout = batch_size, reduce_dtype, lock_timeout
        # A DDP or DataParallel wrapper forwards no attributes; measuring needs the module it wraps.
        self.model = None if model is None else _unwrapped(model)
        if self.model is not None:
            self.check_model(self.model)
        self.forecast_table: pl.DataFrame | None = None
        self._root: Path | None = None
        self._rows: dict[int, pl.DataFrame] = {}  # step -> its measurement rows
        self._warned: set[tuple[int, str]] = set()

    def due(self, step: int) -> bool:
        """Whether `step` is to be measured: scheduled, or the planned last step."""
        return step in self.schedule or (self.total_steps is not None and step == self.total_steps)

    def maybe_measure(self, step: int, model: torch.nn.Module | None = None) -> dict[str, float] | None:
        """Measure when `step` is due, not measured yet and this is rank 0; the logger scalars then, else None."""
        if not self.due(step) or step in self._rows or not is_rank_zero():
            return None
        return self.measure(step, model)

    def check_model(self, model: torch.nn.Module) -> None:
        """UserError unless the probe fits the model: a supported architecture, its vocabulary and context."""
        from dynamics.layers import check_model_type

        config = getattr(model, "config", None)
        if config is None:
            raise UserError(f"{type(model).__name__} has no config; track a transformers model (or pass its .model)")
        check_model_type(config)
        context = context_length(config)
        if context is not None and self.probe.seq_len > context:
            raise UserError(
                f"the probe's sequences have {self.probe.seq_len} tokens but the model's context is {context}; "
                f"build the probe with seq_len={context} or less"
            )
        vocab = getattr(config, "vocab_size", None)
        if vocab is not None and int(self.probe.token_ids.max()) >= vocab:
            raise UserError(
                f"the probe holds token id {int(self.probe.token_ids.max())} but the model's vocabulary has {vocab} "
                "entries; build the probe with the run's own tokenizer"
            )

    def measure(self, step: int, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Measure now as revision `step<N>`, write its shard and ledger row, refit; returns the logger scalars."""
        from dynamics.measure import auto_batch_size, measure

        model = _unwrapped(model if model is not None else self.model)
        self.check_model(model)
        root = self._open(model)
        start = time.perf_counter()
        with preserved_rng(), torch.no_grad():
            batch = self.batch_size or auto_batch_size(model, *self.probe.token_ids.shape)
            stats = measure(model, self.probe.token_ids, batch_size=batch, reduce_dtype=self.reduce_dtype)
        weight = next(model.parameters())
        revision = f"step{step}"
        rows = store.as_measurements(
            stats,
            model=self.run_name,
            revision=revision,
            step=step,
            commit=self.commit,
            # The live weights have no file; hashing them would copy every weight off the device at each step.
            weights_sha256="",
            probe_id=self.probe.probe_id,
            dtype=str(weight.dtype).removeprefix("torch."),
            device=str(weight.device),
        )
        status, detail = store.measured_status(stats)
        with store.store_lock(root, self.lock_timeout):
            store.write_shard(root, store.MEASUREMENTS, rows)
            row = ledger_row(
                self.run_name,
                revision,
                step,
                self.probe.probe_id,
                status,
                detail,
                seconds_measure=time.perf_counter() - start,
            )
            store.write_shard(root, store.LEDGER, pl.DataFrame([row], schema=store.LEDGER.schema))
        self._rows = {s: r for s, r in self._rows.items() if s < step} | {step: rows}
        self.forecast_table = forecast(pl.concat(list(self._rows.values())), self.total_steps, self.rule, self.fit)
        self._warn(self.forecast_table)
        return scalars(self.forecast_table)

    def _open(self, model: torch.nn.Module) -> Path:
        """The store, opened and claimed for this run at the first measurement, with the run's earlier rows."""
        if self._root is not None:
            return self._root
        try:
            architecture = from_config(model.config)
        except UserError:  # recorded for `mdyn train` where the config says; measurement does not need it
            architecture = None
        root = store.check_writable(self.store_dir)
        with store.store_lock(root, self.lock_timeout):
            store.claim_model(root, self.run_name, f"live:{self.run_name}", architecture)
            self._write_record(root)
        if self.commit is None:
            self.commit = git_commit()
        earlier = store.load(root, store.MEASUREMENTS, model=self.run_name)
        earlier = earlier.filter(pl.col("probe_id") == self.probe.probe_id)
        self._rows = {int(step): part for (step,), part in earlier.partition_by("step", as_dict=True).items()}
        self._root = root
        return root

    def _write_record(self, root: Path) -> None:
        record = {
            "run": self.run_name,
            "probe_id": self.probe.probe_id,
            "total_steps": self.total_steps,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        path = root / LIVE_DIR / f"{store.model_dir(self.run_name)}.json"
        write_atomic(path, json.dumps(record, indent=1).encode())

    def _warn(self, table: pl.DataFrame) -> None:
        """A MassiveActivationWarning per layer once its measurement meets the rule, and once its forecast does."""
        rule = f"|a| > {self.rule.magnitude:g} and ratio >= {self.rule.ratio:g}"
        for row in table.iter_rows(named=True):
            layer = row["layer"]
            if row["massive_seqs"]:
                self._warn_once(
                    (layer, "measured"),
                    f"{self.run_name} layer {layer} has a massive activation at step {row['step']} ({rule}) in "
                    f"{row['massive_seqs']} of {self.probe.n_seq} probe sequences; over all of them, mean top-1 "
                    f"{row['top1']:.4g} and ratio {row['ratio']:.4g}",
                )
            if row["forecast_massive"]:
                self._warn_once(
                    (layer, "forecast"),
                    f"{self.run_name} layer {layer} is forecast to meet {rule} by step {row['target_step']}: ratio "
                    f"{row['forecast_ratio']:.4g} (95 % {row['forecast_ratio_lo']:.4g}-{row['forecast_ratio_hi']:.4g})"
                    f" from {row['n_points']} steps up to {row['step']}",
                )

    def _warn_once(self, key: tuple[int, str], message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(message, MassiveActivationWarning, stacklevel=5)  # the caller of maybe_measure


def _unwrapped(model: torch.nn.Module | None) -> torch.nn.Module:
    """The module itself for a DistributedDataParallel (or DataParallel) wrapper: measuring it needs no collective."""
    if model is None:
        raise UserError("no model to measure: pass it to Tracker(model=...) or to maybe_measure(step, model)")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        return model.module
    return model
