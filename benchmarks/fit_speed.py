"""Fit 188 synthetic layers (the paper's dataset size) with the multi-start lmfit model on every core, against
the paper's single-start `scipy.optimize.curve_fit` on the same curves; prints timings and fit quality.

Run: python -m benchmarks.fit_speed [--layers 188] [--jobs 2] [--seed 0]
The curves are rich in early peaks (half of them peak before step 10000), with 7 % multiplicative noise on
each of 10 probe sequences, sampled on Pythia's 154-step schedule. "optimum missed" counts fits whose
residual sum of squares exceeds that of the true parameters by more than 0.1 %: the least-squares optimum
can only be better than the truth, so these fits stopped in a worse local minimum. Wall times depend on
what else runs on the machine; CPU seconds are for the in-process runs only.
"""

import argparse
import time

import numpy as np
from scipy.optimize import curve_fit
from scipy.special import lambertw

from fitting.curves import emergence, emergence_jacobian, t_peak
from fitting.model import EmergenceModel
from fitting.synthetic import pythia_steps, synthetic_measurements
from fitting.table import fit_table, series_table

PYTHIA_LAYERS = (6, 6, 12, 24, 16, 24, 32, 32, 36)  # 188 layers, as the nine models of the paper
NAMES = ("A", "lam", "gamma", "t0", "K")


def sample_curves(n_layers, rng):
    """Eq. 9 parameters for n_layers layers of models shaped like Pythia's (6, 6, 12, ... 36 layers).

    Half peak early (steps 300-10000) then decay, a quarter peak mid-course (steps 20000-80000), a quarter
    rise logarithmically (lam 1e-4 to 1e-2). Each starts near a ratio of 5-10 and rises by 10-1000.
    """
    keys = [(f"synthetic-{m}", layer) for m, count in enumerate(PYTHIA_LAYERS) for layer in range(count)]
    keys += [("synthetic-extra", layer) for layer in range(max(0, n_layers - len(keys)))]
    curves = {}
    for key in keys[:n_layers]:
        kind = rng.choice(["early", "early", "mid", "log"])
        if kind == "log":
            lam, gamma, t0 = 10 ** rng.uniform(-4, -2), 10 ** rng.uniform(-4, -2), rng.uniform(0.5, 2.0)
            end = 143000.0
        else:
            lam = 10 ** (rng.uniform(-0.5, 0.5) if kind == "early" else rng.uniform(-1.3, -0.7))
            x_star = 1.0 / (lam * lambertw(1.0 / lam).real)
            t0 = rng.uniform(0.1, 0.6) * x_star
            end = 10 ** (rng.uniform(2.5, 4.0) if kind == "early" else rng.uniform(4.3, 4.9))
            gamma = (x_star - t0) / end
        rise, start = 10 ** rng.uniform(1, 3), rng.uniform(5, 10)
        shape = emergence(np.array([0.0, end]), 1.0, lam, gamma, t0, 0.0)
        A = rise / (shape[1] - shape[0])
        curves[key] = dict(A=A, lam=lam, gamma=gamma, t0=t0, K=start - A * shape[0])
    return curves


def paper_fit(t, y):
    """The paper's method: one curve_fit (trust-region-reflective, analytic Jacobian, default evaluation budget)
    from its initial guess, in normalised units, with the multi-start model's bounds. Parameters or None."""
    scale, shift, spread = t.max(), y.min(), np.ptp(y)
    tn, yn = t / scale, (y - shift) / spread
    guess = EmergenceModel().guess(yn, tn)
    try:
        with np.errstate(all="ignore"):
            popt, _ = curve_fit(
                emergence,
                tn,
                yn,
                p0=[guess[n].value for n in NAMES],
                method="trf",
                jac=emergence_jacobian,
                bounds=([-np.inf, 0.0, 1e-12, 1e-12, -np.inf], np.inf),
            )
    except (RuntimeError, ValueError):
        return None
    A, lam, gamma, t0, K = popt
    return dict(A=A * spread, lam=lam, gamma=gamma / scale, t0=t0, K=shift + K * spread)


def report(name, seconds, cpu, fitted, series, curves):
    """One line per method: time, success rate, median and worst R^2, optima missed."""
    r2, missed = [], 0
    for (key, t, y), params in zip(series, fitted):
        if params is None:
            continue
        sse = np.sum((y - emergence(t, **params)) ** 2)
        r2.append(1.0 - sse / np.sum((y - y.mean()) ** 2))
        # The true parameters are a feasible point, so the least-squares optimum is at least as good.
        missed += sse > 1.001 * np.sum((y - emergence(t, **curves[key])) ** 2)
    r2 = np.array(r2)
    cpu = "   n/a" if cpu is None else f"{cpu:6.2f}"
    print(
        f"{name:<40} {seconds:6.2f} s wall {cpu} s CPU   success {r2.size}/{len(series)}   "
        f"R2 median {np.median(r2):.4f} worst {r2.min():.4f}   optimum missed {missed}"
    )


def timed(function, *args, **kws):
    """(result, wall seconds, CPU seconds of this process); worker processes' CPU is not counted."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kws)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=188)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    curves = sample_curves(args.layers, np.random.default_rng(args.seed))
    measurements = synthetic_measurements(curves, pythia_steps(), n_seq=10, noise=0.07, seed=args.seed)
    series = [
        ((model, layer), part["step"].to_numpy().astype(float), part["value"].to_numpy())
        for (model, layer), part in series_table(measurements).group_by("model", "layer", maintain_order=True)
    ]
    true_peak = np.array([t_peak(curves[key]["lam"], curves[key]["gamma"], curves[key]["t0"]) for key, _, _ in series])
    print(
        f"{len(series)} synthetic layers on 154 steps, 10 probe sequences with 7 % noise; "
        f"{int(np.sum(true_peak < 10000))} peak before step 10000"
    )

    def fitted(fits):
        by_key = {(r["model"], r["layer"]): r for r in fits.iter_rows(named=True)}
        return [{n: by_key[key][n] for n in NAMES} if by_key[key]["success"] else None for key, _, _ in series]

    multi, seconds, _ = timed(fit_table, measurements, hypotheses=[EmergenceModel], n_jobs=args.jobs)
    report(f"multi-start lmfit, {args.jobs} processes", seconds, None, fitted(multi), series, curves)
    single_process, seconds_1, cpu_1 = timed(fit_table, measurements, hypotheses=[EmergenceModel], n_jobs=1)
    report("multi-start lmfit, 1 process", seconds_1, cpu_1, fitted(single_process), series, curves)
    paper, seconds_paper, cpu_paper = timed(lambda: [paper_fit(t, y) for _, t, y in series])
    report("paper: single-start curve_fit, 1 process", seconds_paper, cpu_paper, paper, series, curves)
    print(
        f"time ratios: multi-start {args.jobs} processes / 1 process {seconds / seconds_1:.2f} (wall); "
        f"multi-start / single-start curve_fit, 1 process {seconds_1 / seconds_paper:.2f} (wall), "
        f"{cpu_1 / cpu_paper:.2f} (CPU)"
    )

    estimate = np.array([np.nan if p is None else t_peak(p["lam"], p["gamma"], p["t0"]) for p in fitted(multi)])
    inside = np.isfinite(true_peak) & (true_peak < 143000)
    error = np.abs(estimate / true_peak - 1)[inside]
    print(
        f"multi-start t_peak relative error where the true peak is inside the run ({inside.sum()} layers): "
        f"median {np.nanmedian(error):.3f}, 90th percentile {np.nanpercentile(error, 90):.3f}"
    )


if __name__ == "__main__":
    main()
