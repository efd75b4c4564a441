"""Where the sublayer sites of a decoder block are read, by model type (docs/science.md §10).

Beside the block output (the residual stream, `dynamics.layers`), a block has an attention and an MLP sublayer, each
adding its output to the residual (in GPT-NeoX's parallel residual both at once), and the MLP has an output
projection whose input carries the super-weight channel (Yu et al. 2024). The attention probabilities paid to
position 0 (the sink) are recomputed from the attention's own query and key (`dynamics.sinks`).
"""

from dataclasses import dataclass, replace

import torch

from dynamics.layers import check_model_type
from fitting.contracts import SITES
from fitting.errors import UserError


@dataclass(frozen=True)
class Sublayers:
    """Dotted module paths inside one decoder block.

    `attn` and `mlp` name the modules whose outputs are what the block adds to its residual stream; `attention`
    the module that calls the attention function with its query and key (the `attn` module itself unless a norm
    follows it); `mlp_out` the MLP's output projection, None for a mixture of experts, which has one per expert.
    `sink` is False where the attention is not a plain softmax of q k^T (logit soft-capping), so that the
    probabilities cannot be recomputed from q and k.
    """

    attn: str
    mlp: str
    mlp_out: str | None
    attention: str = ""
    sink: bool = True

    def attention_path(self) -> str:
        return self.attention or self.attn


_LLAMA = Sublayers("self_attn", "mlp", "mlp.down_proj")
# OLMo-2 and Gemma 2 normalise each sublayer's output before adding it to the residual stream.
_POST_NORM = Sublayers("post_attention_layernorm", "post_feedforward_layernorm", "mlp.down_proj", "self_attn")

# model_type -> sublayer paths. To support another architecture, add its config `model_type` here (it must be in
# DECODER_BLOCKS too).
SUBLAYERS: dict[str, Sublayers] = {
    "gpt_neox": Sublayers("attention", "mlp", "mlp.dense_4h_to_h"),
    "gpt2": Sublayers("attn", "mlp", "mlp.c_proj"),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "olmo": _LLAMA,
    "gemma": _LLAMA,
    "phi3": _LLAMA,
    "olmo2": _POST_NORM,
    # Gemma 2 soft-caps its attention logits.
    "gemma2": replace(_POST_NORM, sink=False),
    "mixtral": Sublayers("self_attn", "mlp", None),
}


def parse_sites(text: str) -> tuple[str, ...]:
    """`residual,attn,...` or `all` as a tuple of sites in SITES order; a UserError naming an unknown one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return SITES
    check_site_names(names)
    return tuple(site for site in SITES if site in names)


def check_site_names(sites) -> None:
    """A UserError unless `sites` is a non-empty collection of names from SITES."""
    unknown = [site for site in sites if site not in SITES]
    if unknown or not sites:
        what = f"unknown site {unknown[0]!r}" if unknown else "no site given"
        raise UserError(f"{what} in --sites; use a comma-separated list of {', '.join(SITES)}, or all")


def check_sites(config, sites, seq_len: int | None = None) -> None:
    """A UserError, before anything is measured, when this architecture cannot be read at one of `sites`.

    The sink rate averages over the queries that see position 0, which a sliding attention window shorter than the
    sequence hides from later queries; such a window is refused rather than measured differently.
    """
    check_site_names(sites)
    model_type = check_model_type(config)
    if set(sites) <= {"residual"}:
        return
    paths = SUBLAYERS.get(model_type)
    if paths is None:
        raise UserError(
            f"--sites {','.join(s for s in sites if s != 'residual')} cannot be read from {model_type!r} models "
            f"(sublayer sites are known for {', '.join(sorted(SUBLAYERS))}); measure residual only, or add its "
            "sublayers to SUBLAYERS in dynamics/sublayers.py"
        )
    if "mlp_in" in sites and paths.mlp_out is None:
        raise UserError(
            f"--sites mlp_in cannot be read from {model_type!r} models: their MLP is a mixture of experts with one "
            "output projection per expert; leave mlp_in out"
        )
    if "sink" in sites and not paths.sink:
        raise UserError(
            f"--sites sink cannot be read from {model_type!r} models: their attention is not a plain softmax of "
            "q k^T (soft-capped logits), so its probabilities cannot be recomputed; leave sink out"
        )
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or ["sliding_attention"])
    if "sink" in sites and window and sliding and seq_len is not None and window < seq_len:
        raise UserError(
            f"--sites sink cannot be read from this {model_type!r} model: its sliding attention window of {window} "
            f"tokens hides position 0 from later queries of a {seq_len}-token sequence; pass --seq-len {window} or "
            "leave sink out"
        )


def sublayer_modules(model: torch.nn.Module, blocks: torch.nn.ModuleList) -> list[dict[str, torch.nn.Module]]:
    """Per block: the modules read for each site ("attn", "mlp", "mlp_out", "attention"), as `SUBLAYERS` names them."""
    paths = SUBLAYERS[check_model_type(model.config)]
    named = {"attn": paths.attn, "mlp": paths.mlp, "mlp_out": paths.mlp_out, "attention": paths.attention_path()}
    try:
        return [{site: block.get_submodule(path) for site, path in named.items() if path} for block in blocks]
    except AttributeError:
        raise UserError(
            f"{type(model).__name__} lacks a sublayer where SUBLAYERS in dynamics/sublayers.py says; fix its entry"
        ) from None
