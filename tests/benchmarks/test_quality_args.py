"""The quality benchmark's command line: what each option plans to run."""

import sys
from pathlib import Path

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
