"""The noise guard's ``learning`` rule: a sample the model has not got better at since its own early epochs."""

import numpy as np
import pytest

from hardmine.core import GuardSettings, HardSampleMiner, MiningSettings, SelectorSettings, sample_ids
from hardmine.core.audit import population_table, recompute_selection
from hardmine.core.guard import EarlyLevels, judge_guard, not_below_own_start
from hardmine.core.selection import select_hard
from hardmine.core.tracker import LossTracker, TrackerSettings

LEARNING = GuardSettings(rule="learning", window=2, max_hard_streak=16)
START_LEVEL = GuardSettings(rule="start_level", window=2, max_hard_streak=16)
NO_BITS = np.zeros(4, np.uint16)


@pytest.mark.parametrize("statistic, rule", [("mean", "start_level"), ("worst_tokens", "start_level"), ("fields", "learning")])
def test_an_unset_rule_follows_the_recorded_statistic(statistic, rule):
    assert MiningSettings(sample_loss={"statistic": statistic}).noise_guard.rule == rule
    assert MiningSettings(sample_loss={"statistic": statistic}, noise_guard={"window": 3}).noise_guard.rule == rule
    other = "learning" if rule == "start_level" else "start_level"
    chosen = MiningSettings(sample_loss={"statistic": statistic}, noise_guard={"rule": other})
    assert chosen.noise_guard.rule == other  # a rule the user names is kept


def _feed(tracker, epoch, losses):
    base = np.flatnonzero(~np.isnan(np.asarray(losses, float)))
    tracker.update(sample_ids("t", base), np.asarray(losses, float)[base], epoch=epoch, steps=epoch)


def test_tracker_keeps_each_samples_loss_from_its_first_epoch_after_the_datasets_first():
    tracker = LossTracker({"t": 3}, TrackerSettings(history_slots=2))
    for epoch, losses in enumerate([[4.0, 4.0, np.nan], [1.5, np.nan, np.nan], [1.0, 2.5, np.nan], [0.5, 0.5, 3.0]]):
        _feed(tracker, epoch, losses)
        tracker.close_epoch(epoch)
    view = tracker.view("t", 3)
    # Epoch 0 is the dataset's first: nobody's early level comes from it. Sample 1
    # was next seen in epoch 2, sample 2 first in epoch 3.
    assert view.early_loss.tolist() == [1.5, 2.5, 3.0] and view.early_epoch.tolist() == [1, 2, 3]
    restored = LossTracker({"t": 3}, TrackerSettings(history_slots=2))
    restored.load_state_dict(tracker.state_dict())
    assert restored.view("t", 3).early_loss.tolist() == [1.5, 2.5, 3.0]
    assert restored.view("t", 3).early_epoch.tolist() == [1, 2, 3]


def test_not_below_own_start_counts_only_epochs_after_the_early_level():
    # History rows are epochs 2, 3, 4 (window 2: epochs 3 and 4 count).
    history = np.array([[9.0, 9.0, 9.0, 9.0], [2.0, 1.0, 0.5, 0.5], [2.4, 1.2, 3.0, 5.0]])
    early = EarlyLevels(loss=np.array([2.0, 1.5, 2.0, 1.0]), epoch=np.array([1, 1, 3, 4]), history_end=4)
    # 0: mean 2.2 >= 2.0 (not learnt); 1: 1.1 < 1.5; 2: only epoch 4 counts, 3.0 >= 2.0
    # (with epoch 3 counted too the mean would be 1.75, below); 3: nothing after its
    # early epoch 4, not judged (5.0 would exclude it).
    assert not_below_own_start(history, early, 2).tolist() == [True, False, True, False]


