"""Loading a revision's weights into one reused model skeleton versus `from_pretrained` per revision.

A Pythia-160M-shaped random GPT-NeoX saved as safetensors; each method loads the same checkpoint folder
several times in one process (the page cache is warm for both), then runs one short forward pass: transformers
memory-maps weights lazily, so only a pass that touches every weight makes the two comparable.
"""

import tempfile
import time
from pathlib import Path

import torch

from dynamics.models import load_model
from dynamics.weights import load_weights

REPEATS = 3


@torch.no_grad()
def forward(model, ids):
    model.base_model(input_ids=ids, use_cache=False)


def main():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=2048,
        rotary_pct=0.25,
    )
    with tempfile.TemporaryDirectory() as tmp:
        GPTNeoXForCausalLM(cfg).save_pretrained(tmp)
        folder = Path(tmp)
        device, dtype = torch.device("cpu"), torch.float32
        ids = torch.randint(0, 50304, (1, 128))
        skeleton = load_model(folder, dtype, device)
        fresh, reused = [], []
        for _ in range(REPEATS):
            t = time.perf_counter()
            model = load_model(folder, dtype, device)
            forward(model, ids)
            fresh.append(time.perf_counter() - t)
            del model
            t = time.perf_counter()
            assert load_weights(skeleton, folder)
            forward(skeleton, ids)
            reused.append(time.perf_counter() - t)
    print(
        f"Pythia-160M-shaped, load + one 128-token forward, best of {REPEATS}: from_pretrained "
        f"{min(fresh):.3f} s, reused skeleton {min(reused):.3f} s; "
        f"from_pretrained / reuse = {min(fresh) / min(reused):.2f}"
    )


if __name__ == "__main__":
    main()
