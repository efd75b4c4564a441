"""Issue 18, case 15: the report page says the toy-model caveat once, marks what it concerns, shows readable table
headers, survives fits that all failed, and loads and fits in a real headless Chromium 1100 px wide."""

import html
import re

import polars as pl
import pytest

from dynamics.embedded import TINY_SUITE_CAVEAT
from dynamics.figures import ITEMS, Inputs, build_all, save
from dynamics.figures.report import TOY_BADGE, provenance, render
from fitting.contracts import package_version
from tests.fixtures.browser import chromium

WIDTH = 1100


def page_of(inputs: Inputs, tiny_suite: bool, items=ITEMS) -> tuple[str, list]:
    built = list(build_all(inputs, items))
    return render(
        built, provenance(inputs.measurements), {"measurements": "test"}, package_version(), tiny_suite
    ), built


def heading(page: str, stem: str) -> str:
    """The <h2> of one item of the page."""
    match = re.search(rf"<h2 id='{stem}'>.*?</h2>", page)
    assert match, f"no heading for {stem}"
    return match.group(0)


@pytest.fixture(scope="module")
def shipped_page(embedded, embedded_fits, tmp_path_factory):
    """The report of the shipped tiny-suite data (every figure and table but the sites' ones), as a file."""
    inputs = Inputs(embedded.measurements, embedded_fits, embedded.architectures, n_estimators=20)
    page, built = page_of(inputs, tiny_suite=True)
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(page, encoding="utf-8")
    return path, built


def test_15_the_caveat_is_said_once_and_every_figure_of_toy_models_is_marked(shipped_page):
    path, built = shipped_page
    page = path.read_text()
    made = [b for b in built if b.skipped is None]
    assert len(made) == 13
    assert page.count(html.escape(TINY_SUITE_CAVEAT)) == 1 and "id='caveat'" in page
    assert "Tiny-suite data:" not in page  # the old per-caption repetition
    assert page.count(TOY_BADGE) == len(made)
    assert all(TOY_BADGE in heading(page, b.item.stem) for b in made)


def test_15_only_figures_of_toy_models_carry_the_badge(synthetic):
    renamed = synthetic.measurements.with_columns(
        pl.col("model").str.replace("synthetic/three-layers", "tiny-suite/three-layers", literal=True)
    )
    chosen = [item for item in ITEMS if item.name in ("Fig 1", "Fig 3", "Fig 4")]
    page, _ = page_of(Inputs(renamed, architectures=synthetic.architectures), tiny_suite=True, items=chosen)
    assert page.count(html.escape(TINY_SUITE_CAVEAT)) == 1
    # Figs 1 and 4 draw the deepest model (synthetic/four-layers), Fig 3 every model.
    assert TOY_BADGE not in heading(page, "fig1_overview") and TOY_BADGE not in heading(page, "fig4_layer_trajectories")
    assert TOY_BADGE in heading(page, "fig3_layer_profiles")


def test_15_tables_show_readable_headers_and_the_files_keep_the_column_names(shipped_page, tmp_path):
    path, built = shipped_page
    page = path.read_text()
    headers = re.findall(r"<th>(.*?)</th>", page)
    assert headers and not [h for h in headers if "_" in h]
    assert {"mean R²", "layers with R² &lt; 0.9", "Eq. 9", "probe id", "random forest"} <= set(headers)
    assert page.count("<table>") == page.count("<div class='table'><table>")  # each scrolls in its own box
    table1 = next(b for b in built if b.item.name == "Table 1")
    csv, md = save(table1, tmp_path)
    assert pl.read_csv(csv).columns == ["model", "layers", "mean_r2", "layers_r2_below_0_9", "failed"]


def test_15_fig7_of_fits_that_all_failed_is_skipped_with_the_reason(synthetic):
    failed = synthetic.fits.with_columns(success=pl.lit(False), r2=pl.lit(None, pl.Float64))
    chosen = [item for item in ITEMS if item.name in ("Fig 7", "Fig 8", "Table 1")]
    built = {b.item.name: b for b in build_all(Inputs(synthetic.measurements, failed), chosen)}
    assert "none of the 7 Eq. 9 fits" in built["Fig 7"].skipped
    assert built["Fig 8"].skipped is None and built["Table 1"].skipped is None
    assert built["Table 1"].result["mean_r2"].null_count() == 2


def test_15_in_chromium_every_image_loads_and_nothing_overflows_the_page(shipped_page):
    path, built = shipped_page
    n_figures = sum(b.skipped is None and b.item.name.startswith("Fig") for b in built)
    with chromium(WIDTH) as browser:
        browser.open(path.resolve().as_uri())
        seen = browser.run(
            "return {images: Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth]),"
            " width: window.innerWidth, page: document.documentElement.scrollWidth,"
            " tables: Array.from(document.querySelectorAll('div.table'), d => d.clientWidth <= window.innerWidth)}"
        )
    assert seen["width"] == WIDTH
    assert len(seen["images"]) == n_figures == 10
    assert all(complete and width > 0 for _, complete, width in seen["images"]), seen["images"]
    assert seen["page"] <= seen["width"], f"the page is {seen['page']} px wide in a {seen['width']} px window"
    assert seen["tables"] and all(seen["tables"])
