"""The epoch schedule: which samples an epoch shows, in which order.

:func:`build_epoch_schedule` is a pure function of (pools, plan, seed, epoch,
rested): the same inputs give the same schedule on every rank, run and machine
(numpy's PCG64 streams, seeded from ``[seed, epoch, stream]``; pin numpy).

Pools
-----
Exactly one pool is the *target* (``ratio=None``); it is covered once per
epoch: its slot count is its size, plan or no plan. Every other pool is a
fusion *source* with ``ratio``: it draws ``floor(ratio * target_size + 0.5)``
samples uniformly with replacement, from an RNG stream of its own that no plan
touches, so source draws are identical with and without mining.

Weights inside the target
-------------------------
With a plan, sample i of the target has weight w_i (``hard_weight`` for mined
samples, else 1) and expects ``c_i = L * w_i / sum(w)`` of the ``L`` slots.
Each sample gets ``floor(c_i)`` copies for sure; the ``R = L - sum(floor)``
remaining slots go to samples with a fractional part, each at most once:

1. they are split between the weight classes (hard / weight 1) in proportion
   to the classes' fractional mass, by systematic rounding (each class gets
   the floor or ceil of its expected share; a weight-3 sample is shown exactly
   as often as expected, whatever happened in earlier epochs);
2. inside a class, the samples that sat out the previous epoch (``rested``)
   come first, so no sample goes unseen two epochs in a row; the remaining
   slots go to a uniformly random subset of the class.

Why this rather than multinomial draws: every sample's count is
``floor(c_i)`` or ``ceil(c_i)`` (a weight-3 sample at c = 2.5 gets 2 or 3 copies,
never 0 or 6), the total is exactly ``L``, and each class's expectation is
exact. The no-repeat guarantee holds whenever the rested samples fit in their
class's fractional slots, i.e. at most half of the weight-1 samples sit out
(weight 3 on up to ~1/3 of a pool); when they do not, a random subset of the
rested gets the slots.

Finally target copies and source draws are shuffled together by a permutation
that depends only on (seed, epoch, total length), so with or without a plan
the same positions hold target and source samples.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .identity import BASE_IDX_BITS, MAX_BASE_IDX, check_distinct_keys, dataset_key
from .plan import HardSamplePlan

_STREAM_TARGET = 0
_STREAM_SHUFFLE = 1


@dataclass(frozen=True)
class Pool:
    """A dataset as the schedule sees it: a name, a size and a fusion ratio."""

    name: str
    size: int
    ratio: float | None = None  # None: the target pool, covered once per epoch

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or not 0 <= self.size <= MAX_BASE_IDX + 1:
            raise ValueError(f"pool {self.name!r}: size must be an integer in [0, {MAX_BASE_IDX + 1}], got {self.size!r}")
        numeric = isinstance(self.ratio, (int, float, np.integer, np.floating)) and not isinstance(self.ratio, (bool, np.bool_))
        if self.ratio is not None and not (numeric and 0 <= self.ratio < math.inf):
            raise ValueError(f"pool {self.name!r}: ratio must be a finite number >= 0, got {self.ratio!r}")


@dataclass(frozen=True)
class EpochSchedule:
    """An epoch's ordered samples: ``pool_names[pool[i]]``, ``base_idx[i]``."""

    epoch: int
    pool_names: tuple[str, ...]
    pool: np.ndarray  # int16 index into pool_names
    base_idx: np.ndarray  # int64
    sat_out: np.ndarray  # target base_idx with no slot this epoch, sorted

    def __len__(self) -> int:
        return int(self.base_idx.size)

    def counts(self, name: str) -> np.ndarray:
        """How often each base_idx of pool ``name`` appears (length = max index + 1)."""
        i = self.pool_names.index(name)
        return np.bincount(self.base_idx[self.pool == i])

    def digest(self) -> str:
        """SHA-256 of the order: equal digests mean equal schedules."""
        h = hashlib.sha256()
        h.update(repr((self.epoch, self.pool_names)).encode())
        h.update(np.ascontiguousarray(self.pool, dtype="<i2").tobytes())
        h.update(np.ascontiguousarray(self.base_idx, dtype="<i8").tobytes())
        return h.hexdigest()


