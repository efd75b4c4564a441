"""Per-layer peak activations of the residual stream (paper Eqs. 4-7), reduced on the model's device.

A forward hook on every decoder block reduces that block's output as soon as it exists: |h| over all
seq_len * d_model entries of each sequence gives top-1/2/3, the median (torch.median: the lower middle value)
and the position/dimension of the top-1. Only those scalars are kept, so at most one block's hidden state is
alive beyond what the forward pass itself holds. `measure_sites` reduces the same way, in the same forward pass,
the sublayer sites of docs/science.md §10 (`dynamics.sublayers`) and reads the attention sink (`dynamics.sinks`).
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import polars as pl
import torch

from dynamics.layers import block_output, decoder_blocks
from dynamics.sinks import reading_sinks, sink_stats
from dynamics.sublayers import check_sites, sublayer_modules
from fitting.contracts import SITE_SCHEMA, SITES, STATS
from fitting.errors import UserError

REDUCE_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Activations a batch may take: on the CPU a fixed budget; on a GPU this share of the free memory.
CPU_BATCH_BYTES = 1 << 30
GPU_BATCH_SHARE = 0.5


def auto_batch_size(model: torch.nn.Module, n_seq: int, seq_len: int) -> int:
    """How many probe sequences one forward pass takes: all of them when their activations fit the budget.

    A block's forward holds a few hidden states (seq x d), its MLP's (seq x d_ff) and one layer's attention
    scores (heads x seq x seq) per sequence; results do not depend on the batch size, only speed and memory do.
    """
    config = model.config
    d: int = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1
    d_ff: int = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    heads: int = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1
    parameter = next(model.parameters())
    per_seq = seq_len * (8 * d + 2 * d_ff + 2 * heads * seq_len) * max(parameter.element_size(), 4)
    if parameter.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(parameter.device)
        budget = GPU_BATCH_SHARE * free
    else:
        budget = CPU_BATCH_BYTES
    return int(max(1, min(n_seq, budget // per_seq)))


INDEX_COLUMNS = ("top1_pos", "top1_dim", "n_nonfinite")
# What `measure_sites` returns: the sites table's columns that a forward pass determines (no provenance).
ROW_SCHEMA = {c: SITE_SCHEMA[c] for c in ("seq", "layer", "site", *STATS, *INDEX_COLUMNS, "sink_mass", "sink_rate")}
# What `measure` returns: the residual rows without the site columns.
MEASURE_COLUMNS = tuple(c for c in ROW_SCHEMA if c not in ("site", "sink_mass", "sink_rate"))


@torch.no_grad()
def reduce_block(h: torch.Tensor, reduce_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Statistics of |h| per sequence: h (batch, seq, d) -> float64 (batch, 7) on h's device.

    Columns: top1, top2, top3, median (lower middle value, as torch.median), top1 position, top1 dimension,
    number of non-finite entries.
    """
    # abs allocates, so `a` is a copy of its own that the numpy path may reorder.
    a = h.detach().to(reduce_dtype).abs().reshape(h.shape[0], -1)
    return _reduce_numpy(a, h.shape[-1]) if a.device.type == "cpu" else _reduce_torch(a, h.shape[-1])


