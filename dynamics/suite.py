"""The tiny suite: GPT-NeoX models trained from scratch with Pythia's recipe, published as an offline HF cache.

Each model becomes one repo (`tiny-suite/neox-L4-d128-h4`) with a `stepN` branch per checkpoint of a
Pythia-style schedule plus `main` (= the last step), each carrying config.json, model.safetensors and the
shared tokenizer, so that `from_pretrained(repo, revision="step512")` with `HF_HUB_OFFLINE=1` loads it.

The manifest entry of a finished model is written last, into its repo folder (`models--ORG--NAME/tiny-suite.json`,
beside `blobs/refs/snapshots`, where `scan_cache_dir()` does not look): a rerun skips every model whose entry
matches its recipe, so an interrupted build loses only the model it was training. The shared tokenizer and the
tokenized training split live in the same cache as the dataset repo `tiny-suite/tokenized-corpus`.

Manifest keys (`build_suite` returns them; every model entry is also a stand-alone record of its repo):
- top level: format, preset, suite, corpus {split, sha256, n_documents, n_tokens},
  tokenizer {kind, vocab_size, bos_token, bos_token_id, sha256}, architecture_family (the fixed GPT-NeoX
  settings), models (one entry per model).
- per model: model (the repo id), n_layers, d_model, n_heads, d_ff, n_params, recipe (steps, lr, batch_size,
  seq_len, warmup and decay, AdamW settings, grad_clip, seed, data_seed), schedule (checkpoint steps),
  revisions (branch -> commit), final_loss, train_seconds, device, threads, versions (torch, transformers,
  tokenizers, massive-dynamics), key (sha256 of what determines the weights).

Reproducibility: fixed seeds for initialisation and for the training windows, and a fixed thread count, give
byte-identical checkpoints on CPU. On CUDA the same recipe runs but kernels are not bit-reproducible.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path

from dynamics.corpus import corpus_files, corpus_hash, read_corpus
from dynamics.hubcache import publish_folder, publish_pretrained, repo_folder
from dynamics.tokenizer import BOS, train_bpe
from fitting.contracts import Architecture
from fitting.errors import UserError

FORMAT = 1
ENTRY_NAME = "tiny-suite.json"
TOKENS_REPO = "tiny-suite/tokenized-corpus"  # a dataset repo in the same cache
TOKENS_FILE = "tokens.safetensors"
CORPUS_SPLIT = "train"
# A run that reads the training text more often than this mostly sees repeats: ask for fewer steps instead.
MAX_PASSES = 10
# Pythia's fixed architecture choices; everything else comes from `Architecture`.
ARCHITECTURE_FAMILY = {
    "model_class": "GPTNeoXForCausalLM",
    "use_parallel_residual": True,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "tie_word_embeddings": False,
    "norm": "LayerNorm",
    "layer_norm_eps": 1e-5,
    "hidden_act": "gelu",
    "initializer_range": 0.02,
    "dropout": 0.0,
}
VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "massive-dynamics")
DEFAULT_FF_MULTIPLIER = 4  # Pythia's d_ff = 4 d


def repo_name(arch: Architecture, recipe: "Recipe") -> str:
    """A member's repo name: `neox-L4-d128-h4`, plus `-ff<d_ff>` when d_ff is not 4 d and `-s<seed>` for seed > 0."""
    name = f"neox-L{arch.n_layers}-d{arch.d_model}-h{arch.n_heads}"
    if arch.d_ff != DEFAULT_FF_MULTIPLIER * arch.d_model:
        name += f"-ff{arch.d_ff}"
    return name + (f"-s{recipe.seed}" if recipe.seed else "")


@dataclass(frozen=True)
class Recipe:
    """Pythia's optimisation recipe scaled to a tiny run; `lr` is the peak learning rate."""

    steps: int
    lr: float
    batch_size: int = 16
    seq_len: int = 128  # tokens per training sequence, BOS included
    warmup_frac: float = 0.01
    min_warmup_steps: int = 5
    final_lr_frac: float = 0.1  # cosine decay ends at this fraction of the peak
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 0  # model initialisation
    data_seed: int = 0  # training windows: the same for every model of a suite, so all see the same batches
    n_even_checkpoints: int = 20

    @property
    def warmup_steps(self) -> int:
        return min(self.steps, max(self.min_warmup_steps, round(self.warmup_frac * self.steps)))

    @property
    def tokens(self) -> int:
        """Corpus tokens the run reads (the BOS of each sequence is not corpus text)."""
        return self.steps * self.batch_size * (self.seq_len - 1)