def _pool_bits(index: int) -> np.int64:
    return np.int64(index) << np.int64(BASE_IDX_BITS)


def source_quota(ratio: float, target_size: int) -> int:
    """Draws of a source per epoch: ``ratio * target_size`` rounded half up."""
    return int(math.floor(ratio * target_size + 0.5))


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


def allocate_counts(
    size: int,
    hard_idx: np.ndarray,
    hard_weight: float,
    length: int,
    rng: np.random.Generator,
    rested: np.ndarray | None = None,
) -> np.ndarray:
    """Copies per sample of a pool: ``floor`` or ``ceil`` of ``length * w / sum(w)``.

    Samples ``hard_idx`` weigh ``hard_weight``, the others 1; the counts sum to
    ``length``. ``rested`` (indices) are served first for the fractional slots.
    """
    hard_idx = np.asarray(hard_idx, dtype=np.int64)
    if size == 0:
        if length:
            raise ValueError(f"cannot fill {length} slots from an empty pool")
        return np.zeros(0, np.int64)
    if not (math.isfinite(hard_weight) and hard_weight >= 1.0):
        raise ValueError(f"hard_weight must be a finite number >= 1, got {hard_weight}")
    klass = np.zeros(size, np.int8)  # 0: weight 1, 1: hard
    klass[hard_idx] = 1
    members = np.array([size - hard_idx.size, hard_idx.size], np.int64)
    weight = np.array([1.0, float(hard_weight)])
    expected = weight * (length / float(members @ weight))
    floor = np.floor(expected)
    frac = expected - floor
    near = frac > 1.0 - 1e-9  # float noise around an exact multiple
    floor[near] += 1.0
    frac[near | (frac < 1e-9)] = 0.0
    floor = floor.astype(np.int64)
    counts = floor[klass]
    remaining = int(length - members @ floor)
    if remaining <= 0:
        if remaining < 0:  # only through float noise
            counts[_choose(np.flatnonzero(counts > 0), -remaining, rng)] -= 1
        return counts
    # Split the fractional slots between the classes in proportion to their
    # fractional mass (systematic rounding keeps each class's expectation),
    # then inside each class serve the rested first and pick the rest uniformly.
    mass = members * frac
    if mass.sum() <= 0:  # every fractional part was float noise: share by class size
        mass = members.astype(np.float64)
    expected_share = mass * (remaining / mass.sum())
    share = _systematic_round(expected_share, remaining, rng)
    rested_mask = None
    if rested is not None and np.asarray(rested).size:
        rested = np.asarray(rested, dtype=np.int64)
        if rested.min() < 0 or rested.max() >= size:
            raise ValueError(f"rested base_idx must lie in [0, {size}), got [{int(rested.min())}, {int(rested.max())}]")
        rested_mask = np.zeros(size, bool)
        rested_mask[rested] = True
        # In a small pool the rounding can give a class fewer slots than it
        # has rested samples; move a slot over when the other class can spare
        # one and both stay within floor/ceil of their expected share.
        needs = np.array([np.count_nonzero(rested_mask & (klass == k) & (frac[k] > 0)) for k in (0, 1)])
        for k, other in ((0, 1), (1, 0)):
            move = min(
                needs[k] - share[k],
                int(np.ceil(expected_share[k] - 1e-9)) - share[k],
                share[other] - int(np.floor(expected_share[other] + 1e-9)),
            )
            if move > 0:
                share[k] += move
                share[other] -= move
    for k in (0, 1):
        if share[k] == 0:
            continue
        in_class = klass == k
        if rested_mask is None:
            counts[_choose(np.flatnonzero(in_class), int(share[k]), rng)] += 1
            continue
        first = np.flatnonzero(in_class & rested_mask)
        if first.size >= share[k]:
            counts[_choose(first, int(share[k]), rng)] += 1
        else:
            counts[first] += 1
            counts[_choose(np.flatnonzero(in_class & ~rested_mask), int(share[k]) - first.size, rng)] += 1
    return counts


