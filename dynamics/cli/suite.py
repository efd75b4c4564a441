"""`mdyn suite build`: train the tiny Pythia-style suite here and publish it as an offline Hugging Face cache."""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from dynamics.cli import options
from dynamics.cli.command import Command
from dynamics.corpus import DATA_DIR
from dynamics.suite import PRESETS, PROBE_SEQUENCES, describe_preset
from fitting.errors import UserError

DEFAULT_CACHE = Path(".suite-cache") / "hub"

app = typer.Typer(
    help="The tiny suite: GPT-NeoX models trained from scratch with Pythia's recipe, served offline as hub repos.",
    no_args_is_help=True,
)


def build(
    preset: Annotated[
        str,
        typer.Option(help="Which suite to build. " + " ".join(describe_preset(p) for p in PRESETS.values())),
    ] = "demo",
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help=f"HF hub cache to publish into. Default: $HF_HUB_CACHE if set, else ./{DEFAULT_CACHE}"
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Override every model's number of training steps.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="torch CPU threads; fix it for bit-identical reruns. Default: torch's choice."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the suite's manifest.json and architectures.csv into this folder.")
    ] = None,
    live_store: Annotated[
        Path | None,
        typer.Option(
            help="Also measure every model it trains live, at each published step, into this store "
            "(follow it with `mdyn watch --store DIR`); the checkpoints do not change."
        ),
    ] = None,
    old_cache: options.OldCache = None,
) -> None:
    """Train tiny GPT-NeoX models and publish each as an offline hub repo.

    Recipe (Pythia's, scaled down): parallel residual, rotary on 25 % of head
    dims, LayerNorm, untied embeddings, d_ff = 4 d; AdamW (0.9, 0.95), weight
    decay 0.1, 1 % warmup, cosine decay to 10 % of the peak LR, clip 1.0.
    Data: random windows of the embedded corpus's training plays, each one
    starting with BOS; one byte-level BPE tokenizer for the whole suite.
    Branches: step0, step1, step2, step4, ..., step512, then evenly spaced
    steps to the last one, plus main (= the last step).

    Each model becomes a repo such as tiny-suite/neox-L4-d128-h4 in the
    cache. Its manifest entry (recipe, seeds, corpus hash, versions) is
    written last, so a rerun skips finished models: an interrupted build
    resumes, and a finished one returns at once.

    Use it offline (the cache path is printed at the end):
      export HF_HUB_CACHE=$PWD/.suite-cache/hub
      mdyn sweep tiny-suite-demo/neox-L4-d128-h4 --offline --probe embedded --bos --store runs
    or from Python, with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set:
      AutoModelForCausalLM.from_pretrained(repo, revision="step512")
    These are toy models: their outlier channels are not the massive
    activations of billion-parameter models.
    """
    from rich.console import Console

    from dynamics.suite import build_suite, write_suite_tables

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    cache = _suite_cache(cache or old_cache)
    console = Console()
    manifest = build_suite(
        PRESETS[preset], cache, device=device, threads=threads, steps=steps, console=console, live_store=live_store
    )
    show_suite(console, manifest, cache)
    if out is not None:
        for path in write_suite_tables(manifest, out):
            console.print(f"wrote {path}")
    console.print(
        f"sweep a model offline: HF_HUB_CACHE={cache.resolve()} mdyn sweep {manifest['models'][0]['model']} "
        "--offline --probe embedded --bos --store runs",
        soft_wrap=True,
    )