@dataclass(frozen=True)
class Preset:
    """A named family of (architecture, recipe) pairs sharing one tokenizer; repos are `org/<arch name>`."""

    name: str
    org: str
    vocab_size: int
    members: tuple[tuple[Architecture, Recipe], ...]

    def repo_id(self, arch: Architecture, recipe: Recipe) -> str:
        return f"{self.org}/{repo_name(arch, recipe)}"


def _members(rows: Sequence[tuple[int, int, int, int, float]], **recipe) -> tuple:
    """(n_layers, d_model, n_heads, steps, peak lr) rows -> (Architecture, Recipe) pairs sharing `recipe`'s fields."""
    return tuple(
        (Architecture(L, d, h, DEFAULT_FF_MULTIPLIER * d), Recipe(steps=s, lr=lr, **recipe)) for L, d, h, s, lr in rows
    )


# The `predict` preset's design, a 4 x 4 Graeco-Latin square: every (depth, width) pair once, and heads and
# d_ff/d each at every level once per depth and once per width, orthogonal to each other. So depth, width,
# heads and d_ff/d are uncorrelated over the 16 architectures (the Table 4 features built from them, such as
# H/d or l*L, still correlate with their ingredients).
DESIGN_DEPTHS = (2, 4, 6, 8)
DESIGN_WIDTHS = (64, 128, 192, 256)
DESIGN_HEADS = (1, 2, 4, 8)
DESIGN_FF = (2.0, 2.5, 3.0, 4.0)  # d_ff / d
_GF4_TIMES_2 = (0, 2, 3, 1)  # multiplication by the generator of GF(4), whose addition is XOR
# Four cells trained again with seed 1, chosen so that they cover every depth, width, heads and d_ff/d level once.
DESIGN_REPLICATES = ((0, 3), (1, 0), (2, 2), (3, 1))
# One recipe for every member: the same steps, batch, schedule and peak LR, so that architecture is the variable.
PREDICT_RECIPE = Recipe(steps=1200, lr=6e-3)


def graeco_latin_design() -> tuple[tuple[Architecture, Recipe], ...]:
    """The `predict` preset: the 16 architectures of the square (seed 0), then the 4 replicates (seed 1).

    Cell (i, j) has depth i and width j; its heads level is i XOR j and its d_ff/d level 2i XOR j in GF(4),
    two orthogonal Latin squares. A replicate also draws its own training windows (data_seed 1), so that the
    seed floor holds everything that changes between two runs of one architecture.
    """

    def arch(i: int, j: int) -> Architecture:
        d = DESIGN_WIDTHS[j]
        return Architecture(DESIGN_DEPTHS[i], d, DESIGN_HEADS[i ^ j], round(DESIGN_FF[_GF4_TIMES_2[i] ^ j] * d))

    square = [(arch(i, j), PREDICT_RECIPE) for i in range(4) for j in range(4)]
    again = [(arch(i, j), replace(PREDICT_RECIPE, seed=1, data_seed=1)) for i, j in DESIGN_REPLICATES]
    return tuple(square + again)


