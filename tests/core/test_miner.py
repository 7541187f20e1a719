import dataclasses
import json

import numpy as np
import pytest

from hardmine.core import GuardSettings, HardSampleMiner, MiningSettings, Pool, SelectorSettings, SettingError, build_epoch_schedule, sample_ids

from hardmine.core.miner import hard_vs_all
from hardmine.core.miner import MiningStateMismatch, settings_changes

SETTINGS = MiningSettings(
    start_epoch=2, plateau_delta=0.5,
    selector=SelectorSettings(mode="top_k", k=10, value=None),
    noise_guard=GuardSettings(enabled=False),  # the guard has tests of its own; these follow the mining
)


def run(miner, epochs, *, start=0, seed=0):
    """Fusion training simulated: target samples 0..19 are hard (3x loss)."""
    pools = [Pool("target", 100), Pool("coco", 50, 0.5)]
    reports = []
    for epoch in range(start, start + epochs):
        rng = np.random.default_rng([seed, epoch])
        s = build_epoch_schedule(pools, miner.plan, seed=seed, epoch=epoch)
        names = np.array(s.pool_names)[s.pool]
        ids = np.where(names == "target", sample_ids("target", s.base_idx), sample_ids("coco", s.base_idx))
        loss = np.where((names == "target") & (s.base_idx < 20), 3.0, 1.0) * 0.8**epoch
        loss = loss * rng.lognormal(0, 0.02, loss.size)
        for step, start_i in enumerate(range(0, len(s), 10)):
            sl = slice(start_i, start_i + 10)
            miner.observe(ids[sl], loss[sl], epoch=epoch, steps=epoch * 1000 + step)
        reports.append(miner.end_epoch(epoch))
    return reports


def test_mines_the_hard_target_samples_once_the_trigger_fires():
    miner = HardSampleMiner({"target": 100}, ["target"], SETTINGS)
    reports = run(miner, 5)
    assert [r.active for r in reports] == [False, False, True, True, True]
    assert reports[1].plan is None and reports[2].plan.version == 1 and reports[4].plan.version == 3
    plan = reports[2].plan
    assert plan.epoch == 2 and set(plan.base_idx) == {"target"}
    assert set(plan.base_idx["target"].tolist()) <= set(range(20)) and plan.num_hard == 10
    stats = hard_vs_all(reports[2].selection)
    assert stats["hard_mean"] > 1.8 * stats["all_mean"]  # 3x loss on 20% of the pool
    # Only target samples were tracked; coco observations set the level only.
    assert miner.tracker.stats["untracked"] > 0


@pytest.mark.parametrize("trigger", ["plateau", "start"])
def test_resume_from_state_equals_uninterrupted(trigger):
    settings = dataclasses.replace(SETTINGS, trigger=trigger, start_epoch=3)
    straight = HardSampleMiner({"target": 100}, ["target"], settings)
    a = run(straight, 6)
    first = HardSampleMiner({"target": 100}, ["target"], settings)
    run(first, 3)
    resumed = HardSampleMiner({"target": 100}, ["target"], settings)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), default=lambda x: x.tolist())))
    b = run(resumed, 3, start=3)
    assert [x.active for x in a[3:]] == [y.active for y in b] and any(y.active for y in b)
    for x, y in zip(a[3:], b):
        assert (x.plan is None and y.plan is None) or x.plan.to_json_dict() == y.plan.to_json_dict()


def test_mining_finishes_after_max_active_epochs_and_the_schedule_drops_the_weights():
    settings = dataclasses.replace(SETTINGS, max_active_epochs=2)
    miner = HardSampleMiner({"target": 100}, ["target"], settings)
    reports = run(miner, 6)
    assert [r.active for r in reports] == [False, False, True, True, False, False]
    assert [r.finished for r in reports] == [False, False, False, False, True, True]
    assert reports[3].plan.num_hard == 10 and reports[4].plan is None and reports[4].selection is None
    # The plan left behind marks nothing: one new version when mining finishes, then no more.
    assert miner.plan.num_hard == 0 and miner.plan.version == 3
    after = build_epoch_schedule([Pool("target", 100), Pool("coco", 50, 0.5)], miner.plan, seed=0, epoch=6)
    counts = np.bincount(after.base_idx[np.array(after.pool_names)[after.pool] == "target"], minlength=100)
    assert (counts == 1).all()
    # Resumed between the last plan and the first epoch without one, it finishes at the same epoch.
    first = HardSampleMiner({"target": 100}, ["target"], settings)
    run(first, 4)
    resumed = HardSampleMiner({"target": 100}, ["target"], settings)
    resumed.load_state_dict(first.state_dict())
    assert [r.finished for r in run(resumed, 2, start=4)] == [True, True]
    assert resumed.plan.to_json_dict() == miner.plan.to_json_dict()


def test_resume_with_other_settings_names_each_changed_yaml_key():
    first = HardSampleMiner({"target": 100}, ["target"], SETTINGS)
    run(first, 2)
    other = MiningSettings(
        start_epoch=2, plateau_delta=0.5, selector=SETTINGS.selector, noise_guard=SETTINGS.noise_guard, hard_weight=5.0,
        aggregation={"ema_decay": 0.7},
    )
    with pytest.raises(MiningStateMismatch) as info:
        HardSampleMiner({"target": 100}, ["target"], other).load_state_dict(first.state_dict())
    message = str(info.value)
    assert "custom.hard_sample_mining.hard_weight: 3.0 in the checkpoint, 5.0 now" in message
    assert "custom.hard_sample_mining.aggregation.ema_decay: 0.5 in the checkpoint, 0.7 now" in message
    assert "start_epoch" not in message


