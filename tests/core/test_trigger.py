import math

import numpy as np

import pytest

from hardmine.core import SettingError, TriggerSettings

from hardmine.core.trigger import Trigger


def run(values, **kw):
    trigger = Trigger(TriggerSettings(**kw))
    return [trigger.update(e, v) for e, v in enumerate(values)], trigger


def test_fires_at_the_first_plateau_from_start_epoch_and_stays_on():
    active, trigger = run([4.0, 2.0, 1.5, 1.45, 3.0, 1.0], start_epoch=2, plateau_delta=0.05, patience=1)
    # epoch 2 improved 25% (no plateau); epoch 3 improved 3.3% (< 5%): fires.
    assert active == [False, False, False, True, True, True]
    assert trigger.activated_at == 3


def test_plateau_before_start_epoch_does_not_fire():
    active, _ = run([2.0, 2.0, 2.0, 1.0, 0.5], start_epoch=3, plateau_delta=0.05)
    assert active == [False, False, False, False, False]


def test_patience_compares_with_the_value_patience_epochs_earlier():
    active, trigger = run([4.0, 3.0, 2.9, 2.8, 2.78], start_epoch=0, plateau_delta=0.05, patience=2)
    # epoch 2: (4.0-2.9)/4.0 = 27.5%; epoch 3: (3.0-2.8)/3 = 6.7%; epoch 4: (2.9-2.78)/2.9 = 4.1%.
    assert active == [False, False, False, False, True]
    assert trigger.relative_improvement(3) == pytest.approx(0.2 / 3)


def test_higher_is_better_for_metrics():
    active, _ = run([0.5, 0.7, 0.71], start_epoch=1, plateau_delta=0.05, higher_is_better=True)
    assert active == [False, False, True]


def test_getting_worse_counts_as_plateau():
    active, _ = run([1.0, 1.2], start_epoch=1, plateau_delta=0.0)
    assert active == [False, True]


def test_missing_epoch_value_waits():
    trigger = Trigger(TriggerSettings(start_epoch=0, plateau_delta=0.5))
    assert trigger.update(0, None) is False
    assert trigger.update(1, 1.0) is False  # nothing to compare with
    assert trigger.update(2, 1.0) is True


def test_errors():
    trigger = Trigger()
    trigger.update(0, 1.0)
    with pytest.raises(ValueError, match="after epoch 0"):
        trigger.update(0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        trigger.update(1, math.nan)
    with pytest.raises(SettingError, match="custom.hard_sample_mining.start_epoch: got -1"):
        TriggerSettings(start_epoch=-1)
    with pytest.raises(SettingError, match="plateau_delta"):
        TriggerSettings(plateau_delta=-0.1)
    with pytest.raises(SettingError, match="patience"):
        TriggerSettings(patience=0)


def test_state_round_trip():
    _, trigger = run([3.0, 2.0, 1.99], start_epoch=1, plateau_delta=0.05)
    other = Trigger(TriggerSettings(start_epoch=1, plateau_delta=0.05))
    other.load_state_dict(trigger.state_dict())
    assert other.values == trigger.values and other.active and other.activated_at == 2


# ------------------------------------------------------------ modes start, tail, stable
from hardmine.core.trigger import STABLE_OVERLAP, TRIGGER_MODES, tail_lag, top_overlap  # noqa: E402


def test_start_mode_fires_at_start_epoch_whatever_the_loss_does():
    active, trigger = run([4.0, 2.0, 1.0, 0.5], start_epoch=2, mode="start")
    assert active == [False, False, True, True]
    assert trigger.activated_at == 2


def test_start_mode_fires_with_no_monitored_value():
    trigger = Trigger(TriggerSettings(start_epoch=1, mode="start"))
    assert [trigger.update(0, None), trigger.update(1, None)] == [False, True]


def test_tail_lag_is_positive_when_the_worst_fall_more_slowly_than_the_median():
    rng = np.random.default_rng(0)
    before = rng.uniform(1.0, 2.0, 200)
    bulk_learns = before * 0.5
    tail = before >= np.quantile(before, 0.9)
    bulk_learns[tail] = before[tail] * 0.95  # the worst tenth barely moves
    assert tail_lag(before, bulk_learns) > 0
    assert tail_lag(before, before * 0.5) == pytest.approx(0.0, abs=1e-12)  # everyone falls alike
    tail_learns_fastest = before * 0.5
    tail_learns_fastest[tail] = before[tail] * 0.4
    assert tail_lag(before, tail_learns_fastest) < 0


def test_top_overlap_counts_the_worst_tenth_kept():
    before = np.arange(100, dtype=float)  # worst tenth: positions 90..99
    now = before.copy()
    assert top_overlap(before, now) == 1.0
    now[[95, 96, 97, 98, 99]] = 0.0  # half of the worst tenth learnt; 85..89 move into it
    assert top_overlap(before, now) == pytest.approx(0.5)
    assert top_overlap(before, -before) == 0.0


def test_sample_signals_skip_samples_not_seen_in_both_epochs_and_need_enough_of_them():
    before = np.arange(40, dtype=float)
    now = before.copy()
    now[:5] = np.nan
    before[5:10] = np.nan
    assert top_overlap(before, now) == 1.0  # 30 seen in both; their worst 3 are the same
    assert top_overlap(np.full(10, 1.0), np.full(10, 1.0)) is None
    assert tail_lag(np.full(10, 1.0), np.full(10, 1.0)) is None


@pytest.mark.parametrize(("mode", "signals", "fires_at"), [
    ("tail", [None, None, -0.1, 0.02, -0.5], 3),
    ("stable", [None, 0.9, 0.3, STABLE_OVERLAP, 0.2], 3),
    ("stable", [None, None, None, None, None], None),  # no signal: never
])
def test_sample_modes_fire_on_their_signal_from_start_epoch(mode, signals, fires_at):
    trigger = Trigger(TriggerSettings(start_epoch=2, mode=mode))
    for epoch, signal in enumerate(signals):
        trigger.update(epoch, 1.0, signal)
    assert trigger.activated_at == fires_at


def test_mode_is_checked_and_named_by_its_yaml_key():
    with pytest.raises(SettingError, match=r"custom.hard_sample_mining.trigger: got 'soon'.*plateau"):
        TriggerSettings(mode="soon")
    assert TRIGGER_MODES[0] == "plateau"


def test_state_round_trip_keeps_the_signals():
    trigger = Trigger(TriggerSettings(start_epoch=1, mode="stable"))
    trigger.update(0, 2.0, None)
    trigger.update(1, 1.0, 0.2)
    other = Trigger(TriggerSettings(start_epoch=1, mode="stable"))
    other.load_state_dict(trigger.state_dict())
    assert other.signals == {1: 0.2} and not other.active
    assert other.update(2, 0.9, 0.6) and other.activated_at == 2
