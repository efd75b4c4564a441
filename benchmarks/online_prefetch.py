"""How well a sweep hides download time: prefetching revision k+1 from the hub while revision k is measured.

The tiny series is served by the local hub of tests/fixtures/hubserver.py and swept online (real huggingface_hub
downloads into an HF cache, eviction `downloaded`), once without and once with prefetch. The server's bandwidth is
throttled so that fetching a revision takes about as long as measuring it, where overlap matters most: a
calibration sweep without a limit gives both times. Per run, from the ledger's per-revision seconds:

    wall / sum max(fetch, measure)                   target <= 1.15 with prefetch (1.0: every download hidden)
    hidden = (sum fetch + sum measure - wall) / sum min(fetch, measure)    1: perfect overlap, 0: none
"""

import os
import tempfile
import time
from pathlib import Path

import torch

from dynamics.hubcache import repo_folder
from tests.fixtures.hubserver import HubServer

# About 0.1 s of measuring per revision: real checkpoints take seconds, and the per-revision costs that cannot
# overlap (check_weights, shard and ledger writes under the store lock, eviction, ~10 ms) would dominate a
# revision measured in a few ms.
N_SEQ, SEQ_LEN = 64, 128
SELECTION = "all"


def sweep(source_repo: str, root: Path, settings, prefetch: bool) -> dict[str, float]:
    """One online sweep; wall seconds of `run` and the sums over its measured revisions."""
    from dynamics.sources import HubSource
    from dynamics.sweep import plan, run

    source = HubSource(source_repo, offline=False)
    the_plan = plan(source, root, SELECTION, settings)
    start = time.perf_counter()
    ledger = run(source, root, the_plan, settings, prefetch=prefetch)
    wall = time.perf_counter() - start
    ok = ledger.filter(ledger["status"] == "ok")
    fetch, measure = ok["seconds_fetch"], ok["seconds_measure"]
    return {
        "n": ok.height,
        "wall": wall,
        "fetch": fetch.sum(),
        "measure": measure.sum(),
        "max": sum(max(f, m) for f, m in zip(fetch, measure)),
        "min": sum(min(f, m) for f, m in zip(fetch, measure)),
    }


def main():
    with tempfile.TemporaryDirectory() as tmp, HubServer(Path(tmp, "served")) as hub:
        # huggingface_hub reads these when first imported, which building the series does.
        os.environ.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HUB_OFFLINE="0",
            HF_HOME=str(Path(tmp, "home")),
            HF_HUB_CACHE=str(Path(tmp, "home", "hub")),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        from transformers.utils import logging

        from dynamics.sweep import Settings
        from tests.fixtures.tinyrepo import FINAL, build_tinyrepo

        logging.set_verbosity_error()
        logging.disable_progress_bar()
        # One intra-op thread: measuring keeps one core and leaves the other to the download and the server, as
        # measuring on a GPU leaves the CPU to them (on a busy 2-core machine, two torch threads run 100x slower).
        torch.set_num_threads(1)
        tiny = build_tinyrepo(Path(tmp, "served"))
        settings = Settings(probe="embedded", n_seq=N_SEQ, seq_len=SEQ_LEN)
        free = sweep(tiny.repo_id, Path(tmp, "calibrate"), settings, prefetch=False)
        served = repo_folder(tiny.cache_dir, tiny.repo_id)
        size = (served / "snapshots" / (served / "refs" / FINAL).read_text() / "model.safetensors").stat().st_size
        # The small files download beside the weights (snapshot_download runs 8 at once), so a fetch lasts about as
        # long as its weights body: make that as long as a measurement.
        hub.bandwidth = int(size / (free["measure"] / free["n"]))
        results = {p: sweep(tiny.repo_id, Path(tmp, f"prefetch-{p}"), settings, prefetch=p) for p in (False, True)}
        left = list(Path(tmp, "home", "hub").rglob("*.safetensors"))
    print(
        f"tiny series online through the local hub: {results[True]['n']} revisions measured ({N_SEQ} x {SEQ_LEN} "
        f"tokens), weights {size / 1e3:.0f} kB a revision at {hub.bandwidth / 1e6:.2f} MB/s; unthrottled fetch "
        f"{free['fetch'] / free['n'] * 1e3:.0f} ms, measure {free['measure'] / free['n'] * 1e3:.0f} ms"
    )
    for prefetch, r in results.items():
        hidden = (r["fetch"] + r["measure"] - r["wall"]) / r["min"]
        print(
            f"  prefetch={str(prefetch):<5} wall {r['wall'] / r['n'] * 1e3:4.0f} ms/revision, fetch "
            f"{r['fetch'] / r['n'] * 1e3:.0f} ms, measure {r['measure'] / r['n'] * 1e3:.0f} ms; "
            f"wall / sum max(fetch, measure) = {r['wall'] / r['max']:.2f}, hidden {hidden:.0%}, "
            f"(fetch + measure) / wall = {(r['fetch'] + r['measure']) / r['wall']:.2f}"
        )
    ratio = results[True]["wall"] / results[True]["max"]
    print(
        f"  prefetch speed-up {results[False]['wall'] / results[True]['wall']:.2f}x; target wall <= 1.15 x "
        f"sum max(fetch, measure): {'met' if ratio <= 1.15 else 'NOT met'} ({ratio:.2f}); weight files left in the "
        f"client cache: {len(left)}"
    )


if __name__ == "__main__":
    main()
