"""Issue 18, cases 11-13: option names, help, the version, and terminal output at 80 columns.

Test names carry the issue's case number.
"""

import os
import re
from pathlib import Path

import polars as pl
import pytest
import typer.main

from dynamics.cli.app import app
from fitting.contracts import package_version
from fitting.model import FIRST_ORDER_REMARK
from tests.cli import run_main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "tiny-suite" / "measurements.parquet"
# An option's row in rich help: the box edge, a required star perhaps, then its long name.
OPTION_ROW = re.compile(r"^│\s+(?:\*\s+)?(--[a-z0-9-]+)")


def commands(command=None, path=()):
    """(path, click command) of every visible command and subcommand of `mdyn`."""
    command = command or typer.main.get_command(app)
    for name, sub in getattr(command, "commands", {}).items():
        if sub.hidden:
            continue
        if getattr(sub, "commands", None):
            yield from commands(sub, (*path, name))
        else:
            yield (*path, name), sub


COMMANDS = list(commands())


# 11. -h, --version, no <bool>, every default shown, --cache-dir everywhere.


def test_11_dash_h_is_help_and_version_prints_the_package_version(capsys):
    code, short = run_main(["-h"], capsys)
    assert code == 0 and "mdyn [OPTIONS] COMMAND" in short.out and "--version" in short.out
    code, long = run_main(["--help"], capsys)
    assert code == 0 and long.out == short.out
    code, captured = run_main(["--version"], capsys)
    assert code == 0 and captured.out.strip() == f"mdyn {package_version()}" and captured.err == ""


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_11_help_shows_no_bool_and_every_default(monkeypatch, capsys, path, command):
    monkeypatch.setenv("COLUMNS", "250")  # one row per option
    code, captured = run_main([*path, "-h"], capsys)
    assert code == 0 and f"mdyn {' '.join(path)} [OPTIONS]" in captured.out, captured.out[:300]
    assert "<bool>" not in captured.out
    rows, current = {}, None  # option -> its help, over all the lines of its row
    for line in captured.out.splitlines():
        if match := OPTION_ROW.match(line):
            current = match.group(1)
            rows[current] = ""
        elif not line.startswith("│"):
            current = None
        if current:
            rows[current] += line
    for param in command.params:
        if param.hidden or not param.opts[0].startswith("--"):
            continue
        assert param.opts[0] in rows, f"{param.opts[0]} is not in the help of mdyn {' '.join(path)}"
        if param.default is not None:
            assert "[default:" in rows[param.opts[0]], rows[param.opts[0]]
    assert "--help" in rows and "-h" in rows["--help"]


@pytest.mark.parametrize("path", [("suite", "build"), ("suite", "ship"), ("demo",)])
def test_11_the_cache_is_cache_dir_everywhere_and_cache_still_works(monkeypatch, capsys, tmp_path, path):
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE"):  # both commands set them for what they run; restored after
        monkeypatch.setenv(name, os.environ[name])
    code, captured = run_main([*path, "-h"], capsys)
    assert code == 0 and "--cache-dir" in captured.out and re.search(r"--cache\b(?!-)", captured.out) is None
    for option in ("--cache-dir", "--cache"):
        code, captured = run_main([*path, "--preset", "no-such-preset", option, tmp_path / "hub"], capsys)
        assert code == 2 and captured.err.startswith("mdyn: error: unknown preset 'no-such-preset'"), captured.err


def test_11_measure_and_sweep_take_model_as_the_name_of_a_folder(capsys):
    for command in ("measure", "sweep"):
        code, captured = run_main([command, "-h"], capsys)
        assert code == 0 and re.search(r"--model\s", captured.out) and "--model-name" not in captured.out


# 12. Terminal output at 80 columns: no cell cut with an ellipsis.


def cells(output: str) -> list[str]:
    """The text of every table row of rich output (lines between box edges)."""
    return [line for line in output.splitlines() if line.startswith(("│", "┃"))]


@pytest.mark.parametrize("plan", [(6, 192, 6), (2, 64, 2), (8, 256, 8)])
def test_12_predict_shows_whole_intervals_at_80_columns(monkeypatch, capsys, predictor_file, plan):
    monkeypatch.setenv("COLUMNS", "80")
    layers, hidden, heads = plan
    args = ["--layers", layers, "--hidden", hidden, "--heads", heads, "--steps", 143000]
    code, captured = run_main(["predict", "--predictor", predictor_file, *args], capsys)
    assert code == 0, captured.err
    rows = cells(captured.out)
    assert rows and max(len(line) for line in captured.out.splitlines()) <= 80
    assert "…" not in captured.out
    # Every interval is whole: its bounds, however wrapped, pair up as [low, high].
    text = " ".join(line.strip("│ ") for line in rows)
    assert len(re.findall(r"\[", text)) == len(re.findall(r"\]", text)) >= layers


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return tmp_path_factory.mktemp("fitted") / "fits.parquet"


def test_12_and_13_the_table5_analogue_is_readable_at_80_columns_and_names_the_first_order_limit(
    monkeypatch, capsys, fitted
):
    monkeypatch.setenv("COLUMNS", "80")
    code, captured = run_main(["fit", "--store", SHIPPED, "--hypotheses", "all", "--out", fitted], capsys)
    assert code == 0, captured.err
    assert "…" not in captured.out
    table5 = captured.out[captured.out.index("paper Table 5") :]
    header = "\n".join(line for line in table5.splitlines()[:5] if line.startswith("┃"))
    for words in ("model", "Eq. 9", "log rise", "1st-order", "2nd-order"):
        assert words in header
    models = pl.read_parquet(SHIPPED)["model"].unique().to_list()
    shown = {line.split("│")[1].strip() for line in cells(table5) if line.startswith("│")}
    assert set(models) <= shown  # whole names, one row each
    # 13. A second-order fit that ran to its over-damped limit says so, in the table and in the output.
    fits = pl.read_parquet(fitted)
    second = fits.filter(pl.col("hypothesis") == "second_order_step")
    at_limit = second.filter(pl.col("message").str.contains(FIRST_ORDER_REMARK, literal=True))
    assert 0 < at_limit.height <= second.height
    assert f"{at_limit.height} of {second.height} layers collapsed to the first-order limit" in captured.out


def test_12_a_rerun_with_nothing_to_do_says_so(tinyrepo, tmp_path, capsys):
    args = ["sweep", tinyrepo.repo_id, "--steps", "0,1", "--probe", "embedded", "--n-seq", "2", "--seq-len", "32"]
    args += ["--offline", "--keep-checkpoints", "--store", tmp_path / "store"]
    code, first = run_main(args, capsys)
    assert code == 0 and "nothing to do" not in first.err + first.out
    code, again = run_main(args, capsys)
    assert code == 0 and "nothing to do: every selected revision is already in" in again.err + again.out
    assert "┏" not in again.err + again.out  # no empty status table
