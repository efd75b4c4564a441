"""Probe sets are the first tokens of their text, found without tokenizing the whole corpus."""

import pytest

from dynamics.corpus import read_corpus
from dynamics.probes import embedded_probes, first_tokens
from tests.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.mark.parametrize("need", [1, 130, 1280, 20480])
def test_the_first_tokens_of_a_prefix_are_those_of_the_whole_text(tokenizer, need):
    text = "\n\n".join(read_corpus("heldout")[:2])
    assert first_tokens(tokenizer, text, need) == tokenizer(text, add_special_tokens=False)["input_ids"][:need]


def test_a_cut_inside_a_long_run_of_one_character_does_not_change_the_tokens(tokenizer):
    # Thousands of spaces form one pre-token: cut anywhere inside, its tokens differ from the whole text's.
    text = "to be or not to be " * 40 + " " * 6000 + "that is the question " * 400
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    for need in (100, len(full) // 2, len(full), len(full) + 7):
        assert first_tokens(tokenizer, text, need) == full[:need]


def test_the_embedded_probe_is_the_start_of_the_held_out_plays(tokenizer):
    probe = embedded_probes(tokenizer, n_seq=3, seq_len=50, bos=True)
    text = "\n\n".join(read_corpus("heldout"))
    body = tokenizer(text[:20000], add_special_tokens=False)["input_ids"][: 3 * 49]
    assert probe.token_ids.shape == (3, 50) and (probe.token_ids[:, 0] == tokenizer.bos_token_id).all()
    assert probe.token_ids[:, 1:].ravel().tolist() == body
