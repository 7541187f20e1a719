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

from .adoption import LibraryArgumentError, MetadataCollator, MinedDataset, mining_kwargs
from .trainer import HardMiningMixin, HardmineTrainer

__all__ = ["HardMiningMixin", "HardmineTrainer", "LibraryArgumentError", "MetadataCollator", "MinedDataset", "mining_kwargs"]
