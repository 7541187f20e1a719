"""The noise guard's ``start_level`` rule: a sample still as wrong as the young model was on a typical one."""

import math

import numpy as np
import pytest

from hardmine.core import GuardSettings, HardSampleMiner, MiningSettings, SelectorSettings, sample_ids
from hardmine.core.audit import population_table, recompute_selection
from hardmine.core.guard import judge_guard, recent_raw_loss
from hardmine.core.selection import select_hard
from hardmine.core.tracker import LossTracker, TrackerSettings

START_LEVEL = GuardSettings(rule="start_level", window=2, max_hard_streak=16)
TOP2 = SelectorSettings("top_k", k=2, value=None)


def test_recent_raw_loss_averages_the_last_window_rows_it_saw():
    history = np.array([[9.0, 9.0, 9.0], [1.0, np.nan, np.nan], [3.0, 2.0, np.nan]])
    mean, seen = recent_raw_loss(history, 2)
    assert mean[:2].tolist() == [2.0, 2.0]  # the oldest row is outside the window
    assert math.isnan(mean[2]) and seen.tolist() == [True, True, False]


def test_start_level_excludes_samples_at_or_above_the_level():
    history = np.array([[3.0, 3.0, 3.0, 3.0], [2.0, 1.0, 2.5, np.nan], [2.0, 1.0, 1.5, np.nan]])
    verdict = judge_guard(history, np.zeros(4, np.uint16), START_LEVEL, start_level=2.0)
    # recent means: 2.0 (at the level: excluded), 1.0, 2.0 (excluded), unseen in the window
    assert verdict.eligible.tolist() == [False, True, False, False]
    assert verdict.counts == {"insufficient_history": 1, "at_start_level": 2, "hard_streak": 0, "flagged_earlier": 0}
    assert not verdict.flagged.any()  # may_flag is off: nobody is flagged for good


def test_at_the_level_in_each_of_the_last_window_plus_one_epochs_flags_for_good():
    history = np.array([[2.5, 2.5, 2.5, np.nan], [2.2, 1.0, 2.5, 2.5], [2.1, 2.4, 1.0, 2.5]])
    flags = judge_guard(history, np.zeros(4, np.uint16), START_LEVEL, start_level=2.0, may_flag=True).flagged
    # Sample 0 sat at the level in all three epochs; 1 and 2 dipped below once; 3 was not seen in one.
    assert flags.tolist() == [True, False, False, False]
    earlier = np.array([False, True, False, False])
    verdict = judge_guard(history, np.zeros(4, np.uint16), START_LEVEL, earlier, start_level=2.0, may_flag=True)
    assert verdict.flagged.tolist() == [True, True, False, False] and not verdict.eligible[1]
    assert verdict.counts["flagged_earlier"] == 1
    fresh = judge_guard(history, np.zeros(4, np.uint16), GuardSettings(rule="start_level", flag_for_good=False), earlier, 2.0, True)
    assert fresh.flagged is None and "flagged_earlier" not in fresh.counts


def test_unknown_start_level_excludes_nobody_by_that_rule():
    history = np.array([[5.0, 1.0], [5.0, 1.0], [5.0, 1.0]])
    verdict = judge_guard(history, np.zeros(2, np.uint16), START_LEVEL)
    assert verdict.eligible.tolist() == [True, True]


def _feed(tracker, epoch, losses):
    base = np.flatnonzero(~np.isnan(losses))
    tracker.update(sample_ids("t", base), np.asarray(losses)[base], epoch=epoch, steps=epoch)


