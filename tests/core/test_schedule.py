import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardmine.core import HardSamplePlan, Pool, build_epoch_schedule

from hardmine.core.schedule import allocate_counts, random_order, source_quota


def plan_for(hard, weight=3.0, name="target", epoch=0):
    hard = np.asarray(hard, dtype=np.int64)
    return HardSamplePlan(
        epoch=epoch, version=1, hard_weight=weight, mode="top_k", params={"k": hard.size},
        base_idx={name: hard}, losses={name: np.ones(hard.size)},
    )


FUSION = [Pool("target", 1000), Pool("lvis", 5000, 0.5), Pool("coco", 300, 0.25)]


def test_no_plan_covers_the_target_once_in_shuffled_order():
    s = build_epoch_schedule([Pool("target", 500)], None, seed=3, epoch=0)
    assert len(s) == 500
    assert sorted(s.base_idx.tolist()) == list(range(500))
    assert s.base_idx.tolist() != list(range(500))
    assert s.sat_out.size == 0


@pytest.mark.parametrize("plan", [None, plan_for(np.arange(0, 1000, 10))])
def test_fusion_quotas_are_exact_with_and_without_a_plan(plan):
    s = build_epoch_schedule(FUSION, plan, seed=0, epoch=4)
    counts = {name: int(np.sum(s.pool == i)) for i, name in enumerate(s.pool_names)}
    assert counts == {"target": 1000, "lvis": 500, "coco": 250}
    assert len(s) == 1750


def test_a_plan_changes_only_the_target_samples():
    plain = build_epoch_schedule(FUSION, None, seed=0, epoch=2)
    mined = build_epoch_schedule(FUSION, plan_for(np.arange(100)), seed=0, epoch=2)
    np.testing.assert_array_equal(plain.pool, mined.pool)  # same positions per pool
    for i in (1, 2):
        np.testing.assert_array_equal(plain.base_idx[plain.pool == i], mined.base_idx[mined.pool == i])
    assert not np.array_equal(plain.base_idx[plain.pool == 0], mined.base_idx[mined.pool == 0])


def test_source_quota_rounds_half_up():
    assert source_quota(0.5, 3) == 2
    assert source_quota(0.25, 10) == 3
    assert source_quota(0.0, 10) == 0
    assert source_quota(1 / 3, 3) == 1


def test_weight_three_is_shown_three_times_as_often_and_no_one_starves():
    n, epochs = 1200, 60
    hard = np.arange(0, n, 10)  # 10% of the pool
    pools = [Pool("target", n)]
    totals = np.zeros(n)
    rested = None
    for epoch in range(epochs):
        s = build_epoch_schedule(pools, plan_for(hard), seed=11, epoch=epoch, rested=rested)
        assert len(s) == n
        counts = s.counts("target")
        counts = np.pad(counts, (0, n - counts.size))
        # Low variance: 2 or 3 copies for a hard sample (2.5 expected), 0 or 1 for the rest.
        assert set(np.unique(counts[hard])) <= {2, 3}
        soft = np.setdiff1d(np.arange(n), hard)
        assert set(np.unique(counts[soft])) <= {0, 1}
        # About one weight-1 sample in six sits out an epoch ...
        assert s.sat_out.size == pytest.approx(len(soft) / 6, abs=2)
        # ... and never two epochs in a row.
        if rested is not None:
            assert np.intersect1d(rested, s.sat_out).size == 0
        rested = s.sat_out
        totals += counts
    ratio = totals[hard].mean() / np.delete(totals, hard).mean()
    assert ratio == pytest.approx(3.0, rel=0.02)


def test_no_repeat_sit_out_survives_a_changing_plan():
    n = 600
    rng = np.random.default_rng(5)
    rested = None
    for epoch in range(40):
        hard = np.sort(rng.choice(n, rng.integers(20, 150), replace=False))  # 3%..25% of the pool
        s = build_epoch_schedule([Pool("target", n)], plan_for(hard), seed=2, epoch=epoch, rested=rested)
        if rested is not None:
            assert np.intersect1d(rested, s.sat_out).size == 0, epoch
        rested = s.sat_out


@pytest.mark.parametrize("size, n_hard, weight", [(5, 2, 3.0), (8, 3, 3.0), (2, 1, 2.0), (12, 4, 3.0)])
def test_no_repeat_sit_out_in_small_pools(size, n_hard, weight):
    hard = np.arange(n_hard)
    rested = None
    for epoch in range(300):
        s = build_epoch_schedule([Pool("t", size)], plan_for(hard, weight, name="t"), seed=4, epoch=epoch, rested=rested)
        if rested is not None:
            assert np.intersect1d(rested, s.sat_out).size == 0, epoch
        rested = s.sat_out


