"""Sharding and gathering for two ranks, inside one process.

accelerate shards the sampler's global order into per-rank batches (padding
the last ones with samples from the start so every rank takes the same number
of steps); each rank records what it processed; rank 0 joins the ranks'
records and drops the padding by position. Here both ranks run in this process
through accelerate's own ``BatchSamplerShard``, and the joined record must
hold every position of the epoch exactly once, whatever the plan.
"""

from __future__ import annotations

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from hardmine.core import HardSamplePlan, Pool
from hardmine.train.distributed import Ranks, broadcast_object, gather_columns, merge_rank_columns, pad_columns
from hardmine.train.mining import ObservationLog, deduplicate
from hardmine.train.sampler import ScheduleSampler

POOLS = [Pool("target", 37), Pool("src", 20, 0.5)]


def rank_logs(sampler, world_size: int, batch_size: int) -> list[dict[str, np.ndarray]]:
    logs = []
    for rank in range(world_size):
        shard = BatchSamplerShard(BatchSampler(sampler, batch_size, drop_last=False), num_processes=world_size,
                                  process_index=rank, split_batches=False, even_batches=True)
        log = ObservationLog()
        for step, batch in enumerate(shard):
            log.append([r.pool * 1000 + r.base_idx for r in batch], np.ones(len(batch)), [r.position for r in batch], step)
        logs.append(log.drain())
    return logs


@pytest.mark.parametrize("world_size, batch_size", [(2, 4), (2, 5), (3, 7)])
@pytest.mark.parametrize("with_plan", [False, True])
def test_every_position_is_gathered_once_across_ranks(world_size, batch_size, with_plan):
    sampler = ScheduleSampler(POOLS, seed=0)
    if with_plan:
        sampler.plan = HardSamplePlan(epoch=0, version=1, hard_weight=3.0, mode="top_k", params={"k": 5},
                                      base_idx={"target": np.arange(5)}, losses={"target": np.ones(5)})
    sampler.set_epoch(1)
    logs = rank_logs(sampler, world_size, batch_size)
    longest = max(log["sample_id"].size for log in logs)
    joined = merge_rank_columns([pad_columns(log, longest) for log in logs], [log["sample_id"].size for log in logs])
    assert joined["sample_id"].size >= len(sampler)  # padding duplicates are there before deduplication
    kept = deduplicate(joined)
    schedule = sampler.schedule(1)
    assert sorted(kept["position"].tolist()) == list(range(len(schedule)))
    by_position = dict(zip(kept["position"].tolist(), kept["sample_id"].tolist()))
    assert [by_position[i] for i in range(len(schedule))] == (schedule.pool * 1000 + schedule.base_idx).tolist()


def test_pad_and_merge_keep_dtypes_and_reject_bad_shapes():
    cols = {"sample_id": np.array([2**60, 3], np.int64), "loss": np.array([0.5, 1.5], np.float32)}
    padded = pad_columns(cols, 4)
    assert padded["sample_id"].dtype == np.int64 and padded["loss"].tolist() == [0.5, 1.5, 0.0, 0.0]
    merged = merge_rank_columns([padded, pad_columns({k: v[:1] for k, v in cols.items()}, 4)], [2, 1])
    assert merged["sample_id"].tolist() == [2**60, 3, 2**60]
    with pytest.raises(ValueError, match="more than the padded length"):
        pad_columns(cols, 1)
    with pytest.raises(ValueError, match="one count per rank"):
        merge_rank_columns([padded], [2, 1])


def test_one_rank_needs_no_process_group():
    cols = {"sample_id": np.arange(3)}
    assert gather_columns(cols, Ranks())["sample_id"].tolist() == [0, 1, 2]
    assert broadcast_object({"a": 1}, Ranks()) == {"a": 1}
    with pytest.raises(RuntimeError, match="no torch.distributed process group"):
        gather_columns(cols, Ranks(1, 2))
    with pytest.raises(ValueError, match="outside a world"):
        Ranks(2, 2)
