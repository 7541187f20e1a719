"""The noise guard's ``sticky`` rule: a failure of ``not_improving`` excludes for good."""

import numpy as np
import pytest

from hardmine.core import GuardSettings, HardSampleMiner, MiningSettings, SelectorSettings, SettingError, sample_ids

from hardmine.core.selection import guard_mask, select_hard

from hardmine.core.tracker import LossTracker, TrackerSettings
from hardmine.core.selection import judge_guard

TOP1 = SelectorSettings("top_k", k=1, value=None)


IMPROVEMENT = GuardSettings(rule="improvement")


def test_an_unset_rule_judges_as_start_level_outside_mining_settings_and_the_rule_is_validated():
    assert GuardSettings().rule is None
    history = np.array([[3.0, 3.0], [1.0, 3.0], [1.0, 3.0]])
    assert guard_mask(history, np.zeros(2, np.uint16), GuardSettings(), start_level=2.0)[0].tolist() == [True, False]
    with pytest.raises(SettingError, match="noise_guard.rule"):
        GuardSettings(rule="forever")


def test_improvement_rule_has_no_memory():
    history = np.array([[2.0, 2.0], [1.0, 1.95], [0.5, 1.9]])
    plain = guard_mask(history, np.zeros(2, np.uint16), IMPROVEMENT)
    flagged = np.array([True, False])
    # Flags given to the improvement rule change nothing.
    assert guard_mask(history, np.zeros(2, np.uint16), IMPROVEMENT, flagged)[0].tolist() == plain[0].tolist()


def test_sticky_excludes_an_earlier_failure_even_when_it_now_improves():
    # Sample 0 now falls fast (memorising a wrong label); it failed before.
    history = np.array([[2.0, 2.0, 2.0], [1.0, 1.5, 1.95], [0.5, 1.0, 1.9]])
    bits = np.zeros(3, np.uint16)
    guard = GuardSettings(rule="sticky")
    verdict = judge_guard(history, bits, guard, np.array([True, False, False]))
    ok, counts, now = verdict.eligible, verdict.counts, verdict.flagged
    assert ok.tolist() == [False, True, False]
    assert counts["flagged_earlier"] == 1 and counts["not_improving"] == 1
    assert now.tolist() == [True, False, True]  # earlier flags kept, today's failure added


def test_sticky_without_earlier_flags_equals_the_improvement_rule():
    rng = np.random.default_rng(0)
    history = rng.random((3, 40)) + 0.5
    bits = rng.integers(0, 8, 40).astype(np.uint16)
    plain, plain_counts = guard_mask(history, bits, IMPROVEMENT)
    sticky, sticky_counts = guard_mask(history, bits, GuardSettings(rule="sticky"))
    assert plain.tolist() == sticky.tolist()
    assert sticky_counts == {**plain_counts, "flagged_earlier": 0}


def test_sticky_flag_shape_is_checked():
    with pytest.raises(ValueError, match="one flag per sample"):
        judge_guard(np.ones((3, 4)), np.zeros(4, np.uint16), GuardSettings(rule="sticky"), np.zeros(3, bool))


def _feed(tracker, losses, epoch):
    base = np.flatnonzero(~np.isnan(losses))
    tracker.update(sample_ids("t", base), losses[base], epoch=epoch, steps=epoch)


def test_select_hard_carries_flags_of_unobserved_samples():
    tracker = LossTracker({"t": 3}, TrackerSettings(progress_correction=False, aggregation="mean"))
    for epoch, losses in enumerate([[5.0, 5.0, np.nan], [5.0, 4.0, np.nan], [5.0, 3.0, np.nan]]):
        _feed(tracker, np.array(losses), epoch)
        tracker.close_epoch(epoch)
    guard = GuardSettings(rule="sticky", window=2)
    sel = select_hard(tracker, ["t"], 2, TOP1, guard, flagged={"t": np.array([False, False, True])})
    assert sel.datasets["t"].tolist() == [1]
    # Sample 0 failed now; sample 2 was never observed and keeps its old flag.
    assert sel.flagged["t"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="has 2 flags"):
        select_hard(tracker, ["t"], 2, TOP1, guard, flagged={"t": np.zeros(2, bool)})


def _miner(rule: str) -> HardSampleMiner:
    settings = MiningSettings(
        start_epoch=2, plateau_delta=1e6,
        selector=TOP1,
        noise_guard=GuardSettings(rule=rule, window=2, max_hard_streak=16),
        aggregation={"progress_correction": False, "history_epochs": 2},
    )
    return HardSampleMiner({"t": 2}, ["t"], settings)


# Sample 0: flat while sample 1 learns, then memorised (falls fast) while
# sample 1 has plateaued: the pattern of a mislabelled sample.
EPOCHS = [[3.0, 3.0], [3.0, 2.0], [3.0, 1.5], [2.0, 1.5], [1.0, 1.45]]


@pytest.mark.parametrize("rule, late_pick", [("improvement", [0]), ("sticky", [])])
def test_memorised_flat_sample_returns_under_improvement_but_not_under_sticky(rule, late_pick):
    miner = _miner(rule)
    picks = []
    for epoch, losses in enumerate(EPOCHS):
        miner.observe(sample_ids("t", [0, 1]), losses, epoch=epoch, steps=epoch)
        report = miner.end_epoch(epoch)
        if report.plan is not None:
            picks.append(report.plan.base_idx["t"].tolist())
    assert picks[0] == [1]  # at the first selection both rules exclude the flat sample
    assert picks[-1] == late_pick


def test_sticky_flags_survive_a_state_round_trip():
    miner = _miner("sticky")
    for epoch, losses in enumerate(EPOCHS[:3]):
        miner.observe(sample_ids("t", [0, 1]), losses, epoch=epoch, steps=epoch)
        miner.end_epoch(epoch)
    restored = _miner("sticky")
    restored.load_state_dict(miner.state_dict())
    assert restored.flagged["t"].tolist() == miner.flagged["t"].tolist() == [True, False]
    state = miner.state_dict()
    del state["flagged"]  # a state saved before the rule existed
    older = _miner("sticky")
    older.load_state_dict(state)
    assert older.flagged == {}
