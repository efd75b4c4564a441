"""Tiny random-weight models of each supported architecture, built from configs so nothing is downloaded."""

import functools

import torch


@functools.cache
def tiny_tokenizer():
    """A 384-token byte-level BPE trained on four plays of the embedded corpus (a few seconds, once per process)."""
    from dynamics.corpus import read_corpus
    from dynamics.tokenizer import train_bpe

    return train_bpe([play[:20000] for play in read_corpus("train")[:4]], vocab_size=384)


def tiny_config(arch: str, vocab: int = 96, context: int = 64):
    """A 3-block config of one supported architecture, small enough to run in milliseconds."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    if arch == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=context,
            rotary_pct=0.25,
        )
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=context,
        )
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_positions=context)
    raise ValueError(arch)


def tiny_model(arch: str, seed: int = 0, **kwargs):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, **kwargs)).eval()
