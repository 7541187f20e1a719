import math

import pytest

from hardmine.core import SettingError, TriggerSettings

from hardmine.core.trigger import Trigger


def run(values, **kw):
    trigger = Trigger(TriggerSettings(**{"mode": "plateau", **kw}))
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
    trigger = Trigger(TriggerSettings(start_epoch=0, plateau_delta=0.5, mode="plateau"))
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
    other = Trigger(TriggerSettings(start_epoch=1, plateau_delta=0.05, mode="plateau"))
    other.load_state_dict(trigger.state_dict())
    assert other.values == trigger.values and other.active and other.activated_at == 2


# ------------------------------------------------------------ mode start
from hardmine.core.trigger import TRIGGER_MODES  # noqa: E402


def test_start_mode_fires_at_start_epoch_whatever_the_loss_does():
    active, trigger = run([4.0, 2.0, 1.0, 0.5], start_epoch=2, mode="start")
    assert active == [False, False, True, True]
    assert trigger.activated_at == 2


def test_start_mode_fires_with_no_monitored_value():
    trigger = Trigger(TriggerSettings(start_epoch=1, mode="start"))
    assert [trigger.update(0, None), trigger.update(1, None)] == [False, True]


def test_start_is_the_default_and_plateau_stays_available():
    assert TriggerSettings().mode == "start" and TRIGGER_MODES == ("start", "plateau")
    from hardmine.core import MiningSettings

    assert MiningSettings().trigger == "start" and MiningSettings(trigger="plateau").trigger_settings().mode == "plateau"


def test_mode_is_checked_and_named_by_its_yaml_key():
    with pytest.raises(SettingError, match=r"custom.hard_sample_mining.trigger: got 'tail'; expected one of \['start', 'plateau'\]"):
        TriggerSettings(mode="tail")
