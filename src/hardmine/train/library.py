"""Hard-sample mining for your own Trainer, without the YAML entry point.

Three lines turn any ``transformers.Trainer`` subclass (TRL's ``SFTTrainer``
included) into a mining one::

    from hardmine.train.library import HardMiningMixin, mining_kwargs

    class MinedTrainer(HardMiningMixin, MyTrainer): ...
    trainer = MinedTrainer(model=model, args=args,
                           **mining_kwargs(train_dataset, collator, args=args, settings=MiningSettings()))

``mining_kwargs`` wraps your map-style dataset so each item carries its
identity, wraps your collator so that identity survives batching (and is
removed before the model sees the batch), and builds the sampler and the mining
stage. Your collator must produce ``labels`` (-100 where not supervised), as
any causal-LM fine-tuning collator does.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from ..core import MiningSettings, Pool, sample_id
from ..data.collate import METADATA_KEYS, collate_metadata
from ..data.refs import SampleRef
from .mining import HardMining
from .sampler import ScheduleSampler
from .trainer import HardMiningMixin


class MinedDataset(Dataset):
    """Your dataset, indexed by :class:`SampleRef`, with identity in every item."""

    def __init__(self, dataset, name: str = "train"):
        self.dataset = dataset
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, ref):
        base, position = (ref.base_idx, ref.position) if isinstance(ref, SampleRef) else (int(ref), int(ref))
        item = dict(self.dataset[base])
        clash = [k for k in METADATA_KEYS if k in item]
        if clash:
            raise ValueError(f"dataset item {base} already has key(s) {clash}, which hardmine uses for sample identity")
        item.update(sample_id=sample_id(self.name, base), dataset=self.name, base_idx=base, position=position)
        return item


class MetadataCollator:
    """Your collator on the items without identity; identity added back as tensors."""

    def __init__(self, collator: Callable[[Sequence[dict]], dict]):
        self.collator = collator

    def __call__(self, features: Sequence[dict]) -> dict:
        metadata = collate_metadata(features)
        batch = dict(self.collator([{k: v for k, v in f.items() if k not in METADATA_KEYS} for f in features]))
        batch.update(metadata)
        return batch


def mining_kwargs(
    train_dataset,
    data_collator: Callable,
    *,
    args,
    settings: MiningSettings | None = None,
    name: str = "train",
    dump: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for a ``HardMiningMixin`` trainer: dataset, collator, sampler, mining.

    Sets ``args.remove_unused_columns = False``: Trainer would otherwise strip
    the identity keys before the collator sees them.
    """
    args.remove_unused_columns = False
    pools = [Pool(name, len(train_dataset))]
    sampler = ScheduleSampler(pools, seed=args.seed)
    mining = HardMining(settings or MiningSettings(), pools, sampler, output_dir=args.output_dir, dump=dump)
    return {
        "train_dataset": MinedDataset(train_dataset, name),
        "data_collator": MetadataCollator(data_collator),
        "train_sampler": sampler,
        "mining": mining,
    }


__all__ = ["HardMiningMixin", "MetadataCollator", "MinedDataset", "mining_kwargs"]
