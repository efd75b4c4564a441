"""A small byte-level BPE tokenizer trained offline, for tiny models that the project builds itself."""

from collections.abc import Iterable

BOS = "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE on `texts`; returns a `PreTrainedTokenizerFast` whose BOS/EOS is `<|endoftext|>`.

    Byte-level means every string tokenizes, whatever it contains, as with Pythia's tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=BOS)
