"""Issue 18, case 14: figures across models label each one unambiguously, and Fig 2 joins only one family's models."""

import polars as pl
import pytest

from dynamics import figures
from dynamics.figures.style import family, labels
from fitting.synthetic import paper_like_steps, synthetic_measurements

CURVE = dict(A=40.0, lam=0.5, gamma=4e-4, t0=1.0, K=20.0)
# The demo suite and the full suite share model names; two Pythia models; one model of its own.
SIZES = {
    "tiny-suite/neox-L2-d64-h2": 105_000,
    "tiny-suite-demo/neox-L2-d64-h2": 105_000,
    "tiny-suite/neox-L4-d128-h4": 830_000,
    "EleutherAI/pythia-14m": 14_000_000,
    "EleutherAI/pythia-70m": 70_000_000,
    "someone/other-model": 400_000,
}


@pytest.fixture(scope="module")
def mixed():
    curves = {
        (model, layer): {**CURVE, "K": CURVE["K"] * (1 + i) + layer}
        for i, model in enumerate(SIZES)
        for layer in range(2 + i % 3)
    }
    measurements = synthetic_measurements(curves, paper_like_steps(), n_seq=2, seed=0)
    architectures = pl.DataFrame({"model": list(SIZES), "n_params": list(SIZES.values())})
    return measurements, architectures


def test_14_labels_are_the_shortest_unique_names():
    assert labels(SIZES) == {
        "tiny-suite/neox-L2-d64-h2": "tiny-suite/neox-L2-d64-h2",
        "tiny-suite-demo/neox-L2-d64-h2": "tiny-suite-demo/neox-L2-d64-h2",
        "tiny-suite/neox-L4-d128-h4": "neox-L4-d128-h4",
        "EleutherAI/pythia-14m": "pythia-14m",
        "EleutherAI/pythia-70m": "pythia-70m",
        "someone/other-model": "other-model",
    }
    assert family("EleutherAI/pythia-70m-deduped") == "EleutherAI/pythia" == family("EleutherAI/pythia-14m")
    assert family("tiny-suite/neox-L2-d64-h2") != family("tiny-suite-demo/neox-L2-d64-h2")
    assert family("my-model") == "my-model" != family("my-other")  # local folders: each its own


def test_14_fig2_labels_every_model_apart_and_joins_only_a_familys_models(mixed):
    measurements, architectures = mixed
    fig = figures.fig2_ratio_vs_size(measurements, architectures)
    ax = fig.axes[0]
    assert sorted(text.get_text() for text in ax.texts) == sorted(labels(SIZES).values())
    families = {}
    for model, size in SIZES.items():
        families.setdefault(family(model), set()).add(float(size))
    joined = [set(map(float, line.get_xdata())) for line in ax.get_lines() if len(line.get_xdata()) > 1]
    # Two values per model (largest layer, mean over layers), so two lines per family of two or more.
    assert len(joined) == 2 * sum(len(sizes) > 1 for sizes in families.values())
    for sizes in joined:
        assert any(sizes <= members for members in families.values()), sizes
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert {"tiny-suite/neox-*", "EleutherAI/pythia-*", "someone/other-*"} <= set(legend)


def test_14_fig5_rows_are_labelled_apart(mixed):
    measurements, architectures = mixed
    fig = figures.fig5_peak_heatmaps(measurements, architectures)
    rows = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert len(rows) == len(set(rows)) == len(SIZES)
    assert {"tiny-suite/neox-L2-d64-h2", "tiny-suite-demo/neox-L2-d64-h2", "pythia-70m"} <= set(rows)


def test_14_figs_3_6_and_7_label_models_apart_too(mixed):
    from fitting.table import fit_table

    measurements, architectures = mixed
    twins = ["tiny-suite/neox-L2-d64-h2", "tiny-suite-demo/neox-L2-d64-h2"]
    fig3 = figures.fig3_layer_profiles(measurements, architectures, models=twins)
    assert [ax.get_title() for ax in fig3.axes] == twins
    part = measurements.filter(pl.col("model").is_in(twins))
    fits = fit_table(part, series="ratio", n_jobs=1)
    fig6 = figures.fig6_example_fits(part, fits, models=twins)
    assert {ax.get_title().split(",")[0] for ax in fig6.axes} == set(twins)
    fig7 = figures.fig7_fit_quality(fits)
    assert sorted(text.get_text() for text in fig7.axes[0].get_legend().get_texts()) == sorted(twins)
