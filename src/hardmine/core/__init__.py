"""hardmine's engine: numpy and the standard library only.

Identity, loss tracking, selection, the plateau trigger, the plan and the
epoch schedule. Usable and testable with no trainer at all. This namespace
holds what a user calls; the parts (``tracker``, ``selection``, ``trigger``,
``schedule``, ``identity``, ``plan``, ``audit``) are modules of their own.
"""

from .errors import SettingError, UserInputError
from .identity import sample_id, sample_ids, split_sample_ids
from .miner import AggregationSettings, EpochReport, HardSampleMiner, MiningSettings, SampleLossSettings
from .plan import DUMP_FORMAT, HardSamplePlan, dump_filename
from .schedule import EpochSchedule, Pool, build_epoch_schedule
from .guard import GuardSettings
from .selection import SelectorSettings
from .trigger import TriggerSettings

__all__ = [
    "AggregationSettings",
    "DUMP_FORMAT",
    "EpochReport",
    "EpochSchedule",
    "GuardSettings",
    "HardSampleMiner",
    "HardSamplePlan",
    "MiningSettings",
    "Pool",
    "SampleLossSettings",
    "SelectorSettings",
    "SettingError",
    "TriggerSettings",
    "UserInputError",
    "build_epoch_schedule",
    "dump_filename",
    "sample_id",
    "sample_ids",
    "split_sample_ids",
]