PRESETS: Mapping[str, Preset] = {
    # Seconds, for tests.
    "micro": Preset(
        "micro",
        "tiny-suite-micro",
        320,
        _members(
            [(2, 32, 2, 20, 3e-3), (2, 32, 4, 20, 3e-3)],
            batch_size=4,
            seq_len=32,
            min_warmup_steps=2,
            n_even_checkpoints=4,
        ),
    ),
    # About 1.5 min of training on 2 free cores; the ratio rises within these steps.
    "demo": Preset(
        "demo",
        "tiny-suite-demo",
        512,
        _members([(2, 64, 2, 500, 1e-2), (3, 96, 4, 500, 1e-2), (4, 128, 4, 500, 8e-3)]),
    ),
    # Depth 2-8, width 64-256, heads 2-8, so that H/d, d/L and H/L vary. The peak LR falls with width, as in
    # Pythia; higher LRs gave larger ratios in short trials. Steps are budgeted by cost (benchmarks/suite_steps.py)
    # so that the preset trains in about 45 min on one thread of a shared 2-core machine; cheap models get more.
    "full": Preset(
        "full",
        "tiny-suite",
        512,
        _members(
            [
                (2, 64, 2, 3000, 1e-2),
                (4, 64, 8, 3000, 1e-2),
                (3, 96, 6, 2000, 1e-2),
                (2, 128, 8, 2000, 8e-3),
                (4, 128, 4, 1500, 8e-3),
                (8, 64, 4, 1500, 1e-2),
                (6, 128, 2, 1200, 8e-3),
                (6, 192, 6, 800, 6e-3),
                (2, 256, 4, 800, 5e-3),
            ]
        ),
    ),
    # Built to answer the prediction question (see `graeco_latin_design`): 16 architectures with depth, width,
    # heads and d_ff/d uncorrelated, 4 of them with a second seed for the seed floor, one recipe for all.
    # About 1.5 h on one thread (benchmarks/suite_steps.py --preset predict).
    "predict": Preset("predict", "tiny-suite-predict", 512, graeco_latin_design()),
}


def _span(values) -> str:
    return f"{min(values):g}-{max(values):g}"


def describe_preset(preset: Preset) -> str:
    """One line for --help: the preset's models (or their ranges, for a large design), steps, peak LRs and batch."""
    archs = [a for a, _ in preset.members]
    if len(archs) <= 9:
        shape = ", ".join(f"{repo_name(a, r).removeprefix('neox-')} ({r.steps} steps)" for a, r in preset.members)
    else:
        steps = sorted({r.steps for _, r in preset.members})
        shape = (
            f"{len(archs)} models, depth {_span([a.n_layers for a in archs])}, width "
            f"{_span([a.d_model for a in archs])}, heads {_span([a.n_heads for a in archs])}, d_ff/d "
            f"{_span([a.d_ff / a.d_model for a in archs])}, {'/'.join(map(str, steps))} steps each"
        )
    lrs = "/".join(f"{lr:g}" for lr in sorted({r.lr for _, r in preset.members}))
    r = preset.members[0][1]
    return f"{preset.name}: {shape}; peak LR {lrs}, batch {r.batch_size}x{r.seq_len}."


def checkpoint_steps(last_step: int, n_even: int = 20) -> list[int]:
    """Pythia's schedule scaled to `last_step`: 0, 1, 2, 4, ..., 512 (below the last step), then every
    `last_step // n_even` steps, then the last step."""
    every = max(1, last_step // n_even)
    steps = {0, last_step} | {2**k for k in range(10) if 2**k < last_step}
    steps |= set(range(every, last_step, every))
    return sorted(steps)


def lr_factor(step: int, recipe: Recipe) -> float:
    """Multiplier of the peak LR for optimizer update `step` (0-based): linear warmup, then cosine to final_lr_frac."""
    warm = recipe.warmup_steps
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, recipe.steps - warm)
    return recipe.final_lr_frac + (1 - recipe.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def neox_config(arch: Architecture, vocab_size: int, seq_len: int, bos_token_id: int):
    """The GPTNeoXConfig of one suite member (Pythia's family settings, this architecture's shape)."""
    from transformers import GPTNeoXConfig

    fam = ARCHITECTURE_FAMILY
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=arch.d_model,
        num_hidden_layers=arch.n_layers,
        num_attention_heads=arch.n_heads,
        intermediate_size=arch.d_ff,
        hidden_act=fam["hidden_act"],
        max_position_embeddings=seq_len,
        rotary_pct=fam["rotary_pct"],
        rotary_emb_base=fam["rotary_emb_base"],
        use_parallel_residual=fam["use_parallel_residual"],
        tie_word_embeddings=fam["tie_word_embeddings"],
        layer_norm_eps=fam["layer_norm_eps"],
        initializer_range=fam["initializer_range"],
        attention_dropout=fam["dropout"],
        hidden_dropout=fam["dropout"],
        bos_token_id=bos_token_id,
        eos_token_id=bos_token_id,
    )


def corpus_tokens(tokenizer, documents: Sequence[str]):
    """The documents as one int64 token stream, each document preceded by BOS (as Pythia separates documents)."""
    import torch

    bos = tokenizer.convert_tokens_to_ids(BOS)
    ids = tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    return torch.tensor([t for doc in ids for t in (bos, *doc)], dtype=torch.int64)


