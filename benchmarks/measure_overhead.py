"""`measure` against a bare forward pass (the floor) and against Sun et al.'s copy-and-sort reference.

A Pythia-70M-shaped random GPT-NeoX, 10 sequences x 512 tokens, batch size 1, float32, on the CPU (and on CUDA
when present). Reports each method's time above the floor and its peak extra memory above the floor's peak.
Targets: measure <= 1.10 x the floor; measure's extra peak memory <= the reference's.

CPU memory is the process's resident set sampled every millisecond; glibc is told to serve large blocks with
mmap (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the resident set and peaks are comparable.
"""

import os
import sys

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # must be set before the process starts
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.measure_overhead", *sys.argv[1:]])

import threading
import time

import torch

from dynamics.layers import block_output, decoder_blocks
from dynamics.measure import measure

N_SEQ, SEQ_LEN, REPEATS = 10, 512, 3


def pythia_70m_shaped():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=512,
        num_hidden_layers=6,
        num_attention_heads=8,
        intermediate_size=2048,
        max_position_embeddings=2048,
        rotary_pct=0.25,
    )
    return GPTNeoXForCausalLM(cfg).eval()


@torch.no_grad()
def floor(model, ids):
    for s in range(ids.shape[0]):
        model.base_model(input_ids=ids[s : s + 1], use_cache=False)


@torch.no_grad()
def reference(model, ids):
    """Sun et al.: every block's whole hidden state copied to the CPU as float64 and sorted."""
    out = []
    hooks = [
        b.register_forward_hook(
            lambda m, i, o: out.append(
                torch.sort(block_output(o).detach().cpu().double().abs().flatten(), descending=True).values[:3]
            )
        )
        for b in decoder_blocks(model)
    ]
    try:
        floor(model, ids)
    finally:
        for h in hooks:
            h.remove()


def ours(model, ids):
    measure(model, ids, batch_size=1)


class PeakRSS:
    """Peak resident set (bytes) while the block runs, sampled every millisecond."""

    def __enter__(self):
        self.peak, self._stop = rss(), False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timings(methods: dict, model, ids, device, repeats: int) -> tuple[dict, dict]:
    """(best seconds, peak extra bytes) of each method, interleaved `repeats` times after a warm-up."""
    for fn in methods.values():  # warm-up: allocator, kernels, thread pools
        fn(model, ids[:1])
    times = {name: [] for name in methods}
    peaks = dict.fromkeys(methods, 0)
    for _ in range(repeats):
        for name, fn in methods.items():  # interleaved, so drift in machine load hits all of them alike
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                t = time.perf_counter()
                fn(model, ids)
                torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t)
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() - base)
            else:
                base = rss()
                with PeakRSS() as p:
                    t = time.perf_counter()
                    fn(model, ids)
                    times[name].append(time.perf_counter() - t)
                peaks[name] = max(peaks[name], p.peak - base)
    return {k: min(v) for k, v in times.items()}, peaks


def run(model, ids, device):
    best, peaks = timings({"floor": floor, "measure": ours, "reference": reference}, model, ids, device, REPEATS)
    print(f"\n{device.type}: {N_SEQ} x {SEQ_LEN} tokens, Pythia-70M-shaped, best of {REPEATS}")
    print(f"  floor      {best['floor']:.3f} s, peak {peaks['floor'] / 2**20:.1f} MiB above start")
    for name in ("measure", "reference"):
        print(
            f"  {name:<10} {best[name]:.3f} s = {best[name] / best['floor']:.3f} x floor "
            f"(+{best[name] - best['floor']:.3f} s); peak extra over floor "
            f"{(peaks[name] - peaks['floor']) / 2**20:+.1f} MiB"
        )
    ratio = best["measure"] / best["floor"]
    print(f"  target measure <= 1.10 x floor: {'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.3f})")
    extra_ok = peaks["measure"] <= peaks["reference"]
    print(f"  target measure extra memory <= reference: {'met' if extra_ok else 'NOT met'}")


def on_each_device(run) -> None:
    """`run(model, ids, device)` on the Pythia-70M-shaped model and a seeded probe, on the CPU and on CUDA."""
    torch.manual_seed(0)
    ids = torch.randint(0, 50304, (N_SEQ, SEQ_LEN))
    model = pythia_70m_shaped()
    run(model, ids, torch.device("cpu"))
    if torch.cuda.is_available():
        run(model.cuda(), ids.cuda(), torch.device("cuda"))


if __name__ == "__main__":
    on_each_device(run)
