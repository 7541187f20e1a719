"""What the training sampler hands the dataset."""

from __future__ import annotations

from typing import NamedTuple


class SampleRef(NamedTuple):
    """Which record (``pool``, ``base_idx``), and where in which epoch.

    ``position`` is the place in the epoch's global order, the same on every
    rank; augmentation is seeded from ``(seed, epoch, position)``.
    """

    pool: int
    base_idx: int
    epoch: int
    position: int
