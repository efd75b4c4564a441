"""Seconds per training step of each suite model, as a ratio to the 4-layer d128 model timed in the same process.

Run: `python -m benchmarks.suite_steps [--preset full] [--steps 10] [--threads 2]`. Use it to budget a preset's
steps per model; absolute seconds depend on the machine and its load, the ratios much less.
"""

import argparse
import time

import torch

from dynamics.suite import PRESETS, Architecture, init_training, repo_name, train_step

BASELINE = Architecture(4, 128, 4, 512)


def seconds_per_step(arch: Architecture, recipe, vocab_size: int, steps: int) -> float:
    """Mean wall seconds of `steps` updates on random tokens, after one untimed update."""
    model, optimizer, scheduler = init_training(arch, recipe, vocab_size, 0)
    batch = torch.randint(vocab_size, (recipe.batch_size, recipe.seq_len))
    train_step(model, optimizer, scheduler, batch, recipe.grad_clip)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, scheduler, batch, recipe.grad_clip)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    recipe = preset.members[0][1]
    base = seconds_per_step(BASELINE, recipe, preset.vocab_size, args.steps)
    print(
        f"baseline {repo_name(BASELINE, recipe)}: {base:.3f} s/step at batch {recipe.batch_size}x{recipe.seq_len}, "
        f"{args.threads} threads"
    )
    total = 0.0
    for arch, member in preset.members:
        s = seconds_per_step(arch, member, preset.vocab_size, args.steps)
        total += s * member.steps
        print(
            f"{repo_name(arch, member):26s} {s:.3f} s/step  ratio {s / base:5.2f}  "
            f"x {member.steps} steps = {s * member.steps / 60:5.1f} min"
        )
    print(f"total training of preset {preset.name}: {total / 60:.1f} min at these speeds")


if __name__ == "__main__":
    main()