def test_tracker_fixes_the_start_level_at_the_first_observed_epoch():
    tracker = LossTracker({"t": 4, "s": 2}, TrackerSettings(history_slots=3))
    _feed(tracker, 0, np.array([4.0, 1.0, 2.0, np.nan]))
    tracker.close_epoch(0)
    assert tracker.view("t", 0).start_level == 2.0  # median of 4, 1, 2
    assert tracker.view("t", 0).first_epoch == 0
    assert math.isnan(tracker.view("s", 0).start_level)  # nothing of "s" seen
    for epoch in range(1, 5):  # later epochs, long after the ring dropped epoch 0, change nothing
        _feed(tracker, epoch, np.array([0.5, 0.5, 0.5, 0.5]))
        tracker.close_epoch(epoch)
    assert tracker.view("t", 4).start_level == 2.0
    restored = LossTracker({"t": 4, "s": 2}, TrackerSettings(history_slots=3))
    restored.load_state_dict(tracker.state_dict())
    assert restored.view("t", 4).start_level == 2.0 and restored.view("t", 4).first_epoch == 0


def test_tracker_refuses_a_state_of_another_format():
    tracker = LossTracker({"t": 2})
    state = tracker.state_dict()
    state["format"] = 2
    del state["early_loss"]
    with pytest.raises(ValueError, match="unsupported tracker state format 2; expected 3"):
        LossTracker({"t": 2}).load_state_dict(state)


# Sample 0 carries a wrong label: its loss rises as the model learns the task.
# Sample 1 is hard but learnable; samples 2-5 are learnt quickly.
EPOCHS = [
    [2.0, 2.4, 2.0, 1.8, 1.6, 1.7],
    [2.3, 1.9, 1.0, 0.9, 0.8, 0.8],
    [2.6, 1.5, 0.5, 0.4, 0.3, 0.3],
]


def test_a_wrong_label_memorised_late_stays_excluded():
    # Sample 0 sits above the start level for epochs 0-4, then the model memorises it.
    epochs = [[2.0, 2.0, 1.8, 1.6], [2.4, 1.5, 1.0, 0.9], [2.5, 1.3, 0.6, 0.5], [2.5, 1.2, 0.4, 0.4],
              [2.4, 1.1, 0.3, 0.3], [1.0, 1.0, 0.2, 0.2], [0.5, 0.9, 0.2, 0.2]]
    picks = {}
    for flag_for_good in (True, False):
        guard = GuardSettings(rule="start_level", max_hard_streak=16, flag_for_good=flag_for_good)
        settings = MiningSettings(start_epoch=2, plateau_delta=1e6, selector=SelectorSettings("top_k", k=1, value=None),
                                  noise_guard=guard, aggregation={"progress_correction": False})
        miner = HardSampleMiner({"t": 4}, ["t"], settings)
        for epoch, losses in enumerate(epochs):
            miner.observe(sample_ids("t", range(4)), losses, epoch=epoch, steps=epoch)
            report = miner.end_epoch(epoch)
        picks[flag_for_good] = report.plan.base_idx["t"].tolist()
    assert picks == {True: [1], False: [0]}  # judged afresh, the memorised label is the hardest again


def test_a_rising_wrong_label_is_excluded_and_the_learnable_hard_sample_mined():
    settings = MiningSettings(
        start_epoch=2, plateau_delta=1e6, selector=TOP2, noise_guard=START_LEVEL,
        aggregation={"progress_correction": False},
    )
    miner = HardSampleMiner({"t": 6}, ["t"], settings)
    for epoch, losses in enumerate(EPOCHS):
        miner.observe(sample_ids("t", range(6)), losses, epoch=epoch, steps=epoch)
        if epoch == 2:
            selection = select_hard(miner.tracker, ["t"], 2, TOP2, START_LEVEL)
            population = population_table(miner.tracker, ["t"], 2, selection, TOP2, START_LEVEL)
        report = miner.end_epoch(epoch)
    # Start level: the median of epoch 0, 1.9. Sample 0 (2.45 over the window) is excluded.
    assert report.plan.base_idx["t"].tolist() == [1, 2]
    assert report.selection.excluded["at_start_level"] == 1
    assert population.meta["start_levels"] == {"t": pytest.approx(1.9, rel=1e-3)}
    assert population.rule_mask("at_start_level").tolist() == [True, False, False, False, False, False]
    assert recompute_selection(population).tolist() == population.columns["hard"].tolist()
