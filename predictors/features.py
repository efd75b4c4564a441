"""An architecture and the paper's Table 4 features of each of its layers.

Layer-index convention (the paper does not state one): the measurements and fits tables count decoder blocks
from 0 (`layer` 0 is the output of the first block); the features use l = layer + 1, so that l/L lies in (0, 1]
and sqrt(l/L) and l*L are those of a 1-based count. `log d` is the natural logarithm. The convention is saved
with every trained predictor (`FEATURE_CONVENTION`) and checked when one is loaded.
"""

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fitting.contracts import FIELD_MEANINGS, Architecture
from fitting.errors import UserError

FEATURES = ("l/L", "(l/L)^2", "(l/L)^3", "sqrt(l/L)", "H/d", "d_ff/d", "d/L", "H/L", "log d", "l*L")
FEATURE_CONVENTION = "l = layer + 1 with layer the 0-based decoder-block index; log d is the natural log"

# Config field names per quantity, across GPT-NeoX / LLaMA-family (first) and GPT-2 (second) configs.
CONFIG_FIELDS = {
    "n_layers": ("num_hidden_layers", "n_layer"),
    "d_model": ("hidden_size", "n_embd"),
    "n_heads": ("num_attention_heads", "n_head"),
    "d_ff": ("intermediate_size", "n_inner"),
}


def from_spec(layers: int, hidden: int, heads: int, ffn: int | None = None) -> Architecture:
    """An architecture from the command-line spec; the MLP width defaults to 4 * hidden."""
    return Architecture(layers, hidden, heads, 4 * hidden if ffn is None else ffn)


def from_config(config) -> Architecture:
    """An architecture from a transformers config object, a config dict, or the path of a config.json (or its folder).

    GPT-2's `n_inner: null` means 4 * n_embd, as in transformers.
    """
    if isinstance(config, (str, Path)):
        fields, where = _read_config_json(Path(config))
    elif isinstance(config, Mapping):
        fields, where = dict(config), "the config"
    elif hasattr(config, "to_dict"):
        fields, where = config.to_dict(), f"the {type(config).__name__}"
    else:
        raise UserError(
            f"cannot read an architecture from a {type(config).__name__}: pass a transformers config, a dict, "
            "or the path of a config.json"
        )
    values = {}
    for name, keys in CONFIG_FIELDS.items():
        key = next((k for k in keys if k in fields), None)
        if key is None:
            raise UserError(f"{where} has no {' or '.join(keys)}: add the {FIELD_MEANINGS[name]} to it")
        values[name] = fields[key]
    if values["d_ff"] is None:  # GPT-2 writes n_inner: null for the default width
        values["d_ff"] = 4 * values["d_model"]
    return Architecture(**values)


def _read_config_json(path: Path) -> tuple[dict, str]:
    """The fields of a config.json given as the file or its folder."""
    if path.is_dir():
        path = path / "config.json"
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no config file at {path}: pass the path of a model's config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}): pass a model's config.json") from None
    if not isinstance(fields, dict):
        raise UserError(f"{path} holds a JSON {type(fields).__name__}, not an object: pass a model's config.json")
    return fields, str(path)


def layer_features(arch: Architecture, layers=None) -> np.ndarray:
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
