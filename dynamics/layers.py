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


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of `model` (a `*ForCausalLM` or its base model), in depth order."""
    model_type = getattr(model.config, "model_type", None)
    attr = DECODER_BLOCKS.get(model_type)
    blocks = getattr(model.base_model, attr, None) if attr else None
    if not isinstance(blocks, torch.nn.ModuleList):
        raise UserError(
            f"unsupported architecture {model_type!r}: supported model types are {', '.join(sorted(DECODER_BLOCKS))}; "
            "add its decoder-block attribute to DECODER_BLOCKS in dynamics/layers.py"
        )
    return blocks


def block_output(output) -> torch.Tensor:
    """The hidden state a block returns; older or custom blocks return a tuple whose first item it is."""
    return output[0] if isinstance(output, tuple) else output