def _systematic_round(target: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integers, each floor or ceil of ``target``, summing to ``total``, unbiased."""
    cum = np.cumsum(target)
    cum[-1] = total
    u = rng.random()
    return np.diff(np.floor(cum - u), prepend=np.floor(-u)).astype(np.int64)


def _choose(index: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random subset of ``m`` elements of ``index``."""
    if m > index.size:
        raise ValueError(f"cannot choose {m} of {index.size} candidates")
    if m <= index.size // 2:
        return index[rng.choice(index.size, m, replace=False, shuffle=False)]
    keep = np.ones(index.size, bool)  # choosing the complement is cheaper
    keep[rng.choice(index.size, index.size - m, replace=False, shuffle=False)] = False
    return index[keep]


def random_order(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(n)`` by sorting random keys.

    Each index is packed under a random key of ``63 - bits(n)`` bits into one
    int64 and the keys are sorted: numpy's vectorised sort makes this ~2x
    faster than ``Generator.permutation`` at 15M elements here. Equal keys
    (a few hundred pairs at 15M) keep index order, a negligible bias.
    """
    bits = max(int(n - 1).bit_length(), 1)
    keys = rng.integers(0, 1 << (63 - bits), n, dtype=np.int64) << np.int64(bits)
    keys |= np.arange(n, dtype=np.int64)
    keys.sort()
    return keys & np.int64((1 << bits) - 1)


def build_epoch_schedule(
    pools: Sequence[Pool],
    plan: HardSamplePlan | None,
    seed: int,
    epoch: int,
    rested: np.ndarray | None = None,
) -> EpochSchedule:
    """The ordered samples of ``epoch``. ``rested``: target base_idx that sat out epoch - 1."""
    targets = [p for p in pools if p.ratio is None]
    if len(targets) != 1:
        raise ValueError(f"exactly one pool must be the target (ratio None); got {[p.name for p in targets]}")
    names = tuple(p.name for p in pools)
    if len(set(names)) != len(names):
        raise ValueError(f"pool names must be distinct, got {list(names)}")
    check_distinct_keys(names)
    if len(pools) > np.iinfo(np.int16).max:
        raise ValueError(f"at most {np.iinfo(np.int16).max} pools, got {len(pools)}")
    if isinstance(seed, bool) or int(seed) < 0 or int(epoch) < 0:
        raise ValueError(f"seed and epoch must be non-negative integers, got seed={seed!r}, epoch={epoch!r}")
    target = targets[0]
    t_index = names.index(target.name)
    if plan is not None:
        others = sorted(set(plan.base_idx) - {target.name})
        if others:
            raise ValueError(f"a plan may weight only the target pool {target.name!r}, but it weights {others}")

    if plan is None or plan.num_hard == 0:
        counts = np.ones(target.size, np.int64)
    else:
        hard = plan.base_idx.get(target.name, np.empty(0, np.int64))
        if hard.size and hard.max() >= target.size:
            raise ValueError(f"plan marks base_idx {int(hard.max())} of {target.name!r}, which has {target.size} samples")
        counts = allocate_counts(
            target.size, hard, plan.hard_weight, target.size, _rng(seed, epoch, _STREAM_TARGET), rested
        )
    # (pool, base_idx) packed into one int64 so that the final shuffle moves
    # one array instead of two (a random gather is the costly part).
    parts = [np.repeat(np.arange(target.size, dtype=np.int64) | _pool_bits(t_index), counts)]
    sat_out = np.flatnonzero(counts == 0).astype(np.int64)

    for i, pool in enumerate(pools):
        if pool.ratio is None:
            continue
        quota = source_quota(pool.ratio, target.size)
        if quota and not pool.size:
            raise ValueError(f"source pool {pool.name!r} is empty but its ratio {pool.ratio} asks for {quota} draws")
        # A stream per source, keyed by its name: adding a pool or a plan
        # leaves every other source's draws as they were.
        draws = _rng(seed, epoch, 2 + dataset_key(pool.name)).integers(0, max(pool.size, 1), quota, dtype=np.int64)
        parts.append(draws | _pool_bits(i))

    packed = np.concatenate(parts)
    packed = packed[random_order(packed.size, _rng(seed, epoch, _STREAM_SHUFFLE))]
    return EpochSchedule(
        epoch=int(epoch),
        pool_names=names,
        pool=(packed >> np.int64(BASE_IDX_BITS)).astype(np.int16),
        base_idx=np.bitwise_and(packed, np.int64(MAX_BASE_IDX), out=packed),
        sat_out=sat_out,
    )
