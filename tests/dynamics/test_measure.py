import numpy as np
import pytest
import torch

from dynamics.layers import decoder_blocks
from dynamics.measure import measure
from fitting.errors import UserError
from tests.tiny import tiny_model

ARCHS = ["gpt_neox", "llama", "gpt2"]


def reference_stats(model, ids):
    """Independent computation: run each sequence alone, take every block output, sort |h| in float64."""
    blocks = decoder_blocks(model)
    captured = []
    handles = [
        b.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o)) for b in blocks
    ]
    rows = {}
    try:
        with torch.no_grad():
            for s in range(ids.shape[0]):
                captured.clear()
                model(ids[s : s + 1])
                for layer, h in enumerate(captured):
                    flat = h[0].double().abs().flatten().numpy()
                    order = np.sort(flat)[::-1]
                    median = np.sort(flat)[(flat.size - 1) // 2]  # torch.median: the lower middle value
                    arg = int(np.argmax(flat))
                    rows[(s, layer)] = (order[0], order[1], order[2], median, arg // h.shape[-1], arg % h.shape[-1])
    finally:
        for handle in handles:
            handle.remove()
    return rows


@pytest.mark.parametrize("arch", ARCHS)
def test_values_equal_independent_computation(arch):
    model = tiny_model(arch)
    ids = torch.randint(0, 96, (4, 24), generator=torch.Generator().manual_seed(1))
    df = measure(model, ids, batch_size=1)
    ref = reference_stats(model, ids)
    assert df.height == 4 * 3
    for row in df.iter_rows(named=True):
        top1, top2, top3, median, pos, dim = ref[(row["seq"], row["layer"])]
        np.testing.assert_allclose(
            [row["top1"], row["top2"], row["top3"], row["median"]], [top1, top2, top3, median], rtol=1e-6
        )
        assert (row["top1_pos"], row["top1_dim"]) == (pos, dim)
        assert row["n_nonfinite"] == 0


def test_neox_last_block_is_not_the_final_layernorm_output():
    """hidden_states[-1] of GPT-NeoX is after final_layer_norm; the measurement must see the raw block output."""
    model = tiny_model("gpt_neox")
    ids = torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    df = measure(model, ids)
    last = df.filter(df["layer"] == 2)["top1"][0]
    assert last != pytest.approx(hs[-1].abs().max().item(), rel=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_size_precision_and_repeat_agree(arch):
    model = tiny_model(arch, seed=3)
    ids = torch.randint(0, 96, (5, 20), generator=torch.Generator().manual_seed(4))
    base = measure(model, ids, batch_size=1)
    cols = ["top1", "top2", "top3", "median"]
    for other in (
        measure(model, ids, batch_size=5),
        measure(model, ids, batch_size=2, reduce_dtype="float64"),
        measure(model, ids),
    ):
        np.testing.assert_allclose(other.select(cols).to_numpy(), base.select(cols).to_numpy(), rtol=1e-5)
        assert other["top1_dim"].to_list() == base["top1_dim"].to_list()


def test_hooks_removed_even_when_forward_fails():
    model = tiny_model("gpt_neox")
    blocks = decoder_blocks(model)
    with pytest.raises(IndexError):
        measure(model, torch.full((1, 8), 10_000))  # token id beyond the vocabulary
    assert all(len(b._forward_hooks) == 0 for b in blocks)


def test_non_finite_values_are_counted_not_dropped():
    model = tiny_model("gpt_neox")
    with torch.no_grad():
        model.gpt_neox.layers[1].mlp.dense_4h_to_h.bias[3] = float("inf")
    df = measure(model, torch.randint(0, 96, (2, 8)))
    flagged = df.filter(df["layer"] >= 1)
    assert (flagged["n_nonfinite"] > 0).all()
    assert df.filter(df["layer"] == 0)["n_nonfinite"].sum() == 0


def test_unsupported_architecture_names_its_model_type():
    from transformers import AutoModelForCausalLM, OPTConfig

    model = AutoModelForCausalLM.from_config(
        OPTConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    )
    with pytest.raises(UserError, match="'opt'.*dynamics/layers.py"):
        decoder_blocks(model)


def test_cpu_and_device_reduction_paths_agree():
    """The numpy path serves the CPU; the torch path serves CUDA. Both must give the same statistics."""
    from dynamics.measure import _reduce_numpy, _reduce_torch

    a = torch.randn(4, 4000, dtype=torch.float64).abs()
    a[1, 17] = float("inf")
    a[2, :5] = 7.0  # ties at the top
    a[3, 2001] = float("nan")
    numpy_path, torch_path = _reduce_numpy(a.clone(), 40), _reduce_torch(a, 40)  # the numpy path reorders its input
    np.testing.assert_array_equal(numpy_path[:3, [0, 1, 2, 3, 6]], torch_path[:3, [0, 1, 2, 3, 6]])
    np.testing.assert_array_equal(numpy_path[[0, 1], 4:6], torch_path[[0, 1], 4:6])
    assert numpy_path[1, 4:].tolist() == [0, 17, 1]  # position 0, dimension 17, one non-finite entry
    assert numpy_path[3, 6] == 1 and torch_path[3, 6] == 1


def test_bos_probes_start_with_bos_and_change_the_probe_id():
    from dynamics.probes import embedded_probes
    from dynamics.tokenizer import train_bpe

    tok = train_bpe(["the quick brown fox jumps over the lazy dog. " * 30], vocab_size=280)
    plain, bos = embedded_probes(tok, 3, 16), embedded_probes(tok, 3, 16, bos=True)
    assert bos.token_ids.shape == plain.token_ids.shape == (3, 16)
    assert (bos.token_ids[:, 0] == tok.bos_token_id).all() and (plain.token_ids[:, 0] != tok.bos_token_id).all()
    # The text after BOS is the same stream, cut into chunks one token shorter.
    np.testing.assert_array_equal(bos.token_ids[0, 1:], plain.token_ids[0, :15])
    assert bos.probe_id != plain.probe_id and bos.source.endswith("+bos")


def test_the_default_batch_takes_every_sequence_that_fits():
    from dynamics.measure import CPU_BATCH_BYTES, auto_batch_size
    from tests.tiny import tiny_model

    model = tiny_model("gpt_neox")
    assert auto_batch_size(model, n_seq=10, seq_len=64) == 10
    # Per sequence: seq x (8 d + 2 d_ff + 2 heads seq) float32 entries; a budget's worth of them makes one batch.
    per_seq = 2048 * (8 * 32 + 2 * 128 + 2 * 4 * 2048) * 4
    assert auto_batch_size(model, n_seq=1000, seq_len=2048) == CPU_BATCH_BYTES // per_seq
    assert auto_batch_size(model, n_seq=3, seq_len=2**20) == 1  # never less than one
