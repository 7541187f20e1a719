"""hardmine's engine: numpy and the standard library only.

Identity, loss tracking, selection, the plateau trigger, the plan and the
epoch schedule. Usable and testable with no trainer at all.
"""

from .errors import MINING_KEY, SettingError, UserInputError
from .identity import dataset_key, sample_id, sample_ids, split_sample_ids
from .miner import AggregationSettings, EpochReport, HardSampleMiner, MiningSettings, hard_vs_all
from .plan import DUMP_FORMAT, HardSamplePlan, dump_filename
from .schedule import EpochSchedule, Pool, allocate_counts, build_epoch_schedule, random_order, source_quota
from .selection import (
    GuardSettings,
    Selection,
    SelectorSettings,
    guard_mask,
    select_hard,
    select_percentile,
    select_threshold,
    select_top_k,
)
from .tracker import LossTracker, TrackerSettings
from .trigger import PlateauTrigger, TriggerSettings

__all__ = [
    "AggregationSettings",
    "DUMP_FORMAT",
    "MINING_KEY",
    "EpochReport",
    "EpochSchedule",
    "GuardSettings",
    "HardSampleMiner",
    "HardSamplePlan",
    "LossTracker",
    "MiningSettings",
    "PlateauTrigger",
    "Pool",
    "Selection",
    "SelectorSettings",
    "SettingError",
    "TrackerSettings",
    "TriggerSettings",
    "UserInputError",
    "allocate_counts",
    "build_epoch_schedule",
    "random_order",
    "dataset_key",
    "dump_filename",
    "guard_mask",
    "hard_vs_all",
    "sample_id",
    "sample_ids",
    "select_hard",
    "select_percentile",
    "select_threshold",
    "select_top_k",
    "source_quota",
    "split_sample_ids",
]
