import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardmine.core import GuardSettings, SelectorSettings, SettingError, sample_ids

from hardmine.core.selection import percentile_count, select_hard, select_percentile, select_threshold, select_top_k
from hardmine.core.tracker import LossTracker, TrackerSettings

values_st = st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]), min_size=0, max_size=40)


def brute_top_k(values, ids, k):
    ranked = sorted(range(len(values)), key=lambda i: (-values[i], ids[i]))
    return sorted(ranked[:k])


@given(values_st, st.integers(0, 45), st.randoms())
def test_top_k_equals_brute_force_with_ties_by_sample_id(values, k, rnd):
    ids = list(range(len(values)))
    rnd.shuffle(ids)
    got = select_top_k(np.array(values), np.array(ids, dtype=np.int64), k)
    assert got.tolist() == brute_top_k(values, ids, k)


def test_top_k_ties_prefer_lower_sample_ids():
    values = np.array([1.0, 2.0, 2.0, 2.0, 0.5])
    ids = np.array([10, 40, 20, 30, 50])
    assert select_top_k(values, ids, 2).tolist() == [2, 3]  # ids 20 and 30 beat 40


@pytest.mark.parametrize(
    "fraction, n, expected",
    [(0.1, 30, 3), (0.1, 31, 4), (0.1, 5, 1), (1.0, 7, 7), (0.5, 1, 1), (0.3, 10, 3), (0.7, 10, 7), (1e-9, 10, 1)],
)
def test_percentile_count_is_the_worst_fraction_by_rank(fraction, n, expected):
    assert percentile_count(fraction, n) == expected


def test_percentile_selects_the_worst_fraction():
    values = np.arange(100, dtype=float)
    ids = np.arange(100)
    assert select_percentile(values, ids, 0.1).tolist() == list(range(90, 100))
    assert select_percentile(values[:0], ids[:0], 0.1).size == 0


def test_threshold_counts_a_float32_loss_equal_to_it():
    tracker = LossTracker({"t": 3}, TrackerSettings(progress_correction=False, aggregation="mean"))
    tracker.update(sample_ids("t", [0, 1, 2]), [0.7, 0.3, 0.1], epoch=0, steps=0)
    tracker.close_epoch(0)
    sel = select_hard(tracker, ["t"], 0, SelectorSettings(mode="threshold", value=0.7), GuardSettings(enabled=False))
    assert sel.datasets["t"].tolist() == [0]


def test_select_hard_rejects_inconsistent_inputs():
    tracker = LossTracker({"t": 3}, TrackerSettings(history_slots=2))
    with pytest.raises(ValueError, match="distinct"):
        select_hard(tracker, ["t", "t"], 0, SelectorSettings(), GuardSettings(enabled=False))
    with pytest.raises(ValueError, match="history"):
        select_hard(tracker, ["t"], 0, SelectorSettings(), GuardSettings(window=5))


def test_threshold_is_inclusive():
    values = np.array([0.9, 1.0, 1.1, np.float32(1.0)])
    assert select_threshold(values, np.arange(4), 1.0).tolist() == [1, 2, 3]
    assert select_threshold(values, np.arange(4), 5.0).size == 0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"mode": "top_k", "k": 0, "value": None}, "selector.k"),
        ({"mode": "top_k", "k": 2.5, "value": None}, "selector.k"),
        ({"mode": "percentile", "value": 0.0}, "selector.value"),
        ({"mode": "percentile", "value": 1.5}, "selector.value"),
        ({"mode": "threshold", "value": float("inf")}, "selector.value"),
        ({"mode": "threshold", "value": None}, "selector.value"),
        ({"mode": "best"}, "selector.mode"),
    ],
)
def test_invalid_selector_names_key_value_and_range(kwargs, key):
    with pytest.raises(SettingError, match=f"custom.hard_sample_mining.{key}: got .*; expected"):
        SelectorSettings(**kwargs)


def _tracker_with(losses_by_epoch, n, **kw):
    tracker = LossTracker({"t": n}, TrackerSettings(progress_correction=False, aggregation="mean", **kw))
    for epoch, losses in enumerate(losses_by_epoch):
        base = np.flatnonzero(~np.isnan(losses))
        tracker.update(sample_ids("t", base), losses[base], epoch=epoch, steps=epoch)
        tracker.close_epoch(epoch)
    return tracker


def test_select_hard_guard_off_is_exactly_the_selector_over_observed():
    rng = np.random.default_rng(0)
    losses = rng.random((3, 50)) + 1
    losses[:, 7] = np.nan  # never observed
    tracker = _tracker_with(losses, 50)
    sel = select_hard(tracker, ["t"], 2, SelectorSettings("top_k", k=5, value=None), GuardSettings(enabled=False))
    means = np.array([losses[:, i].mean() if i != 7 else -np.inf for i in range(50)])
    expected = sorted(np.argsort(-means, kind="stable")[:5].tolist())
    assert sel.datasets["t"].tolist() == expected
    assert sel.observed == 49 and sel.eligible == 49
    np.testing.assert_allclose(sel.losses["t"], means[expected], rtol=1e-6)


@pytest.mark.parametrize(
    "rule, excluded_by",
    [("learning", "at_start_level"), ("start_level", "at_start_level")],
)
def test_select_hard_guard_excludes_flat_losses(rule, excluded_by):
    # Sample 0: high and flat (mislabelled-like); sample 1: high and falling.
    losses = np.array([[5.0, 5.0, 1.0], [5.0, 4.0, 0.9], [5.0, 3.0, 0.8]])
    tracker = _tracker_with(losses, 3)
    sel = select_hard(tracker, ["t"], 2, SelectorSettings("top_k", k=1, value=None), GuardSettings(rule=rule, window=2))
    assert sel.datasets["t"].tolist() == [1]
    assert sel.excluded[excluded_by] == 1
    naive = select_hard(tracker, ["t"], 2, SelectorSettings("top_k", k=1, value=None), GuardSettings(enabled=False))
    assert naive.datasets["t"].tolist() == [0]


def test_select_hard_over_several_eligible_datasets_breaks_ties_by_sample_id():
    tracker = LossTracker({"a": 2, "b": 2}, TrackerSettings(progress_correction=False))
    ids = np.concatenate([sample_ids("a", [0, 1]), sample_ids("b", [0, 1])])
    tracker.update(ids, [3.0, 1.0, 3.0, 1.0], epoch=0, steps=0)
    tracker.close_epoch(0)
    sel = select_hard(tracker, ["a", "b"], 0, SelectorSettings("top_k", k=1, value=None), GuardSettings(enabled=False))
    winner = "a" if sample_ids("a", [0])[0] < sample_ids("b", [0])[0] else "b"
    assert {k: v.tolist() for k, v in sel.datasets.items()} == {winner: [0], ({"a", "b"} - {winner}).pop(): []}


def test_select_hard_with_nothing_observed_selects_nothing():
    tracker = LossTracker({"t": 5})
    sel = select_hard(tracker, ["t"], 0, SelectorSettings(), GuardSettings())
    assert sel.num_hard == 0 and sel.observed == 0 and sel.eligible == 0
