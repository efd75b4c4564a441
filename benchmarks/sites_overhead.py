"""`measure` and `measure_sites` with every site against a bare forward pass (the floor).

A Pythia-70M-shaped random GPT-NeoX, 10 sequences x 512 tokens, batch size 1, float32, on the CPU (and on CUDA
when present), the setting of benchmarks/measure_overhead.py, whose model, floor and memory sampling this reuses.
Reports each method's time against the floor and its peak extra memory above the floor's peak, beside the size of
one layer's attention probabilities (batch x heads x seq x seq float32), which is what the sink may add.
Targets: residual only <= 1.10 x the floor; all sites (residual, attn, mlp, mlp_in, sink) <= 1.5 x.
"""

import os
import sys

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # must be set before the process starts
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.sites_overhead", *sys.argv[1:]])


from benchmarks.measure_overhead import N_SEQ, SEQ_LEN, floor, on_each_device, timings
from dynamics.measure import measure, measure_sites
from fitting.contracts import SITES

TARGETS = {"residual": 1.10, "all sites": 1.5}
# More than measure_overhead's 3: the sites add several small reductions per layer, whose time varies more.
REPEATS = 5


def residual(model, ids):
    measure(model, ids, batch_size=1)


def all_sites(model, ids):
    measure_sites(model, ids, SITES, batch_size=1)


def run(model, ids, device):
    methods = {"floor": floor, "residual": residual, "all sites": all_sites}
    best, peaks = timings(methods, model, ids, device, REPEATS)
    attention = model.config.num_attention_heads * SEQ_LEN * SEQ_LEN * 4
    print(f"\n{device.type}: {N_SEQ} x {SEQ_LEN} tokens, Pythia-70M-shaped, best of {REPEATS}")
    print(f"  floor      {best['floor']:.3f} s, peak {peaks['floor'] / 2**20:.1f} MiB above start")
    for name, target in TARGETS.items():
        ratio = best[name] / best["floor"]
        print(
            f"  {name:<10} {best[name]:.3f} s = {ratio:.3f} x floor (+{best[name] - best['floor']:.3f} s); "
            f"peak extra over floor {(peaks[name] - peaks['floor']) / 2**20:+.1f} MiB "
            f"(one layer's attention: {attention / 2**20:.1f} MiB)"
        )
        print(f"  target {name} <= {target:.2f} x floor: {'met' if ratio <= target else 'NOT met'} ({ratio:.3f})")


if __name__ == "__main__":
    on_each_device(run)
