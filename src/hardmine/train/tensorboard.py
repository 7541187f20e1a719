"""TensorBoard histograms of the aggregated losses, beside the ``hsm/*`` scalars.

After each active mining epoch, rank 0 holds the aggregated loss of every
observed target sample and of the new hard set
(:attr:`hardmine.train.mining.HardMining.histograms`). When the epoch's
``hsm/*`` row is logged, this callback writes both as histograms through the
Trainer's own TensorBoard writer, at the same global step, so they land in the
run's event file next to the scalars. Without TensorBoard reporting, or on
other ranks, it does nothing.
"""

from __future__ import annotations

import numpy as np
from transformers import TrainerCallback


def tensorboard_writer(trainer):
    """The SummaryWriter of the trainer's TensorBoard callback, or None."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback":
            return getattr(callback, "tb_writer", None)
    return None


class LossHistogramCallback(TrainerCallback):
    def __init__(self, mining, trainer):
        self.mining = mining
        self.trainer = trainer
        self.mode_written = False  # the selection mode goes to TensorBoard once, as text

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The hsm/* row of an epoch: the TensorBoard callback (registered
        # before this one) has just opened its writer and written the scalars.
        if logs and "hsm/epoch" in logs and self.mining.selection_mode and not self.mode_written:
            writer = tensorboard_writer(self.trainer)
            if writer is not None:
                writer.add_text("hsm/selection_mode", self.mining.selection_mode, state.global_step)
                self.mode_written = True
        histograms = self.mining.histograms
        if not logs or "hsm/epoch" not in logs or histograms is None:
            return
        self.mining.histograms = None  # once per epoch
        writer = tensorboard_writer(self.trainer)
        if writer is None:
            return
        for tag, values in histograms.items():
            values = np.asarray(values, np.float64)
            values = values[np.isfinite(values)]
            if values.size:
                writer.add_histogram(tag, values, state.global_step)
        writer.flush()
