"""One rank of a 2-process gloo DDP run with a tracker, for tests/dynamics/test_tracking_adapters.py."""

import faulthandler
import json
from datetime import timedelta
from pathlib import Path

import torch

# The test kills both ranks after this long; each prints where it stands a little before.
DEADLINE_S = 240


def run_rank(rank: int, port: int, root: str, out: str, probe, vocab: int) -> None:
    """Train a tiny GPT-NeoX for 6 steps under DDP with a tracker; write which steps this rank measured."""
    faulthandler.dump_traceback_later(DEADLINE_S - 10, exit=False)
    from transformers import GPTNeoXForCausalLM

    from dynamics.tracking import Tracker
    from tests.tiny import tiny_config

    torch.set_num_threads(1)
    # A rank that dies leaves the other waiting in a collective: fail in a minute, not gloo's default 30.
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(GPTNeoXForCausalLM(tiny_config("gpt_neox", vocab=vocab)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        tracker = Tracker(root, probe, "ddp-run", schedule=4, total_steps=6, commit="")
        data = torch.Generator().manual_seed(rank)
        measured = [0] if tracker.maybe_measure(0, model) else []
        for step in range(1, 7):
            batch = torch.randint(0, vocab, (2, 16), generator=data)
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if tracker.maybe_measure(step, model):
                measured.append(step)
        checksum = float(sum(p.double().sum() for p in model.parameters()))
        result = Path(out, f"rank{rank}.json")  # written whole, then renamed: the test reads it as it appears
        result.with_suffix(".part").write_text(json.dumps({"measured": measured, "checksum": checksum}))
        result.with_suffix(".part").replace(result)
    finally:
        torch.distributed.destroy_process_group()
