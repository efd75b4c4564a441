"""A PyTorch Lightning `Callback` that tracks a run with a `dynamics.tracking.Tracker` (extra: `lightning`).

It measures when training starts and after every batch whose optimizer step the tracker's schedule names
(`trainer.global_step` counts optimizer updates, so gradient accumulation measures once per update), and sends
the scalars to every logger of the trainer (`trainer.loggers`) at that step.
"""

import lightning.pytorch as lp

from dynamics.tracking import Tracker
from fitting.errors import UserError


class LightningTrackingCallback(lp.Callback):
    """Measure the transformers model inside a LightningModule at the tracker's steps.

    `model_attr` names the LightningModule's attribute holding the transformers model (None: the module itself).
    The tracker's `total_steps`, when not set, becomes the trainer's `max_steps` when that is given.
    """

    def __init__(self, tracker: Tracker, model_attr: str | None = "model"):
        self.tracker, self.model_attr = tracker, model_attr

    def on_train_start(self, trainer: lp.Trainer, pl_module: lp.LightningModule) -> None:
        if self.tracker.total_steps is None and trainer.max_steps > 0:
            self.tracker.total_steps = trainer.max_steps
        self._track(trainer, pl_module)

    def on_train_batch_end(self, trainer: lp.Trainer, pl_module: lp.LightningModule, outputs, batch, batch_idx) -> None:
        self._track(trainer, pl_module)

    def _track(self, trainer: lp.Trainer, pl_module: lp.LightningModule) -> None:
        if self.model_attr is not None and not hasattr(pl_module, self.model_attr):
            raise UserError(
                f"{type(pl_module).__name__} has no attribute {self.model_attr!r}; pass model_attr= naming the one "
                "that holds the transformers model (None: the module itself)"
            )
        model = pl_module if self.model_attr is None else getattr(pl_module, self.model_attr)
        values = self.tracker.maybe_measure(trainer.global_step, model)
        if values:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