def training_batch(tokens, bos_token_id: int, batch_size: int, seq_len: int, generator):
    """A (batch_size, seq_len) batch of random windows of `tokens`, each row starting with BOS."""
    import torch

    starts = torch.randint(0, len(tokens) - seq_len + 2, (batch_size, 1), generator=generator)
    windows = tokens[starts + torch.arange(seq_len - 1)]
    return torch.cat([torch.full((batch_size, 1), bos_token_id, dtype=torch.int64), windows], dim=1)


def check_corpus_size(n_tokens: int, recipe: Recipe) -> None:
    """Raise UserError when the corpus cannot feed `recipe` within MAX_PASSES passes."""
    if n_tokens < recipe.seq_len or recipe.tokens > MAX_PASSES * n_tokens:
        raise UserError(
            f"the training corpus holds {n_tokens:,} tokens but the run needs {recipe.tokens:,} "
            f"(steps x batch x (seq_len-1)), more than {MAX_PASSES} passes over it; request fewer steps"
        )


def check_cache_writable(cache_dir: Path) -> None:
    """Raise UserError unless `cache_dir` exists (or can be created) and accepts new files."""
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as err:
        raise UserError(
            f"cannot write to the suite cache {cache_dir} ({err.strerror or err}); "
            "pass --cache-dir DIR with a writable folder"
        ) from None


