import numpy as np

from hardmine.core import HardSamplePlan, Pool
from hardmine.train.sampler import ScheduleSampler

POOLS = [Pool("target", 60), Pool("src", 40, 0.5)]


def plan(hard, version=1):
    hard = np.asarray(hard)
    return HardSamplePlan(epoch=0, version=version, hard_weight=3.0, mode="top_k", params={}, base_idx={"target": hard})


def test_yields_the_schedule_with_epoch_and_position():
    sampler = ScheduleSampler(POOLS, seed=3)
    sampler.set_epoch(2)
    refs = list(sampler)
    s = sampler.schedule(2)
    assert len(refs) == len(sampler) == 90
    assert [(r.pool, r.base_idx) for r in refs] == list(zip(s.pool.tolist(), s.base_idx.tolist()))
    assert {r.epoch for r in refs} == {2} and [r.position for r in refs] == list(range(90))


def test_same_order_for_every_rank_and_new_order_per_epoch():
    a, b = ScheduleSampler(POOLS, seed=3), ScheduleSampler(POOLS, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert [r[:2] for r in a] != [r[:2] for r in b]


def test_plan_changes_order_not_length_and_rested_come_first():
    sampler = ScheduleSampler(POOLS, seed=0)
    sampler.plan = plan(np.arange(10))
    lengths, sat_out = [], []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        refs = list(sampler)
        lengths.append(len(refs))
        sat_out.append(set(sampler.schedule(epoch).sat_out.tolist()))
    assert set(lengths) == {90}
    assert all(not (x & y) for x, y in zip(sat_out, sat_out[1:]))


def test_state_round_trip_restores_the_rested_set():
    sampler = ScheduleSampler(POOLS, seed=0, plan=plan(np.arange(10)))
    list(sampler)
    sampler.set_epoch(1)
    other = ScheduleSampler(POOLS, seed=0, plan=plan(np.arange(10)))
    other.load_state_dict(sampler.state_dict())
    assert list(other) == list(sampler)
