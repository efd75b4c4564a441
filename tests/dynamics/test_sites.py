"""Sublayer sites and the attention sink (docs/science.md §10): oracle values, batching, memory, the sites table
through sweep, fit, status and the report, and one-line errors for bad input."""

import base64
import copy
import dataclasses
import json
import re
import weakref

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from dynamics import store
from dynamics.layers import decoder_blocks
from dynamics.measure import measure, measure_sites
from dynamics.sublayers import SUBLAYERS, sublayer_modules
from fitting.contracts import SITES
from fitting.errors import UserError
from tests.cli import run_main
from tests.tiny import tiny_model

ARCHS = ["gpt_neox", "llama", "gpt2"]
EPS = 0.3
# Written out here, apart from dynamics/sublayers.py: the attention and MLP modules whose outputs each block adds to
# its residual stream, and the MLP's output projection.
MODULES = {
    "gpt_neox": ("attention", "mlp", "mlp.dense_4h_to_h"),
    "llama": ("self_attn", "mlp", "mlp.down_proj"),
    "gpt2": ("attn", "mlp", "mlp.c_proj"),
}
# Random weights attend almost uniformly (alpha_0 ~ H_s / s); larger q and k spread alpha_0 over heads, so that the
# sink rate is neither all 0 nor all 1.
QK_PARAMETERS = ("query_key_value", "q_proj", "k_proj", "c_attn")


def sharpened(model, factor=4.0):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if any(part in name for part in QK_PARAMETERS) and name.endswith("weight"):
                parameter.mul_(factor)
    return model


