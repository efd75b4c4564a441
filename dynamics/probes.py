"""Probe sets: the fixed token sequences every checkpoint is measured on.

A probe's `probe_id` hashes its token ids and the tokenizer's content, so measurements taken with the same
probe compare across revisions and runs, and a sweep can tell what is already measured.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynamics.corpus import read_corpus
from fitting.errors import UserError

PAPER_DATASET = "togethercomputer/RedPajama-Data-1T-Sample"
PAPER_N_DOCS = 500
PAPER_SEED = 1
MAX_SEQ_LEN = 2048


@dataclass(frozen=True)
class ProbeSet:
    """Token ids of shape (n_seq, seq_len), the id that names them, and where they came from."""

    token_ids: np.ndarray
    probe_id: str
    source: str

    @property
    def n_seq(self) -> int:
        return self.token_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.token_ids.shape[1]


def tokenizer_identity(tokenizer) -> str:
    """sha256 of the tokenizer's content (not its path), so every revision's copy of one tokenizer agrees."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    content = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(content.encode()).hexdigest()


def context_length(config) -> int | None:
    """The model's context length from its config, whatever the architecture calls it."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_seq_len(config, seq_len: int | None) -> int:
    """`seq_len`, defaulting to the model's context capped at 2048; longer than the context is an error."""
    context = context_length(config)
    if seq_len is None:
        return min(context or MAX_SEQ_LEN, MAX_SEQ_LEN)
    if seq_len < 1:
        raise UserError(f"--seq-len must be at least 1, got {seq_len}")
    if context is not None and seq_len > context:
        raise UserError(
            f"--seq-len {seq_len} exceeds the model's context of {context} tokens; use --seq-len {context} or less"
        )
    return seq_len


def first_tokens(tokenizer, text: str, need: int) -> list[int]:
    """The first `need` token ids of `text` (tokenized without special tokens), or all of them if it has fewer.

    A probe uses a few thousand tokens of corpora of millions, so only a prefix is tokenized, sized from the
    characters per token of the text's start. Cutting the text changes the tokens near the cut only, so a prefix
    is taken once a quarter-longer one agrees with it on the first `need` tokens.
    """

    def encode(chars: int) -> list[int]:
        return tokenizer(text[:chars], add_special_tokens=False)["input_ids"]

    sample = encode(4096)
    per_token = 4096 / max(len(sample), 1)
    chars = int(1.2 * need * per_token) + 1024
    ids = encode(chars)
    while chars < len(text):
        longer_chars = int(1.25 * chars) + 1024
        longer = encode(longer_chars)
        if len(ids) >= need and longer[:need] == ids[:need]:
            return ids[:need]
        chars, ids = longer_chars, longer
    return ids


def from_texts(texts: list[str], tokenizer, n_seq: int, seq_len: int, source: str, bos: bool = False) -> ProbeSet:
    """Join `texts` with a blank line, tokenize without special tokens, cut n_seq consecutive chunks of seq_len.

    With `bos`, each sequence is the tokenizer's BOS token followed by seq_len - 1 text tokens: the input
    distribution of models trained with BOS first (the tiny suite), where position 0 is the BOS token.
    """
    if n_seq < 1:
        raise UserError(f"--n-seq must be at least 1, got {n_seq}")
    if bos and (tokenizer.bos_token_id is None or seq_len < 2):
        raise UserError("--bos needs a tokenizer with a BOS token and --seq-len of at least 2; drop --bos")
    body = seq_len - 1 if bos else seq_len
    need = n_seq * body
    ids = first_tokens(tokenizer, "\n\n".join(texts), need)
    if len(ids) < need:
        raise UserError(
            f"probe text from {source} has {len(ids)} tokens but {n_seq} x {body} = {need} are needed; "
            "give more text, or lower --n-seq or --seq-len"
        )
    token_ids = np.asarray(ids[:need], dtype=np.int64).reshape(n_seq, body)
    if bos:
        token_ids = np.concatenate([np.full((n_seq, 1), tokenizer.bos_token_id, dtype=np.int64), token_ids], axis=1)
        source += "+bos"
    digest = hashlib.sha256(
        token_ids.tobytes() + str(token_ids.shape).encode() + tokenizer_identity(tokenizer).encode()
    )
    return ProbeSet(token_ids=token_ids, probe_id=digest.hexdigest()[:16], source=source)