def test_learning_excludes_a_risen_sample_the_start_level_lets_through():
    # A wrong label in common words: its loss starts low (1.5) and rises as the
    # model learns the right answer; the hard clean sample falls from a high start.
    history = np.array([[1.5, 2.8, 1.5, 9.0], [1.7, 2.4, 1.2, 9.0], [2.0, 2.1, 1.0, 9.0]])
    early = EarlyLevels(loss=np.array([1.5, 2.8, 1.5, 9.0]), epoch=np.array([1, 1, 1, 1]), history_end=3)
    by_level = judge_guard(history, NO_BITS, START_LEVEL, start_level=4.3, early=early)
    assert by_level.eligible.tolist() == [True, True, True, False]  # only sample 3 sits at the start level
    verdict = judge_guard(history, NO_BITS, LEARNING, start_level=4.3, early=early)
    assert verdict.eligible.tolist() == [False, True, True, False]
    assert verdict.counts == {
        "insufficient_history": 0, "at_start_level": 1, "not_below_own_start": 2, "hard_streak": 0, "flagged_earlier": 0,
    }
    # No early levels known (first epochs): only the start level judges.
    assert judge_guard(history, NO_BITS, LEARNING, start_level=4.3).eligible.tolist() == [True, True, True, False]


def test_learning_flags_for_good_a_sample_not_below_its_early_level_in_each_epoch_after_it():
    history = np.array([[1.6, 1.6, 1.6, 1.2], [1.7, 1.4, 1.7, 1.7], [2.0, 2.0, 2.0, 2.0]])
    early = EarlyLevels(loss=np.array([1.5, 1.5, 1.5, 1.5]), epoch=np.array([1, 1, 2, 1]), history_end=4)
    flags = judge_guard(history, NO_BITS, LEARNING, start_level=4.3, may_flag=True, early=early).flagged
    # 0: above its level in epochs 2-4; 1: dipped below in epoch 3; 2: epoch 2 is its own
    # early epoch, which says nothing either way (and it is below the start level then);
    # 3: dipped in epoch 2.
    assert flags.tolist() == [True, False, False, False]
    # The start level alone flags nobody here.
    assert not judge_guard(history, NO_BITS, START_LEVEL, start_level=4.3, may_flag=True, early=early).flagged.any()


# Sample 0: a wrong label in common words (starts as low as the rest, then rises).
# Sample 1: hard and learnable (starts high, falls). Samples 2-5: learnt quickly.
EPOCHS = [
    [3.0, 4.0, 3.0, 3.0, 3.0, 3.0],
    [1.5, 2.8, 1.5, 1.4, 1.3, 1.2],
    [2.2, 2.3, 1.0, 0.9, 0.8, 0.8],
    [2.8, 2.0, 0.6, 0.5, 0.4, 0.4],
    [3.0, 1.9, 0.4, 0.3, 0.3, 0.3],
]
TOP1 = SelectorSettings("top_k", k=1, value=None)


@pytest.mark.parametrize("rule, mined", [("start_level", [0, 0]), ("learning", [1, 1])])
def test_the_engine_mines_the_learnable_hard_sample_under_learning(rule, mined):
    guard = GuardSettings(rule=rule, window=2, max_hard_streak=16)
    settings = MiningSettings(
        start_epoch=3, plateau_delta=1e6, selector=TOP1, noise_guard=guard, aggregation={"progress_correction": False},
    )
    miner = HardSampleMiner({"t": 6}, ["t"], settings)
    picks = []
    for epoch, losses in enumerate(EPOCHS):
        miner.observe(sample_ids("t", range(6)), losses, epoch=epoch, steps=epoch)
        if epoch == 3:
            selection = select_hard(miner.tracker, ["t"], 3, TOP1, guard)
            population = population_table(miner.tracker, ["t"], 3, selection, TOP1, guard)
        report = miner.end_epoch(epoch)
        if report.plan is not None and report.plan.epoch == epoch:
            picks.append(int(report.plan.base_idx["t"][0]))
    assert picks == mined
    if rule == "learning":
        assert population.rule_mask("not_below_own_start").tolist() == [True, False, False, False, False, False]
        assert miner.flagged["t"].tolist() == [True, False, False, False, False, False]  # at or above 1.5 in epochs 2-4
    assert recompute_selection(population).tolist() == population.columns["hard"].tolist()
