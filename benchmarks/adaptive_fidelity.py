"""Adaptive revision selection (`mdyn sweep --steps adaptive:N`) against fixed selections at the same budget.

Every design is replayed on series measured before (`dynamics.adaptive.Replay`), so no model runs. The reference
is the full-series fit (Eq. 9 on every revision) of each layer; a design's error is |log f_design(t) -
log f_full(t)| at every step of the schedule and every layer, summarised by its median, root mean square and 90th
percentile (pooled over a suite's models; medians per model). Budget N = a third of the revisions. Designs:
- adaptive: `adaptive:N`; banded: `adaptive:N --until-band X` (stops earlier once every band is narrower);
- log: `log:N`, which picks fewer than N steps where its targets collide (Pythia's early steps), so the largest
  `log:M` that picks at most N;
- paper: `paper` (37 steps) on 154-step series; on the tiny suite's 31-step series the paper's shape at budget N
  (log-spaced powers of two up to 512, then evenly spaced later steps, in the paper's proportion 11 : 26);
- random: N revisions drawn at random (RANDOM_DRAWS per model), for scale.
Also: how often the adaptive design's predicted 95 % band holds its actual error, downloads saved, and the
planning time per pick (fit every layer, score every candidate), for the suites' models and for one 36-layer model
(Pythia-12B's depth) halfway through its design.

Suites:
- tiny: data/tiny-suite/measurements.parquet, 9 models x 31 revisions, measured on CPU-trained models;
- pythia-like: fitting.synthetic series on Pythia's 154 steps with 7 % noise over 10 sequences, per layer a curve
  of benchmarks.fit_speed.sample_curves (early peaks, mid-course peaks, logarithmic rises) whose ratio stays
  above 2, grouped 6 layers to a model; several seeds.

Run: python -m benchmarks.adaptive_fidelity [--seeds 1,2] [--models 6] [--per-round 1] [--until-band 0.15]
(about 5 minutes on one core).
"""

import argparse
import time

import numpy as np
import polars as pl

from benchmarks.fit_speed import sample_curves
from dynamics.adaptive import Budget, Replay, layer_designs, layer_fits, next_round, run_design, start_design
from dynamics.revisions import PAPER_EARLY_MAX, PAPER_LATE, log_spaced, paper
from fitting.curves import emergence
from fitting.synthetic import pythia_steps, synthetic_measurements

TINY = "data/tiny-suite/measurements.parquet"
LAYERS_PER_MODEL = 6
RANDOM_DRAWS = 3  # random designs of N revisions per model, for scale


def paper_shape(steps: list[int], n: int) -> list[int]:
    """The paper's selection scaled to n steps: log-spaced powers of two up to 512, then evenly spaced later ones."""
    early = [s for s in steps if s <= PAPER_EARLY_MAX and s & (s - 1) == 0]
    late = [s for s in steps if s > PAPER_EARLY_MAX]
    n_early = max(1, round(n * len(early) / (len(early) + PAPER_LATE)))
    n_late = n - n_early
    chosen = [late[int(np.floor(i * (len(late) - 1) / (n_late - 1) + 0.5))] for i in range(n_late)]
    return log_spaced(early, n_early) + chosen


def log_budget(steps: list[int], n: int) -> list[int]:
    """`log:M` with the largest M that picks at most n distinct steps (`log:N` picks fewer where targets collide)."""
    m = n
    while len(log_spaced(steps, m + 1)) <= n and m < len(steps):
        m += 1
    return log_spaced(steps, m)


def errors(measurements: pl.DataFrame, revisions: list[str], reference: dict, steps: np.ndarray) -> np.ndarray:
    """|log f_design - log f_full| at every step and layer for the design measuring `revisions`."""
    chosen = measurements.filter(pl.col("revision").is_in(revisions))
    out = []
    for layer, _, _, _, fit in layer_fits(chosen):
        curve = emergence(steps, **fit.params) if fit.success else np.full(steps.size, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.abs(np.log(curve / reference[layer])))
    return np.concatenate(out)


def replay_design(measurements: pl.DataFrame, budget: Budget) -> tuple[Replay, dict]:
    """(replay, design record) of one adaptive design run to its end on measurements taken before."""
    replay = Replay(measurements)
    design = start_design(None, replay.model, "replay", budget, len(replay.revisions))
    run_design(replay.revisions, measurements.clear(), replay, budget, design)
    return replay, design


def coverage(measurements: pl.DataFrame, revisions: list[str], reference: dict, steps: np.ndarray) -> np.ndarray:
    """Per step and layer, whether |log f_design - log f_full| lies within the design's predicted 95 % band."""
    chosen = measurements.filter(pl.col("revision").is_in(revisions))
    fits = layer_fits(chosen)
    measured = np.isin(steps, chosen["step"].unique().to_list())
    inside = []
    for layer, design in layer_designs(fits, steps).items():
        fit = next(f for lay, *_, f in fits if lay == layer)
        inside.append(np.abs(np.log(emergence(steps, **fit.params) / reference[layer])) <= design.band(measured))
    return np.concatenate(inside)


