import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardmine.core import SettingError, sample_ids

from hardmine.core.tracker import LossTracker, TrackerSettings


def reference(stream, n, *, aggregation="ema", decay=0.5, correction=True, level_decay=0.9, from_epoch=0):
    """Straightforward per-observation re-implementation of the tracker's rules.

    ``stream``: (epoch, step, base_idx, loss) in arrival order, one dataset.
    """
    level, pending_key, pend_sum, pend_n = None, None, 0.0, 0
    count, values, last = [0] * n, [[] for _ in range(n)], [math.nan] * n
    for epoch, step, base, loss in stream:
        if not math.isfinite(loss):
            continue
        if (epoch, step) != pending_key:
            if pend_n:
                m = pend_sum / pend_n
                level = m if level is None else level_decay * level + (1 - level_decay) * m
            pending_key, pend_sum, pend_n = (epoch, step), 0.0, 0
        pend_sum += loss
        pend_n += 1
        lv = level if level is not None else None
        last[base] = loss
        x = loss / (lv if lv is not None else math.nan) if correction else loss
        values[base].append((x, lv is None, epoch))
    # A step's own mean is its level only while no step has completed; the
    # tracker resolves that per call, so the reference takes the same rule:
    # observations of the very first step are divided by that step's mean.
    first_key = next(((e, s) for e, s, _, l in stream if math.isfinite(l)), None)
    first_losses = [l for e, s, _, l in stream if (e, s) == first_key and math.isfinite(l)]
    first_mean = sum(first_losses) / len(first_losses) if first_losses else None
    agg = [math.nan] * n
    for i in range(n):
        xs = []
        for x, first, epoch in values[i]:
            if epoch < from_epoch:
                continue
            xs.append(x if not (correction and first) else None)
        raw_first = [l for e, s, b, l in stream if b == i and (e, s) == first_key and math.isfinite(l)]
        fixed = []
        it = iter(raw_first)
        for x in xs:
            fixed.append(next(it) / first_mean if x is None else x)
        count[i] = len(fixed)
        if not fixed:
            continue
        e = None
        for x in fixed:
            e = x if e is None else decay * e + (1 - decay) * x
        agg[i] = e if aggregation == "ema" else sum(fixed) / len(fixed)
    if pend_n:
        m = pend_sum / pend_n
        level = m if level is None else level_decay * level + (1 - level_decay) * m
    scale = level if correction else 1.0
    return count, [a * scale for a in agg], last


observation = st.tuples(st.integers(0, 7), st.floats(0.05, 10.0))


def _stream(draw_steps):
    """Turn [[(base, loss), ...] per step] into (epoch, step, base, loss) tuples."""
    return [(0, s, b, l) for s, obs in enumerate(draw_steps) for b, l in obs]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.lists(observation, min_size=1, max_size=6), min_size=1, max_size=8),
    aggregation=st.sampled_from(["mean", "ema"]),
    correction=st.booleans(),
    split=st.sampled_from(["per_step", "one_call", "per_observation"]),
)
def test_matches_reference_however_observations_are_batched(steps, aggregation, correction, split):
    stream = _stream(steps)
    n = 8
    tracker = LossTracker({"t": n}, TrackerSettings(aggregation=aggregation, progress_correction=correction))
    if split == "one_call":
        calls = [stream]
    elif split == "per_step":
        calls = [[o for o in stream if o[1] == s] for s in range(len(steps))]
    else:  # several calls per step, as with gradient accumulation
        calls = [[o] for o in stream]
    for call in calls:
        tracker.update(
            sample_ids("t", [o[2] for o in call]), [o[3] for o in call], epoch=0, steps=[o[1] for o in call]
        )
    tracker.close_epoch(0)
    count, agg, last = reference(stream, n, aggregation=aggregation, correction=correction)
    view = tracker.view("t", 0)
    assert view.count.tolist() == count
    np.testing.assert_allclose(view.aggregate, agg, rtol=2e-5, equal_nan=True)
    np.testing.assert_allclose(view.last, last, rtol=1e-6, equal_nan=True)


def test_mean_without_correction_is_the_plain_mean():
    rng = np.random.default_rng(0)
    tracker = LossTracker({"t": 3}, TrackerSettings(aggregation="mean", progress_correction=False))
    obs = {0: rng.random(5) * 3, 1: rng.random(2), 2: np.array([4.0])}
    step = 0
    for base, losses in obs.items():
        for loss in losses:
            tracker.update(sample_ids("t", [base]), [loss], epoch=0, steps=step)
            step += 1
    view = tracker.view("t", 0)
    np.testing.assert_allclose(view.aggregate, [obs[0].mean(), obs[1].mean(), 4.0], rtol=1e-6)
    assert view.count.tolist() == [5, 2, 1]