def eager_copy(model):
    from transformers import AutoModelForCausalLM

    # A copy of the config: from_config would switch the original model to eager attention too.
    eager = AutoModelForCausalLM.from_config(copy.deepcopy(model.config), attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    return eager.eval()


def plain_stats(x: torch.Tensor) -> tuple:
    """top1, top2, top3, median (the lower middle), position and channel of the top-1 of |x| (seq, width)."""
    flat = x.double().abs().flatten().numpy()
    order = np.sort(flat)
    arg = int(np.argmax(flat))
    return (order[-1], order[-2], order[-3], order[(flat.size - 1) // 2], arg // x.shape[-1], arg % x.shape[-1])


def captured(model, ids, modules):
    """Per sequence, every block's input and output and the full tensors at `modules` (attn, mlp, projection)."""
    attn_path, mlp_path, projection_path = modules
    seen = {}
    handles = []
    for layer, block in enumerate(decoder_blocks(model)):

        def keep(name, layer=layer):
            return lambda _m, args, out: seen.__setitem__((name, layer), out[0] if isinstance(out, tuple) else out)

        handles.append(
            block.register_forward_pre_hook(lambda _m, args, layer=layer: seen.__setitem__(("in", layer), args[0]))
        )
        handles.append(block.register_forward_hook(keep("residual")))
        handles.append(block.get_submodule(attn_path).register_forward_hook(keep("attn")))
        handles.append(block.get_submodule(mlp_path).register_forward_hook(keep("mlp")))
        handles.append(
            block.get_submodule(projection_path).register_forward_pre_hook(
                lambda _m, args, layer=layer: seen.__setitem__(("mlp_in", layer), args[0])
            )
        )
    per_seq = []
    try:
        with torch.no_grad():
            for s in range(ids.shape[0]):
                seen.clear()
                model(ids[s : s + 1])
                per_seq.append(dict(seen))
    finally:
        for handle in handles:
            handle.remove()
    return per_seq


def eager_shares(model, ids) -> np.ndarray:
    """alpha_0 (seq, layer, head) from the eager model's own attention probabilities."""
    with torch.no_grad():
        attentions = eager_copy(model).base_model(ids, output_attentions=True).attentions
    return torch.stack([a[..., 0].double().mean(dim=-1) for a in attentions], dim=1).numpy()


def by_key(rows: pl.DataFrame) -> dict:
    return {(r["site"], r["seq"], r["layer"]): r for r in rows.iter_rows(named=True)}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_site_equals_an_independent_computation(arch):
    model = sharpened(tiny_model(arch))
    ids = torch.randint(0, 96, (4, 10), generator=torch.Generator().manual_seed(3))
    rows = measure_sites(model, ids, SITES)
    assert rows.height == len(SITES) * 4 * 3
    got = by_key(rows)
    for s, seen in enumerate(captured(model, ids, MODULES[arch])):
        for layer in range(3):
            # The attn and mlp sites are what the block adds to its residual stream.
            torch.testing.assert_close(
                seen[("residual", layer)], seen[("in", layer)] + seen[("attn", layer)] + seen[("mlp", layer)]
            )
            for site in ("residual", "attn", "mlp", "mlp_in"):
                row = got[(site, s, layer)]
                top1, top2, top3, median, pos, dim = plain_stats(seen[(site, layer)][0])
                np.testing.assert_allclose(
                    [row["top1"], row["top2"], row["top3"], row["median"]], [top1, top2, top3, median], rtol=1e-6
                )
                assert (row["top1_pos"], row["top1_dim"], row["n_nonfinite"]) == (pos, dim, 0)
                assert row["sink_mass"] is None and row["sink_rate"] is None
    shares = eager_shares(model, ids)
    assert np.abs(shares - EPS).min() > 1e-4  # no head so close to the threshold that rounding could flip it
    rates = []
    for s in range(4):
        for layer in range(3):
            row = got[("sink", s, layer)]
            np.testing.assert_allclose(row["sink_mass"], shares[s, layer].mean(), rtol=1e-5)
            assert row["sink_rate"] == (shares[s, layer] > EPS).mean()
            assert row["top1"] is None and row["n_nonfinite"] == 0
            rates.append(row["sink_rate"])
    assert 0 < np.mean(rates) < 1
    # The residual rows are exactly what `measure` returns.
    residual = rows.filter(pl.col("site") == "residual").drop("site", "sink_mass", "sink_rate")
    assert residual.equals(measure(model, ids))


@pytest.mark.parametrize("arch", ARCHS)
def test_an_eager_model_reads_the_same_sink(arch):
    model = sharpened(tiny_model(arch))
    ids = torch.randint(0, 96, (3, 12), generator=torch.Generator().manual_seed(4))
    sdpa = measure_sites(model, ids, ("sink",))
    eager = measure_sites(eager_copy(model), ids, ("sink",))
    np.testing.assert_allclose(eager["sink_mass"].to_numpy(), sdpa["sink_mass"].to_numpy(), rtol=1e-5)
    assert eager["sink_rate"].to_list() == sdpa["sink_rate"].to_list()


def family_model(model_type: str):
    """A tiny random model of one more architecture of SUBLAYERS."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        head_dim=8,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return AutoModelForCausalLM.from_config(config).eval()


OTHERS = sorted(set(SUBLAYERS) - set(ARCHS))


@pytest.mark.parametrize("model_type", OTHERS)
def test_the_table_names_what_each_block_adds_to_its_residual_stream(model_type):
    model = family_model(model_type)
    ids = torch.randint(3, 96, (2, 10), generator=torch.Generator().manual_seed(5))
    parts = sublayer_modules(model, decoder_blocks(model))
    paths = SUBLAYERS[model_type]
    seen = captured(model, ids, (paths.attn, paths.mlp, paths.mlp_out or paths.mlp))
    for per_seq in seen:
        for layer in range(len(parts)):
            torch.testing.assert_close(
                per_seq[("residual", layer)],
                per_seq[("in", layer)] + per_seq[("attn", layer)] + per_seq[("mlp", layer)],
            )
    sites = tuple(s for s in SITES if (s != "mlp_in" or paths.mlp_out) and (s != "sink" or paths.sink))
    rows = by_key(measure_sites(model, ids, sites))
    for s, per_seq in enumerate(seen):
        for layer in range(len(parts)):
            assert rows[("attn", s, layer)]["top1"] == pytest.approx(plain_stats(per_seq[("attn", layer)][0])[0])
    if paths.sink:
        shares = eager_shares(model, ids)
        for s in range(2):
            for layer in range(len(parts)):
                assert rows[("sink", s, layer)]["sink_mass"] == pytest.approx(shares[s, layer].mean(), rel=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_size_does_not_change_results(arch):
    model = sharpened(tiny_model(arch))
    ids = torch.randint(0, 96, (5, 16), generator=torch.Generator().manual_seed(6))
    one = measure_sites(model, ids, SITES, batch_size=1)
    three = measure_sites(model, ids, SITES, batch_size=3)
    for column in ("seq", "layer", "site", "top1_pos", "top1_dim", "n_nonfinite", "sink_rate"):
        assert one[column].to_list() == three[column].to_list(), column
    for column in ("top1", "top2", "top3", "median", "sink_mass"):
        np.testing.assert_allclose(three[column].to_numpy(), one[column].to_numpy(), rtol=1e-5)


class LiveBytes(TorchDispatchMode):
    """The largest number of bytes that tensors allocated by aten ops hold at once while the mode is on.

    Storages that existed before (the weights) are not counted, also not through the views ops take of them.
    """

    def __init__(self, existing):
        super().__init__()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}
        self.refs: dict[int, list[int]] = {}  # storage address -> [tensors alive on it, its bytes]
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return out

    def _track(self, tensor):
        address = tensor.untyped_storage().data_ptr()
        if address == 0 or address in self.existing:
            return
        entry = self.refs.setdefault(address, [0, tensor.untyped_storage().nbytes()])
        if entry[0] == 0:
            self.live += entry[1]
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        weakref.finalize(tensor, self._release, address)

    def _release(self, address):
        entry = self.refs[address]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.refs[address]


def peak_bytes(model, run) -> int:
    with torch.no_grad(), LiveBytes([*model.parameters(), *model.buffers()]) as tracker:
        run()
    return tracker.peak


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_memory_stays_within_one_layers_attention(attention):
    model = tiny_model("gpt_neox")
    model = eager_copy(model) if attention == "eager" else model
    batch, seq = 4, 128
    ids = torch.randint(0, 96, (batch, seq), generator=torch.Generator().manual_seed(7))
    one_layer = batch * model.config.num_attention_heads * seq * seq * 4  # float32 probabilities of one layer
    n_layers = model.config.num_hidden_layers
    bare = peak_bytes(model, lambda: model.base_model(input_ids=ids, use_cache=False))
    sites = peak_bytes(model, lambda: measure_sites(model, ids, SITES, batch_size=batch))
    assert sites - bare <= one_layer < n_layers * one_layer
    if attention == "eager":  # the tracker does see attention probabilities where the model makes them
        assert bare >= one_layer


def test_the_attention_registry_is_restored_also_after_a_failure():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    before = ALL_ATTENTION_FUNCTIONS["sdpa"]
    model = tiny_model("llama")
    with pytest.raises(IndexError):
        measure_sites(model, torch.full((1, 8), 500), ("sink",))  # token ids beyond the vocabulary
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is before
    measure_sites(model, torch.zeros((1, 8), dtype=torch.long), ("sink",))
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is before


@pytest.mark.parametrize(
    "model_type, sites, message",
    [
        ("gemma2", ("sink",), "--sites sink cannot be read from 'gemma2'"),
        ("mixtral", ("mlp_in",), "--sites mlp_in cannot be read from 'mixtral'"),
    ],
)
def test_unreadable_sites_are_refused_before_the_forward_pass(model_type, sites, message):
    with pytest.raises(UserError, match=re.escape(message)):
        measure_sites(family_model(model_type), torch.zeros((1, 8), dtype=torch.long), sites)


def test_a_sliding_window_shorter_than_the_sequence_is_refused():
    model = family_model("mistral")
    model.config.sliding_window = 6
    with pytest.raises(UserError, match="sliding attention window of 6"):
        measure_sites(model, torch.zeros((1, 8), dtype=torch.long), ("sink",))
    measure_sites(model, torch.zeros((1, 6), dtype=torch.long), ("sink",))


# The tiny suite, swept with every site: the sites table, resuming, fit, status, figures and report.

MICRO_ARGS = ["--probe", "embedded", "--n-seq", "2", "--seq-len", "32", "--bos"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from dynamics.suite import PRESETS, build_suite

    cache = tmp_path_factory.mktemp("micro") / "hub"
    return cache, build_suite(PRESETS["micro"], cache, device="cpu", threads=1)


def sweep_args(micro, root, sites, steps="all"):
    cache, manifest = micro
    models = [m["model"] for m in manifest["models"]]
    return [
        "sweep",
        *models,
        "--offline",
        "--cache-dir",
        cache,
        "--store",
        root,
        "--steps",
        steps,
        *MICRO_ARGS,
        "--sites",
        sites,
    ]


def test_sweep_with_all_sites_writes_the_table_and_the_report_shows_both_figures(micro, tmp_path, capsys):
    root = tmp_path / "store"
    code, cap = run_main(sweep_args(micro, root, "all"), capsys)
    assert code == 0, cap.err
    _, manifest = micro
    sites = store.load(root, store.SITES)
    n_revisions = sum(len(m["schedule"]) for m in manifest["models"])
    assert sites.height == n_revisions * 2 * 2 * len(SITES)  # revisions x sequences x layers x sites
    assert sites.group_by("model", "revision", "seq", "layer", "site").len()["len"].max() == 1
    assert set(sites["site"]) == set(SITES) and set(sites["seq_len"]) == {32}
    sink = sites.filter(pl.col("site") == "sink")
    assert sink["sink_rate"].is_between(0, 1).all() and sink["top1"].null_count() == sink.height
    assert sites.filter(pl.col("site") != "sink")["sink_rate"].null_count() == sites.height - sink.height
    # The residual rows of the sites table are the measurements, with the same provenance.
    keys = ["model", "revision", "step", "commit", "weights_sha256", "probe_id", "dtype", "device", "seq", "layer"]
    stats = ["top1", "top2", "top3", "median", "top1_pos", "top1_dim", "n_nonfinite"]
    residual = sites.filter(pl.col("site") == "residual").select(*keys, *stats).sort(keys)
    assert residual.equals(store.load(root).select(*keys, *stats).sort(keys))

    code, cap = run_main(["status", "--store", root], capsys)
    assert code == 0
    model = manifest["models"][0]["model"]
    assert f"sites of {model}: attn ({len(manifest['models'][0]['schedule'])} revisions)" in cap.out

    out = tmp_path / "report"
    code, cap = run_main(["report", "--store", root, "--out", out, "--jobs", "1"], capsys)
    assert code == 0, cap.err
    page = (out / "report.html").read_text()
    for stem in ("figS1_sink_coemergence", "figS2_sublayer_origin"):
        section = page.split(f"<h2 id='{stem}'>", 1)[1].split("<h2", 1)[0]
        (image,) = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", section)
        assert base64.b64decode(image)[:4] == b"\x89PNG"
    code, cap = run_main(["figures", "--store", root, "--out", tmp_path / "figures", "--jobs", "1"], capsys)
    assert code == 0 and (tmp_path / "figures" / "figS2_sublayer_origin.png").is_file()

    code, cap = run_main(["fit", "--store", root, "--site", "mlp_in", "--jobs", "1"], capsys)
    assert code == 0, cap.err
    fits = pl.read_parquet(root / "fits-mlp_in.parquet")
    assert set(fits["site"]) == {"mlp_in"} and fits.height == 2 * 2  # models x layers
    assert fits.filter(pl.col("model") == model)["n_points"].max() == len(manifest["models"][0]["schedule"])


def test_measure_prints_every_site_per_layer(micro, tmp_path, capsys):
    cache, manifest = micro
    root = tmp_path / "store"
    model = manifest["models"][0]["model"]
    args = ["measure", model, "--revision", "step20", "--offline", "--cache-dir", cache, "--store", root]
    code, cap = run_main([*args, *MICRO_ARGS, "--sites", "all"], capsys)
    assert code == 0, cap.err
    assert "sites: mean top-1 [channel of the top-1, mode]; sink: rate (mass)" in " ".join(cap.out.split())
    rows = store.load(root, store.SITES)
    assert rows.height == 2 * 2 * len(SITES)
    mlp_in = rows.filter((pl.col("site") == "mlp_in") & (pl.col("layer") == 1))
    assert f"[{mlp_in['top1_dim'].mode().first()}]" in cap.out
    assert str(store.shard_path(root, store.SITES, model, "step20", rows["probe_id"][0])) in cap.out.replace("\n", "")


def test_a_store_without_sites_skips_both_figures_with_the_reason(micro, tmp_path, capsys):
    root = tmp_path / "store"
    code, cap = run_main(sweep_args(micro, root, "residual"), capsys)
    assert code == 0, cap.err
    assert not (root / "sites").exists()
    code, cap = run_main(["figures", "--store", root, "--out", tmp_path / "figures", "--jobs", "1"], capsys)
    assert code == 0
    assert "skipped Fig S1: needs a store with a sites table (mdyn sweep --sites all)" in cap.out
    assert "skipped Fig S2: needs a store with a sites table" in cap.out
    code, cap = run_main(["fit", "--store", root, "--site", "attn"], capsys)
    assert code == 2 and cap.err.count("\n") == 1 and "(it has no sites table); sweep it with --sites attn" in cap.err


def test_asking_for_more_sites_measures_only_those_and_keeps_what_is_stored(micro, tmp_path, capsys):
    root = tmp_path / "store"
    assert run_main(sweep_args(micro, root, "sink", steps="0,20"), capsys)[0] == 0
    measured = store.load(root).sort("model", "revision", "seq", "layer")
    sinks = store.load(root, store.SITES).sort("model", "revision", "seq", "layer")
    assert set(sinks["site"]) == {"sink"}
    code, cap = run_main(sweep_args(micro, root, "sink", steps="0,20"), capsys)
    assert code == 0 and "0 to measure, 2 already" in cap.err
    code, cap = run_main(sweep_args(micro, root, "attn,mlp", steps="0,20"), capsys)
    assert code == 0 and "2 to measure, 0 already" in cap.err
    # The measurements and the sink rows stay as they were; the new sites join them.
    assert store.load(root).sort("model", "revision", "seq", "layer").equals(measured)
    after = store.load(root, store.SITES)
    assert set(after["site"]) == {"sink", "attn", "mlp"}
    assert after.filter(pl.col("site") == "sink").sort("model", "revision", "seq", "layer").equals(sinks)
    assert run_main(sweep_args(micro, root, "sink,mlp", steps="0,20"), capsys)[1].err.count("0 to measure") == 2


def test_a_slurm_task_reads_the_sites_back_from_its_json_table(micro, tmp_path):
    from dynamics.slurm import run_task
    from dynamics.sources import HubSource
    from dynamics.sweep import Settings, plan

    cache, manifest = micro
    settings = Settings(probe="embedded", n_seq=2, seq_len=32, bos=True, sites=("mlp_in", "sink"))
    root = store.open_store(tmp_path / "store")
    source = HubSource(manifest["models"][0]["model"], offline=True, cache_dir=cache)
    the_plan = plan(source, root, "4", settings)
    np.save(tmp_path / f"probe-{the_plan.probe.probe_id}.npy", the_plan.probe.token_ids)
    task = {"index": 0, "model": source.model, "revision": "step4", "step": 4, "probe_id": the_plan.probe.probe_id}
    table = {
        "store": str(root),
        # As `slurm.submit` writes it.
        "settings": {**dataclasses.asdict(settings), "probe_text": []},
        "tasks": [
            {
                **task,
                "probe_source": the_plan.probe.source,
                "target": source.model,
                "offline": True,
                "cache_dir": str(cache),
            }
        ],
    }
    (tmp_path / "tasks.json").write_text(json.dumps(table))
    assert [row["status"] for row in run_task(tmp_path / "tasks.json", 0)] == ["ok"]
    assert set(store.load(root, store.SITES)["site"]) == {"mlp_in", "sink"}
    assert run_task(tmp_path / "tasks.json", 0) == []  # complete: nothing to do


BAD_SITES = {
    "unknown site": (["--sites", "residual,heads"], "unknown site 'heads' in --sites"),
    "empty": (["--sites", ","], "no site given in --sites"),
}


@pytest.mark.parametrize("command", ["measure", "sweep"])
@pytest.mark.parametrize("problem", sorted(BAD_SITES))
def test_bad_sites_are_one_line_and_exit_2(micro, tmp_path, capsys, command, problem):
    cache, manifest = micro
    args, message = BAD_SITES[problem]
    target = manifest["models"][0]["model"]
    code, cap = run_main([command, target, "--offline", "--cache-dir", cache, "--store", tmp_path / "s", *args], capsys)
    (line,) = cap.err.strip().splitlines()
    assert code == 2 and line.startswith("mdyn: error: ") and message in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "model_type, sites, message",
    [("gemma2", "sink", "--sites sink cannot be read from 'gemma2'"), ("mixtral", "all", "--sites mlp_in cannot")],
)
def test_an_unreadable_architecture_is_one_line_and_exit_2_before_anything_is_written(
    tmp_path, capsys, model_type, sites, message
):
    folder = tmp_path / "runs" / "step0"
    family_model(model_type).save_pretrained(folder)
    root = tmp_path / "store"
    for command, target in (("measure", folder), ("sweep", folder.parent)):
        code, cap = run_main([command, target, "--store", root, "--sites", sites], capsys)
        (line,) = cap.err.strip().splitlines()
        assert code == 2 and line.startswith("mdyn: error: ") and message in line
    assert not list(root.glob("*/*/*.parquet"))


def test_fit_refuses_the_sink_in_one_line(tmp_path, capsys):
    code, cap = run_main(["fit", "--store", tmp_path, "--site", "sink"], capsys)
    (line,) = cap.err.strip().splitlines()
    assert code == 2 and "cannot fit --site 'sink'" in line
