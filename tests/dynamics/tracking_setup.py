"""What the tracker's tests share: a small tokenizer, training windows, a probe and a random GPT-NeoX with dropout."""

import functools

import torch

from dynamics.corpus import read_corpus
from dynamics.probes import embedded_probes
from tests.tiny import tiny_config, tiny_tokenizer

CONTEXT, SEQ_LEN, N_SEQ = 64, 32, 4


tokenizer = tiny_tokenizer


@functools.cache
def windows() -> torch.Tensor:
    """256 training sequences of SEQ_LEN tokens from two training plays."""
    ids = tokenizer()("\n\n".join(read_corpus("train")[:2]), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids[: len(ids) // SEQ_LEN * SEQ_LEN]).reshape(-1, SEQ_LEN)[:256]


@functools.cache
def probe():
    return embedded_probes(tokenizer(), N_SEQ, SEQ_LEN)


def neox(seed: int = 0, dropout: float = 0.1):
    """A random 3-block GPT-NeoX in train mode; with dropout, so that training draws from torch's RNG."""
    from transformers import GPTNeoXForCausalLM

    config = tiny_config("gpt_neox", vocab=len(tokenizer()), context=CONTEXT)
    config.hidden_dropout = config.attention_dropout = dropout
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config).train()
