"""Per-slice evaluation: mean per-sample loss of record groups (e.g. the hard slice).

Records may name their slice in ``metadata.slice``; the demo and the
benchmarks score each slice apart after every epoch, so that the effect of
mining on the samples it targets is visible, not only the average.
"""

from __future__ import annotations

from collections import defaultdict
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from ..data.collate import split_metadata
from ..data.dataset import CaptionDataset
from ..train.trainer import per_sample_means


def record_slices(dataset: CaptionDataset) -> list[str]:
    """The slice name of every sample of a (single-pool) dataset; "all" when unnamed."""
    names = []
    for pool in dataset.pools:
        for record in pool.records:
            meta = getattr(record, "metadata", None) or {}
            names.append(str(meta.get("slice", "all")))
    return names


def slice_losses(model, dataset: CaptionDataset, collator, *, batch_size: int = 16) -> dict[str, float]:
    """Mean over samples of each sample's masked mean cross-entropy, per slice."""
    slices = record_slices(dataset)
    losses: dict[str, list[float]] = defaultdict(list)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        loader = DataLoader(range(len(dataset)), batch_size=batch_size, collate_fn=lambda idx: (idx, collator([dataset[i] for i in idx])))
        with torch.no_grad():
            for indices, batch in loader:
                inputs, metadata = split_metadata(batch)
                inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
                outputs = model(**inputs)
                means = per_sample_means(outputs.logits, inputs["labels"], metadata).cpu().numpy()
                for i, value in zip(indices, means):
                    losses[slices[i]].append(float(value))
    finally:
        model.train(was_training)
    return {name: float(np.nanmean(values)) for name, values in sorted(losses.items())}


class SliceEvalCallback(TrainerCallback):
    """After every epoch: per-slice loss on a dataset, logged as ``slice/<name>_loss``."""

    def __init__(self, dataset: CaptionDataset, collator, trainer, prefix: str = "slice"):
        self.dataset = dataset
        self.collator = collator
        self.trainer = trainer
        self.prefix = prefix
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        result = slice_losses(model, self.dataset, self.collator, batch_size=args.per_device_eval_batch_size)
        row = {f"{self.prefix}/{name}_loss": value for name, value in result.items()}
        # state.epoch counts completed epochs here; rows use the 0-based epoch that ended.
        self.rows.append({"epoch": int(round(state.epoch or 0)) - 1, **row})
        self.trainer.log(row)


__all__ = ["SliceEvalCallback", "record_slices", "slice_losses"]
