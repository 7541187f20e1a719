"""The training sampler: the core epoch schedule, as the DataLoader sees it.

It yields the *global* order (the same on every rank); accelerate shards it
into per-rank batches. It owns the epoch (``set_epoch``, called by Trainer
through accelerate) and the plan, so the order changes in the main process
and DataLoader workers never need to hear about it.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..core import EpochSchedule, HardSamplePlan, Pool, build_epoch_schedule
from ..data.refs import SampleRef


def stock_schedule(pool: Pool, seed: int, epoch: int) -> EpochSchedule:
    """The order the stock ``Trainer`` draws one dataset in: accelerate's seedable
    random sampler, a ``torch.randperm`` seeded with ``seed + epoch``.

    Until a plan exists, a single-dataset run (the library's case) follows it,
    so mining switched off, or on before its first plan, trains on exactly the
    stock run's batches: that run is the control a mining run is compared with.
    """
    generator = torch.Generator().manual_seed(int(seed) + int(epoch))
    order = torch.randperm(pool.size, generator=generator).numpy().astype(np.int64)
    return EpochSchedule(epoch, (pool.name,), np.zeros(pool.size, np.int16), order, np.empty(0, np.int64))


class ScheduleSampler(Sampler[SampleRef]):
    """The epoch order: the stock order for one dataset without a plan, else the core's schedule.

    ``seed``: the Trainer's data seed (``args.data_seed``, else ``args.seed``).
    """

    def __init__(self, pools: Sequence[Pool], seed: int, plan: HardSamplePlan | None = None):
        self.pools = tuple(pools)
        self.seed = int(seed)
        self.plan = plan
        self.epoch = 0
        # The samples that sat out the last epoch built, and which epoch that was.
        self._rested_epoch = -1
        self._rested = np.empty(0, np.int64)
        self._cache: tuple[int, int | None, EpochSchedule] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def schedule(self, epoch: int | None = None) -> EpochSchedule:
        """The schedule of ``epoch`` (default: the current one) under the current plan."""
        epoch = self.epoch if epoch is None else int(epoch)
        version = None if self.plan is None else self.plan.version
        if self._cache is not None and self._cache[:2] == (epoch, version):
            return self._cache[2]
        if self.plan is None and len(self.pools) == 1:
            schedule = stock_schedule(self.pools[0], self.seed, epoch)
        else:
            rested = self._rested if self._rested_epoch == epoch - 1 else None
            schedule = build_epoch_schedule(self.pools, self.plan, self.seed, epoch, rested)
        self._cache = (epoch, version, schedule)
        return schedule

    def __iter__(self) -> Iterator[SampleRef]:
        epoch = self.epoch
        schedule = self.schedule(epoch)
        # Recorded when the epoch starts: the next epoch serves these first.
        self._rested_epoch, self._rested = epoch, schedule.sat_out
        for position, (pool, base) in enumerate(zip(schedule.pool.tolist(), schedule.base_idx.tolist())):
            yield SampleRef(pool, base, epoch, position)

    def __len__(self) -> int:
        # Independent of the plan and the epoch: mining never changes the length.
        return len(self.schedule(0)) if self._cache is None else len(self._cache[2])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "rested_epoch": self._rested_epoch, "rested": self._rested.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._rested_epoch = int(state["rested_epoch"])
        self._rested = np.asarray(state["rested"], dtype=np.int64)
        self._cache = None
