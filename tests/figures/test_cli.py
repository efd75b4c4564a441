"""`mdyn figures` and `mdyn report` end to end, the catalog's skip reasons, and their one-line errors."""

import base64
import re

import polars as pl
import pytest

from dynamics.embedded import TINY_SUITE_CAVEAT
from dynamics.figures import ITEMS, Inputs, build_all, save
from fitting.table import write_fits
from tests.cli import run_main


@pytest.fixture
def stored(tmp_path, synthetic):
    """The synthetic family as one measurements parquet file and a fits file."""
    measurements, fits = tmp_path / "measurements.parquet", tmp_path / "fits.parquet"
    synthetic.measurements.write_parquet(measurements)
    write_fits(synthetic.fits, fits)
    architectures = tmp_path / "architectures.csv"
    synthetic.architectures.write_csv(architectures)
    return measurements, fits, architectures


def test_measurements_alone_draw_figs_1_to_5_and_8_and_say_why_the_others_are_skipped(synthetic):
    built = {b.item.name: b for b in build_all(Inputs(synthetic.measurements))}
    assert list(built) == [item.name for item in ITEMS]
    drawn = {name for name, b in built.items() if b.skipped is None}
    assert drawn == {"Fig 1", "Fig 3", "Fig 4", "Fig 5", "Fig 8"}
    assert built["Fig 2"].skipped == "needs --architectures"
    assert built["Fig 6"].skipped == "needs --fits"
    assert built["Fig 9"].skipped == "needs --fits and --architectures"
    assert built["Table 3"].skipped == "needs --fits and --architectures"


def test_unsuitable_data_is_skipped_with_the_reason(synthetic):
    inputs = Inputs(
        synthetic.measurements, synthetic.fits.filter(pl.col("hypothesis") == "emergence"), synthetic.architectures
    )
    chosen = [item for item in ITEMS if item.name in ("Fig 6", "Table 1", "Table 3", "Table 5")]
    built = {b.item.name: b for b in build_all(inputs, chosen)}
    assert "--hypotheses all" in built["Table 5"].skipped
    assert "at least 10 fitted layers" in built["Table 3"].skipped  # 7 layers
    assert built["Table 1"].skipped is None and built["Fig 6"].skipped is None


def test_save_writes_the_format_and_tables_as_csv_and_markdown(tmp_path, synthetic):
    built = {
        b.item.name: b
        for b in build_all(
            Inputs(synthetic.measurements, synthetic.fits),
            [item for item in ITEMS if item.name in ("Fig 7", "Table 1")],
        )
    }
    (svg,) = save(built["Fig 7"], tmp_path, "svg")
    assert svg.name == "fig7_fit_quality.svg" and svg.read_text().lstrip().startswith("<?xml")
    csv, md = save(built["Table 1"], tmp_path, note="a caveat")
    assert pl.read_csv(csv).height == 2
    text = md.read_text()
    assert text.startswith("# Table 1: ") and "a caveat" in text
    assert len([line for line in text.splitlines() if line.startswith("| synthetic/")]) == 2


def test_figures_command_writes_everything_the_inputs_allow(tmp_path, stored, capsys):
    measurements, fits, architectures = stored
    out = tmp_path / "out"
    status, captured = run_main(
        ["figures", "--store", measurements, "--fits", fits, "--architectures", architectures, "--out", out], capsys
    )
    assert not status
    names = {p.name for p in out.iterdir()}
    assert {f"{item.stem}.png" for item in ITEMS[:10]} <= names  # Figs 9-10 train a paper-target forest here
    assert {"table1_fit_quality.csv", "table1_fit_quality.md", "table5_hypotheses.md"} <= names
    assert "skipped Table 3: the paper protocol needs at least 10 fitted layers" in captured.out
    assert TINY_SUITE_CAVEAT[:30] not in captured.out


