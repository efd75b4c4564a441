"""One self-contained HTML page of the figures and tables: images embedded as base64 PNG, tables as HTML,
a caption for each, the provenance of the data and, for tiny-suite data, the caveat of docs/science.md §9.

The page fits a window 1100 px wide: images scale down, and a table wider than the page scrolls inside its own
box. Table headers are readable names (`HEADERS`); the CSV and parquet files keep the column names.
"""

import base64
import html
import io
from datetime import UTC, datetime

import polars as pl
from matplotlib.figure import Figure

from dynamics.embedded import TINY_SUITE_CAVEAT, is_tiny_suite
from dynamics.figures.catalog import Built
from dynamics.figures.style import has_tiny_suite_note
from dynamics.figures.tables import format_cell

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222;
       box-sizing: border-box; overflow-wrap: anywhere; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
img { max-width: 100%; height: auto; } p.caption { color: #444; max-width: 60em; }
div.table { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; overflow-wrap: normal; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; white-space: nowrap; }
.caveat { background: #fff4e0; border-left: 4px solid #E69F00; padding: 0.6em 1em; }
a.toy { display: inline-block; font-size: 0.8em; color: #6b4a00; background: #fff4e0; border: 1px solid #E69F00;
        border-radius: 0.8em; padding: 0.05em 0.7em; margin-left: 0.6em; text-decoration: none;
        vertical-align: middle; font-weight: normal; }
"""
TOY_BADGE = "<a class='toy' href='#caveat'>toy-model data, see the note above</a>"
# Readable headers of the columns the tables show; any other column is shown with spaces for underscores.
HEADERS = {
    "mean_r2": "mean R²",
    "layers_r2_below_0_9": "layers with R² < 0.9",
    "emergence": "Eq. 9",
    "log_rise": "log rise (λ = 0)",
    "first_order_step": "1st-order step",
    "second_order_step": "2nd-order step",
    "probe_id": "probe id",
    "package_version": "massive-dynamics version",
}


def header(column: str) -> str:
    """The readable header of a table column (`HEADERS`, else the name with spaces for underscores)."""
    return HEADERS.get(column, column.replace("_", " "))


def provenance(measurements: pl.DataFrame, ledger: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per model: revisions, first and last step, probe sequences, layers, probe ids, dtype, device, versions;
    with a ledger, its status counts."""
    text = [c for c in ("probe_id", "dtype", "device", "package_version") if c in measurements.columns]
    table = (
        measurements.group_by("model")
        .agg(
            pl.col("step").n_unique().alias("revisions"),
            pl.col("step").min().alias("first step"),
            pl.col("step").max().alias("last step"),
            pl.col("seq").n_unique().alias("probe sequences"),
            pl.col("layer").n_unique().alias("layers"),
            *(pl.col(c).cast(pl.String).drop_nulls().unique().sort().str.join(", ").alias(c) for c in text),
        )
        .sort("model")
    )
    if ledger is not None and not ledger.is_empty():
        table = table.join(_ledger_counts(ledger), on="model", how="left")
    return table


def _ledger_counts(ledger: pl.DataFrame) -> pl.DataFrame:
    """Per model, the sweep's status counts as one string, e.g. 'ok 30, duplicate 2'."""
    counts = ledger.group_by("model", "status").agg(pl.len().alias("n")).sort("model", "status")
    return counts.group_by("model", maintain_order=True).agg(
        pl.format("{} {}", "status", "n").str.join(", ").alias("ledger")
    )


def render(
    built: list[Built],
    origin: pl.DataFrame,
    sources: dict[str, str],
    version: str,
    tiny_suite: bool = False,
    title: str = "Massive-activation dynamics",
) -> str:
    """The HTML page: title, provenance (`origin` per model and `sources` name -> description), then every built
    figure and table with its caption, then what was skipped and why; for `tiny_suite` data, the caveat of
    docs/science.md §9 once at the top, and a badge pointing to it on every figure and table drawn from
    tiny-suite models."""
    made = [b for b in built if b.skipped is None]
    skipped = [b for b in built if b.skipped is not None]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Written {now} by massive-dynamics {html.escape(version)}: {len(made)} figures and tables"
        f"{f', {len(skipped)} skipped' if skipped else ''}.</p>",
    ]
    if tiny_suite:
        parts.append(f"<p class='caveat' id='caveat'>{html.escape(TINY_SUITE_CAVEAT)}</p>")
    parts.append("<h2>Provenance</h2><ul>")
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in sources.items()]
    parts.append("</ul>" + table_html(origin))
    parts.append(
        "<h2>Contents</h2><ul>"
        + "".join(
            f"<li><a href='#{b.item.stem}'>{html.escape(b.item.name)}: {html.escape(b.item.title)}</a></li>"
            for b in made
        )
        + "</ul>"
    )
    for b in made:
        badge = TOY_BADGE if tiny_suite and _shows_tiny_suite(b) else ""
        parts.append(f"<h2 id='{b.item.stem}'>{html.escape(b.item.name)}: {html.escape(b.item.title)}{badge}</h2>")
        if isinstance(b.result, Figure):
            parts.append(f"<img alt='{html.escape(b.item.name)}' src='data:image/png;base64,{png_base64(b.result)}'>")
        elif isinstance(b.result, pl.DataFrame):
            for block_title, rows in b.item.blocks(b.result):
                parts.append((f"<h3>{html.escape(block_title)}</h3>" if block_title else "") + table_html(rows))
        parts.append(f"<p class='caption'>{html.escape(b.item.caption)}</p>")
    if skipped:
        parts.append(
            "<h2>Skipped</h2><ul>"
            + "".join(f"<li><b>{html.escape(b.item.name)}</b>: {html.escape(b.skipped or '')}</li>" for b in skipped)
            + "</ul>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _shows_tiny_suite(built: Built) -> bool:
    """Whether a built figure or table shows tiny-suite models: a figure carries the caveat (`note_tiny_suite`),
    a table has their rows; a table without a model column (Table 3) is drawn from every model."""
    if isinstance(built.result, Figure):
        return has_tiny_suite_note(built.result)
    if built.result is not None and "model" in built.result.columns:
        return any(is_tiny_suite(str(m)) for m in built.result["model"].unique().to_list())
    return True


def png_base64(fig: Figure) -> str:
    """The figure as a base64-encoded PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def table_html(table: pl.DataFrame, digits: int = 4) -> str:
    """A DataFrame as an HTML table in a box that scrolls when it is wider than the page: readable headers
    (`header`), cells escaped, floats to `digits` decimals."""
    head = "".join(f"<th>{html.escape(header(c))}</th>" for c in table.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v, digits))}</td>" for v in row) + "</tr>"
        for row in table.iter_rows()
    )
    return f"<div class='table'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