def evaluate(measurements: pl.DataFrame, paper_like, per_round: int, band: float) -> dict:
    """Errors of the adaptive designs (to the budget, and stopped at `band`) and the baselines on one model,
    downloads and planning times."""
    steps = np.array(sorted(measurements["step"].unique().to_list()))
    n = round(len(steps) / 3)
    replay, design = replay_design(measurements, Budget(n, per_round=per_round))
    banded, _ = replay_design(measurements, Budget(n, until_band=band, per_round=per_round))
    reference = {layer: emergence(steps, **fit.params) for layer, _, _, _, fit in layer_fits(measurements)}
    by_step = {step: rev for rev, step in replay.revisions.items()}
    designs = {
        "adaptive": replay.served,
        "banded": banded.served,
        "log": [by_step[s] for s in log_budget(steps.tolist(), n)],
        "paper": [by_step[s] for s in paper_like(steps.tolist(), n)],
    }
    rng = np.random.default_rng(0)
    draws = [list(rng.choice(list(replay.revisions), n, replace=False)) for _ in range(RANDOM_DRAWS)]
    picks = [(r["seconds_planning"], len(r["picks"])) for r in design["rounds"] if r["kind"] == "criterion"]
    return {
        "model": replay.model,
        "n": n,
        "revisions": len(steps),
        "downloads": {name: len(revs) for name, revs in designs.items()},
        "errors": {name: errors(measurements, revs, reference, steps) for name, revs in designs.items()}
        | {"random": np.concatenate([errors(measurements, revs, reference, steps) for revs in draws])},
        "seconds_per_pick": [seconds / count for seconds, count in picks],
        "coverage": coverage(measurements, replay.served, reference, steps),
        "layers": len(reference),
    }


def pythia_like(seed: int, n_models: int) -> pl.DataFrame:
    """Synthetic measurements on Pythia's 154 steps: n_models models of 6 layers, curves that stay above 2."""
    rng = np.random.default_rng(seed)
    pool = [c for c in sample_curves(40 * n_models, rng).values() if emergence(pythia_steps(), **c).min() > 2]
    curves = {
        (f"pythia-like-{seed}-{i // LAYERS_PER_MODEL}", i % LAYERS_PER_MODEL): c
        for i, c in enumerate(pool[: n_models * LAYERS_PER_MODEL])
    }
    return synthetic_measurements(curves, pythia_steps(), n_seq=10, noise=0.07, seed=seed)


def report(name: str, results: list[dict]) -> None:
    pooled = {k: np.concatenate([r["errors"][k] for r in results]) for k in results[0]["errors"]}
    total = sum(r["revisions"] for r in results)
    print(f"\n{name}: {len(results)} models, {sum(r['layers'] for r in results)} layers, {total} revisions")
    print("  |log f_design - log f_full| over steps and layers (pooled)")
    for k, values in pooled.items():
        downloads = sum(r["downloads"].get(k, r["n"]) for r in results)
        print(
            f"  {k:<9} median {np.nanmedian(values):.4f}, rms {np.sqrt(np.nanmean(values**2)):.4f}, 90th percentile "
            f"{np.nanpercentile(values, 90):.4f}, non-finite {int(np.sum(~np.isfinite(values)))}; downloads "
            f"{downloads} of {total}, {1 - downloads / total:.0%} saved"
        )
    wins = {
        k: sum(np.nanmedian(r["errors"]["adaptive"]) < np.nanmedian(r["errors"][k]) for r in results)
        for k in ("log", "paper", "random")
    }
    print(
        f"  models where adaptive beats log:N {wins['log']}/{len(results)}, "
        f"the paper's selection {wins['paper']}/{len(results)}, random {wins['random']}/{len(results)}"
    )
    for r in results:
        medians = " ".join(f"{k} {np.nanmedian(v):.4f}" for k, v in r["errors"].items())
        print(f"    {r['model']:<32} N={r['n']:<3} {medians}")
    inside = np.concatenate([r["coverage"] for r in results])
    print(f"  adaptive's predicted 95 % band holds its error at {inside.mean():.0%} of steps and layers")
    seconds = np.concatenate([r["seconds_per_pick"] for r in results])
    print(f"  planning per pick: median {np.median(seconds):.2f} s, max {seconds.max():.2f} s")


def planning_36_layers(seed: int) -> tuple[float, float]:
    """(seconds to plan one pick, of which fitting) for a 36-layer model with half of its budget of 51 measured."""
    rng = np.random.default_rng(seed)
    pool = [c for c in sample_curves(400, rng).values() if emergence(pythia_steps(), **c).min() > 2]
    table = synthetic_measurements({("deep", i): c for i, c in enumerate(pool[:36])}, pythia_steps(), 10, 0.07, seed)
    held = table.filter(pl.col("step").is_in(log_budget(pythia_steps().tolist(), 26)))
    start = time.perf_counter()
    next_round(Replay(table).revisions, held, Budget(51))
    total = time.perf_counter() - start
    start = time.perf_counter()
    layer_fits(held)
    return total, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="synthetic seeds, comma separated")
    parser.add_argument("--models", type=int, default=6, help="synthetic models (6 layers each) per seed")
    parser.add_argument("--per-round", type=int, default=1, help="picks per round (Slurm-style batches)")
    parser.add_argument("--until-band", type=float, default=0.15, help="the `banded` design stops at this band")
    args = parser.parse_args()
    tiny = pl.read_parquet(TINY)
    start = time.perf_counter()
    report(
        "tiny suite",
        [
            evaluate(part, paper_shape, args.per_round, args.until_band)
            for _, part in tiny.group_by("model", maintain_order=True)
        ],
    )
    synthetic = []
    for seed in map(int, args.seeds.split(",")):
        table = pythia_like(seed, args.models)
        synthetic += [
            evaluate(part, lambda steps, n: paper(steps), args.per_round, args.until_band)
            for _, part in table.group_by("model", maintain_order=True)
        ]
    report(f"pythia-like synthetic (seeds {args.seeds})", synthetic)
    total, fitting = planning_36_layers(1)
    print(f"\nplanning one pick, 36-layer model, 154 revisions, 26 measured: {total:.2f} s ({fitting:.2f} s fitting)")
    print(f"benchmark wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
