"""A real single-node Slurm for the tests in this folder, started once per test process by tests/slurm/start.sh.

Keep the tests that use it in one module: under `pytest -n 2 --dist loadfile` (make test) one worker then owns it.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Start munged, slurmctld and slurmd in a fresh folder; SLURM_CONF points at it until the session ends.

    Skipped only where the Slurm binaries are absent (.ci/run installs them) or daemons cannot be started
    (they need root).
    """
    missing = [name for name in BINARIES if shutil.which(name, path=SBIN) is None]
    if missing:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing)} missing): "
            "apt-get install slurmd slurmctld slurm-client munge"
        )
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld and slurmd needs root")
    folder = tmp_path_factory.mktemp("slurm")
    start = time.perf_counter()
    try:
        subprocess.run([HERE / "start.sh", folder], check=True, timeout=60, capture_output=True, text=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        subprocess.run([HERE / "stop.sh", folder], timeout=60)
        pytest.fail(f"tests/slurm/start.sh failed: {err}\n{err.stdout}\n{err.stderr}")
    print(f"\nslurm up in {time.perf_counter() - start:.2f}s")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield folder
    finally:
        subprocess.run([HERE / "stop.sh", folder], timeout=60)
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
