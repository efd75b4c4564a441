"""Shared look of the figures: a colour-blind-safe palette, the step axis, model order and the tiny-suite note.

Figures are plain `matplotlib.figure.Figure` objects, never registered with pyplot, so that building them
needs no GUI backend and leaves nothing open to close.
"""

import textwrap

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import MaxNLocator

from dynamics.embedded import TINY_SUITE_CAVEAT, is_tiny_suite

# Okabe & Ito (2008), without its yellow, which is too pale for lines on white.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
SEQUENTIAL = "cividis"
TINY_SUITE_NOTE = "tiny-suite-note"  # the gid of the caveat's text artist, by which a page finds marked figures
DPI = 150
STEP_LABEL = "training step (log scale; step 0 at the left)"


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches with constrained layout."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def style(i: int) -> dict:
    """Colour and marker of the i-th model of a figure: the palette, then again with other markers."""
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[(i // len(PALETTE) + i) % len(MARKERS)]}


def step_axis(ax) -> None:
    """Symlog step axis: logarithmic above step 1 and linear below it, so that step 0 is shown."""
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel(STEP_LABEL)
    ax.grid(True, which="major", alpha=0.3)


def layer_axis(ax) -> None:
    """An x axis of 0-based decoder-block indices, with integer ticks."""
    ax.set_xlabel("layer (0-based decoder block)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def labels(models) -> dict[str, str]:
    """Each model's label in a figure: its name without the organisation when no other model drawn has that name,
    else the full id (tiny-suite/neox-L4-d128-h4 beside tiny-suite-demo/neox-L4-d128-h4)."""
    models = list(models)
    names = [m.rsplit("/", 1)[-1] for m in models]
    return {m: name if names.count(name) == 1 else m for m, name in zip(models, names)}


def family(model: str) -> str:
    """The series a model belongs to: its organisation and its name up to the first '-' (EleutherAI/pythia for
    EleutherAI/pythia-70m); a model without an organisation (a local folder) is a family of its own."""
    org, _, name = model.rpartition("/")
    return f"{org}/{name.split('-', 1)[0]}" if org else model


def depth_order(table: pl.DataFrame) -> list[str]:
    """The models of a table ordered by number of layers (a stand-in for size), then by how many steps they were
    measured at (so that of equally deep models the last is the one with the longest series), then name."""
    steps = pl.col("step").n_unique() if "step" in table.columns else pl.lit(0)
    layers = table.group_by("model").agg(pl.col("layer").max(), steps.alias("steps")).sort("layer", "steps", "model")
    return layers["model"].to_list()


def size_order(models, architectures: pl.DataFrame | None) -> list[str]:
    """`models` ordered by parameter count when the architectures table has it for all of them, else as given."""
    if architectures is None or "n_params" not in architectures.columns:
        return list(models)
    counts = dict(architectures.select("model", "n_params").iter_rows())
    if any(counts.get(m) is None for m in models):
        return list(models)
    return sorted(models, key=lambda m: (counts[m], m))


def spread(items: list, n: int) -> list:
    """Up to n items evenly spread over the list, keeping its first and last."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))]


def note_tiny_suite(fig: Figure, models) -> None:
    """Add the docs/science.md §9 caveat under the figure when any of `models` comes from the tiny suite."""
    if not any(is_tiny_suite(m) for m in models):
        return
    width = fig.get_figwidth()
    text = textwrap.fill(TINY_SUITE_CAVEAT, width=int(width * 15))
    lines = text.count("\n") + 1
    share = min(0.25, 0.16 * lines / fig.get_figheight())
    engine = fig.get_layout_engine()
    assert isinstance(engine, ConstrainedLayoutEngine), "figures are made by new_figure, with constrained layout"
    engine.set(rect=(0, share, 1, 1 - share))
    fig.text(0.01, 0.01, text, fontsize=7.5, color="0.3", va="bottom", ha="left", gid=TINY_SUITE_NOTE)


def has_tiny_suite_note(fig: Figure) -> bool:
    """Whether `note_tiny_suite` added the caveat to the figure."""
    return any(text.get_gid() == TINY_SUITE_NOTE for text in fig.texts)
