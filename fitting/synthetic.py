"""Measurement tables generated from known Eq. 9 parameters, to validate the fitting and to benchmark it."""

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import polars as pl

from fitting.curves import emergence


def pythia_steps() -> np.ndarray:
    """The 154 checkpoint steps of every Pythia model: 0, 1, 2, 4, ..., 512, then 1000, 2000, ..., 143000."""
    return np.array([0] + [2**k for k in range(10)] + list(range(1000, 143001, 1000)), dtype=np.int64)


def paper_like_steps() -> np.ndarray:
    """A 37-step subset like the paper's: 0 and the powers of two to 512, then 26 steps evenly to 143000."""
    even = np.round(np.linspace(1000, 143000, 26) / 1000).astype(np.int64) * 1000
    return np.concatenate([pythia_steps()[:11], even])


def synthetic_measurements(
    curves: Mapping[tuple[str, int], Mapping[str, float]],
    steps: npt.ArrayLike,
    n_seq: int = 10,
    noise: float = 0.0,
    seed: int = 0,
) -> pl.DataFrame:
    """A measurements table whose ratio series follows the given Eq. 9 curves.

    curves: {(model, layer): {"A", "lam", "gamma", "t0", "K"}}. Each sequence has its own constant median;
    top1 = curve(step) * median times (1 + noise * N(0, 1)) per sequence and step, so that without noise
    both the ratio of means and the mean of ratios equal the curve exactly; top2 and top3 are 0.8 and 0.7
    of the noise-free top1, with their own noise.
    """
    rng = np.random.default_rng(seed)
    steps = np.asarray(steps, dtype=np.int64)
    medians = 0.1 * np.exp(0.2 * rng.standard_normal(n_seq))
    frames = []
    for (model, layer), params in curves.items():
        ratio = emergence(steps, **params)
        clean = ratio[:, None] * medians[None, :]
        top1, top2, top3 = (
            share * clean * (1.0 + noise * rng.standard_normal(clean.shape)) for share in (1.0, 0.8, 0.7)
        )
        frames.append(
            pl.DataFrame(
                {
                    "model": model,
                    "revision": [f"step{s}" for s in np.repeat(steps, n_seq)],
                    "step": np.repeat(steps, n_seq),
                    "probe_id": "synthetic",
                    "seq": np.tile(np.arange(n_seq, dtype=np.int32), steps.size),
                    "layer": np.full(clean.size, layer, dtype=np.int32),
                    "top1": top1.ravel(),
                    "top2": top2.ravel(),
                    "top3": top3.ravel(),
                    "median": np.tile(medians, steps.size),
                }
            )
        )
    return pl.concat(frames)
