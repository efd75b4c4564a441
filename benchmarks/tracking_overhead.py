"""The live tracker's cost on the tiny-suite trainer: its share of training wall time, and one measurement's cost.

1. Overhead at the default schedule (0, 1, 2, 4, ..., 512, then every 1000 steps, and the last step): a tracked
   and an untracked copy of one tiny-suite member (`dynamics.suite.init_training` + `train_step`, the same seeds
   and batches) train in lockstep, one step each in turn, so that drift in machine load hits both alike.
   Reported: the time spent inside the tracker (measure, store writes, forecast) as a share of the tracked run's
   wall time, and the tracked run's wall time over the untracked one's. Target: <= 3 %.
2. One measurement of the trained model against one forward pass of the probe (the same sequences, batched the
   same way, eval mode, no_grad): `measure()` as the tracker calls it (RNG states saved and restored, train mode
   restored), then the whole tracker call without and with the forecast (store writes; Eq. 9 fitted to every
   layer's points of the run). Best of REPEATS, interleaved, in CPU time of this single-threaded process (which
   other processes' load on a shared machine barely moves) and in wall time (which includes waiting for fsync).
   Target: measurement <= 1.2 x, in CPU time.

    python -m benchmarks.tracking_overhead [--member 2] [--steps N]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dynamics.measure import auto_batch_size, measure
from dynamics.probes import embedded_probes
from dynamics.suite import PRESETS, init_training, train_step, training_batch
from dynamics.tracking import Tracker, preserved_rng

REPEATS = 7


def corpus(vocab_size: int, cache: Path):
    """The demo preset's tokenizer and token stream, tokenized into a throwaway cache."""
    from dynamics.corpus import corpus_hash
    from dynamics.suite import CORPUS_SPLIT, tokenized_corpus

    return tokenized_corpus(cache / "hub", vocab_size, corpus_hash(CORPUS_SPLIT))


def overhead(arch, recipe, tokenizer, tokens, root: Path) -> tuple[torch.nn.Module, Tracker]:
    """Part 1; returns the tracked model and its tracker, for part 2."""
    bos = tokenizer.bos_token_id
    tracked, plain = (init_training(arch, recipe, len(tokenizer), bos) for _ in range(2))
    probe = embedded_probes(tokenizer, 10, recipe.seq_len, bos=True)
    tracker = Tracker(root, probe, "bench", total_steps=recipe.steps, commit="")
    batches = [torch.Generator().manual_seed(recipe.data_seed) for _ in range(2)]
    seconds = {"tracked": 0.0, "plain": 0.0, "tracker": 0.0}
    start = time.perf_counter()
    tracker.maybe_measure(0, tracked[0])
    seconds["tracker"] += time.perf_counter() - start
    seconds["tracked"] += time.perf_counter() - start
    losses = []
    for step in range(1, recipe.steps + 1):
        for name, (model, optimizer, scheduler), generator in (
            ("tracked", tracked, batches[0]),
            ("plain", plain, batches[1]),
        ):
            start = time.perf_counter()
            batch = training_batch(tokens, bos, recipe.batch_size, recipe.seq_len, generator)
            losses.append(train_step(model, optimizer, scheduler, batch, recipe.grad_clip))
            if name == "tracked":
                inside = time.perf_counter()
                tracker.maybe_measure(step, model)
                seconds["tracker"] += time.perf_counter() - inside
            seconds[name] += time.perf_counter() - start
    assert losses[0::2] == losses[1::2], "the tracker changed the run"
    n = sum(map(tracker.due, range(recipe.steps + 1)))
    share = seconds["tracker"] / seconds["tracked"]
    print(f"\n1. {recipe.steps} steps of {arch}, batch {recipe.batch_size}x{recipe.seq_len}, {n} measurements")
    print(
        f"  untracked {seconds['plain']:.1f} s, tracked {seconds['tracked']:.1f} s, "
        f"of which the tracker {seconds['tracker']:.2f} s"
    )
    print(
        f"  tracker share of wall time {100 * share:.2f} %; wall time ratio {seconds['tracked'] / seconds['plain']:.3f}"
    )
    print("  losses bit-identical with and without the tracker: yes")
    print(
        f"  target tracker <= 3 % of training wall time: {'met' if share <= 0.03 else 'NOT met'} ({100 * share:.2f} %)"
    )
    return tracked[0], tracker


def one_measurement(model: torch.nn.Module, tracker: Tracker) -> None:
    """Part 2, on the trained model; the tracker calls forecast from the run's own points plus the one made."""
    ids = torch.as_tensor(tracker.probe.token_ids)
    beyond = (tracker.total_steps or 0) + 1  # measured again at each call; the run's points stay before it
    # The forward pass batches the probe as the tracker's measurement does, so the ratio is the measuring alone.
    batch = tracker.batch_size or auto_batch_size(model, *ids.shape)

    @torch.no_grad()
    def forward():
        model.eval()
        for s in range(0, ids.shape[0], batch):
            model.base_model(input_ids=ids[s : s + batch], use_cache=False)
        model.train()

    def measurement():
        with preserved_rng(), torch.no_grad():
            measure(model, tracker.probe.token_ids, batch_size=batch)

    def call(fit: bool):
        tracker.fit = fit
        tracker.measure(beyond, model)

    methods = {
        "forward pass": forward,
        "measurement": measurement,
        "tracker, no forecast": lambda: call(False),
        "tracker with forecast": lambda: call(True),
    }
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    wall: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():
        fn()
    for _ in range(REPEATS):
        for name, fn in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    best_cpu, best_wall = ({k: min(v) for k, v in t.items()} for t in (cpu, wall))
    probe = tracker.probe
    print(f"\n2. one measurement, probe {probe.n_seq} x {probe.seq_len} tokens, batch size {batch}, best of {REPEATS}")
    print(f"  {'':<22} {'CPU time':>22} {'wall time':>22}")
    for name in methods:
        print(
            f"  {name:<22} {1000 * best_cpu[name]:>8.1f} ms = {best_cpu[name] / best_cpu['forward pass']:.3f} x"
            f" {1000 * best_wall[name]:>8.1f} ms = {best_wall[name] / best_wall['forward pass']:.3f} x"
        )
    ratio = best_cpu["measurement"] / best_cpu["forward pass"]
    print(f"  target measurement <= 1.2 x the forward pass (CPU): {'met' if ratio <= 1.2 else 'NOT met'} ({ratio:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", type=int, default=2, help="index into the demo preset (default: L4-d128-h4)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the member's recipe)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the suite is built: one thread, reproducible
    preset = PRESETS["demo"]
    arch, recipe = preset.members[args.member]
    if args.steps is not None:
        from dataclasses import replace

        recipe = replace(recipe, steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, tokens = corpus(preset.vocab_size, Path(tmp))
        one_measurement(*overhead(arch, recipe, tokenizer, tokens, Path(tmp) / "store"))


if __name__ == "__main__":
    main()
