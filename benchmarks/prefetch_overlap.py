"""How well the sweep hides download time: prefetching revision k+1 while revision k is measured.

A source that "downloads" by copying the tiny offline series with a fixed delay per fetch, chosen so that
fetch and measure take about the same time, is swept twice in one process: without and with prefetch.
Per revision, overlap efficiency = (fetch + measure) / wall. Target: wall <= 1.15 x max(fetch, measure).
"""

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_HOME = tempfile.mkdtemp(prefix="mdyn-bench-hf-")
os.environ.setdefault("HF_HOME", _HOME)
os.environ.setdefault("HF_HUB_CACHE", str(Path(_HOME) / "hub"))

from dynamics.sources import HubSource  # noqa: E402  (after the offline environment is set)
from dynamics.sweep import Settings, plan, run  # noqa: E402
from tests.fixtures.copying import CopyingSource  # noqa: E402
from tests.fixtures.tinyrepo import build_tinyrepo  # noqa: E402

# About 0.1 s of measuring per revision: real checkpoints take seconds, and the per-revision costs that cannot
# overlap (two fsynced shard writes under the store lock, ~5 ms) would dominate a revision of a few ms.
SETTINGS = Settings(probe="embedded", n_seq=64, seq_len=128, batch_size=1)


def sweep(tiny, workdir: Path, delay_s: float, prefetch: bool):
    source = CopyingSource(HubSource(tiny.repo_id, offline=True, cache_dir=tiny.cache_dir), workdir / "dl", delay_s)
    root = workdir / "store"
    the_plan = plan(source, root, "every:1", SETTINGS)
    start = time.perf_counter()
    ledger = run(source, root, the_plan, SETTINGS, keep_checkpoints=False, prefetch=prefetch)
    wall = time.perf_counter() - start
    ok = ledger.filter(ledger["status"] == "ok")
    return wall, ok.height, ok["seconds_fetch"].mean(), ok["seconds_measure"].mean()


def main():
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = build_tinyrepo(Path(os.environ["HF_HUB_CACHE"]))
        _, _, _, measure_s = sweep(tiny, tmp / "calibrate", 0.0, prefetch=False)
        delay = measure_s  # fetch about as long as measure: the case where overlap matters most
        results = {p: sweep(tiny, tmp / f"prefetch-{p}", delay, prefetch=p) for p in (False, True)}
    print(f"tiny series, {results[True][1]} revisions measured, fetch delay {delay * 1e3:.0f} ms per revision")
    for prefetch, (wall, n, fetch, meas) in results.items():
        per = wall / n
        print(
            f"  prefetch={str(prefetch):<5} wall {per * 1e3:6.0f} ms/revision, fetch {fetch * 1e3:.0f} ms, "
            f"measure {meas * 1e3:.0f} ms, overlap efficiency (fetch+measure)/wall = {(fetch + meas) / per:.2f}, "
            f"wall / max(fetch, measure) = {per / max(fetch, meas):.2f}"
        )
    speedup = results[False][0] / results[True][0]
    target = results[True][0] / results[True][1] / max(results[True][2], results[True][3])
    print(
        f"  prefetch speed-up {speedup:.2f}x; target wall <= 1.15 x max(fetch, measure): "
        f"{'met' if target <= 1.15 else 'NOT met'} ({target:.2f})"
    )


if __name__ == "__main__":
    main()