def test_bad_rested_and_negative_plan_indices_are_errors():
    with pytest.raises(ValueError, match="rested base_idx"):
        build_epoch_schedule([Pool("t", 4)], plan_for([0], name="t"), 0, 0, rested=np.array([7]))
    with pytest.raises(ValueError, match="negative"):
        plan_for([-1], name="t")


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 300),
    hard_share=st.floats(0.0, 0.9),
    weight=st.floats(1.0, 8.0),
    length=st.integers(0, 600),
    seed=st.integers(0, 2**32),
)
def test_allocation_sums_to_length_and_stays_within_floor_and_ceil(size, hard_share, weight, length, seed):
    rng = np.random.default_rng(seed)
    hard = np.flatnonzero(rng.random(size) < hard_share)
    rested = np.flatnonzero(rng.random(size) < 0.2)
    counts = allocate_counts(size, hard, weight, length, rng, rested)
    assert counts.sum() == length and counts.min() >= 0
    w = np.ones(size)
    w[hard] = weight
    expected = length * w / w.sum()
    assert np.all(counts >= np.floor(expected - 1e-9)) and np.all(counts <= np.ceil(expected + 1e-9))


def test_allocation_expectation_is_unbiased():
    # Fractional counts (weight 2 on a third of 7 samples) averaged over many draws.
    size, hard, length = 7, np.array([0, 3]), 7
    w = np.ones(size)
    w[hard] = 2.0
    expected = length * w / w.sum()
    rng = np.random.default_rng(0)
    mean = np.mean([allocate_counts(size, hard, 2.0, length, rng) for _ in range(4000)], axis=0)
    np.testing.assert_allclose(mean, expected, atol=0.03)


def test_random_order_is_a_permutation():
    order = random_order(1000, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(1000))
    assert random_order(1, np.random.default_rng(0)).tolist() == [0]
    assert random_order(0, np.random.default_rng(0)).size == 0


def test_same_inputs_same_schedule_different_epoch_different_order():
    plan = plan_for(np.arange(50))
    a = build_epoch_schedule(FUSION, plan, seed=1, epoch=3)
    b = build_epoch_schedule(FUSION, plan, seed=1, epoch=3)
    c = build_epoch_schedule(FUSION, plan, seed=1, epoch=4)
    assert a.digest() == b.digest() != c.digest()
    assert build_epoch_schedule(FUSION, plan, seed=2, epoch=3).digest() != a.digest()


def test_identical_in_another_process():
    code = (
        "import numpy as np; from hardmine.core import *\n"
        "plan = HardSamplePlan(epoch=0, version=1, hard_weight=3.0, mode='top_k', params={},"
        " base_idx={'target': np.arange(0, 1000, 7)})\n"
        "pools = [Pool('target', 1000), Pool('lvis', 5000, 0.5), Pool('coco', 300, 0.25)]\n"
        "print(build_epoch_schedule(pools, plan, seed=9, epoch=5, rested=np.arange(0, 1000, 13)).digest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    here = build_epoch_schedule(FUSION, plan_for(np.arange(0, 1000, 7)), seed=9, epoch=5, rested=np.arange(0, 1000, 13))
    assert out == here.digest()


def test_invalid_pools_and_plans_are_errors():
    with pytest.raises(ValueError, match="exactly one pool must be the target"):
        build_epoch_schedule([Pool("a", 3, 1.0)], None, 0, 0)
    with pytest.raises(ValueError, match="exactly one pool must be the target"):
        build_epoch_schedule([Pool("a", 3), Pool("b", 3)], None, 0, 0)
    with pytest.raises(ValueError, match="only the target pool"):
        build_epoch_schedule(FUSION, plan_for([1], name="lvis"), 0, 0)
    with pytest.raises(ValueError, match="empty"):
        build_epoch_schedule([Pool("t", 3), Pool("s", 0, 1.0)], None, 0, 0)
    with pytest.raises(ValueError, match="which has 3 samples"):
        build_epoch_schedule([Pool("t", 3)], plan_for([5], name="t"), 0, 0)
    with pytest.raises(ValueError, match="ratio"):
        Pool("s", 3, -1.0)
    with pytest.raises(ValueError, match="size"):
        Pool("s", -3)
    with pytest.raises(ValueError, match="hard_weight"):
        allocate_counts(3, np.array([0]), math.nan, 3, np.random.default_rng(0))
