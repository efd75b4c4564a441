"""Run every benchmark, each in its own process so that one's memory and threads do not touch the next."""

import subprocess
import sys
from pathlib import Path

for module in sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_")):
    print(f"== benchmarks.{module}", flush=True)
    subprocess.run([sys.executable, "-m", f"benchmarks.{module}"], check=False)
