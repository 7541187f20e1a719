"""ms-swift: hard-sample mining in ``swift sft``.

A plugin file for swift's ``--external_plugins``. Importing it makes
``swift sft`` (task ``causal_lm``) train with :class:`MinedSeq2SeqTrainer`:
swift's own trainer with hardmine's mixin, configured by the YAML file named in
``HARDMINE_MINING`` (the keys of ``custom.hard_sample_mining``)::

    HARDMINE_MINING=mining.yaml swift sft \\
        --external_plugins "$(python -m hardmine.integrations.swift)" \\
        --model ... --dataset train.jsonl ...

What it changes in swift's trainer, and why:

* swift builds its own batch sampler in ``get_train_dataloader`` and never asks
  for ``_get_train_sampler``; with mining on, the dataloader is Trainer's own,
  which draws from hardmine's sampler (otherwise plans would be ignored);
* the training loss comes from hardmine's tiled LM head (one forward, no
  logits, per-sample losses from the same computation), so swift's
  ``logits_to_keep`` trimming is switched off and swift's token accuracy is not
  logged while mining;
* what cannot be mined correctly is refused with a message: ``--packing``
  (a packed row is not one sample), sequence parallelism, custom loss scales,
  channel or DFT losses, and resuming a swift run (its dataloader skipping).

Padding-free batches (``--padding_free true``) are supported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hardmine.config import load_mining_settings
from hardmine.core import UserInputError
from hardmine.train.trainer import HardMiningMixin

#: The environment variable naming the mining YAML.
MINING_ENV = "HARDMINE_MINING"
#: Keys swift's ``_prepare_inputs`` adds to a batch for its own loss.
SWIFT_LOSS_KEYS = ("compute_loss_func", "loss_scale", "text_position_ids", "channel", "logits_to_keep")


def _swift_trainer_class():
    from swift.trainers import Seq2SeqTrainer

    return Seq2SeqTrainer


class MinedSeq2SeqTrainer(HardMiningMixin, _swift_trainer_class()):
    """swift's ``Seq2SeqTrainer`` with hardmine's mining (settings from ``HARDMINE_MINING``)."""

    def __init__(self, *args, **kwargs):
        settings_file = os.environ.get(MINING_ENV)
        settings = load_mining_settings(settings_file) if settings_file else None
        super().__init__(*args, mining=settings, **kwargs)  # None or enabled: false: swift's trainer as it is
        if self.mining is not None:
            self._refuse_what_cannot_be_mined()
            self.args.use_logits_to_keep = False  # the tiled head already scores supervised positions only

    def _refuse_what_cannot_be_mined(self) -> None:
        template, args = self.template, self.args
        problems = []
        if getattr(template, "packing", False):
            problems.append("--packing true merges samples into rows; use --padding_free true instead")
        if getattr(template, "sequence_parallel_size", 1) > 1:
            problems.append("sequence parallelism (--sequence_parallel_size > 1)")
        if getattr(args, "enable_channel_loss", False) or getattr(args, "enable_dft_loss", False):
            problems.append("--enable_channel_loss / --enable_dft_loss")
        if getattr(args, "resume_from_checkpoint", None):
            problems.append("--resume_from_checkpoint (swift resumes by skipping batches of its own sampler)")
        if problems:
            raise UserInputError("hardmine mining in swift sft cannot be used with: " + "; ".join(problems))

    def get_train_dataloader(self, skip_batches: int = 0):
        if self.mining is None:
            return super().get_train_dataloader(skip_batches)
        from transformers import Trainer

        return Trainer.get_train_dataloader(self)  # asks _get_train_sampler: hardmine's sampler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.mining is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        extra = {k: inputs.pop(k) for k in SWIFT_LOSS_KEYS if k in inputs}
        loss_scale = extra.get("loss_scale")
        if extra.get("compute_loss_func") is not None or (loss_scale is not None and not bool((loss_scale <= 1).all())):
            raise UserInputError("hardmine mining in swift sft cannot be used with a custom loss function or loss scale")
        return HardMiningMixin.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


def register() -> None:
    """Make ``swift sft`` (task causal_lm) build :class:`MinedSeq2SeqTrainer`."""
    from swift.trainers import TrainerFactory

    TrainerFactory.TRAINER_MAPPING["causal_lm"] = f"{__name__}.MinedSeq2SeqTrainer"


if __name__ == "__main__":
    # ``python -m hardmine.integrations.swift`` prints the plugin file to pass to --external_plugins.
    print(Path(__file__).resolve())
    sys.exit(0)
else:
    register()
