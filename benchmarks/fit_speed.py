"""Fit 188 synthetic layers (the paper's dataset size) with the multi-start lmfit model on every core, against
the paper's single-start `scipy.optimize.curve_fit` on the same curves; prints timings and fit quality.

Run: python -m benchmarks.fit_speed [--layers 188] [--jobs 2] [--seed 0]
The curves are rich in early peaks (half of them peak before step 10000), with 7 % multiplicative noise on
each of 10 probe sequences, sampled on Pythia's 154-step schedule.
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
    """The paper's method: one curve_fit (trust-region-reflective, analytic Jacobian) from its initial guess,
    in normalised units, with the same bounds as the multi-start model. Returns R^2 or None on failure."""
    tn, yn = t / t.max(), (y - y.min()) / np.ptp(y)
    guess = EmergenceModel().guess(yn, tn)
    names = ["A", "lam", "gamma", "t0", "K"]
    lower = [-np.inf, 0.0, 1e-12, 1e-12, -np.inf]
    try:
        with np.errstate(all="ignore"):
            popt, _ = curve_fit(emergence, tn, yn, p0=[guess[n].value for n in names], method="trf",
                                jac=emergence_jacobian, bounds=(lower, np.inf), maxfev=10000)
    except (RuntimeError, ValueError):
        return None
    residual = yn - emergence(tn, *popt)
    r2 = 1.0 - np.sum(residual**2) / np.sum((yn - yn.mean()) ** 2)
    return r2 if np.isfinite(r2) else None


def quality(r2s, total):
    ok = np.array([r for r in r2s if r is not None])
    return f"success {ok.size}/{total}, median R2 {np.median(ok):.4f}, worst R2 {ok.min():.4f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=188)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    curves = sample_curves(args.layers, rng)
    measurements = synthetic_measurements(curves, pythia_steps(), n_seq=10, noise=0.07, seed=args.seed)
    series = series_table(measurements)

    start = time.perf_counter()
    fits = fit_table(measurements, hypotheses=[EmergenceModel], n_jobs=args.jobs)
    multi_seconds = time.perf_counter() - start

    start = time.perf_counter()
    paper_r2 = [paper_fit(part["step"].to_numpy().astype(float), part["value"].to_numpy())
                for _, part in series.group_by("model", "layer", maintain_order=True)]
    paper_seconds = time.perf_counter() - start

    fits = fits.sort("model", "layer")
    truth = [curves[(m, l)] for m, l in zip(fits["model"], fits["layer"])]
    true_peak = np.array([t_peak(p["lam"], p["gamma"], p["t0"]) for p in truth])
    observable = np.isfinite(true_peak) & (true_peak < 143000)
    peak_error = np.abs(fits["t_peak"].to_numpy() / true_peak - 1)[observable]
    n = len(curves)
    print(f"{n} synthetic layers, 154 steps, 10 sequences, 7 % noise; "
          f"{int(np.sum(true_peak < 10000))} peak before step 10000")
    print(f"multi-start lmfit, {args.jobs} process(es): {multi_seconds:6.2f} s  "
          f"({quality(list(fits.filter('success')['r2']), n)})")
    print(f"paper single-start curve_fit, 1 process: {paper_seconds:6.2f} s  ({quality(paper_r2, n)})")
    print(f"time ratio multi-start / single-start: {multi_seconds / paper_seconds:.2f}")
    print(f"multi-start t_peak relative error where observable ({observable.sum()} layers): "
          f"median {np.nanmedian(peak_error):.3f}, 90th percentile {np.nanpercentile(peak_error, 90):.3f}")


if __name__ == "__main__":
    main()
