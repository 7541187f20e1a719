"""Suites of the quality benchmark run side by side are merged into one report, or refused."""

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quality  # noqa: E402


def _run(task, arm, seed, loss):
    row = {"epoch": 0, **{s: {"loss": loss} for s in ("hard", "rest", "all")}}
    return {
        "task": task, "condition": "clean", "seed": seed, "arm": arm, "epochs": [row], "steps": 10, "wall_s": 1.0,
        "mining": [{"epoch": 0, "hsm/monitored": 1.0, "hsm/active": 0.0}], "mined": [], "base_rates": {"hard": 0.1, "corrupted": 0.0},
    }


def _report(task):
    return {
        "benchmark": "hardmine.quality/1", "mode": "full", "wall_s": 60.0 if task == "text" else 90.0,
        "meta": {"started_commit": "abc", "dirty": False, "started_at": "2026-11-28T06:00:00"},
        "setup": {
            "tasks": {task: {}}, "plan": {task: {"seeds": [0], "arms": ["uniform", "defaults"]}},
            "arm_settings": {task: {}}, "arms": ["uniform", "defaults"], "conditions": ["clean"], "seeds": [0],
            "mine_from": None, "noise_share": 0.1,
        },
        "runs": [_run(task, "uniform", 0, 1.0), _run(task, "defaults", 0, 0.8)],
    }


def test_merge_joins_tasks_and_summarises_them_together():
    merged = quality.merge_reports([_report("text"), _report("vl")])
    assert list(merged["setup"]["tasks"]) == ["text", "vl"] and len(merged["runs"]) == 4
    assert merged["wall_s"] == 90.0 and merged["parallel_suites"] == 2 and merged["wall_s_parts"] == [60.0, 90.0]
    for key in ("text/clean", "vl/clean"):
        assert merged["summary"][key]["arms"]["defaults"]["paired"]["hard_loss"]["mean_relative"] == pytest.approx(-0.2)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["meta"].update(started_commit="def"), "different or uncommitted code"),
        (lambda r: r["meta"].update(dirty=True), "different or uncommitted code"),
        (lambda r: r.update(mode="quick"), "mode"),
        (lambda r: r["setup"].update(mine_from=2), "forced different start epochs"),
    ],
)
def test_merge_refuses_suites_that_do_not_belong_together(change, message):
    other = _report("vl")
    change(other)
    with pytest.raises(ValueError, match=message):
        quality.merge_reports([_report("text"), other])


def _seeds(report, seed):
    """The same suite run with another seed."""
    report["setup"]["plan"]["text"]["seeds"] = [seed]
    report["setup"]["seeds"] = [seed]
    for run in report["runs"]:
        run["seed"] = seed
    return report


def test_merge_joins_the_seeds_of_a_task_split_over_suites():
    one, two = _report("text"), _seeds(_report("text"), 1)
    one["meta"]["started_at"], two["meta"]["started_at"] = "2026-11-28T05:38:00", "2026-11-28T05:01:00"
    two["runs"][1]["epochs"][0]["hard"]["loss"] = 0.9
    merged = quality.merge_reports([one, two, _report("vl")])
    assert merged["setup"]["plan"]["text"]["seeds"] == [0, 1] and merged["setup"]["seeds"] == [0, 1]
    # one at 05:01 for 60 s, one at 05:38 for 60 s, vl at 06:00 for 90 s: 60.5 min from first start to last end
    assert merged["elapsed_s"] == pytest.approx(60 * 60 + 30) and merged["parallel_suites"] == 3
    paired = merged["summary"]["text/clean"]["arms"]["defaults"]["paired"]["hard_loss"]
    assert paired["of"] == 2 and paired["mean_relative"] == pytest.approx(-0.15)
    assert merged["meta"]["started_at"] == "2026-11-28T05:01:00"  # the page says when the suite began


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: None, r"ran seeds \[0\] in two suites"),
        (lambda r: _seeds(r, 1)["setup"]["plan"]["text"].update(arms=["uniform"]), "ran arms"),
        (lambda r: _seeds(r, 1)["setup"]["tasks"].update(text={"epochs": 3}), "different tasks"),
        (lambda r: _seeds(r, 1)["setup"]["arm_settings"].update(text={"defaults": {}}), "different arm_settings"),
        (lambda r: _seeds(r, 1)["setup"].update(conditions=["clean", "noisy"]), "ran conditions"),
        (lambda r: _seeds(r, 1)["meta"].update(torch="2.0"), "torch"),
    ],
)
def test_merge_refuses_a_task_whose_suites_overlap_or_differ(change, message):
    other = copy.deepcopy(_report("text"))
    change(other)
    with pytest.raises(ValueError, match=message):
        quality.merge_reports([_report("text"), other])


def _later_suite(arm="mixed", control_loss=1.0):
    later = _report("text")
    later["meta"]["started_commit"] = "def"
    later["setup"]["plan"]["text"]["arms"] = ["uniform", arm]
    later["setup"]["arm_settings"]["text"] = {arm: {"hard_weight": 2.0}}
    later["runs"] = [_run("text", "uniform", 0, control_loss), _run("text", arm, 0, 0.9)]
    return later


def test_extend_adds_a_later_suites_arms_where_its_controls_reproduced():
    extended = quality.extend_report(_report("text"), _later_suite())
    assert extended["setup"]["plan"]["text"]["arms"] == ["uniform", "defaults", "mixed"]
    assert extended["setup"]["arm_commits"] == {"text": {"mixed": "def"}}
    assert len(extended["runs"]) == 3  # the later control is the same run: kept once
    arms = extended["summary"]["text/clean"]["arms"]
    assert arms["mixed"]["paired"]["hard_loss"]["mean_relative"] == pytest.approx(-0.1)
    assert arms["mixed"]["paired_reference"]["hard_loss"]["mean_relative"] == pytest.approx(0.125)  # against defaults


@pytest.mark.parametrize(("later", "message"), [
    (_later_suite(control_loss=1.01), "did not reproduce"),
    (_later_suite(arm="defaults"), "twice"),
])
def test_extend_refuses_a_control_that_did_not_reproduce_or_an_arm_run_twice(later, message):
    with pytest.raises(ValueError, match=message):
        quality.extend_report(_report("text"), later)
