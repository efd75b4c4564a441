"""An architecture and the paper's Table 4 features of each of its layers.

Layer-index convention (the paper does not state one): the measurements and fits tables count decoder blocks
from 0 (`layer` 0 is the output of the first block); the features use l = layer + 1, so that l/L lies in (0, 1]
and sqrt(l/L) and l*L are those of a 1-based count. `log d` is the natural logarithm. The convention is saved
with every trained predictor (`FEATURE_CONVENTION`) and checked when one is loaded.
"""

import math

import numpy as np
import numpy.typing as npt

from fitting.contracts import Architecture
from fitting.errors import UserError

FEATURES = ("l/L", "(l/L)^2", "(l/L)^3", "sqrt(l/L)", "H/d", "d_ff/d", "d/L", "H/L", "log d", "l*L")
FEATURE_CONVENTION = "l = layer + 1 with layer the 0-based decoder-block index; log d is the natural log"


def layer_features(arch: Architecture, layers: npt.ArrayLike | None = None) -> np.ndarray:
    """The Table 4 features (columns in `FEATURES` order) of the given 0-based layers (default: all), shape (n, 10)."""
    L, d, H = arch.n_layers, arch.d_model, arch.n_heads
    layer = np.arange(L) if layers is None else np.asarray(layers)
    if layer.size and (layer.min() < 0 or layer.max() >= L):
        raise UserError(
            f"layer indices must lie in 0..{L - 1} for a model of {L} layers, got {layer.min()}..{layer.max()}: "
            "check that the fits and the architectures table describe the same model"
        )
    l = layer.astype(float) + 1.0
    depth = l / L
    columns = (depth, depth**2, depth**3, np.sqrt(depth), H / d, arch.d_ff / d, d / L, H / L, math.log(d), l * L)
    return np.column_stack([np.broadcast_to(np.asarray(c, dtype=float), depth.shape) for c in columns])


# The training recipe, where an architectures table records it (docs/science.md §6 gives Pythia's): the run's
# length in optimizer steps, its peak learning rate and the tokens of one step.
RECIPE_COLUMNS = ("total_steps", "peak_lr", "tokens_per_step")
RECIPE_FEATURES = ("log steps", "log peak LR", "log tokens/step")


def recipe_features(total_steps: float, peak_lr: float, tokens_per_step: float) -> np.ndarray:
    """The recipe features (natural logs, in `RECIPE_FEATURES` order) of one run."""
    values = np.array([total_steps, peak_lr, tokens_per_step], dtype=float)
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise UserError(f"a recipe needs positive total steps, peak LR and tokens per step, got {values.tolist()}")
    return np.log(values)