def read_text_file(path: Path) -> str:
    """The content of a UTF-8 text file given as --probe-text; a UserError for a missing or a binary file.

    A NUL byte or a byte sequence that is not UTF-8 marks a file that is not text (a model's weights, an archive):
    measuring on its bytes would give a probe that means nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"probe text file {path} does not exist; pass existing files to --probe-text")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"probe text file {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "pass a plain text file to --probe-text"
        ) from None
    if "\0" in text:
        raise UserError(
            f"probe text file {path} is binary (a NUL byte at offset {data.index(0)}); pass a plain text file "
            "to --probe-text"
        )
    return text


def text_file_probes(paths: list[Path], tokenizer, n_seq: int, seq_len: int, bos: bool = False) -> ProbeSet:
    """Probes from one or more UTF-8 text files, in the order given."""
    texts = [read_text_file(path) for path in paths]
    if not any(t.strip() for t in texts):
        raise UserError(f"probe text {', '.join(map(str, paths))} is empty; pass a file with text in it")
    return from_texts(texts, tokenizer, n_seq, seq_len, "text:" + ",".join(p.name for p in map(Path, paths)), bos)


def embedded_probes(tokenizer, n_seq: int, seq_len: int, split: str = "heldout", bos: bool = False) -> ProbeSet:
    """Probes from the embedded Shakespeare corpus; by default the held-out plays, which the tiny suite never sees."""
    return from_texts(read_corpus(split), tokenizer, n_seq, seq_len, f"embedded:{split}", bos)


def paper_probes(
    tokenizer, n_seq: int = 10, seq_len: int = MAX_SEQ_LEN, cache_dir: Path | None = None, bos: bool = False
) -> ProbeSet:
    """The reference protocol: 500 RedPajama-1T-Sample documents drawn with numpy seed 1, joined and chunked.

    The dataset's JSONL files come through huggingface_hub (repo_type dataset), so a populated offline cache
    serves them too. Documents are numbered over the files in name order; the draw is
    `np.random.RandomState(1).choice(n_docs, 500, replace=False)`, kept in draw order.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from dynamics.sources import TRANSIENT, with_retries

    try:
        folder = Path(
            with_retries(
                lambda: snapshot_download(
                    PAPER_DATASET, repo_type="dataset", allow_patterns=["*.jsonl"], cache_dir=cache_dir
                )
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, *TRANSIENT) as err:
        raise UserError(
            f"cannot get the paper's probe dataset {PAPER_DATASET} ({type(err).__name__}); connect to the hub once, "
            "or use --probe embedded or --probe-text FILE"
        ) from None
    files = sorted(folder.rglob("*.jsonl"))
    counts = [sum(1 for _ in f.open("rb")) for f in files]
    if sum(counts) < PAPER_N_DOCS:
        raise UserError(
            f"{PAPER_DATASET} in {folder} holds {sum(counts)} documents, fewer than {PAPER_N_DOCS}; re-download it"
        )
    chosen = np.random.RandomState(PAPER_SEED).choice(sum(counts), PAPER_N_DOCS, replace=False)
    texts = dict.fromkeys(int(i) for i in chosen)
    offset = 0
    for f, count in zip(files, counts):
        wanted = {i - offset for i in texts if offset <= i < offset + count}
        with f.open(encoding="utf-8") as fh:
            for j, line in enumerate(fh):
                if j in wanted:
                    texts[offset + j] = json.loads(line)["text"]
        offset += count
    return from_texts([texts[int(i)] or "" for i in chosen], tokenizer, n_seq, seq_len, "paper", bos)


PROBE_KINDS = ("auto", "paper", "embedded")


def make_probes(
    kind: str, texts: list[Path] | None, tokenizer, n_seq: int, seq_len: int, hub_model: bool, bos: bool = False
) -> ProbeSet:
    """The probe set the CLI asks for: text files if given, else `kind` (auto = paper for hub models, else embedded)."""
    if texts:
        return text_file_probes(texts, tokenizer, n_seq, seq_len, bos)
    if kind not in PROBE_KINDS:
        raise UserError(f"unknown probe {kind!r}; use one of {', '.join(PROBE_KINDS)} or --probe-text FILE")
    if kind == "paper" or (kind == "auto" and hub_model):
        return paper_probes(tokenizer, n_seq, seq_len, bos=bos)
    return embedded_probes(tokenizer, n_seq, seq_len, bos=bos)