def test_ema_weights_recent_observations():
    tracker = LossTracker({"t": 1}, TrackerSettings(aggregation="ema", ema_decay=0.25, progress_correction=False))
    for step, loss in enumerate([4.0, 2.0, 1.0]):
        tracker.update(sample_ids("t", [0]), [loss], epoch=0, steps=step)
    # 4 -> 0.25*4 + 0.75*2 = 2.5 -> 0.25*2.5 + 0.75*1 = 1.375
    assert tracker.view("t", 0).aggregate[0] == pytest.approx(1.375)


def test_first_step_waits_for_its_own_mean_so_reads_do_not_change_results():
    def run(read_midway):
        tracker = LossTracker({"t": 4}, TrackerSettings(aggregation="mean"))
        tracker.update(sample_ids("t", [0, 1]), [1.0, 3.0], epoch=0, steps=0)
        if read_midway:
            assert tracker.view("t", 0).count.tolist() == [0, 0, 0, 0]  # not folded yet
            state = tracker.state_dict()
            tracker = LossTracker({"t": 4}, TrackerSettings(aggregation="mean"))
            tracker.load_state_dict(state)
        tracker.update(sample_ids("t", [2, 3]), [5.0, 7.0], epoch=0, steps=0)
        tracker.update(sample_ids("t", [0, 1, 2, 3]), [1.0] * 4, epoch=0, steps=1)
        tracker.close_epoch(0)
        return tracker.view("t", 0).aggregate

    np.testing.assert_array_equal(run(False), run(True))