def member_key(arch: Architecture, recipe: Recipe, vocab_size: int, corpus_sha256: str) -> str:
    """sha256 of everything that determines a member's weights (package versions aside)."""
    spec = {
        "format": FORMAT,
        "arch": asdict(arch),
        "recipe": asdict(recipe),
        "vocab_size": vocab_size,
        "corpus": corpus_sha256,
        "family": ARCHITECTURE_FAMILY,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def read_entry(cache_dir: Path, repo_id: str) -> dict | None:
    """The manifest entry of a finished model, or None when the repo has none (not built or interrupted)."""
    path = repo_folder(cache_dir, repo_id) / ENTRY_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def init_training(arch: Architecture, recipe: Recipe, vocab_size: int, bos_token_id: int, device: str = "cpu"):
    """A freshly initialised model (seeded by `recipe.seed`) with its AdamW optimizer and LR scheduler."""
    import torch
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(recipe.seed)
    model = GPTNeoXForCausalLM(neox_config(arch, vocab_size, recipe.seq_len, bos_token_id)).to(device)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # biases and LayerNorm gains, as in GPT-NeoX
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=recipe.betas,
        eps=recipe.eps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, recipe))
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler, batch, grad_clip: float) -> float:
    """One optimizer update on `batch` (next-token loss, gradient norm clipped); returns the loss."""
    import torch

    loss = model(input_ids=batch, labels=batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.item()


def train_member(
    arch: Architecture,
    recipe: Recipe,
    tokenizer,
    tokens,
    cache_dir: Path,
    repo_id: str,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    live_store: Path | None = None,
) -> dict:
    """Train one model from scratch and publish every scheduled step as branch `stepN` (and the last as `main`).

    `tokens` is the corpus stream of `corpus_tokens`; `on_step(step, loss)` is called after each update.
    With `live_store`, every published step is also measured live into that store (`live_tracker`); the
    checkpoints stay byte-identical, as the tracker restores the RNG states and the train mode.
    Returns the model's manifest entry without the suite-level fields.
    """
    import torch

    bos = tokenizer.convert_tokens_to_ids(BOS)
    model, optimizer, scheduler = init_training(arch, recipe, len(tokenizer), bos, device)
    generator = torch.Generator().manual_seed(recipe.data_seed)
    schedule = checkpoint_steps(recipe.steps, recipe.n_even_checkpoints)
    due = set(schedule)
    tracker = None if live_store is None else live_tracker(live_store, tokenizer, repo_id, recipe)
    revisions = {"step0": publish_pretrained(cache_dir, repo_id, "step0", model, tokenizer)}
    if tracker is not None:
        tracker.maybe_measure(0, model)
    start, loss = time.perf_counter(), float("nan")
    for step in range(1, recipe.steps + 1):
        batch = training_batch(tokens, bos, recipe.batch_size, recipe.seq_len, generator).to(device)
        loss = train_step(model, optimizer, scheduler, batch, recipe.grad_clip)
        if step in due:
            revisions[f"step{step}"] = publish_pretrained(cache_dir, repo_id, f"step{step}", model, tokenizer)
        if tracker is not None:
            tracker.maybe_measure(step, model)
        if on_step is not None:
            on_step(step, loss)
    seconds = time.perf_counter() - start
    revisions["main"] = publish_pretrained(cache_dir, repo_id, "main", model, tokenizer)
    return {
        "model": repo_id,
        "n_layers": arch.n_layers,
        "d_model": arch.d_model,
        "n_heads": arch.n_heads,
        "d_ff": arch.d_ff,
        "n_params": sum(p.numel() for p in model.parameters()),
        "recipe": asdict(recipe),
        "schedule": schedule,
        "revisions": revisions,
        "final_loss": loss,
        "train_seconds": round(seconds, 2),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "versions": {pkg: version(pkg) for pkg in VERSIONED_PACKAGES},
    }


def build_suite(
    preset: Preset,
    cache_dir: Path,
    device: str = "auto",
    threads: int | None = None,
    steps: int | None = None,
    console=None,
    live_store: Path | None = None,
) -> dict:
    """Train and publish every model of `preset` into the HF cache `cache_dir`, skipping finished ones.

    `steps` overrides every model's step count; `threads` fixes torch's CPU threads (None: torch's default);
    `device` is "auto" (CUDA when available), "cpu" or "cuda"; `console` (a rich Console) shows progress;
    `live_store` measures each model it trains live into that store (see `train_member`).
    Returns the suite manifest (see the module docstring).
    """
    cache_dir = Path(cache_dir)
    check_cache_writable(cache_dir)
    corpus_sha = corpus_hash(CORPUS_SPLIT)
    members = [(arch, recipe if steps is None else replace(recipe, steps=steps)) for arch, recipe in preset.members]
    keys = [member_key(arch, recipe, preset.vocab_size, corpus_sha) for arch, recipe in members]
    entries = [
        _finished_entry(cache_dir, preset.repo_id(arch, recipe), key) for (arch, recipe), key in zip(members, keys)
    ]
    todo = [i for i, entry in enumerate(entries) if entry is None]
    if console is not None:
        for entry in filter(None, entries):
            console.print(f"{entry['model']}: already built with this recipe, reused")
    if todo:
        _train_missing(
            preset, members, keys, entries, todo, corpus_sha, cache_dir, device, threads, console, live_store
        )
    return _suite_manifest(preset, [entry for entry in entries if entry is not None])  # all filled by now


# Held-out plays per checkpoint in the shipped sweeps (`mdyn suite ship`, `mdyn demo`) and in live runs.
PROBE_SEQUENCES = 10


def live_tracker(store_dir: Path, tokenizer, repo_id: str, recipe: Recipe):
    """The Tracker of one member: its checkpoint steps, on the probe `mdyn suite ship` sweeps with by default
    (PROBE_SEQUENCES held-out sequences of the full context, BOS first), as model `repo_id`."""
    from dynamics.probes import embedded_probes
    from dynamics.tracking import Tracker

    probe = embedded_probes(tokenizer, PROBE_SEQUENCES, recipe.seq_len, bos=True)
    schedule = checkpoint_steps(recipe.steps, recipe.n_even_checkpoints)
    return Tracker(store_dir, probe, repo_id, schedule=schedule, total_steps=recipe.steps)


def _finished_entry(cache_dir: Path, repo_id: str, key: str) -> dict | None:
    entry = read_entry(cache_dir, repo_id)
    return entry if entry is not None and entry.get("key") == key else None


def _train_missing(
    preset, members, keys, entries, todo, corpus_sha, cache_dir, device, threads, console, live_store=None
) -> None:
    """Train the members at indices `todo` and fill in their `entries`."""
    from filelock import FileLock

    from dynamics.models import resolve_device

    device = str(resolve_device(device))
    tokenizer, tokens = tokenized_corpus(cache_dir, preset.vocab_size, corpus_sha)
    for i in todo:
        check_corpus_size(len(tokens), members[i][1])
    suite_fields = {
        "corpus": {
            "split": CORPUS_SPLIT,
            "sha256": corpus_sha,
            "n_documents": len(corpus_files(CORPUS_SPLIT)),
            "n_tokens": len(tokens),
        },
        "tokenizer": tokenizer_record(tokenizer),
        "architecture_family": ARCHITECTURE_FAMILY,
    }
    with _training_settings(threads), _progress(console) as track:
        for i in todo:
            arch, recipe = members[i]
            repo_id = preset.repo_id(arch, recipe)
            # Another build of the same suite may hold this repo: wait for it and take its result.
            with FileLock(cache_dir / ".locks" / repo_folder(cache_dir, repo_id).name / "tiny-suite.lock"):
                entries[i] = _finished_entry(cache_dir, repo_id, keys[i])
                if entries[i] is not None:
                    continue
                # A stale repo (interrupted, or another recipe) would keep branches of its own schedule.
                shutil.rmtree(repo_folder(cache_dir, repo_id), ignore_errors=True)
                on_step = track(repo_id, recipe) if track else None
                entry = train_member(arch, recipe, tokenizer, tokens, cache_dir, repo_id, device, on_step, live_store)
                _write_entry(cache_dir, repo_id, {**entry, **suite_fields, "key": keys[i]})
                entries[i] = read_entry(cache_dir, repo_id)  # as JSON has it, the same as on a rerun


@contextmanager
def _training_settings(threads: int | None):
    """torch's CPU thread count fixed to `threads` (when given) and transformers' save bars off, restored after."""
    import torch
    from transformers.utils import logging as hf_logging

    saved_threads, bars_on = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # one "Writing model shards" bar per checkpoint would bury ours
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        if bars_on:
            hf_logging.enable_progress_bar()


def tokenized_corpus(cache_dir: Path, vocab_size: int, corpus_sha: str):
    """The suite's one tokenizer and the training split as its token stream (`corpus_tokens`), trained once.

    Both are kept in the cache as the dataset repo TOKENS_REPO, one branch per vocabulary size and corpus hash,
    so that every model of every preset with that vocabulary shares them and a rerun does not redo them.
    Returns (tokenizer, int64 tokens).
    """
    import torch
    from filelock import FileLock
    from safetensors.torch import load_file, save_file
    from transformers import PreTrainedTokenizerFast

    revision = f"bpe{vocab_size}-{corpus_sha[:16]}"
    folder = repo_folder(cache_dir, TOKENS_REPO, "dataset")
    with FileLock(cache_dir / ".locks" / folder.name / f"{revision}.lock"):
        ref = folder / "refs" / revision
        if not ref.is_file():
            docs = read_corpus(CORPUS_SPLIT)
            tokenizer = train_bpe(docs, vocab_size)
            with tempfile.TemporaryDirectory() as tmp:
                tokenizer.save_pretrained(tmp)
                save_file({"tokens": corpus_tokens(tokenizer, docs).to(torch.int32)}, Path(tmp) / TOKENS_FILE)
                publish_folder(cache_dir, TOKENS_REPO, revision, Path(tmp), repo_type="dataset")
        snapshot = folder / "snapshots" / ref.read_text()
        tokens = load_file(snapshot / TOKENS_FILE)["tokens"].to(torch.int64)
        return PreTrainedTokenizerFast.from_pretrained(snapshot), tokens


def tokenizer_record(tokenizer) -> dict:
    """The manifest's description of the suite tokenizer; sha256 is over its serialized tokenizer.json."""
    return {
        "kind": "byte-level BPE (dynamics.tokenizer.train_bpe) trained on the training split",
        "vocab_size": len(tokenizer),
        "bos_token": BOS,
        "bos_token_id": tokenizer.convert_tokens_to_ids(BOS),
        "sha256": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
    }


def _write_entry(cache_dir: Path, repo_id: str, entry: dict) -> None:
    path = repo_folder(cache_dir, repo_id) / ENTRY_NAME
    tmp = path.with_name(f".{ENTRY_NAME}.tmp")
    tmp.write_text(json.dumps(entry, indent=1))
    os.replace(tmp, path)


SUITE_FIELDS = ("corpus", "tokenizer", "architecture_family")


def _suite_manifest(preset: Preset, entries: list[dict]) -> dict:
    """One manifest for the suite: the fields all models share once, the design, then one entry per model."""
    return {
        "format": FORMAT,
        "preset": preset.name,
        "suite": preset.org,
        **{field: entries[0][field] for field in SUITE_FIELDS},
        "design": design_record(preset),
        "models": [{k: v for k, v in entry.items() if k not in SUITE_FIELDS} for entry in entries],
    }


DESIGN_VARIABLES = ("n_layers", "d_model", "n_heads", "d_ff/d")


def design_record(preset: Preset) -> dict:
    """What varies across a preset's architectures: each design variable's levels, their correlation matrix over
    the distinct architectures (null where a variable does not vary), and the seeds of every architecture."""
    import numpy as np

    shapes: dict[Architecture, list[int]] = {}
    for arch, recipe in preset.members:
        shapes.setdefault(arch, []).append(recipe.seed)
    values = np.array([[a.n_layers, a.d_model, a.n_heads, a.d_ff / a.d_model] for a in shapes], dtype=float)
    varies = values.std(axis=0) > 0
    correlation = np.full((len(DESIGN_VARIABLES),) * 2, np.nan)
    if len(values) > 1 and varies.any():
        correlation[np.ix_(varies, varies)] = np.corrcoef(values[:, varies], rowvar=False)
    return {
        "variables": list(DESIGN_VARIABLES),
        "levels": {name: sorted(set(values[:, i].tolist())) for i, name in enumerate(DESIGN_VARIABLES)},
        "correlation": [[None if np.isnan(c) else round(float(c), 4) for c in row] for row in correlation],
        "architectures": len(shapes),
        "seeds": {repo_name(a, Recipe(steps=1, lr=1.0)): seeds for a, seeds in shapes.items()},
    }


@contextmanager
def _progress(console):
    """Yield `track(repo_id, recipe) -> on_step`: a rich bar per model, or a line per checkpoint off a terminal."""
    if console is None:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as bars:

        def track(repo_id: str, recipe: Recipe) -> Callable[[int, float], None]:
            task = bars.add_task(repo_id, total=recipe.steps, loss=float("nan"))
            schedule = set(checkpoint_steps(recipe.steps, recipe.n_even_checkpoints))
            start = time.perf_counter()

            def on_step(step: int, loss: float) -> None:
                bars.update(task, completed=step, loss=loss)
                if not console.is_terminal and step in schedule:
                    per_step = (time.perf_counter() - start) / step
                    line = (
                        f"{repo_id} step {step}/{recipe.steps} loss {loss:.3f} {per_step:.3f} s/step, "
                        f"{per_step * (recipe.steps - step) / 60:.1f} min left"
                    )
                    console.print(line, soft_wrap=True, highlight=False)

            return on_step

        yield track


def architectures_table(manifest: dict):
    """The suite's architectures table as polars: model, n_layers, d_model, n_heads, d_ff, n_params, the recipe
    (total_steps, peak_lr, tokens_per_step, seed) and the source of the numbers."""
    import polars as pl

    cols = ("model", "n_layers", "d_model", "n_heads", "d_ff", "n_params")
    source = (
        f"mdyn suite build --preset {manifest['preset']}: config.json; n_params counted from the weights; "
        "the recipe from the manifest"
    )
    rows = [
        {
            **{c: m[c] for c in cols},
            "total_steps": m["recipe"]["steps"],
            "peak_lr": m["recipe"]["lr"],
            "tokens_per_step": m["recipe"]["batch_size"] * m["recipe"]["seq_len"],
            "seed": m["recipe"]["seed"],
            "source": source,
        }
        for m in manifest["models"]
    ]
    ints = ("n_layers", "d_model", "n_heads", "d_ff", "n_params", "total_steps", "tokens_per_step", "seed")
    schema = {"model": pl.String, **dict.fromkeys(ints, pl.Int64), "peak_lr": pl.Float64, "source": pl.String}
    return pl.DataFrame(rows, schema=schema).select(
        "model", *cols[1:], "total_steps", "peak_lr", "tokens_per_step", "seed", "source"
    )


def write_suite_tables(manifest: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write `manifest.json` and `architectures.csv` into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path, csv_path = out_dir / "manifest.json", out_dir / "architectures.csv"
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    architectures_table(manifest).write_csv(csv_path)
    return manifest_path, csv_path
