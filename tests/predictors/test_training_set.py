import numpy as np
import polars as pl
import pytest
from synthetic_family import FAMILY

from fitting.errors import UserError
from predictors.dataset import TARGETS, architectures_by_model, read_table, table_hash, training_table
from predictors.features import FEATURES, layer_features


def test_training_table_keeps_successful_finite_emergence_fits_of_the_series(family, table):
    fits, architectures = family
    assert table.height == sum(L for _, L, _, _ in FAMILY)
    assert table.columns == ["model", "layer", "series", *FEATURES, *TARGETS]
    assert table["series"].unique().to_list() == ["ratio"]
    assert (table["A"] > 0).all()  # the median-series rows (A = -5) and the failed fit (A = -50) are gone
    one = table.filter(pl.col("model") == "syn-h")
    arch = architectures_by_model(architectures)["syn-h"]
    np.testing.assert_array_equal(one.select(FEATURES).to_numpy(), layer_features(arch))
    expected = fits.filter(
        (pl.col("model") == "syn-h") & (pl.col("series") == "ratio") & (pl.col("hypothesis") == "emergence")
    ).sort("layer")
    np.testing.assert_array_equal(one.select(TARGETS).to_numpy(), expected.select(TARGETS).to_numpy())


def test_other_series_can_be_chosen_and_unknown_ones_are_named(family):
    fits, architectures = family
    with (
        pytest.warns(UserWarning, match="dropped 170 of 170 fits"),  # every median row has A = -5
        pytest.raises(UserError, match="no fit of series .median. has A, lam, gamma and t0 above -1"),
    ):
        training_table(fits.filter(pl.col("series") != "ratio"), architectures, "median")
    with pytest.raises(UserError, match=r"no series 'top9'; it has \['median', 'ratio'\]"):
        training_table(fits, architectures, "top9")


def test_log1p_undefined_rows_are_dropped_with_a_warning(family):
    fits, architectures = family
    bad = fits.with_columns(
        A=pl.when((pl.col("model") == "syn-c") & (pl.col("layer") == 2)).then(-3.0).otherwise(pl.col("A"))
    )
    with pytest.warns(UserWarning, match=r"dropped 1 of \d+ fits .*\['syn-c'\]"):
        table = training_table(bad, architectures)
    assert table.height == sum(L for _, L, _, _ in FAMILY) - 1


def test_models_without_an_architecture_are_named(family):
    fits, architectures = family
    with pytest.raises(UserError, match=r"no row for \['syn-a', 'syn-n'\]"):
        training_table(fits, architectures.filter(~pl.col("model").is_in(["syn-a", "syn-n"])))


def test_bad_tables_are_user_errors(family, tmp_path):
    fits, architectures = family
    with pytest.raises(UserError, match=r"lacks column\(s\) lam;"):
        training_table(fits.drop("lam"), architectures)
    with pytest.raises(UserError, match="syn-a: n_heads=4 does not divide d_model=130"):
        architectures_by_model(
            architectures.with_columns(
                d_model=pl.when(pl.col("model") == "syn-a").then(130).otherwise(pl.col("d_model"))
            )
        )
    with pytest.raises(UserError, match="more than once"):
        architectures_by_model(pl.concat([architectures, architectures.head(1)]))
    with pytest.raises(UserError, match="one row per model and layer"):
        training_table(pl.concat([fits, fits.head(1)]), architectures)
    with pytest.raises(UserError, match="layer indices must lie in 0..3"):
        training_table(fits.with_columns(layer=pl.col("layer") + 1), architectures)
    with pytest.raises(UserError, match="no fits file"):
        read_table(tmp_path / "absent.parquet", "fits")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="cannot read the fits file"):
        read_table(tmp_path / "junk.parquet", "fits")


def test_csv_and_parquet_read_alike(family, tmp_path):
    _, architectures = family
    architectures.write_csv(tmp_path / "a.csv")
    architectures.write_parquet(tmp_path / "a.parquet")
    assert read_table(tmp_path / "a.csv", "architectures").equals(read_table(tmp_path / "a.parquet", "architectures"))


def test_table_hash_tracks_the_data(table):
    assert table_hash(table) == table_hash(table.clone())
    assert table_hash(table) != table_hash(table.with_columns(K=pl.col("K") * (1 + 1e-12)))
    assert table_hash(table) != table_hash(table.with_columns(model=pl.col("model").str.replace("syn-a", "syn-z")))


def test_design_groups_put_the_seeds_of_one_design_together():
    """`--target paper`'s leave-one-model-out and Table 3 hold out a design with all of its seeds."""
    from predictors.dataset import design_groups

    row = {"n_layers": 2, "d_model": 64, "n_heads": 2, "d_ff": 256, "total_steps": 1200, "peak_lr": 6e-3}
    architectures = pl.DataFrame(
        [
            {"model": "a", **row, "tokens_per_step": 2048},
            {"model": "a-s1", **row, "tokens_per_step": 2048},
            {"model": "b", **row, "tokens_per_step": 4096},  # same shape, another recipe
        ]
    )
    groups = design_groups(["a", "a-s1", "b", "a"], architectures)
    assert groups[0] == groups[1] == groups[3] and groups[2] != groups[0]
