"""`mdyn sweep` against the obvious TransformerLens loop over the same checkpoints, timed as whole processes.

A Pythia-14M-shaped random GPT-NeoX (6 layers, d_model 128, 4 heads, d_mlp 512, vocab 50304, context 2048,
rotary_pct 0.25, parallel residual) is published as `EleutherAI/pythia-14m` in an offline Hugging Face cache
with 12 Pythia branches (step0, step1, step2, ..., step512, step1000; weights seeded by the step) plus `main`
(= step1000), and a 44k-token byte-level BPE trained on the embedded corpus (the real Pythia tokenizer cannot be
had offline; TransformerLens only needs *a* tokenizer in the repo's `main`).

Both tools measure the same 10 x 128 token ids: mdyn's `--probe embedded` (the held-out plays, tokenized with
the repo's tokenizer, no BOS), rebuilt here with `dynamics.probes.embedded_probes` and written to a .npy for the
TransformerLens script; the probe_id mdyn records is checked against it, so the tokens are provably the same.

  mdyn: `mdyn sweep EleutherAI/pythia-14m --offline --keep-checkpoints --probe embedded --n-seq 10
        --seq-len 128 --store FRESH --cache-dir CACHE` (the console script beside this interpreter).
  TL:   in its own venv (default .venv-tl, created when missing with torch pinned to 2.13.0 CPU and
        transformer_lens>=3,<4: HookedTransformer is gone in 4.x), for each step
        `HookedTransformer.from_pretrained_no_processing("EleutherAI/pythia-14m", checkpoint_value=STEP,
        device="cpu")`, then `run_with_cache` of the 10 x 128 ids as one batch (grad off) with a names_filter
        of every `blocks.{l}.hook_resid_post`, and top-1/2/3 (topk) and torch.median of |h| over each
        sequence's seq x d entries. TL reads config and tokenizer from `main`, the weights from `stepN`.

Each tool runs 3 times, interleaved; reported are median wall seconds and TL / mdyn. For mdyn also where the
time goes: imports (a process doing only the sweep's imports, and `-X importtime`'s biggest packages), and,
from its ledger, the first revision's and the steady-state per-revision fetch and load+measure seconds. The
numbers of the two tools are compared per (revision, layer, sequence): top-1/2/3 and median within 1e-4
relative. Both run with HF_HUB_OFFLINE=1 and --threads torch threads (default 1).

    python -m benchmarks.sweep_vs_transformerlens [--cache-dir DIR] [--tl-venv DIR] [--repeats 3] [--threads 1]

The first run trains the tokenizer and writes the cache (~700 MB, kept only with --cache-dir) and, when the TL
venv is missing, installs it from the package index.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "EleutherAI/pythia-14m"
# The first 12 Pythia branches: step0, powers of two to 512, step1000 (all in TL's PYTHIA_CHECKPOINTS).
STEPS = (0, *(2**i for i in range(10)), 1000)
N_SEQ, SEQ_LEN = 10, 128
STATS = ("top1", "top2", "top3", "median")
RTOL = 1e-4
# HookedTransformer (and so from_pretrained_no_processing) exists in TransformerLens 3.x only.
TL_REQUIREMENTS = ("torch==2.13.0", "transformer_lens>=3,<4")

TL_SCRIPT = r'''
"""The obvious TransformerLens way: load each checkpoint, run_with_cache, reduce every hook_resid_post."""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import torch
from transformer_lens import HookedTransformer
t_import = time.perf_counter() - t0

repo, steps, ids_path, out = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3], sys.argv[4]
torch.set_grad_enabled(False)
ids = torch.from_numpy(np.load(ids_path))
stats, load_s, run_s = [], [], []
for step in steps:
    t = time.perf_counter()
    model = HookedTransformer.from_pretrained_no_processing(repo, checkpoint_value=step, device="cpu")
    load_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    names = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(ids, names_filter=names)
    per_layer = []
    for name in names:
        a = cache[name].abs().reshape(ids.shape[0], -1)
        top = torch.topk(a, 3, dim=1).values
        per_layer.append(torch.cat([top, torch.median(a, dim=1).values[:, None]], dim=1))
    stats.append(torch.stack(per_layer).double().numpy())  # (layer, seq, 4)
    run_s.append(time.perf_counter() - t)
    del model, cache
np.save(out + ".npy", np.stack(stats))
from importlib.metadata import version
versions = {p: version(p) for p in ("transformer_lens", "transformers", "torch")}
json.dump({"import_s": t_import, "load_s": load_s, "run_s": run_s, "wall_in_process_s": time.perf_counter() - t0,
           "versions": versions}, open(out + ".json", "w"))
'''


def ensure_tl_venv(venv: Path) -> Path:
    """The TL venv's python; created with one pinned pip command when missing (torch 2.13.0 is the CPU build here)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv}: pip install {' '.join(TL_REQUIREMENTS)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *TL_REQUIREMENTS], check=True)
    return python