def test_report_is_one_self_contained_page(tmp_path, stored, capsys):
    measurements, fits, architectures = stored
    out = tmp_path / "report"
    status, captured = run_main(
        ["report", "--store", measurements, "--fits", fits, "--architectures", architectures, "--out", out], capsys
    )
    assert not status
    page = (out / "report.html").read_text()
    assert captured.out.strip().endswith(f"wrote {out / 'report.html'}")
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 10 and all(base64.b64decode(image)[:4] == b"\x89PNG" for image in images)
    assert page.count("<p class='caption'>") == 10 + 2  # and Tables 1 and 5
    assert "synthetic/four-layers" in page and "probe sequences" in page
    assert "Table 3</b>: the paper protocol needs at least 10 fitted layers" in page
    assert "class='caveat'" not in page and "Tiny-suite data" not in page


def test_report_of_the_tiny_suite_says_the_caveat_once_and_marks_every_figure(tmp_path, capsys, synthetic):
    renamed = synthetic.measurements.with_columns(pl.col("model").str.replace("synthetic/", "tiny-suite/"))
    measurements = tmp_path / "m.parquet"
    renamed.filter(pl.col("model") == "tiny-suite/three-layers").write_parquet(measurements)
    status, captured = run_main(["report", "--store", measurements, "--out", tmp_path, "--jobs", "1"], capsys)
    assert not status
    assert "no --fits: fitted ratio of 3 layers with every hypothesis" in captured.out
    assert pl.read_parquet(tmp_path / "fits.parquet")["hypothesis"].n_unique() == 4
    page = (tmp_path / "report.html").read_text()
    assert f"<p class='caveat' id='caveat'>{TINY_SUITE_CAVEAT[:40]}" in page
    assert page.count(TINY_SUITE_CAVEAT[:40]) == 1
    assert page.count("see the note above</a>") == page.count("class='caption'") > 0


def test_several_probes_need_a_choice(tmp_path, synthetic, capsys):
    twice = pl.concat([synthetic.measurements, synthetic.measurements.with_columns(probe_id=pl.lit("other"))])
    path = tmp_path / "m.parquet"
    twice.write_parquet(path)
    status, captured = run_main(["figures", "--store", path, "--out", tmp_path / "out"], capsys)
    assert status == 2 and "pass --probe-id" in captured.err and len(captured.err.splitlines()) == 1


BAD_INPUT = {
    "missing store": ["--store", "nowhere"],
    "bad series": ["--store", "{measurements}", "--fits", "{fits}", "--series", "loss"],
    "bad fits": ["--store", "{measurements}", "--fits", "{measurements}"],
    "missing predictor": ["--store", "{measurements}", "--fits", "{fits}", "--predictor", "p.skops"],
}
CASES = [("figures", "bad format", ["--store", "{measurements}", "--fits", "{fits}", "--format", "jpeg"])]
CASES += [(command, problem, args) for command in ("figures", "report") for problem, args in BAD_INPUT.items()]


@pytest.mark.parametrize("command, problem, args", CASES, ids=[f"{c}-{p}" for c, p, _ in CASES])
def test_bad_input_is_one_line_and_status_2(tmp_path, stored, capsys, monkeypatch, command, problem, args):
    measurements, fits, _ = stored
    monkeypatch.chdir(tmp_path)
    args = [a.format(measurements=measurements, fits=fits) for a in args]
    status, captured = run_main([command, *args, "--out", tmp_path / "out"], capsys)
    assert status == 2
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("mdyn: error: ")


def test_provenance_counts_revisions_sequences_and_ledger_statuses(synthetic):
    from dynamics.figures.report import provenance

    ledger = pl.DataFrame(
        {
            "model": ["synthetic/four-layers"] * 3 + ["synthetic/three-layers"],
            "status": ["ok", "duplicate", "ok", "missing"],
        }
    )
    table = provenance(synthetic.measurements, ledger)
    four = table.filter(pl.col("model") == "synthetic/four-layers").row(0, named=True)
    assert (four["revisions"], four["probe sequences"], four["layers"]) == (37, 3, 4)
    assert four["ledger"] == "duplicate 1, ok 2"
    assert table.filter(pl.col("model") == "synthetic/three-layers")["ledger"].to_list() == ["missing 1"]
