"""Attention to position 0 (attention sinks, Gu et al. 2024; docs/science.md §10.1), read one layer at a time.

For head h of a layer, alpha_0(h) is the attention probability A[i, 0] averaged over the query positions i that can
see position 0. The sink mass of a layer is alpha_0 averaged over its heads; the sink rate the fraction of heads with
alpha_0 > SINK_EPS. The attention to position 0 is recomputed from the query and key that each attention module
hands to transformers' attention function (after rotary embeddings and any q/k norms), while the model's own
attention runs unchanged; a model loaded with eager attention returns its probabilities itself.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from fitting.errors import UserError

SINK_EPS = 0.3  # Gu et al.'s threshold on alpha_0


@torch.no_grad()
def first_key_share(
    query: torch.Tensor,
    key: torch.Tensor,
    scaling: float,
    mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """alpha_0 per (sequence, head): query (b, H, s, d), key (b, H_kv, s, d), H a multiple of H_kv -> (b, H).

    `mask` is None for causal attention, else a boolean (b or 1, 1 or H, s, s) tensor, True where a query may attend.
    """
    batch, heads, seq, width = query.shape
    key = key.to(dtype).repeat_interleave(heads // key.shape[1], dim=1)
    # Attention over a value that is 1 at position 0 and 0 elsewhere returns A[:, :, i, 0] itself. Its width matches
    # q's so that torch takes its fused kernel, which never materialises the (s, s) probabilities.
    value = torch.zeros(1, 1, seq, width, dtype=dtype, device=query.device)
    value[..., 0, :] = 1
    share = F.scaled_dot_product_attention(
        query.to(dtype),
        key,
        value.expand(batch, heads, seq, width),
        attn_mask=mask,
        is_causal=mask is None,
        scale=scaling,
    )[..., 0]
    if mask is None:  # causal: every query sees position 0
        return share.mean(dim=-1)
    visible = mask[..., 0]
    return torch.where(visible, share, 0.0).sum(dim=-1) / visible.sum(dim=-1)


def sink_stats(share: torch.Tensor) -> torch.Tensor:
    """alpha_0 (b, H) -> float64 (b, 3): sink mass, sink rate, number of non-finite alpha_0."""
    share = share.to(torch.float64)
    columns = (share.mean(dim=1), (share > SINK_EPS).to(torch.float64).mean(dim=1), (~share.isfinite()).sum(dim=1))
    return torch.stack([c.to(torch.float64) for c in columns], dim=1)


@contextmanager
def reading_sinks(
    attentions: list[torch.nn.Module],
    implementation: str,
    record: Callable[[int, torch.Tensor], None],
    dtype: torch.dtype = torch.float32,
) -> Iterator[None]:
    """While open, every forward of `attentions[i]` calls `record(i, alpha_0)` with alpha_0 (b, H) of that layer.

    `implementation` is the model's attention implementation (config._attn_implementation). Other than eager, its
    entry in transformers' attention registry is wrapped for the duration, so that other models in the process run
    through it unchanged.
    """
    if implementation == "eager":
        with _reading_weights(attentions, record, dtype):
            yield
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    original = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, None)
    layer_of = {module: i for i, module in enumerate(attentions)}

    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        layer = layer_of.get(module)
        if layer is not None:
            if attention_mask is not None and attention_mask.dtype != torch.bool:
                raise UserError(
                    f"cannot read the attention sink through a {attention_mask.dtype} attention mask "
                    f"({implementation} attention); load the model with attn_implementation='sdpa' or 'eager'"
                )
            scaling = kwargs.get("scaling")
            scale = query.shape[-1] ** -0.5 if scaling is None else scaling
            record(layer, first_key_share(query, key, scale, attention_mask, dtype))
        return original(module, query, key, value, attention_mask, *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS[implementation] = attention
    try:
        yield
    finally:
        del ALL_ATTENTION_FUNCTIONS[implementation]
        if ALL_ATTENTION_FUNCTIONS.get(implementation) is not original:  # it was a local override itself
            ALL_ATTENTION_FUNCTIONS[implementation] = original


@contextmanager
def _reading_weights(attentions, record, dtype) -> Iterator[None]:
    """The eager path: each attention module returns its probabilities (b, H, s, s) as its second output."""

    def hook(layer):
        def read(module, _args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, torch.Tensor):
                raise UserError(
                    f"{type(module).__name__} returned no attention probabilities under eager attention; load the "
                    "model with attn_implementation='sdpa'"
                )
            record(layer, weights[..., 0].to(dtype).mean(dim=-1))

        return read

    handles = [module.register_forward_hook(hook(i)) for i, module in enumerate(attentions)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
