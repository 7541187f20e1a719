"""The first screen of the results page and the README's card, from a suite's summary."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import report_payoff as rp  # noqa: E402

from hardmine.core import MiningSettings  # noqa: E402

TODAY = json.loads(json.dumps(dataclasses.asdict(MiningSettings())))


def paired(rel, better, diff=None):
    return {"mean_relative": rel, "mean_diff": rel if diff is None else diff, "better_in": better, "of": 8,
            "relative": [rel] * 8}


def arm(hard_rel, better, overall, share=None, wrong=None, fired=2):
    return {
        "paired": {"hard_loss": paired(hard_rel, better), "all_loss": paired(overall, 4)},
        "share_of_oracle": {} if share is None else {"hard_loss": share},
        "mined": {"overall": {"corrupted_ratio_to_base": wrong}},
        "fired_epoch": [fired] * 8,
    }


def report(defaults_arm: str, noisy_wrong: float):
    other = {**TODAY, "trigger": "start" if TODAY["trigger"] != "start" else "plateau"}
    settings = {"uniform": {**TODAY, "start_epoch": 10_000}, "defaults": TODAY if defaults_arm == "defaults" else other,
                "trigger_start": TODAY if defaults_arm == "trigger_start" else other}
    placebo = {"paired": {"hard_loss": {**paired(-0.02, 5), "relative": [-0.05, 0.03]},
                          "all_loss": {**paired(0.0, 4), "relative": [-0.02, 0.02]}}}
    clean = {"arms": {"uniform": {}, "placebo": placebo, "defaults": arm(-0.01, 4, 0.01, 0.1, fired=None),
                      "trigger_start": arm(-0.2, 8, 0.01, 0.8)}}
    noisy = {"arms": {"uniform": {}, "placebo": placebo, "defaults": arm(-0.1, 6, -0.03, 0.6, noisy_wrong),
                      "trigger_start": arm(-0.1, 6, -0.03, 0.6, noisy_wrong)}}
    return {"setup": {"tasks": {"counter": {}}, "arm_settings": {"counter": settings}},
            "summary": {"counter/clean": clean, "counter/noisy": noisy}}


def test_the_first_table_reads_the_arm_that_ran_today_s_defaults():
    r = report("trigger_start", 0.5)
    rows = rp.payoff_rows(r, {"counter": TODAY})
    assert [(row["condition"], row["arm"]) for row in rows] == [("clean", "trigger_start"), ("noisy", "trigger_start")]
    table = "\n".join(rp.payoff_table(rows))
    assert "-20.0% (80% of the oracle's)" in table and "8/8" in table and "0.50x" in table


@pytest.mark.parametrize(("overall", "met"), [(0.01, True), (0.03, False)])
def test_clean_goal_needs_the_oracle_share_the_seeds_and_overall_loss_within_the_placebo(overall, met):
    r = report("trigger_start", 0.5)
    r["summary"]["counter/clean"]["arms"]["trigger_start"]["paired"]["all_loss"]["mean_relative"] = overall
    clean = rp.goal_lines(rp.payoff_rows(r, {"counter": TODAY}))[0]
    assert clean.startswith("- met") is met


@pytest.mark.parametrize(("wrong", "met"), [(0.9, True), (1.2, False)])
def test_noisy_goal_needs_wrong_labels_at_most_their_base_rate(wrong, met):
    noisy = rp.goal_lines(rp.payoff_rows(report("trigger_start", wrong), {"counter": TODAY}))[1]
    assert noisy.startswith("- met") is met and f"{wrong:.2f}x" in noisy


def test_the_readme_card_is_written_between_its_markers_and_nowhere_else(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{rp.README_BEGIN}\nold text\n{rp.README_END}\nafter\n")
    r = report("trigger_start", 0.5)
    assert rp.write_readme_card(readme, r)
    text = readme.read_text()
    card = rp.readme_card(rp.payoff_rows(r, {"counter": TODAY}))
    assert text == f"# x\n\nbefore\n{rp.README_BEGIN}\n{card}\n{rp.README_END}\nafter\n"
    assert "counter loss -20.0% (8/8)" in card
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not rp.write_readme_card(plain, r) and plain.read_text() == "no markers\n"


def test_fired_cells_count_seeds_per_epoch_with_never_last():
    assert rp.fired_cell([2, None, 3, 2]) == "2 (2), 3 (1), never (1)"
    assert rp.fired_cell({"0": None}) == "never (1)"


def test_an_arm_with_another_trigger_that_fired_where_start_fires_stands_for_today_s_defaults():
    if TODAY["trigger"] != "start":
        pytest.skip("today's trigger is not start")
    r = report("trigger_start", 0.5)
    r["setup"]["arm_settings"]["counter"].pop("trigger_start")
    for cond in ("counter/clean", "counter/noisy"):
        r["summary"][cond]["arms"].pop("trigger_start")
    plateau = {**TODAY, "trigger": "plateau"}
    r["setup"]["arm_settings"]["counter"]["defaults"] = plateau
    r["summary"]["counter/clean"]["arms"]["defaults"]["fired_epoch"] = [TODAY["start_epoch"]] * 8
    r["summary"]["counter/noisy"]["arms"]["defaults"]["fired_epoch"] = [TODAY["start_epoch"]] * 8
    assert rp.current_arm(r, "counter", TODAY) == "defaults"
    assert "fired at the end of epoch 2 in all 16 runs" in rp.same_runs_note(r, "counter", TODAY)
    r["summary"]["counter/clean"]["arms"]["defaults"]["fired_epoch"][3] = 4  # one run fired later: other runs
    assert rp.current_arm(r, "counter", TODAY) is None


def test_the_readme_paragraph_is_the_one_the_committed_results_give():
    results = BENCHMARKS / "results" / "quality.json"
    suite = json.loads(results.read_text())
    card = rp.readme_card(rp.payoff_rows(suite, rp.today_settings(suite["setup"]["tasks"])))
    readme = (BENCHMARKS.parent / "README.md").read_text()
    assert f"{rp.README_BEGIN}\n{card}\n{rp.README_END}" in readme  # regenerated by report.py --readme, not typed
