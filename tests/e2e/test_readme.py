"""The README as written works: every command of its code blocks runs, in order, on a fresh folder, and exits 0.

Each command runs as a user would type it, in its own Python, online against the local hub of
tests/fixtures/hubserver.py, which serves copies of the tiny series as the `EleutherAI/pythia-*` repos the README
names, a RedPajama stand-in for the paper probe and a stand-in of the authors' released statistics. Only what
cannot exist on a test machine is substituted (SUBSTITUTIONS says what and why). The cluster example is run
against the real single-node Slurm by tests/slurm/test_slurm.py, with the same extraction.
"""

import shlex
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dynamics.hubcache import repo_folder
from tests.fixtures.hubdata import publish_paper_release, publish_redpajama_standin
from tests.fixtures.hubserver import HubServer, online_env

README = Path(__file__).parents[2] / "README.md"
SERVED = ("EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-12b")
# (README text, what the test runs instead): the demo preset trains for minutes, micro for seconds; /data/hf-cache
# is the test's offline cache (holding a copy of the tiny series as EleutherAI/pythia-70m).
SUBSTITUTIONS = (
    ("--preset demo", "--preset micro"),
    ("tiny-suite-demo/neox-{L2-d64-h2,L3-d96-h4,L4-d128-h4}", "tiny-suite-micro/neox-L2-d32-{h2,h4}"),
    ("/data/hf-cache", "OFFLINE_CACHE"),
)


def code_blocks(text: str) -> list[str]:
    """The README's indented code blocks (four spaces, after a blank line), as text without the indent."""
    blocks, current, previous = [], [], ""
    for line in text.splitlines():
        if line.startswith("    ") and (current or not previous.strip()):
            current.append(line[4:])
        elif current and not line.strip():
            current.append("")
        else:
            if current:
                blocks.append("\n".join(current).strip())
            current = []
        previous = line
    if current:
        blocks.append("\n".join(current).strip())
    return blocks


def readme_steps(text: str) -> list[tuple[str, str]]:
    """("shell", one command with its continuation lines joined) or ("python", a snippet), in README order.

    Shell commands are the lines starting with `mdyn` or `hf`; a snippet is a block starting with an import.
    """
    steps: list[tuple[str, str]] = []
    for block in code_blocks(text):
        if block.startswith(("import ", "from ")):
            steps.append(("python", block))
            continue
        for command in block.replace("\\\n", " ").splitlines():
            if command.startswith(("mdyn ", "hf ")):
                steps.append(("shell", " ".join(shlex.split(command, comments=True))))
    return steps


def is_cluster_example(command: str) -> bool:
    return "--executor slurm" in command or "/shared/runs/" in command


def test_the_readme_lists_the_commands_this_test_expects():
    """A guard on the extraction itself: a README edit that hides commands from it fails here."""
    steps = readme_steps(README.read_text())
    commands = [c for kind, c in steps if kind == "shell"]
    assert sum(c.startswith("mdyn ") for c in commands) >= 20
    assert [kind for kind, _ in steps].count("python") == 2
    assert sum(map(is_cluster_example, commands)) == 2
    for readme, _ in SUBSTITUTIONS:
        assert any(readme in c for c in commands), f"{readme!r} no longer in the README: update SUBSTITUTIONS"


@pytest.fixture
def workspace(tinyrepo, tmp_path):
    """A fresh folder with what the README's commands read: a model folder, notes.txt, a config.json."""
    import torch
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from dynamics.corpus import read_corpus
    from tests.tiny import tiny_config

    work = tmp_path / "work"
    snapshot = repo_folder(tinyrepo.cache_dir, tinyrepo.repo_id) / "snapshots"
    tokenizer = AutoTokenizer.from_pretrained(next(snapshot.iterdir()))
    config = tiny_config("gpt_neox", vocab=len(tokenizer), context=512)  # the README measures it with --seq-len 512
    torch.manual_seed(0)
    GPTNeoXForCausalLM(config).save_pretrained(work / "my-model-folder")
    tokenizer.save_pretrained(work / "my-model-folder")
    (work / "notes.txt").write_text(read_corpus("heldout")[0][:40_000])
    (work / "path" / "to").mkdir(parents=True)
    config.save_pretrained(work / "path" / "to")
    return work


@pytest.fixture
def hub(tinyrepo, tmp_path):
    served = tmp_path / "served"
    for repo_id in SERVED:
        tinyrepo.copy(served)
        repo_folder(served, tinyrepo.repo_id).rename(repo_folder(served, repo_id))
    publish_redpajama_standin(served)
    publish_paper_release(served)
    with HubServer(served) as server:
        yield server


def test_every_readme_command_runs_in_order(workspace, hub, tinyrepo, tmp_path):
    offline = tmp_path / "offline-cache"
    tinyrepo.copy(offline)
    repo_folder(offline, tinyrepo.repo_id).rename(repo_folder(offline, "EleutherAI/pythia-70m"))
    home = tmp_path / "home"
    env = online_env(hub, home)
    # As in a user's fresh shell: the suite commands' default cache is then ./.suite-cache/hub.
    del env["HF_HUB_CACHE"]
    bin_dir = Path(sys.executable).parent

    ran = []
    for kind, text in readme_steps(README.read_text()):
        if kind == "shell" and is_cluster_example(text):
            continue
        for readme, instead in SUBSTITUTIONS:
            text = text.replace(readme, str(offline) if instead == "OFFLINE_CACHE" else instead)
        if kind == "python":
            argv = [sys.executable, "-c", text]
        else:
            program, *args = shlex.split(text)
            head = [sys.executable, "-m", "dynamics.cli.app"] if program == "mdyn" else [bin_dir / program]
            argv = [*head, *args]
        done = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{text}\n{done.stdout}\n{done.stderr}"
        ran.append(text)

    assert len(ran) >= 20
    # What the README says the commands leave behind.
    pythia = pl.read_parquet(workspace / "runs/pythia/measurements/**/*.parquet")
    assert set(pythia["model"]) == {"EleutherAI/pythia-70m", "EleutherAI/pythia-160m"}
    assert set(pl.read_parquet(workspace / "runs/mine/measurements/**/*.parquet")["model"]) == {"my-model-folder"}
    assert pl.read_parquet(workspace / "runs/p12b/ledger/**/*.parquet")["detail"].str.contains("adaptive pick").any()
    assert pl.read_parquet(workspace / "runs/p70m/measurements/**/*.parquet").height > 0
    assert (workspace / "plan" / "prediction.parquet").is_file() and (workspace / "plan" / "prediction.png").is_file()
    assert (workspace / "figures" / "fig1_overview.png").is_file()
    assert (workspace / "report" / "report.html").is_file()
    assert (workspace / "paper" / "report" / "report.html").is_file()
    paper = pl.read_parquet(workspace / "paper/measurements/**/*.parquet")
    assert set(paper["model"]) == {f"EleutherAI/pythia-{s}" for s in ("14m", "70m", "160m")}
    # The offline cache the README sweeps with --offline is never pruned.
    assert len(list((repo_folder(offline, "EleutherAI/pythia-70m") / "snapshots").iterdir())) == len(
        list((repo_folder(tinyrepo.cache_dir, tinyrepo.repo_id) / "snapshots").iterdir())
    )
