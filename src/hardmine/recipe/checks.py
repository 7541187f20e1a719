"""What the recipe checks before any model loads: the config against the run it
describes, then every record of the data.

Two stages, both run by ``hardmine validate`` and by ``hardmine train`` before
the model loads:

1. :data:`CONFIG_CHECKS`, handed to :func:`hardmine.config.load_config`: checks
   that need more than the schema (the fusion file, the eval sets a monitor can
   name, whether mining can ever act within the run). No transformers import.
2. :func:`check_data`: every JSONL line of every pool (schema, images exist,
   geometry in bounds), no empty file, and every sample's encoded length
   against ``data.max_length``, encoded by the run's own processor (tokenizer
   and image processor; no model weights). Every problem is collected and
   reported at once by ``file:line``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..config import HardmineConfig, Problem
from ..config.schema import TRAINING_DEFAULTS
from ..core import SettingError, UserInputError
from ..data.augment import AugmentationConfig
from ..data.dataset import RecordPool
from ..config.fusion import FusionConfigError, load_fusion
from ..data.records import read_jsonl

MINING = "custom.hard_sample_mining"


# ------------------------------------------------------------- config checks
def augmentation_problems(cfg: HardmineConfig) -> list[Problem]:
    """``custom.augmentation`` (the data layer owns its fields)."""
    try:
        AugmentationConfig.from_mapping(cfg.custom.augmentation)
    except SettingError as e:
        return [Problem(e.key, f"got {e.value!r}; expected {e.expected}")]
    except ValueError as e:
        return [Problem("custom.augmentation", str(e))]
    return []


def training_problems(cfg: HardmineConfig) -> list[Problem]:
    if cfg.training.get("remove_unused_columns") is True:
        return [
            Problem(
                "training.remove_unused_columns",
                "got True; expected false (hardmine carries sample ids through the batch and removes them itself)",
            )
        ]
    return []


def fusion_problems(cfg: HardmineConfig) -> list[Problem]:
    if cfg.custom.fusion_config is None:
        return []
    try:
        load_fusion(cfg.custom.fusion_config)
    except FusionConfigError as e:
        return [Problem("custom.fusion_config", str(e))]
    return []


def eval_set_names(cfg: HardmineConfig) -> list[str]:
    """The run's evaluation sets, in order; Trainer names their losses ``eval_<name>_loss``."""
    c = cfg.custom
    if c.fusion_config is not None:
        try:
            spec = load_fusion(c.fusion_config)
        except FusionConfigError:
            return []  # reported by fusion_problems
        return [d.name for d in spec.datasets if d.val_jsonl is not None]
    return [c.dataset_name] if c.val_jsonl is not None else []


def monitor_problems(cfg: HardmineConfig) -> list[Problem]:
    """The monitor must be a metric this run produces, at every epoch end."""
    section = cfg.custom.hard_sample_mining
    if not section.enabled or section.monitor == "train_loss":
        return []
    names = eval_set_names(cfg)
    produced = ["train_loss", *(f"eval_{name}_loss" for name in names)]
    if section.monitor not in produced:
        return [
            Problem(
                f"{MINING}.monitor",
                f"got {section.monitor!r}; expected one of {produced} "
                "(each evaluation set's loss is named eval_<dataset name>_loss)",
            )
        ]
    strategy = cfg.training.get("eval_strategy", "epoch")
    if strategy != "epoch":
        return [
            Problem(
                f"{MINING}.monitor",
                f"got {section.monitor!r} with training.eval_strategy: {strategy}; "
                "an eval monitor needs training.eval_strategy: epoch",
            )
        ]
    return []


def reach_problems(cfg: HardmineConfig) -> list[Problem]:
    """Mining that can never act within the run is an error, not a silent no-op.

    A plan made at the end of epoch ``n`` applies from ``n + 1``, and the
    trigger first compares at epoch ``patience``; so some plan applies only if
    ``max(start_epoch, patience) <= epochs - 2``.
    """
    section = cfg.custom.hard_sample_mining
    if not section.enabled or cfg.training.get("max_steps", -1) > 0:
        return []  # with max_steps the epoch count depends on the data; not judged here
    epochs = cfg.training.get("num_train_epochs", TRAINING_DEFAULTS["num_train_epochs"])
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool):
        return []  # a type error, reported by the training checks
    last_useful = math.ceil(epochs) - 2  # the last epoch whose plan still applies
    first = max(section.start_epoch, section.patience)
    if first <= last_useful:
        return []
    key = "start_epoch" if section.start_epoch >= section.patience else "patience"
    value = getattr(section, key)
    return [
        Problem(
            f"{MINING}.{key}",
            f"got {value}; with training.num_train_epochs={epochs} (epochs 0-{math.ceil(epochs) - 1}) "
            f"mining could first select at the end of epoch {first}, and a plan applies from the next epoch, "
            f"so it would never act; expected {key} <= {max(last_useful, 0)}, or more epochs",
        )
    ]


CONFIG_CHECKS = (augmentation_problems, training_problems, fusion_problems, monitor_problems, reach_problems)


