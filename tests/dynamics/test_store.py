import json

import polars as pl
import pytest

from dynamics import store
from fitting.errors import UserError


def stats(n_seq=2, n_layers=3, scale=1.0):
    rows = [
        {
            "seq": s,
            "layer": l,
            "top1": scale * (l + 1),
            "top2": 0.9,
            "top3": 0.8,
            "median": 0.1,
            "top1_pos": 0,
            "top1_dim": 5,
            "n_nonfinite": 0,
        }
        for l in range(n_layers)
        for s in range(n_seq)
    ]
    return pl.DataFrame(rows)


def shard(model="org/m", revision="step1", step=1, probe_id="p1", **kw):
    return store.as_measurements(
        stats(**kw),
        model=model,
        revision=revision,
        step=step,
        commit="c" * 40,
        weights_sha256="a" * 64,
        probe_id=probe_id,
        dtype="float32",
        device="cpu",
    )


def test_round_trip_keeps_contract_and_rows(tmp_path):
    root = store.open_store(tmp_path / "s")
    store.write_shard(root, store.MEASUREMENTS, shard(revision="step1"))
    store.write_shard(root, store.MEASUREMENTS, shard(revision="step2", step=2, scale=2.0))
    df = store.load(root)
    assert df.columns == list(store.MEASUREMENTS.schema)
    assert df.height == 12 and df["revision"].n_unique() == 2
    assert df.schema == pl.Schema(store.MEASUREMENTS.schema)
    assert store.measured(root) == {("org/m", "step1", "p1"), ("org/m", "step2", "p1")}


def test_rewriting_a_shard_replaces_it(tmp_path):
    root = store.open_store(tmp_path / "s")
    store.write_shard(root, store.MEASUREMENTS, shard(scale=1.0))
    store.write_shard(root, store.MEASUREMENTS, shard(scale=3.0))
    df = store.load(root)
    assert df.height == 6 and df["top1"].max() == 9.0
    assert not list(root.rglob("*.tmp"))


def test_shard_must_hold_one_revision(tmp_path):
    root = store.open_store(tmp_path / "s")
    two = pl.concat([shard(revision="a"), shard(revision="b")])
    with pytest.raises(ValueError, match="one \\(model, revision, probe\\)"):
        store.write_shard(root, store.MEASUREMENTS, two)


def test_a_folder_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a massive-dynamics store"):
        store.open_store(tmp_path / "other")
    with pytest.raises(UserError, match="no store at"):
        store.open_store(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_a_store_another_process_is_creating_counts_as_empty(tmp_path):
    """Between another process's mkdir and its marker's rename (DDP ranks start together) the folder holds only
    the temporary marker; opening it then is no error, while any other file still is."""
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / f".{store.MARKER}.k2j4.tmp").write_bytes(b"")
    assert store.check_store(folder) is False
    assert store.check_store(store.open_store(folder)) is True
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / f".{store.MARKER}.k2j4.tmp.bak").write_bytes(b"")
    with pytest.raises(UserError, match="not a massive-dynamics store"):
        store.check_store(tmp_path / "t")


def test_schema_version_mismatch_is_refused(tmp_path):
    root = store.open_store(tmp_path / "s")
    (root / store.MARKER).write_text('{"schema_version": 999}')
    with pytest.raises(UserError, match="schema version 999"):
        store.open_store(root)


def test_empty_store_loads_empty_tables_with_schema(tmp_path):
    root = store.open_store(tmp_path / "s")
    assert store.load(root).schema == pl.Schema(store.MEASUREMENTS.schema)
    assert store.load(root, store.LEDGER).schema == pl.Schema(store.LEDGER.schema)


def test_models_json_of_an_older_store_is_read_and_upgraded(tmp_path):
    """Stores written before architectures were recorded map each model to its origin string."""
    from fitting.contracts import Architecture

    root = store.open_store(tmp_path / "s")
    (root / store.MODELS).write_text(json.dumps({"old": "hub:org/old"}))
    with pytest.raises(UserError, match="already holds model 'old' from org/old"):
        store.claim_model(root, "old", "folder:/elsewhere")
    store.claim_model(root, "old", "hub:org/old", Architecture(2, 32, 4, 128))
    assert json.loads((root / store.MODELS).read_text())["old"]["origin"] == "hub:org/old"
    assert store.recorded_architectures(root).row(0, named=True)["n_layers"] == 2