def show_suite(console, manifest: dict, cache: Path) -> None:
    """The table of a built suite's models: parameters, steps, peak LR, final loss, training seconds."""
    from rich.table import Table

    table = Table(title=f"tiny suite '{manifest['preset']}': repos {manifest['suite']}/... in {cache}")
    for column in ("model", "params", "steps", "lr", "final loss", "train s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for m in manifest["models"]:
        table.add_row(
            m["model"].split("/", 1)[1],
            f"{m['n_params']:,}",
            str(m["recipe"]["steps"]),
            f"{m['recipe']['lr']:g}",
            f"{m['final_loss']:.3f}",
            f"{m['train_seconds']:.0f}",
        )
    console.print(table)


app.command("build", cls=Command)(build)


def ship(
    preset: Annotated[str, typer.Option(help="The built suite to sweep (see `mdyn suite build`).")] = "full",
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help=f"HF hub cache holding the suite. Default: $HF_HUB_CACHE if set, else ./{DEFAULT_CACHE}"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the shipped tables. Default: data/<suite>, e.g. data/tiny-suite-predict."),
    ] = None,
    n_seq: Annotated[
        int, typer.Option(help="Probe sequences (held-out plays, the model's full context each).")
    ] = PROBE_SEQUENCES,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    old_cache: options.OldCache = None,
) -> None:
    """Sweep every model of a built suite and write the tables shipped in data/<suite>.

    Writes measurements.parquet and ledger.parquet (as `mdyn sweep` produced them, embedded-corpus probe with
    BOS first, as in training),
    architectures.csv and manifest.json. Missing models are trained first (as `mdyn suite build` would);
    the sweep store beside the cache makes an interrupted run resume.
    """
    cache = _suite_cache(cache or old_cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(cache.resolve())
    from rich.console import Console

    from dynamics import store
    from dynamics.suite import build_suite, write_suite_tables

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    out = out or DATA_DIR / PRESETS[preset].org
    _refuse_other_suite(out, PRESETS[preset].org)
    options.quiet_transformers()
    console = Console()
    manifest = build_suite(PRESETS[preset], cache, device=device, console=console)
    sweep_store = cache.parent / f"{manifest['suite']}-store"
    sweep_suite(console, manifest, cache, sweep_store, device, n_seq)
    out.mkdir(parents=True, exist_ok=True)
    store.load(sweep_store).write_parquet(out / "measurements.parquet")
    store.load(sweep_store, store.LEDGER).write_parquet(out / "ledger.parquet")
    for path in (out / "measurements.parquet", out / "ledger.parquet", *write_suite_tables(manifest, out)):
        console.print(f"wrote {path}")


def sweep_suite(console, manifest: dict, cache: Path, store_dir: Path, device: str, n_seq: int = PROBE_SEQUENCES):
    """Sweep every checkpoint of a built suite into `store_dir` as the shipped data is swept: the embedded
    held-out probe, BOS first (as in training), all sequences in one batch; the cache is never pruned."""
    from dynamics.cli.sweep import plan_targets, sweep_locally
    from dynamics.sweep import Settings

    settings = Settings(probe="embedded", n_seq=n_seq, batch_size=n_seq, bos=True, device=device).check()
    models = [m["model"] for m in manifest["models"]]
    plans = plan_targets(console, models, store_dir, "all", settings, offline=True, cache_dir=cache, eviction="keep")
    sweep_locally(console, plans, store_dir, settings)


def _suite_cache(given: Path | None) -> Path:
    """--cache-dir, else $HF_HUB_CACHE, else ./.suite-cache/hub."""
    return given or (Path(os.environ["HF_HUB_CACHE"]) if os.environ.get("HF_HUB_CACHE") else DEFAULT_CACHE)


SHIPPED_FILES = ("measurements.parquet", "ledger.parquet", "architectures.csv", "manifest.json")


def _refuse_other_suite(out: Path, suite: str) -> None:
    """Shipping rewrites the folder's tables, which is only safe over an earlier ship of the same suite."""
    manifest = out / "manifest.json"
    try:
        held = json.loads(manifest.read_text()).get("suite") if manifest.is_file() else None
    except (ValueError, AttributeError):
        held = None  # not a manifest this tool wrote
    if held not in (None, suite):
        raise UserError(f"{out} holds the shipped {held!r} suite, not {suite!r}; pass --out for a folder of its own")
    if held is None and any((out / name).exists() for name in SHIPPED_FILES):
        raise UserError(f"{out} holds tables that no `mdyn suite ship` wrote; pass --out for a new folder")


app.command("ship", cls=Command)(ship)
