"""The noise guard's declarations and its tests common to every rule."""

import numpy as np
import pytest

from hardmine.core import GuardSettings, MiningSettings, SettingError
from hardmine.core.audit import EXCLUSION_RULES
from hardmine.core.guard import EXCLUSIONS, GUARD_RULES, guard_mask, judge_guard, streak_reached


def test_invalid_guard_settings_name_their_key():
    with pytest.raises(SettingError, match="noise_guard.max_hard_streak"):
        GuardSettings(max_hard_streak=0)
    with pytest.raises(SettingError, match=r"noise_guard.rule: got 'sticky'; expected one of \['start_level', 'learning'\]"):
        GuardSettings(rule="sticky")
    with pytest.raises(SettingError, match=r"noise_guard.min_improvement: got 0.1"):
        MiningSettings(noise_guard={"min_improvement": 0.1})


def test_every_rule_test_names_a_declared_exclusion_and_the_population_bits_follow_the_declaration():
    for rule in GUARD_RULES.values():
        for test in rule.tests:
            assert test.exclusion in EXCLUSIONS
    assert EXCLUSION_RULES == ("unobserved", *EXCLUSIONS)
    assert len({e.label for e in EXCLUSIONS.values()}) == len(EXCLUSIONS)


@pytest.mark.parametrize("rule", list(GUARD_RULES))
def test_every_exclusion_a_rule_makes_is_declared(rule):
    rng = np.random.default_rng(0)
    history = rng.uniform(0.5, 2.0, (4, 50))
    history[:, :5] = np.nan
    bits = np.where(np.arange(50) % 7 == 0, 0b111, 0).astype(np.uint16)
    verdict = judge_guard(history, bits, GuardSettings(rule=rule), start_level=1.0, may_flag=True)
    assert set(verdict.masks) <= set(EXCLUSIONS)
    assert {"insufficient_history", "at_start_level", "hard_streak", "flagged_earlier"} <= set(verdict.masks)


def test_streak():
    bits = np.array([0b111, 0b011, 0b1111, 0b101], np.uint16)
    assert streak_reached(bits, 3).tolist() == [True, False, True, False]


def test_guard_counts_each_exclusion():
    # 0: learnt below the start level; 1: at it; 2: hard in 3 plans running; 3: not seen lately.
    history = np.array([[2.0, 2.0, 2.0, 1.0], [1.0, 1.95, 1.0, np.nan]])
    bits = np.array([0, 0, 0b111, 0], np.uint16)
    guard = GuardSettings(rule="start_level", window=1, max_hard_streak=3)
    ok, counts = guard_mask(history, bits, guard, start_level=1.5)
    assert ok.tolist() == [True, False, False, False]
    assert counts == {"insufficient_history": 1, "at_start_level": 1, "hard_streak": 1, "flagged_earlier": 0}
    ok, counts = guard_mask(history, bits, GuardSettings(enabled=False))
    assert ok.all() and counts == {}
