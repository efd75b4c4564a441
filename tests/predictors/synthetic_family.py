"""A synthetic model family whose Eq. 9 parameters are a known smooth function of the features, plus noise."""

import numpy as np
import polars as pl

from fitting.contracts import Architecture
from predictors.features import layer_features

# (name, layers, hidden, heads): depths 4-24, widths 128-1024, head sizes 16-128.
FAMILY = (
    ("syn-a", 4, 128, 4),
    ("syn-b", 4, 256, 8),
    ("syn-c", 6, 192, 6),
    ("syn-d", 6, 384, 4),
    ("syn-e", 8, 256, 16),
    ("syn-f", 8, 512, 8),
    ("syn-g", 10, 320, 10),
    ("syn-h", 12, 384, 12),
    ("syn-i", 12, 768, 6),
    ("syn-j", 16, 512, 16),
    ("syn-k", 16, 1024, 8),
    ("syn-l", 20, 640, 20),
    ("syn-m", 24, 768, 12),
    ("syn-n", 24, 1024, 32),
)
NOISE = 0.03


def true_parameters(features: np.ndarray) -> np.ndarray:
    """A, lam, gamma, t0, K as smooth functions of the Table 4 features (columns in FEATURES order)."""
    depth, h_over_d, log_d, l_times_l = features[:, 0], features[:, 4], features[:, 8], features[:, 9]
    A = 40.0 * (1.0 + 3.0 * depth * (1.0 - depth)) * (1.0 + 0.1 * (log_d - 5.0))
    lam = 0.02 + 0.3 * np.exp(-6.0 * depth) + 0.0005 * l_times_l
    gamma = 1e-4 * (1.0 + 2.0 * depth**2)
    t0 = 1.0 + 3.0 * np.sqrt(depth)
    K = 20.0 + 30.0 * depth - 300.0 * h_over_d
    return np.column_stack([A, lam, gamma, t0, K])


def family_tables(seed: int = 0, noise: float = NOISE) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fits, architectures) of the synthetic family, the fits table in the contract's columns.

    Besides the successful ratio/emergence rows it carries rows that training must ignore: another series,
    another hypothesis, a failed fit and a fit with a NaN parameter.
    """
    rng = np.random.default_rng(seed)
    architectures = pl.DataFrame(
        [
            {"model": m, "n_layers": L, "d_model": d, "n_heads": H, "d_ff": 4 * d, "n_params": 0, "source": "synthetic"}
            for m, L, d, H in FAMILY
        ]
    )
    rows = []
    for model, L, d, H in FAMILY:
        params = true_parameters(layer_features(Architecture(L, d, H, 4 * d)))
        params *= np.exp(rng.normal(0.0, noise, params.shape))
        for layer, (A, lam, gamma, t0, K) in enumerate(params):
            rows.append(_fit_row(model, layer, "ratio", "emergence", True, A, lam, gamma, t0, K))
            rows.append(_fit_row(model, layer, "median", "emergence", True, -5.0, 0, 0, 0, 0))
            rows.append(_fit_row(model, layer, "ratio", "step_first_order", True, None, None, None, None, None))
    rows.append(_fit_row("syn-a", 0, "ratio", "emergence", False, -50.0, 1, 1, 1, 1))
    rows.append(_fit_row("syn-b", 0, "ratio", "emergence", True, float("nan"), 1, 1, 1, 1))
    fits = pl.DataFrame(rows, schema=FITS_SCHEMA, orient="row")
    return fits, architectures


FITS_SCHEMA = {
    "model": pl.String,
    "layer": pl.Int32,
    "series": pl.String,
    "hypothesis": pl.String,
    "A": pl.Float64,
    "lam": pl.Float64,
    "gamma": pl.Float64,
    "t0": pl.Float64,
    "K": pl.Float64,
    "r2": pl.Float64,
    "n_points": pl.Int32,
    "success": pl.Boolean,
    "message": pl.String,
    "t_peak": pl.Float64,
}


def _fit_row(model, layer, series, hypothesis, success, A, lam, gamma, t0, K):
    return (model, layer, series, hypothesis, A, lam, gamma, t0, K, 0.99, 37, success, "", float("nan"))


def family_measurements(seed: int = 0, noise: float = 0.07) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(measurements, architectures) whose ratio series follow the family's Eq. 9 curves on the paper's 37 steps,
    with `noise` per probe sequence and step over 10 sequences (so about 2 % on the ratio of means) and each
    layer's parameters moved by the family's 3 % scatter."""
    from fitting.synthetic import paper_like_steps, synthetic_measurements

    rng = np.random.default_rng(seed)
    curves = {}
    for model, L, d, H in FAMILY:
        params = true_parameters(layer_features(Architecture(L, d, H, 4 * d)))
        params *= np.exp(rng.normal(0.0, NOISE, params.shape))
        curves |= {(model, layer): dict(zip(("A", "lam", "gamma", "t0", "K"), p)) for layer, p in enumerate(params)}
    measurements = synthetic_measurements(curves, paper_like_steps(), n_seq=10, noise=noise, seed=seed + 1)
    architectures = pl.DataFrame(
        [{"model": m, "n_layers": L, "d_model": d, "n_heads": H, "d_ff": 4 * d} for m, L, d, H in FAMILY]
    )
    return measurements, architectures
