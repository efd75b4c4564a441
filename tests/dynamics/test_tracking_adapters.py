"""The tracker inside real trainers: a transformers Trainer, PyTorch Lightning, a 2-process DDP run, the tiny suite."""

import json
import socket
import time

import numpy as np
import polars as pl
import pytest
import torch

from dynamics import store
from dynamics.hubcache import repo_folder
from dynamics.tracking import Tracker
from fitting.table import series_table
from tests.dynamics import tracking_setup as setup

STEPS = 24
TRACKED = [0, 1, 2, 4, 8, 16, 24]  # Pythia's doubling, every 8 steps, and the last step
STATS = ["top1", "top2", "top3", "median"]


class Windows(torch.utils.data.Dataset):
    def __len__(self):
        return len(setup.windows())

    def __getitem__(self, i):
        return {"input_ids": setup.windows()[i], "labels": setup.windows()[i]}


def trainer_run(folder, tracked: bool):
    """A Trainer run of STEPS steps saving checkpoint-N at every tracked step and step 0, with or without a tracker."""
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from dynamics.callbacks import TrackingCallback

    class SaveAt(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
            model.save_pretrained(folder / "out" / "checkpoint-0")
            processing_class.save_pretrained(folder / "out" / "checkpoint-0")

        def on_step_end(self, args, state, control, **kwargs):
            control.should_save = state.global_step in TRACKED

    args = TrainingArguments(
        output_dir=str(folder / "out"),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        logging_steps=1,
        report_to=["tensorboard"],
        save_strategy="no",
        save_only_model=True,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    model = setup.neox()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Windows(),
        data_collator=default_data_collator,
        processing_class=setup.tokenizer(),
        callbacks=[SaveAt()],
    )
    tracker = None
    if tracked:
        tracker = Tracker(folder / "store", setup.probe(), "trainer-run", schedule=8, commit="")
        trainer.add_callback(TrackingCallback(trainer, tracker))
    trainer.train()
    return trainer, tracker


@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainer")
    return base, trainer_run(base / "tracked", tracked=True), trainer_run(base / "plain", tracked=False)


def losses(trainer) -> list[float]:
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def test_the_trainer_run_is_tracked_at_its_schedule_and_last_step(trainer_runs):
    base, (trainer, tracker), _ = trainer_runs
    assert tracker.total_steps == STEPS
    ledger = store.load(base / "tracked" / "store", store.LEDGER).sort("step")
    assert ledger["step"].to_list() == TRACKED and set(ledger["status"]) == {"ok"}
    # The trainer's own loss line is kept at the tracked steps.
    assert [row["step"] for row in trainer.state.log_history if "loss" in row] == list(range(1, STEPS + 1))


def test_the_trainer_losses_are_bit_identical_without_the_tracker(trainer_runs):
    _, (tracked, _), (plain, _) = trainer_runs
    assert len(losses(tracked)) == STEPS and losses(tracked) == losses(plain)
    assert all(torch.equal(a, b) for a, b in zip(tracked.model.parameters(), plain.model.parameters()))


def test_live_measurements_equal_an_offline_sweep_of_the_checkpoints(trainer_runs):
    from dynamics.sources import FolderSource
    from dynamics.sweep import Settings, plan, run

    base, (_, tracker), _ = trainer_runs
    folder = base / "tracked"
    sweep_dir = folder / "by-step"
    sweep_dir.mkdir()
    for step in TRACKED:
        (sweep_dir / f"step{step}").symlink_to(folder / "out" / f"checkpoint-{step}")
    settings = Settings(probe="embedded", n_seq=setup.N_SEQ, seq_len=setup.SEQ_LEN, device="cpu")
    source = FolderSource(sweep_dir, model="offline")
    the_plan = plan(source, folder / "offline", "all", settings)
    assert the_plan.probe.probe_id == tracker.probe.probe_id
    run(source, folder / "offline", the_plan, settings)
    live = store.load(folder / "store").sort("step", "layer", "seq")
    offline = store.load(folder / "offline").sort("step", "layer", "seq")
    assert live.height == offline.height == len(TRACKED) * setup.N_SEQ * 3
    assert live["step"].to_list() == offline["step"].to_list()
    for column in STATS:
        np.testing.assert_allclose(live[column].to_numpy(), offline[column].to_numpy(), rtol=1e-6, atol=0)
    assert live["top1_pos"].to_list() == offline["top1_pos"].to_list()
    assert live["top1_dim"].to_list() == offline["top1_dim"].to_list()


def test_the_tensorboard_event_file_holds_the_scalars(trainer_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base, (_, tracker), _ = trainer_runs
    (events,) = (base / "tracked" / "out").rglob("events.out.tfevents*")
    reader = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    reader.Reload()
    series = series_table(store.load(base / "tracked" / "store"))
    for layer in range(3):
        logged = reader.Scalars(f"train/massive/ratio/layer{layer}")
        assert [e.step for e in logged] == TRACKED
        expected = series.filter(pl.col("layer") == layer).sort("step")["value"].to_list()
        assert [e.value for e in logged] == pytest.approx(expected, rel=1e-6)
    tags = set(reader.Tags()["scalars"])
    assert {"train/loss", "train/massive/forecast_ratio/layer0", "train/massive/peak_step_hi/layer2"} <= tags
    final = reader.Scalars("train/massive/forecast_ratio/layer0")[-1]
    assert final.step == STEPS
    assert final.value == pytest.approx(tracker.forecast_table["forecast_ratio"][0], rel=1e-6)


def test_the_lightning_callback_measures_and_logs(tmp_path):
    import lightning.pytorch as lp
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dynamics.lightning_callback import LightningTrackingCallback

    class Module(lp.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = setup.neox()

        def training_step(self, batch, batch_idx):
            return self.model(input_ids=batch, labels=batch).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=3e-3)

    tracker = Tracker(tmp_path / "store", setup.probe(), "lightning-run", schedule=8, commit="")
    trainer = lp.Trainer(
        max_steps=10,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(tmp_path / "tb", name="run"),
        callbacks=[LightningTrackingCallback(tracker)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Module(), torch.utils.data.DataLoader(setup.windows(), batch_size=4))
    assert tracker.total_steps == 10
    ledger = store.load(tmp_path / "store", store.LEDGER).sort("step")
    assert ledger["step"].to_list() == [0, 1, 2, 4, 8, 10]
    (events,) = (tmp_path / "tb").rglob("events.out.tfevents*")
    reader = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    reader.Reload()
    assert [e.step for e in reader.Scalars("massive/ratio/layer1")] == [0, 1, 2, 4, 8, 10]
    assert "massive/forecast_ratio/layer1" in reader.Tags()["scalars"]


def test_the_lightning_callback_names_a_missing_model_attribute(tmp_path):
    import lightning.pytorch as lp

    from dynamics.lightning_callback import LightningTrackingCallback
    from fitting.errors import UserError

    callback = LightningTrackingCallback(Tracker(tmp_path / "store", setup.probe(), "run"), model_attr="net")
    with pytest.raises(UserError, match="no attribute 'net'"):
        callback._track(lp.Trainer(logger=False), lp.LightningModule())


def test_under_ddp_only_rank_zero_measures(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    from tests.dynamics.ddp_tracking import DEADLINE_S, run_rank

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "store"
    # gloo otherwise binds to whatever the host name resolves to; both ranks live on this machine.
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    args = (port, str(root), str(tmp_path), setup.probe(), len(setup.tokenizer()))
    ranks = mp.start_processes(run_rank, args=args, nprocs=2, join=False, start_method="spawn")
    results = [tmp_path / f"rank{r}.json" for r in (0, 1)]
    # What is tested is what each rank measured and wrote. A rank that wrote its result but then stays in
    # torch.distributed's teardown is stopped after a grace period instead of holding the test up.
    deadline, written = time.monotonic() + DEADLINE_S + 30, None
    while not ranks.join(timeout=1):  # raises as soon as one rank fails
        now = time.monotonic()
        if written is None and all(path.exists() for path in results):
            written = now
        if (written is not None and now > written + 30) or now > deadline:
            for process in ranks.processes:
                process.kill()
                process.join()
            if written is None:  # each rank printed its stack to the captured stderr before this
                pytest.fail(f"the DDP ranks wrote no result in {DEADLINE_S + 30} s")
            break
    ranks = [json.loads(path.read_text()) for path in results]
    assert ranks[0]["measured"] == [0, 1, 2, 4, 6] and ranks[1]["measured"] == []
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # still in step: rank 0's measuring held no collective up
    assert sorted(store.load(root, store.LEDGER)["step"]) == [0, 1, 2, 4, 6]


def test_the_suite_trainer_records_live_and_publishes_the_same_checkpoints(tmp_path):
    from dynamics.corpus import read_corpus
    from dynamics.sources import HubSource
    from dynamics.suite import Recipe, checkpoint_steps, corpus_tokens, train_member
    from dynamics.sweep import Settings, plan, run
    from fitting.contracts import Architecture

    tokenizer = setup.tokenizer()
    tokens = corpus_tokens(tokenizer, read_corpus("train")[:2])
    arch = Architecture(2, 32, 2, 128)
    recipe = Recipe(steps=12, lr=3e-3, batch_size=4, seq_len=32, min_warmup_steps=2, n_even_checkpoints=4)
    repo = "tiny-live/neox"
    plain = train_member(arch, recipe, tokenizer, tokens, tmp_path / "plain", repo)
    live = train_member(arch, recipe, tokenizer, tokens, tmp_path / "live", repo, live_store=tmp_path / "store")
    assert plain["revisions"] == live["revisions"]
    for commit in live["revisions"].values():
        snapshot = "snapshots", commit, "model.safetensors"
        blob = (repo_folder(tmp_path / "plain", repo).joinpath(*snapshot)).read_bytes()
        assert blob == repo_folder(tmp_path / "live", repo).joinpath(*snapshot).read_bytes()
    steps = checkpoint_steps(recipe.steps, recipe.n_even_checkpoints)
    assert sorted(store.load(tmp_path / "store", store.LEDGER)["step"]) == steps
    # The live rows are what sweeping the published branches gives, with the probe `mdyn suite ship` uses.
    settings = Settings(probe="embedded", n_seq=10, bos=True, device="cpu")
    source = HubSource(repo, offline=True, cache_dir=tmp_path / "live")
    the_plan = plan(source, tmp_path / "offline", ",".join(map(str, steps)), settings)
    run(source, tmp_path / "offline", the_plan, settings)
    rows = [store.load(tmp_path / s).sort("step", "layer", "seq") for s in ("store", "offline")]
    assert rows[0]["probe_id"].to_list() == rows[1]["probe_id"].to_list()
    assert rows[0]["step"].to_list() == rows[1]["step"].to_list()
    for column in STATS:
        np.testing.assert_allclose(rows[0][column].to_numpy(), rows[1][column].to_numpy(), rtol=1e-6, atol=0)


def test_suite_build_live_store_tracks_every_member(tmp_path, capsys):
    from dynamics.suite import PRESETS, checkpoint_steps
    from tests.cli import run_main

    args = ["suite", "build", "--preset", "micro", "--steps", "4", "--threads", "1", "--cache", tmp_path / "hub"]
    code, _ = run_main([*args, "--live-store", tmp_path / "live"], capsys)
    assert code == 0
    ledger = store.load(tmp_path / "live", store.LEDGER)
    members = {PRESETS["micro"].repo_id(arch, recipe) for arch, recipe in PRESETS["micro"].members}
    assert set(ledger["model"]) == members
    for _, part in ledger.group_by("model"):
        assert sorted(part["step"]) == checkpoint_steps(4, 4)
