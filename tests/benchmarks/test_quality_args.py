"""The quality benchmark's command line: what each option plans to run."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quality  # noqa: E402


def test_sweep_runs_the_text_task_with_the_defaults_and_every_sweep_arm():
    opts = quality.parse_args(["--sweep"])
    seeds, arms = opts.plan["text"]
    assert list(opts.plan) == ["text"] and seeds == quality.FULL_PLAN["text"][0]
    assert arms == ["uniform", "placebo", "defaults", *quality.SWEEP_ARMS]


def test_sweep_arms_change_exactly_one_setting_each():
    from hardmine.core import MiningSettings
    import dataclasses

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    defaults = flat(dataclasses.asdict(MiningSettings()))
    for arm in quality.SWEEP_ARMS:
        changed = flat(dataclasses.asdict(quality.arm_settings(arm, mine_from=None, train_size=100)))
        # The selector is one setting (mode and its k or value change together).
        settings = {k.split(".")[0] if k.startswith("selector.") else k for k in defaults if defaults[k] != changed[k]}
        assert len(settings) == 1, (arm, settings)
    weight5 = quality.arm_settings("weight5", mine_from=None, train_size=100)
    top_k = quality.arm_settings("top_k10", mine_from=None, train_size=1200).selector
    assert weight5.hard_weight == 5.0 and (top_k.mode, top_k.k) == ("top_k", 120)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sweep", "--arms", "defaults"], "--sweep names its own arms"),
        (["--sweep", "--mine-from", "2"], "--sweep runs the full text task"),
        (["--sweep", "--quick"], "--sweep runs the full text task"),
        (["--sweep", "--tasks", "vl"], "--sweep runs the full text task"),
    ],
)
def test_sweep_refuses_options_that_would_change_what_it_compares(capsys, argv, message):
    with pytest.raises(SystemExit):
        quality.parse_args(argv)
    assert message in capsys.readouterr().err


def test_oracle_records_the_hard_flag_and_keeps_the_real_mean_loss():
    from hardmine.core.identity import sample_ids
    from hardmine.train.mining import HardMining, ObservationLog

    is_hard = np.array([False, True, False, True])
    mining = object.__new__(HardMining)  # only its observation log is used by record
    mining.log = ObservationLog(with_mean_loss=True)
    real_record = HardMining.record
    ids = sample_ids("target", np.array([3, 0, 1]))
    with quality.oracle_recording(is_hard):
        mining.record(ids, np.array([0.5, 2.0, 7.0]), [0, 1, 2], step=1, mean_loss=np.array([0.1, 0.2, 0.3]))
    assert HardMining.record is real_record  # restored on leaving
    mining.record(ids, np.array([0.5, 2.0, 7.0]), [3, 4, 5], step=2, mean_loss=np.array([0.1, 0.2, 0.3]))
    drained = mining.log.drain()
    np.testing.assert_array_equal(drained["loss"], [1.0, 0.0, 1.0, 0.5, 2.0, 7.0])
    np.testing.assert_allclose(drained["mean_loss"], [0.1, 0.2, 0.3] * 2)


def test_oracle_arm_marks_every_sample_its_flag_puts_at_one_without_a_guard():
    from hardmine.core import MiningSettings

    settings = quality.arm_settings("oracle", mine_from=None, train_size=100)
    assert settings.noise_guard.enabled is False and settings.aggregation.progress_correction is False
    assert settings.selector.mode == "threshold" and 0 < settings.selector.value <= 1
    # The trigger is the defaults': the oracle arm fires when the defaults arm does.
    assert settings.sample_loss.statistic == "worst_tokens"
    default = MiningSettings()
    assert (settings.start_epoch, settings.plateau_delta, settings.patience) == (
        default.start_epoch, default.plateau_delta, default.patience)


def test_descriptions_arm_records_the_desc_fields_and_runs_on_the_vl_task_only():
    settings = quality.arm_settings("descriptions", mine_from=None, train_size=300)
    assert settings.sample_loss.statistic == "fields" and settings.sample_loss.fields == ("desc",)
    opts = quality.parse_args(["--arms", "defaults", "descriptions"])
    assert opts.plan["vl"][1] == ["uniform", "defaults", "descriptions"]
    assert opts.plan["text"][1] == ["uniform", "defaults"]  # the text task's answers have no fields