def build_cache(cache_dir: Path) -> None:
    """Publish the 12 stepN branches and main into `cache_dir`, unless a previous run already did."""
    from dynamics.hubcache import publish_folder, repo_folder

    refs = repo_folder(cache_dir, REPO_ID) / "refs"
    if all((refs / f"step{s}").is_file() for s in STEPS) and (refs / "main").is_file():
        return
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from transformers.utils import logging

    from dynamics.corpus import read_corpus
    from dynamics.tokenizer import train_bpe

    logging.disable_progress_bar()
    print(f"building {REPO_ID} ({len(STEPS)} branches + main) in {cache_dir}", flush=True)
    tokenizer = train_bpe(read_corpus("train"), vocab_size=50277)  # the corpus stops it at ~44k tokens
    with tempfile.TemporaryDirectory() as tmp:
        for step in STEPS:
            config = GPTNeoXConfig(
                vocab_size=50304,
                hidden_size=128,
                num_hidden_layers=6,
                num_attention_heads=4,
                intermediate_size=512,
                max_position_embeddings=2048,
                rotary_pct=0.25,
                rotary_emb_base=10000,
                use_parallel_residual=True,
                hidden_act="gelu",
                layer_norm_eps=1e-5,
                tie_word_embeddings=False,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            torch.manual_seed(step)
            folder = Path(tmp, f"step{step}")
            GPTNeoXForCausalLM(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            publish_folder(cache_dir, REPO_ID, f"step{step}", folder)
            if step == STEPS[-1]:
                publish_folder(cache_dir, REPO_ID, "main", folder)
            shutil.rmtree(folder)


def probe_ids(cache_dir: Path):
    """mdyn's `--probe embedded` probe, built as its sweep builds it (tokenizer of the last selected revision)."""
    from dynamics.hubcache import repo_folder
    from dynamics.models import load_tokenizer
    from dynamics.probes import embedded_probes

    repo = repo_folder(cache_dir, REPO_ID)
    snapshot = repo / "snapshots" / (repo / "refs" / f"step{STEPS[-1]}").read_text()
    return embedded_probes(load_tokenizer(snapshot), N_SEQ, SEQ_LEN)


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def run_mdyn(mdyn: Path, cache_dir: Path, store: Path, env: dict) -> float:
    return timed(
        [
            str(mdyn),
            "sweep",
            REPO_ID,
            "--offline",
            "--keep-checkpoints",
            "--probe",
            "embedded",
            "--n-seq",
            str(N_SEQ),
            "--seq-len",
            str(SEQ_LEN),
            "--store",
            str(store),
            "--cache-dir",
            str(cache_dir),
        ],
        env,
    )


def mdyn_results(store: Path):
    """(stats array (revision, layer, seq, 4) in STEPS order, ok ledger rows by step, probe ids) of one sweep.

    Read straight from the store's parquet shards (STORE/{measurements,ledger}/<model>/*.parquet) with polars.
    """
    import polars as pl

    rows = pl.read_parquet(store / "measurements" / "*" / "*.parquet").sort("step", "layer", "seq")
    ledger = pl.read_parquet(store / "ledger" / "*" / "*.parquet").filter(pl.col("status") == "ok").sort("step")
    if rows["step"].unique().sort().to_list() != list(STEPS) or ledger.height != len(STEPS):
        sys.exit(f"mdyn measured steps {rows['step'].unique().sort().to_list()}, expected {list(STEPS)}")
    stats = rows.select(STATS).to_numpy().reshape(len(STEPS), -1, N_SEQ, len(STATS))
    return stats, ledger, set(rows["probe_id"])


def import_seconds(env: dict, repeats: int) -> tuple[float, list[tuple[str, float]]]:
    """Wall seconds of a process doing only the imports `mdyn sweep` does before its work starts (less a bare
    interpreter), and `-X importtime`'s biggest packages (cumulative seconds, nested ones included).

    The model class (transformers' GPT-NeoX modeling) is imported lazily when the first revision is loaded, so
    it counts in the first revision's cost, not here.
    """
    stmt = "import dynamics.cli.app, dynamics.sweep, transformers.utils.logging"
    bare = statistics.median(timed([sys.executable, "-c", "pass"], env) for _ in range(repeats))
    full = statistics.median(timed([sys.executable, "-c", stmt], env) for _ in range(repeats))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], env=env, capture_output=True, text=True)
    packages = {}  # top-level package (no dot in its name) -> cumulative seconds, at whatever nesting level
    for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| +([\w]+)$", proc.stderr, re.M):
        if m.group(2) not in ("dynamics", "encodings", "site"):
            packages[m.group(2)] = max(packages.get(m.group(2), 0.0), int(m.group(1)) / 1e6)
    return full - bare, sorted(packages.items(), key=lambda t: -t[1])[:4]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, help="HF cache to build (or reuse); default a temporary folder")
    parser.add_argument(
        "--tl-venv", type=Path, default=ROOT / ".venv-tl", help="TransformerLens venv (created when missing)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="whole-process runs of each tool")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads for both tools")
    args = parser.parse_args()

    tl_python = ensure_tl_venv(args.tl_venv)
    mdyn = Path(sys.executable).parent / "mdyn"
    with tempfile.TemporaryDirectory(prefix="mdyn-vs-tl-") as tmp:
        tmp = Path(tmp)
        cache_dir = args.cache_dir or tmp / "hub"
        build_cache(cache_dir)
        probe = probe_ids(cache_dir)
        np.save(tmp / "ids.npy", probe.token_ids)
        (tmp / "tl_sweep.py").write_text(TL_SCRIPT)
        threads = str(args.threads)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(cache_dir),
            "HF_HOME": str(tmp / "hf-home"),
            "TOKENIZERS_PARALLELISM": "false",
            "WANDB_MODE": "disabled",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "PYTHONWARNINGS": "ignore",
        }
        env.pop("HF_TOKEN", None)

        walls = {"mdyn": [], "tl": []}
        runs = []
        for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            store = tmp / f"store-{r}"
            walls["mdyn"].append(run_mdyn(mdyn, cache_dir, store, env))
            out = tmp / f"tl-{r}"
            walls["tl"].append(
                timed(
                    [
                        str(tl_python),
                        str(tmp / "tl_sweep.py"),
                        REPO_ID,
                        ",".join(map(str, STEPS)),
                        str(tmp / "ids.npy"),
                        str(out),
                    ],
                    env,
                )
            )
            runs.append((store, out))
            print(
                f"  run {r + 1}/{args.repeats}: mdyn {walls['mdyn'][-1]:.1f} s, TL {walls['tl'][-1]:.1f} s", flush=True
            )
        import_s, top_imports = import_seconds(env, args.repeats)

        # The median run of each tool (by wall) for the breakdowns; every run for the agreement check.
        med = {k: statistics.median(v) for k, v in walls.items()}
        worst = dict.fromkeys(STATS, 0.0)
        probe_ok = True
        ledgers, tl_info = [], []
        for store, out in runs:
            ours, ledger, pids = mdyn_results(store)
            theirs = np.load(str(out) + ".npy")
            rel = np.abs(ours - theirs) / np.abs(theirs)
            for j, s in enumerate(STATS):
                worst[s] = max(worst[s], float(rel[..., j].max()))
            probe_ok &= pids == {probe.probe_id}
            ledgers.append(ledger)
            tl_info.append(json.loads(Path(str(out) + ".json").read_text()))
    i_m = walls["mdyn"].index(sorted(walls["mdyn"])[len(runs) // 2])
    i_t = walls["tl"].index(sorted(walls["tl"])[len(runs) // 2])
    led, tl = ledgers[i_m], tl_info[i_t]
    fetch, meas = led["seconds_fetch"].to_list(), led["seconds_measure"].to_list()
    rest = med["mdyn"] - import_s - fetch[0] - sum(meas)

    print(
        f"\n{REPO_ID} (random, Pythia-14M-shaped), {len(STEPS)} revisions, {N_SEQ} x {SEQ_LEN} tokens, CPU, "
        f"{args.threads} thread(s), median of {len(runs)} whole-process runs"
    )
    print(f"  mdyn sweep        {med['mdyn']:7.2f} s   ({', '.join(f'{w:.2f}' for w in walls['mdyn'])})")
    print(f"  TransformerLens   {med['tl']:7.2f} s   ({', '.join(f'{w:.2f}' for w in walls['tl'])})")
    print(f"  speed-up TL / mdyn = {med['tl'] / med['mdyn']:.2f}x")
    print("mdyn, where its time goes (median run):")
    print(
        f"  imports                    {import_s:6.2f} s  (a process doing only the sweep's imports, less a bare "
        f"interpreter; biggest: {', '.join(f'{n} {t:.2f}' for n, t in top_imports)})"
    )
    print(
        f"  first revision             {fetch[0] + meas[0]:6.2f} s  (fetch {fetch[0]:.3f}, "
        f"load + measure {meas[0]:.3f}, incl. importing the model class and building the model)"
    )
    print(
        f"  steady state per revision  {statistics.median(meas[1:]):6.3f} s  (median load-weights + measure of "
        f"the other {len(meas) - 1}; fetch {statistics.median(fetch[1:]):.3f} s, overlapped by prefetch)"
    )
    print(
        f"  the rest                   {rest:6.2f} s  (interpreter, CLI, plan: probe, fingerprints; store writes; exit)"
    )
    print(
        f"TransformerLens (median run): import {tl['import_s']:.2f} s; first revision load {tl['load_s'][0]:.2f} + "
        f"run {tl['run_s'][0]:.3f} s; steady per revision load {statistics.median(tl['load_s'][1:]):.3f} + "
        f"run {statistics.median(tl['run_s'][1:]):.3f} s"
    )
    print(f"  versions: {', '.join(f'{k} {v}' for k, v in tl['versions'].items())}")
    agree = all(v <= RTOL for v in worst.values())
    print(
        f"agreement over {len(runs)} x {len(STEPS)} revisions x 6 layers x {N_SEQ} sequences, max relative "
        f"difference: {', '.join(f'{s} {v:.1e}' for s, v in worst.items())}; within {RTOL:g}: "
        f"{'yes' if agree else 'NO'}; same probe (probe_id {probe.probe_id}): {'yes' if probe_ok else 'NO'}"
    )


if __name__ == "__main__":
    main()
