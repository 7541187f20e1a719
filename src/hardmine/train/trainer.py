"""The Trainer glue: sampler, metadata, per-sample loss, the mining callback.

:class:`HardmineTrainer` differs from ``transformers.Trainer`` only where it
must:

* the training sampler is the :class:`ScheduleSampler` it is given (fusion
  quotas, augmentation positions, and the mining plan);
* sample metadata (``sample_id``, ``dataset``, ``base_idx``, ``position``,
  ``sample_index``) is removed from each batch before the model's forward;
* with mining on, the per-sample losses of each training micro-batch are
  computed from the logits of that same forward (no second forward; chunked,
  no full float32 copy of the logits) and recorded. The loss the model returns,
  and so the training, is untouched.

With mining off (``mining=None``) the trainer adds no callback and records
nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..data.collate import split_metadata
from .loss import per_sample_loss, sample_index_for_padded
from .mining import STATE_FILE, HardMining


def per_sample_means(logits: torch.Tensor, labels: torch.Tensor, metadata: dict) -> torch.Tensor:
    """Masked mean cross-entropy of each sample of a batch (NaN: nothing supervised)."""
    num_samples = int(metadata["sample_id"].numel())
    sample_index = metadata.get("sample_index")
    if sample_index is None:
        sample_index = sample_index_for_padded(labels.shape[0], labels.shape[1], device=labels.device)
    with torch.no_grad():
        sums, counts = per_sample_loss(logits.detach(), labels, sample_index.to(labels.device), num_samples, checkpoint=False)
    means = sums / counts.clamp(min=1)
    return torch.where(counts > 0, means, torch.full_like(means, float("nan")))


class HardMiningMixin:
    """Mix into any ``transformers.Trainer`` subclass (TRL's ``SFTTrainer`` too).

    ``train_sampler``: the :class:`ScheduleSampler` to train with; ``mining``:
    the :class:`HardMining` stage, or None for none. Batches must carry the
    metadata of :data:`hardmine.data.collate.METADATA_KEYS`.
    """

    def __init__(self, *args, train_sampler=None, mining: HardMining | None = None, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if mining is not None:
            callbacks.append(HardMiningCallback(mining, self))
        super().__init__(*args, callbacks=callbacks or None, **kwargs)
        self.train_sampler = train_sampler
        self.mining = mining

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        model_inputs, metadata = split_metadata(inputs)
        if self.mining is None or not model.training:
            return super().compute_loss(model, model_inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss, outputs = super().compute_loss(model, model_inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        means = per_sample_means(outputs.logits, model_inputs["labels"], metadata)
        self.mining.record(
            metadata["sample_id"].cpu().numpy(),
            means.float().cpu().numpy(),
            metadata["position"].cpu().numpy(),
            step=self.state.global_step,
        )
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        model_inputs, _ = split_metadata(inputs)
        return super().prediction_step(model, model_inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers (5.x) saves some models, Qwen2-VL among them, under their
        # original checkpoint key names and maps them back only in from_pretrained;
        # Trainer's resume loads the raw file with strict=False, which for those
        # models silently restores nothing. Load through from_pretrained instead,
        # strictly. (DeepSpeed and FSDP restore their own states.)
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        folder = Path(resume_from_checkpoint)
        has_weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not has_weights or not hasattr(target, "from_pretrained"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        restored = type(target).from_pretrained(str(folder), dtype=dtype)
        target.load_state_dict(restored.state_dict(), strict=True)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if self.mining is not None and resume_from_checkpoint:
            path = get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True else resume_from_checkpoint
            if path is not None and (Path(path) / STATE_FILE).is_file():
                self.mining.load(path)
        return super().train(resume_from_checkpoint, *args, **kwargs)


class HardmineTrainer(HardMiningMixin, Trainer):
    """``transformers.Trainer`` with hardmine's sampler and mining stage."""


class HardMiningCallback(TrainerCallback):
    """Runs the mining stage at each epoch end and saves it with each checkpoint."""

    def __init__(self, mining: HardMining, trainer: Trainer):
        self.mining = mining
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.mining.monitor == "train_loss":
            self._mine(None)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # An eval monitor is read at the end-of-epoch evaluation, before the
        # checkpoint of that epoch is written.
        if self.mining.monitor != "train_loss" and metrics and self.mining.monitor in metrics:
            self._mine(float(metrics[self.mining.monitor]))

    def _mine(self, monitored):
        metrics = self.mining.end_epoch(self.mining.sampler.epoch, monitored)
        self.trainer.log(metrics)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.mining.save(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))