def test_progress_correction_removes_the_early_in_epoch_bias():
    # Every sample has the same difficulty; the loss level halves during the
    # epoch. Uncorrected, samples seen first look twice as hard.
    n, batch = 400, 8
    rng = np.random.default_rng(1)
    order = rng.permutation(n)
    results = {}
    for correction in (False, True):
        tracker = LossTracker({"t": n}, TrackerSettings(progress_correction=correction, level_decay=0.5))
        for step, start in enumerate(range(0, n, batch)):
            base = order[start : start + batch]
            level = 2.0 * 0.5 ** (step / (n // batch))
            tracker.update(sample_ids("t", base), level * rng.lognormal(0, 0.05, base.size), epoch=0, steps=step)
        agg = tracker.view("t", 0).aggregate
        early, late = agg[order[: n // 4]].mean(), agg[order[-n // 4 :]].mean()
        results[correction] = early / late
    assert results[False] > 1.5
    assert results[True] == pytest.approx(1.0, abs=0.05)


def test_nonfinite_losses_are_counted_and_ignored():
    tracker = LossTracker({"t": 3}, TrackerSettings(progress_correction=False))
    tracker.update(sample_ids("t", [0, 1, 2, 0]), [1.0, np.nan, np.inf, -np.inf], epoch=0, steps=0)
    tracker.close_epoch(0)
    view = tracker.view("t", 0)
    assert tracker.stats["nonfinite"] == 3
    assert view.count.tolist() == [1, 0, 0]
    assert view.aggregate[0] == 1.0 and np.isnan(view.aggregate[1])
    assert tracker.epoch_mean_loss(0) == 1.0
    assert tracker.current_level() == 1.0


def test_observations_before_the_aggregation_epoch_only_update_raw_state():
    tracker = LossTracker({"t": 2}, TrackerSettings(aggregate_from_epoch=1, progress_correction=False))
    tracker.update(sample_ids("t", [0, 1]), [5.0, 6.0], epoch=0, steps=0)
    tracker.close_epoch(0)
    tracker.update(sample_ids("t", [0]), [1.0], epoch=1, steps=1)
    view = tracker.view("t", 1)
    assert view.count.tolist() == [1, 0]
    assert view.aggregate[0] == 1.0
    assert view.last.tolist() == [1.0, 6.0]
    assert tracker.stats["before_aggregation"] == 2
    np.testing.assert_array_equal(view.history[-2:], [[5.0, 6.0], [1.0, np.nan]])


def test_untracked_datasets_set_the_level_but_are_not_tracked():
    tracker = LossTracker({"target": 2}, TrackerSettings(level_decay=0.0))
    ids = np.concatenate([sample_ids("target", [0, 1]), sample_ids("coco", [5, 6])])
    tracker.update(ids, [1.0, 1.0, 3.0, 3.0], epoch=0, steps=0)
    tracker.update(sample_ids("target", [0]), [4.0], epoch=0, steps=1)
    assert tracker.stats["untracked"] == 2
    assert tracker.stats["observations"] == 3
    # Step 0 mean (all four) is 2.0: the observation at step 1 is 4 / 2.
    assert tracker.view("target", 0).count.tolist() == [2, 1]
    assert tracker.epoch_mean_loss(0) == pytest.approx(12.0 / 5)


def test_several_datasets_share_flat_arrays():
    tracker = LossTracker({"a": 3, "b": 2}, TrackerSettings(progress_correction=False))
    ids = np.concatenate([sample_ids("b", [1]), sample_ids("a", [2])])
    tracker.update(ids, [7.0, 9.0], epoch=0, steps=0)
    tracker.close_epoch(0)
    assert tracker.view("a", 0).aggregate[2] == 9.0
    assert tracker.view("b", 0).aggregate[1] == 7.0
    assert tracker.view("a", 0).count.tolist() == [0, 0, 1]


def test_bad_input_is_an_error():
    tracker = LossTracker({"t": 2})
    with pytest.raises(ValueError, match="base_idx 5"):
        tracker.update(sample_ids("t", [5]), [1.0], epoch=0, steps=0)
    with pytest.raises(ValueError, match="2 sample ids but 1 losses"):
        tracker.update(sample_ids("t", [0, 1]), [1.0], epoch=0, steps=0)
    tracker.update(sample_ids("t", [0]), [1.0], epoch=0, steps=5)
    with pytest.raises(ValueError, match="training order"):
        tracker.update(sample_ids("t", [0]), [1.0], epoch=0, steps=4)
    tracker.close_epoch(0)
    with pytest.raises(ValueError, match="after epoch 0 was closed"):
        tracker.update(sample_ids("t", [0]), [1.0], epoch=0, steps=9)
    with pytest.raises(ValueError, match="closed twice"):
        tracker.close_epoch(0)
    with pytest.raises(KeyError, match="not tracked"):
        tracker.view("other", 0)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"aggregation": "median"}, "aggregation.mode"),
        ({"ema_decay": 1.0}, "aggregation.ema_decay"),
        ({"level_decay": -0.1}, "aggregation.level_decay"),
        ({"history_slots": 0}, "aggregation.history_slots"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(SettingError, match=f"custom.hard_sample_mining.{key}: got"):
        TrackerSettings(**kwargs)


def test_history_is_a_ring_of_raw_per_epoch_losses():
    tracker = LossTracker({"t": 2}, TrackerSettings(history_slots=3))
    for epoch in range(5):
        seen = [0] if epoch % 2 else [0, 1]
        tracker.update(sample_ids("t", seen), [10.0 - epoch] * len(seen), epoch=epoch, steps=epoch)
        tracker.close_epoch(epoch)
    hist = tracker.view("t", 4).history  # epochs 2, 3, 4
    np.testing.assert_array_equal(hist[:, 0], [8.0, 7.0, 6.0])
    np.testing.assert_array_equal(hist[:, 1], [8.0, np.nan, 6.0])
    # Asking about a later epoch shows the unseen epochs as NaN.
    np.testing.assert_array_equal(tracker.view("t", 5).history[:, 0], [7.0, 6.0, np.nan])


def test_hard_bits_record_the_plans():
    tracker = LossTracker({"t": 3})
    tracker.close_epoch(0, hard={"t": np.array([0, 1])})
    tracker.close_epoch(1, hard={"t": np.array([1])})
    tracker.close_epoch(2)
    assert tracker.view("t", 2).hard_bits.tolist() == [0b100, 0b110, 0]


def test_the_default_tracker_keeps_the_history_the_default_guard_reads():
    from hardmine.core.selection import GuardSettings

    assert TrackerSettings().history_slots == GuardSettings().window + 1


def test_memory_is_32_bytes_a_sample_at_the_default_guard_window_and_2_less_per_slot_fewer():
    assert LossTracker({"t": 1000}).nbytes / 1000 == 32
    assert LossTracker({"t": 1000}, TrackerSettings(aggregation="mean")).nbytes / 1000 == 28  # no EMA array
    assert LossTracker({"t": 1000}, TrackerSettings(history_slots=3)).nbytes / 1000 == 30  # one float16 row less


def _feed(tracker, rng, epochs, n, start_epoch=0):
    for epoch in range(start_epoch, start_epoch + epochs):
        for step in range(5):
            base = rng.integers(0, n, 7)
            loss = rng.gamma(2.0, 1.0, 7)
            loss[rng.random(7) < 0.05] = np.nan
            tracker.update(sample_ids("t", base), loss, epoch=epoch, steps=epoch * 5 + step)
        tracker.close_epoch(epoch, hard={"t": rng.choice(n, 3, replace=False)})


def test_state_round_trip_then_continue_equals_uninterrupted():
    n = 20
    straight = LossTracker({"t": n})
    _feed(straight, np.random.default_rng(7), 6, n)

    first = LossTracker({"t": n})
    rng = np.random.default_rng(7)
    _feed(first, rng, 3, n)
    # An observation still buffered when the state is taken must not be lost.
    state = first.state_dict()
    resumed = LossTracker({"t": n})
    resumed.load_state_dict(state)
    _feed(resumed, rng, 3, n, start_epoch=3)

    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_load_rejects_other_datasets_or_settings():
    state = LossTracker({"t": 3}).state_dict()
    with pytest.raises(ValueError, match="tracks"):
        LossTracker({"t": 4}).load_state_dict(state)
    with pytest.raises(ValueError, match="settings"):
        LossTracker({"t": 3}, TrackerSettings(ema_decay=0.9)).load_state_dict(state)
