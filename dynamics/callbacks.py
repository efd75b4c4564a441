"""A transformers `TrainerCallback` that tracks a Trainer's run with a `dynamics.tracking.Tracker`.

It measures at the start of training (step 0 of a fresh run) and after every optimizer update the tracker's
schedule names, and logs the scalars through `trainer.log`, so TensorBoard, W&B and every other reporting
integration get them at the trainer's global step (a callback's own `on_log` would run after theirs).
"""

from transformers import TrainerCallback

from dynamics.tracking import Tracker


class TrackingCallback(TrainerCallback):
    """Measure a `transformers.Trainer`'s model at the tracker's steps; add it with `trainer.add_callback`.

    The tracker's `total_steps`, when not set, becomes the trainer's `max_steps` (measured too, and the forecast's
    target). Under DDP only the world's rank 0 measures and logs.
    """

    def __init__(self, trainer, tracker: Tracker):
        self.trainer, self.tracker = trainer, tracker

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.tracker.total_steps is None and state.max_steps > 0:
            self.tracker.total_steps = state.max_steps
        self._track(state, control, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._track(state, control, model)

    def _track(self, state, control, model) -> None:
        values = self.tracker.maybe_measure(state.global_step, model)
        if values:
            # trainer.log clears should_log, which would drop the trainer's own loss line at this step.
            should_log = control.should_log
            self.trainer.log(values)
            control.should_log = should_log
