"""`mdyn measure` end to end through the console-script entry point and the real offline hub path."""

import polars as pl
import pytest

from dynamics import store
from tests.cli import run_main


def test_two_revisions_from_the_offline_cache_differ(tinyrepo, tmp_path, capsys):
    out = tmp_path / "store"
    for rev in ("step0", "step1000"):
        code, cap = run_main(
            [
                "measure",
                tinyrepo.repo_id,
                "--revision",
                rev,
                "--probe",
                "embedded",
                "--n-seq",
                2,
                "--seq-len",
                32,
                "--out",
                out,
            ],
            capsys,
        )
        assert code == 0, cap.err
        assert "ratio" in cap.out and "wrote" in cap.out
    df = store.load(out)
    assert df.height == 2 * 2 * 2
    assert set(df["revision"]) == {"step0", "step1000"} and set(df["step"]) == {0, 1000}
    a, b = (df.filter(pl.col("revision") == r).sort("seq", "layer")["top1"].to_numpy() for r in ("step0", "step1000"))
    assert not (a == b).all()
    assert df["commit"].str.len_chars().unique().to_list() == [40]
    assert df["weights_sha256"].n_unique() == 2 and df["probe_id"].n_unique() == 1


def test_local_model_folder(tmp_path, capsys):
    from dynamics.tokenizer import train_bpe
    from tests.tiny import tiny_model

    tok = train_bpe(["hello world, the quick brown fox. " * 50], vocab_size=300)
    folder = tmp_path / "neox" / "step42"
    tiny_model("gpt_neox", vocab=len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    text = tmp_path / "probe.txt"
    text.write_text("To be, or not to be, that is the question. " * 40)
    code, cap = run_main(
        ["measure", folder, "--probe-text", text, "--n-seq", 3, "--seq-len", 16, "--out", tmp_path / "s"], capsys
    )
    assert code == 0, cap.err
    df = store.load(tmp_path / "s")
    assert df.height == 3 * 3
    assert df["model"].unique().to_list() == ["neox"] and df["revision"].unique().to_list() == ["step42"]
    assert df["step"].unique().to_list() == [42] and len(df["weights_sha256"][0]) == 64


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/folder/model"], "neither an existing folder nor a hub repo id"),
        (["tiny/neox-sweep", "--revision", "step31337"], "not a branch of tiny/neox-sweep"),
        (["tiny/never-published"], "not in the offline cache"),
        (["tiny/neox-sweep", "--seq-len", "4096"], "exceeds the model's context of 128"),
        (["tiny/neox-sweep", "--n-seq", "500", "--seq-len", "128", "--probe-text", "SHORT"], "tokens but 500 x 128"),
        (["tiny/neox-sweep", "--probe-text", "EMPTY"], "is empty"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tinyrepo, tmp_path, capsys, args, message):
    (tmp_path / "SHORT").write_text("just a few words")
    (tmp_path / "EMPTY").write_text("   \n")
    args = [str(tmp_path / a) if a in ("SHORT", "EMPTY") else a for a in args]
    out = tmp_path / "store"
    code, cap = run_main(["measure", *args, "--probe", "embedded", "--out", out], capsys)
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdyn: error:") and message in lines[0], cap.err
    assert not out.exists()


def test_unsupported_architecture(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, OPTConfig

    from dynamics.tokenizer import train_bpe

    tok = train_bpe(["some text for a tokenizer " * 20], vocab_size=280)
    folder = tmp_path / "opt"
    AutoModelForCausalLM.from_config(
        OPTConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    ).save_pretrained(folder)
    tok.save_pretrained(folder)
    code, cap = run_main(["measure", folder, "--n-seq", 1, "--seq-len", 8, "--out", tmp_path / "s"], capsys)
    assert code == 2 and "unsupported architecture 'opt'" in cap.err
    assert not (tmp_path / "s").exists()
