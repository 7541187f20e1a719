"""Sample identity around a user's own dataset and collator, and the mining stage they feed.

:func:`mining_kwargs` is what both the library API (:mod:`hardmine.train.library`)
and the trainer mixin's adoption of a trainer's own dataset
(:meth:`hardmine.train.trainer.HardMiningMixin`) call; it imports neither.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from ..core import MiningSettings, Pool, UserInputError, sample_id
from ..data.collate import METADATA_KEYS, collate_metadata
from ..data.refs import SampleRef
from .distributed import Ranks
from .mining import HardMining
from .sampler import ScheduleSampler


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
        item.update(sample_id=sample_id(self.name, base), position=position)
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


class LibraryArgumentError(UserInputError, TypeError):
    """An argument of the library API that cannot work; raised when it is passed."""


def check_mining_arguments(train_dataset, data_collator, args, settings, name: str) -> None:
    """Raise :class:`LibraryArgumentError` for an argument that cannot work, naming it."""
    if not (hasattr(train_dataset, "__getitem__") and hasattr(train_dataset, "__len__")):
        raise LibraryArgumentError(
            f"mining_kwargs: train_dataset: got {type(train_dataset).__name__}; expected a map-style dataset "
            "(with __len__ and __getitem__): mining reweights samples by index"
        )
    if len(train_dataset) == 0:
        raise LibraryArgumentError("mining_kwargs: train_dataset: got an empty dataset; expected at least one sample")
    if not callable(data_collator):
        raise LibraryArgumentError(
            f"mining_kwargs: data_collator: got {data_collator!r}; expected a callable that turns a list of "
            "items into a batch with labels (-100 where not supervised)"
        )
    if not (hasattr(args, "output_dir") and hasattr(args, "seed")):
        raise LibraryArgumentError(f"mining_kwargs: args: got {type(args).__name__}; expected transformers.TrainingArguments")
    if not isinstance(settings, MiningSettings):
        raise LibraryArgumentError(
            f"mining_kwargs: settings: got {settings!r}; expected a MiningSettings (MiningSettings() for hardmine's defaults)"
        )
    if not isinstance(name, str) or not name:
        raise LibraryArgumentError(f"mining_kwargs: name: got {name!r}; expected a non-empty dataset name")
    monitor = settings.monitor
    if not (monitor == "train_loss" or monitor.startswith("eval_")):
        raise LibraryArgumentError(
            f"mining_kwargs: settings.monitor: got {monitor!r}; expected 'train_loss' or an eval metric such as "
            "'eval_loss' (evaluated at every epoch end: eval_strategy='epoch')"
        )


def build_mining(size: int, args, settings: MiningSettings, name: str):
    """``(sampler, mining stage)`` for one dataset of ``size`` samples trained with ``args``."""
    pools = [Pool(name, size)]
    # The stock Trainer's data seed: the order is the stock run's until a plan exists.
    seed = args.data_seed if getattr(args, "data_seed", None) is not None else args.seed
    sampler = ScheduleSampler(pools, seed=seed)
    mining = HardMining(settings, pools, sampler, output_dir=args.output_dir, ranks=Ranks.of(args))
    return sampler, mining


def mining_kwargs(
    train_dataset,
    data_collator: Callable,
    *,
    args,
    settings: MiningSettings,
    name: str = "train",
) -> dict[str, Any]:
    """Keyword arguments for a ``HardMiningMixin`` trainer: dataset, collator, sampler, mining.

    Every argument is checked here, when called, not at the first batch.
    ``settings.monitor``: ``train_loss`` (the epoch's mean training loss), or
    an eval metric the Trainer reports after every epoch (``eval_loss``, or
    ``eval_<name>_loss`` with several eval sets).

    Sets ``args.remove_unused_columns = False``: Trainer would otherwise strip
    the identity keys before the collator sees them.
    """
    check_mining_arguments(train_dataset, data_collator, args, settings, name)
    args.remove_unused_columns = False
    sampler, mining = build_mining(len(train_dataset), args, settings, name)
    return {
        "train_dataset": MinedDataset(train_dataset, name),
        "data_collator": MetadataCollator(data_collator),
        "train_sampler": sampler,
        "mining": mining,
    }
