"""Load a checkpoint folder into a model on a device, in the dtype measurement asks for."""

from pathlib import Path

import torch

from fitting.errors import UserError, first_line

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` is CUDA when available, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but CUDA is not available here; use --device cpu or auto")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is float16 on CUDA (the paper's setting) and float32 on the CPU."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(folder: Path, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A `*ForCausalLM` from a local checkpoint folder, in eval mode, with its weights unmodified."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json; pass a transformers model folder or a hub repo id")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (KeyError, ValueError) as err:
        raise UserError(
            f"cannot load {folder} as a causal LM ({first_line(err)}); "
            "check that its config.json names a model type transformers supports"
        ) from None
    return model.to(device).eval()


def load_tokenizer(folder: Path):
    """The tokenizer saved beside a checkpoint."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(Path(folder))
    except (OSError, ValueError, TypeError) as err:
        raise UserError(
            f"cannot load a tokenizer from {folder} ({type(err).__name__}); save one beside the model"
        ) from None