def _reduce_torch(a: torch.Tensor, d: int) -> torch.Tensor:
    """(batch, seq * d) -> (batch, 7); the device path."""
    top, idx = torch.topk(a, 3, dim=1)
    median = a.median(dim=1).values
    nonfinite = (~torch.isfinite(a)).sum(dim=1)
    first = idx[:, 0]
    columns = (top[:, 0], top[:, 1], top[:, 2], median, first // d, first % d, nonfinite)
    # float64 keeps indices and counts exact (float32 is exact only below 2**24).
    return torch.stack([c.to(torch.float64) for c in columns], dim=1)


def _reduce_numpy(a: torch.Tensor, d: int) -> torch.Tensor:
    """The CPU path of `_reduce_torch`; it reorders `a`: introselect in place is ~9x faster than torch.median."""
    rows = []
    for x in a.numpy():
        n = x.size
        k = (n - 1) // 2
        # argmax finds the first NaN, or an inf, when there is one: a finite maximum proves every entry finite.
        first = int(x.argmax())
        nonfinite = 0 if np.isfinite(x[first]) else int((~np.isfinite(x)).sum())
        if nonfinite:
            first = int(np.nanargmax(x)) if nonfinite < n else 0
        x.partition(k)
        # The top three lie above the median: a second, half-size selection finds them.
        upper = x[k + 1 :]
        if upper.size > 3:
            upper.partition(upper.size - 3)
        top = np.sort(upper[-3:])[::-1]
        top = np.pad(top, (0, 3 - top.size), constant_values=np.nan)
        rows.append([*top, x[k], first // d, first % d, nonfinite])
    return torch.tensor(rows, dtype=torch.float64)


@torch.no_grad()
def measure(model: torch.nn.Module, token_ids, *, batch_size: int = 1, reduce_dtype: str = "float32") -> pl.DataFrame:
    """One row per (seq, layer) of statistics of |h_l| for every probe sequence; token_ids is (n_seq, seq_len).

    Columns: seq, layer (0-based block index), top1, top2, top3, median, top1_pos, top1_dim, n_nonfinite.
    The LM head is skipped: the base model's forward is enough to produce every block output.
    """
    rows = measure_sites(model, token_ids, ("residual",), batch_size=batch_size, reduce_dtype=reduce_dtype)
    return rows.select(MEASURE_COLUMNS)


@torch.no_grad()
def measure_sites(
    model: torch.nn.Module, token_ids, sites, *, batch_size: int = 1, reduce_dtype: str = "float32"
) -> pl.DataFrame:
    """One row per (site, seq, layer) for every site in `sites` (fitting.contracts.SITES), in one forward pass.

    Columns: seq, layer, site, then for residual, attn, mlp and mlp_in the statistics of `measure` over that
    site's (seq_len, width) values (width d_ff for mlp_in, so top1_dim is the super-weight's input channel), and
    for sink the sink mass and sink rate (docs/science.md §10.1) with n_nonfinite counting non-finite heads.
    Rows are ordered by site (SITES order), layer, seq. A UserError before the forward pass when the architecture
    cannot be read at a site (`dynamics.sublayers.check_sites`).
    """
    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    ids = torch.as_tensor(np.asarray(token_ids), dtype=torch.long)
    check_sites(model.config, sites, ids.shape[1])
    found: dict[str, list[list[torch.Tensor]]] = {site: [[] for _ in blocks] for site in SITES if site in sites}
    was_training = model.training
    model.eval()
    try:
        with _site_hooks(model, blocks, found, REDUCE_DTYPES[reduce_dtype]):
            for start in range(0, ids.shape[0], batch_size):
                model.base_model(input_ids=ids[start : start + batch_size].to(device), use_cache=False)
    finally:
        model.train(was_training)
    n_batches = -(-ids.shape[0] // batch_size)
    for site, per_layer in found.items():
        for layer, chunks in enumerate(per_layer):
            if len(chunks) != n_batches:
                raise UserError(
                    f"the {site} site of layer {layer} of {type(model).__name__} was read {len(chunks)} times in "
                    f"{n_batches} forward passes ({model.config._attn_implementation} attention); measure without it"
                )
    return pl.concat([_site_rows(site, per_layer) for site, per_layer in found.items()])


def _site_rows(site: str, per_layer: list[list[torch.Tensor]]) -> pl.DataFrame:
    """The rows of one site from its per-layer, per-batch statistics."""
    # (layers, n_seq, columns), moved off the device in one transfer.
    stats = torch.stack([torch.cat(chunks) for chunks in per_layer]).cpu().numpy()
    n_layers, n_seq, _ = stats.shape
    names = ("sink_mass", "sink_rate", "n_nonfinite") if site == "sink" else (*STATS, *INDEX_COLUMNS)
    rows = pl.DataFrame(
        {
            "seq": np.tile(np.arange(n_seq, dtype=np.int32), n_layers),
            "layer": np.repeat(np.arange(n_layers, dtype=np.int32), n_seq),
            **{name: stats[:, :, j].ravel() for j, name in enumerate(names)},
        }
    )
    absent = [pl.lit(None).alias(name) for name in ROW_SCHEMA if name not in rows.columns and name != "site"]
    rows = rows.with_columns(pl.lit(site).alias("site"), *absent)
    return rows.select(pl.col(name).cast(dtype) for name, dtype in ROW_SCHEMA.items())


@contextmanager
def _site_hooks(
    model: torch.nn.Module, blocks: torch.nn.ModuleList, found: dict[str, list[list[torch.Tensor]]], dtype
) -> Iterator[None]:
    """Hooks that append each site's per-batch statistics to found[site][layer]; always removed again."""

    def output_of(site, layer):
        return lambda _m, _in, out: found[site][layer].append(reduce_block(block_output(out), dtype))

    def input_of(site, layer):
        return lambda _m, args: found[site][layer].append(reduce_block(args[0], dtype))

    parts = sublayer_modules(model, blocks) if set(found) - {"residual"} else []
    with ExitStack() as stack:
        for layer, block in enumerate(blocks):
            if "residual" in found:
                stack.callback(block.register_forward_hook(output_of("residual", layer)).remove)
            for site in ("attn", "mlp"):
                if site in found:
                    stack.callback(parts[layer][site].register_forward_hook(output_of(site, layer)).remove)
            if "mlp_in" in found:
                stack.callback(parts[layer]["mlp_out"].register_forward_pre_hook(input_of("mlp_in", layer)).remove)
        if "sink" in found:
            stack.enter_context(
                reading_sinks(
                    [part["attention"] for part in parts],
                    model.config._attn_implementation,
                    lambda layer, share: found["sink"][layer].append(sink_stats(share)),
                    dtype,
                )
            )
        yield
