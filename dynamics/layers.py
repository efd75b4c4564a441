"""Locate the decoder blocks of a transformers causal LM, whose outputs are the residual stream h_l."""

import torch

from fitting.errors import UserError

# model_type -> name of the decoder-block list on the base model (`model.base_model`).
# To support another architecture, add its config `model_type` here.
DECODER_BLOCKS: dict[str, str] = {
    "gpt_neox": "layers",
    "llama": "layers",
    "mistral": "layers",
    "mixtral": "layers",
    "qwen2": "layers",
    "qwen3": "layers",
    "olmo": "layers",
    "olmo2": "layers",
    "gemma": "layers",
    "gemma2": "layers",
    "phi3": "layers",
    "gpt2": "h",
}


def check_model_type(config) -> str:
    """The config's model type when measurement supports it; UserError naming the supported ones otherwise."""
    model_type = getattr(config, "model_type", None)
    if model_type not in DECODER_BLOCKS:
        raise UserError(
            f"unsupported architecture {model_type!r}: supported model types are {', '.join(sorted(DECODER_BLOCKS))}; "
            "add its decoder-block attribute to DECODER_BLOCKS in dynamics/layers.py"
        )
    return model_type


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of `model` (a `*ForCausalLM` or its base model), in depth order."""
    blocks = getattr(model.base_model, DECODER_BLOCKS[check_model_type(model.config)], None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise UserError(
            f"{type(model).__name__} has no decoder-block list where DECODER_BLOCKS in "
            "dynamics/layers.py says; fix its entry there"
        )
    return blocks


def block_output(output) -> torch.Tensor:
    """The hidden state a block returns; older or custom blocks return a tuple whose first item it is."""
    return output[0] if isinstance(output, tuple) else output
