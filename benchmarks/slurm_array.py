"""What one Slurm job array costs over a local sweep of the same revisions, on a single-node Slurm started here.

Starts tests/slurm/start.sh in a temporary folder (root and Debian's slurmd, slurmctld, slurm-client and munge
needed), then sweeps the same revisions of the tiny offline series: in this process (the baseline), as one array
of one revision per task (at most 2 tasks at a time, each a fresh process that imports torch and transformers),
and as one array with the default chunks (`--revisions-per-task` sized from the model). Prints the cluster's
start-up, the walls and their ratios, and a task's start-up (the imports) as a share of its time.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_HOME = tempfile.mkdtemp(prefix="mdyn-bench-hf-")
os.environ.setdefault("HF_HOME", _HOME)
os.environ.setdefault("HF_HUB_CACHE", str(Path(_HOME) / "hub"))

from dynamics import slurm  # noqa: E402  (after the offline environment is set)
from dynamics.sources import HubSource  # noqa: E402
from dynamics.sweep import Settings, plan, run  # noqa: E402
from tests.fixtures.tinyrepo import build_tinyrepo  # noqa: E402

SETTINGS = Settings(probe="embedded", n_seq=2, seq_len=32)
SELECTION = "every:3"
SCRIPTS = Path(__file__).resolve().parent.parent / "tests" / "slurm"
TIMEOUT_S = 300


def local(tiny, root: Path) -> float:
    source = HubSource(tiny.repo_id, offline=True, cache_dir=tiny.cache_dir)
    start = time.perf_counter()
    run(source, root, plan(source, root, SELECTION, SETTINGS), SETTINGS)
    return time.perf_counter() - start


def import_seconds() -> float:
    """What a task spends starting: a fresh Python importing the sweep's code, torch and transformers."""
    code = "import dynamics.cli.app, dynamics.sweep, dynamics.measure, torch, transformers.models.gpt_neox"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def array(tiny, root: Path, per_task: int | None) -> tuple[float, int]:
    source = HubSource(tiny.repo_id, offline=True, cache_dir=tiny.cache_dir)
    start = time.perf_counter()
    resources = slurm.Resources(array_parallelism=2, revisions_per_task=per_task)
    the_plan = plan(source, root, SELECTION, SETTINGS)
    _, _, n_tasks = slurm.submit(
        root, [(source, the_plan)], SETTINGS, resources, max_array_size=slurm.check_cluster(resources)
    )
    while slurm.progress(root)["state"].is_in(["pending", "running"]).any():
        if time.perf_counter() - start > TIMEOUT_S:
            raise SystemExit(f"the array did not finish within {TIMEOUT_S}s; see {root / 'slurm'}")
        time.sleep(0.2)
    return time.perf_counter() - start, n_tasks


def main():
    from transformers.utils import logging

    if shutil.which("slurmctld", path=os.environ["PATH"] + ":/usr/sbin:/sbin") is None or os.geteuid() != 0:
        sys.exit("needs root and Slurm: apt-get install slurmd slurmctld slurm-client munge")
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = build_tinyrepo(Path(os.environ["HF_HUB_CACHE"]))
        start = time.perf_counter()
        subprocess.run([SCRIPTS / "start.sh", tmp / "cluster"], check=True, timeout=60, capture_output=True)
        up = time.perf_counter() - start
        os.environ["SLURM_CONF"] = str(tmp / "cluster" / "slurm.conf")
        try:
            baseline = local(tiny, tmp / "local")
            single, n_single = array(tiny, tmp / "single", 1)
            chunked, n_chunks = array(tiny, tmp / "chunked", None)
            start_s = import_seconds()
        finally:
            subprocess.run([SCRIPTS / "stop.sh", tmp / "cluster"], timeout=60)
    print(f"single-node Slurm (2 CPUs) up in {up:.2f}s; tiny series {SELECTION}, {n_single} revisions")
    print(f"  local sweep in this process      {baseline:6.1f}s")
    print(
        f"  one revision per task, 2 at once {single:6.1f}s ({single / n_single:.1f}s per task)  "
        f"array / local = {single / baseline:.1f}x"
    )
    print(f"  default chunks: {n_chunks} task(s)      {chunked:6.1f}s  array / local = {chunked / baseline:.1f}x")
    print(
        f"  a task's start-up (imports) {start_s:.1f}s: {start_s * n_single / (2 * single):.0%} of the one-per-task "
        f"array's task time, {start_s * n_chunks / max(chunked, 1e-9):.0%} of the chunked one's"
    )


if __name__ == "__main__":
    main()