def test_a_checkpoint_made_with_other_settings_names_each_changed_key():
    first = HardSampleMiner({"target": 100}, ["target"], dataclasses.replace(SETTINGS, noise_guard={"window": 2}))
    run(first, 2)
    changed = dataclasses.replace(SETTINGS, noise_guard={"window": 3}, hard_weight=2.0, trigger="plateau")
    with pytest.raises(MiningStateMismatch) as info:
        HardSampleMiner({"target": 100}, ["target"], changed).load_state_dict(first.state_dict())
    message = str(info.value)
    assert "noise_guard.window: 2 in the checkpoint, 3 now" in message
    assert "hard_weight: 3.0 in the checkpoint, 2.0 now" in message
    assert "trigger: 'start' in the checkpoint, 'plateau' now" in message


def test_a_mining_state_of_another_format_is_refused_with_one_message():
    first = HardSampleMiner({"target": 100}, ["target"], SETTINGS)
    run(first, 2)
    state = first.state_dict()
    del state["format"]  # as an earlier hardmine wrote it
    with pytest.raises(MiningStateMismatch, match="format None; this hardmine reads only 'hardmine.mining-state/2'.*earlier version"):
        HardSampleMiner({"target": 100}, ["target"], SETTINGS).load_state_dict(state)


def test_eligible_must_be_tracked():
    with pytest.raises(ValueError, match="subset"):
        HardSampleMiner({"target": 3}, ["coco"])


def test_settings_errors_name_the_key():
    with pytest.raises(SettingError, match="custom.hard_sample_mining.hard_weight: got 0.5; expected a finite number >= 1.0"):
        MiningSettings(hard_weight=0.5)
    with pytest.raises(SettingError, match="aggregation.mode"):
        MiningSettings(aggregation={"mode": "max"})
    with pytest.raises(SettingError, match=r"sample_loss.statistic: got 'max'; expected one of \['mean', 'worst_tokens', 'fields', 'mixed'\]"):
        MiningSettings(sample_loss={"statistic": "max"})
    with pytest.raises(SettingError, match=r"sample_loss.tokens: got 3; expected a key among \['statistic', 'fields'\]"):
        MiningSettings(sample_loss={"statistic": "worst_tokens", "tokens": 3})  # a named constant now, not a key
    with pytest.raises(SettingError, match=r"aggregation.level_decay: got 0.9; expected a key among"):
        MiningSettings(aggregation={"level_decay": 0.9})


def test_aggregation_starts_history_epochs_before_start_epoch():
    s = MiningSettings(start_epoch=5, aggregation={"history_epochs": 2})
    assert s.tracker_settings().aggregate_from_epoch == 3
    assert MiningSettings(start_epoch=1).tracker_settings().aggregate_from_epoch == 0


def test_settings_take_the_yaml_keys_and_shapes():
    s = MiningSettings(
        start_epoch=3, monitor="eval_loss", dump=False, selector={"mode": "top_k", "k": 200},
        aggregation={"mode": "mean"}, noise_guard={"enabled": False},
    )
    assert s.trigger_settings().start_epoch == 3 and s.monitor == "eval_loss" and not s.dump
    assert s.selector == SelectorSettings(mode="top_k", k=200) and s.aggregation.mode == "mean"
    assert s.guard.enabled is False and s.tracker_settings().aggregation == "mean"


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"selector": {"mode": "top_k"}}, "selector.k"),  # checked when made, not at the first epoch end
        ({"selector": {"mode": "top_k", "kk": 3}}, "selector.kk"),
        ({"aggregation": {"mode": "median"}}, "aggregation.mode"),
        ({"aggregation": "ema"}, "aggregation"),
        ({"noise_guard": {"window": 0}}, "noise_guard.window"),
        ({"start_epoch": -1}, "start_epoch"),
        ({"enabled": "yes"}, "enabled"),
        ({"monitor": ""}, "monitor"),
        ({"max_active_epochs": 0}, "max_active_epochs"),
        ({"max_active_epochs": 2.5}, "max_active_epochs"),
    ],
)
def test_bad_settings_name_their_yaml_key(kwargs, key):
    with pytest.raises(SettingError) as info:
        MiningSettings(**kwargs)
    assert info.value.key == f"custom.hard_sample_mining.{key}"


@pytest.mark.parametrize("fields", [[], "desc", ["desc", ""], [3]])
def test_sample_loss_fields_must_name_json_keys(fields):
    with pytest.raises(SettingError, match="sample_loss.fields: got .*; expected a non-empty list of JSON key names"):
        MiningSettings(sample_loss={"statistic": "fields", "fields": fields})


def test_sample_loss_fields_from_a_list_resume_as_the_same_settings():
    settings = MiningSettings(sample_loss={"statistic": "fields", "fields": ["desc", "label"]})
    assert settings.sample_loss.fields == ("desc", "label")
    saved = json.loads(json.dumps(settings.decision_dict()))  # as a checkpoint stores them
    assert settings_changes(saved, settings.decision_dict()) == []