# --------------------------------------------------------------- data checks
class DataError(UserInputError):
    """Every problem found in the data, one ``file:line: reason`` a line."""

    def __init__(self, problems: Sequence[str], *, shown: int = 20):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems[:shown])
        more = f"\n  ... and {len(self.problems) - shown} more" if len(self.problems) > shown else ""
        super().__init__(f"{len(self.problems)} problem(s) in the data:\n{lines}{more}")


@dataclass(frozen=True)
class PoolSpec:
    """One JSONL file the run reads, as the config names it."""

    name: str
    path: str
    key: str  # the config key that names the file, for messages
    ratio: float | None = None
    augment: bool = True


def pool_specs(cfg: HardmineConfig) -> tuple[list[PoolSpec], list[PoolSpec]]:
    """Training pools (target first) and evaluation pools named by the config."""
    c = cfg.custom
    if c.fusion_config is None:
        train = [PoolSpec(c.dataset_name, c.train_jsonl, "custom.train_jsonl")]
        val = [] if c.val_jsonl is None else [PoolSpec(c.dataset_name, c.val_jsonl, "custom.val_jsonl", augment=False)]
        return train, val
    spec = load_fusion(c.fusion_config)
    train, val = [], []
    for i, d in enumerate(spec.datasets):
        where = f"{c.fusion_config}: {'target' if i == 0 else f'sources[{i - 1}]'}"
        train.append(PoolSpec(d.name, d.train_jsonl, f"{where}.train_jsonl", None if i == 0 else d.ratio, d.augmentation))
        if d.val_jsonl is not None:
            val.append(PoolSpec(d.name, d.val_jsonl, f"{where}.val_jsonl", augment=False))
    return train, val


def read_pools(specs: Iterable[PoolSpec], *, skip_invalid: bool, problems: list[str]) -> list[RecordPool]:
    """Read every file; append each bad line (unless skipped) and each empty file to ``problems``."""
    pools = []
    for spec in specs:
        records, report = read_jsonl(spec.path, skip_invalid=True, log_skips=skip_invalid)
        if not skip_invalid:
            problems.extend(f"{spec.path}:{line}: {reason}" for line, reason in report.reasons)
        if not records and not report.reasons:
            problems.append(f"{spec.path}: holds no records ({spec.key}); expected at least one JSONL record")
        elif not records and skip_invalid:
            problems.append(f"{spec.path}: every record is invalid and skipped ({spec.key})")
        pools.append(
            RecordPool(spec.name, tuple(records), spec.ratio, spec.augment, path=report.path, lines=report.lines)
        )
    return pools


def length_problems(pools: Sequence[RecordPool], processor, max_length: int) -> tuple[list[str], dict[str, int]]:
    """Every sample whose encoded length (unaugmented) exceeds ``max_length``, and each pool's longest."""
    from ..data.dataset import CaptionDataset

    problems, longest = [], {}
    for pool in pools:
        dataset = CaptionDataset([pool], processor, seed=0, augmentation=None, max_length=None)
        for base in range(len(pool.records)):
            try:
                length = int(dataset.encode(pool.records[base], None)["input_ids"].numel())
            except ValueError as e:
                problems.append(f"{pool.where(base)}: cannot be encoded: {e}")
                continue
            longest[pool.path] = max(longest.get(pool.path, 0), length)
            if length > max_length:
                problems.append(
                    f"{pool.where(base)}: the encoded sample is {length} tokens, longer than data.max_length={max_length} "
                    "(samples are never cut); raise data.max_length or shorten it"
                )
    return problems, longest


@dataclass
class CheckedData:
    train: list[RecordPool]
    val: list[RecordPool]
    longest: dict[str, int] = field(default_factory=dict)  # JSONL path -> longest encoded sample (tokens)

    def summary(self, max_length: int) -> list[str]:
        """One line per file: records, and the longest sample against max_length when measured."""
        lines = []
        for kind, pools in (("train", self.train), ("val", self.val)):
            for pool in pools:
                longest = self.longest.get(pool.path)
                size = f", longest {longest} of max_length {max_length} tokens" if longest is not None else ""
                lines.append(f"{kind} {pool.name}: {len(pool.records)} records in {pool.path}{size}")
        return lines


def check_data(cfg: HardmineConfig, *, lengths: bool = True) -> CheckedData:
    """Read and check all the run's data; raise :class:`DataError` listing every problem.

    ``lengths``: also encode every sample with the run's processor (loaded
    from ``model.model`` without its weights) and compare with
    ``data.max_length``.
    """
    problems: list[str] = []
    train_specs, val_specs = pool_specs(cfg)
    skip = cfg.custom.skip_invalid_records
    train = read_pools(train_specs, skip_invalid=skip, problems=problems)
    val = read_pools(val_specs, skip_invalid=skip, problems=problems)
    if problems:
        raise DataError(problems)
    longest: dict[str, int] = {}
    if lengths:
        from ..models import load_processor

        processor, _ = load_processor(cfg.model.model, task=cfg.model.task)
        problems, longest = length_problems([*train, *val], processor, cfg.data.max_length)
        if problems:
            raise DataError(problems)
    return CheckedData(train, val, longest)


__all__ = [
    "CONFIG_CHECKS",
    "CheckedData",
    "DataError",
    "check_data",
    "eval_set_names",
    "pool_specs",
    "read_pools",
]
