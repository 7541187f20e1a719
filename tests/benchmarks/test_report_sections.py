"""The results page's long-run and guard-replay sections are built from their JSON alone."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quality  # noqa: E402
import report  # noqa: E402

META = {"started_commit": "0123456789abcdef", "commit": "0123456789abcdef", "timestamp": "t", "dirty": False}


def _run(arm, seed, loss, corrupted):
    rows = [{"epoch": e, **{s: {"loss": loss} for s in ("hard", "rest", "all")}} for e in range(4)]
    mined = [] if arm == "uniform" else [{"epoch": e, "num_mined": 10, "hard_share": 0.4, "corrupted_share": corrupted} for e in (2, 3)]
    return {
        "task": "text", "condition": "noisy", "seed": seed, "arm": arm, "epochs": rows, "steps": 10, "wall_s": 1.0,
        "mining": [{"epoch": 2, "hsm/active": 1.0, "hsm/monitored": 1.0}], "mined": mined,
        "base_rates": {"hard": 0.1, "corrupted": 0.1},
    }


def test_long_section_tables_each_arm_and_its_wrong_label_share_per_plan():
    runs = [_run("uniform", 0, 1.0, None), _run("defaults", 0, 0.9, 0.05), _run("no_flag_for_good", 0, 1.2, 0.25)]
    long = {
        "meta": META, "wall_s": 120.0,
        "setup": {"tasks": {"text": {"epochs": 20}}, "plan": {"text": {"seeds": [0]}}},
        "summary": quality.summarize(runs, None),
    }
    page = "\n".join(report.long_section(long))
    assert "20 epochs instead of 8" in page and "`0123456789ab`" in page
    assert "| 2 | 5% | 25% |" in page  # the plan of epoch 2: defaults vs no_flag_for_good
    assert report.long_section(None) == []


def test_signals_section_reports_each_rule_of_each_task_with_its_worst_seed():
    share = {"mean": 0.05, "min": 0.03, "max": 0.08}
    task = {"seeds": [0, 1], "select_at": [2], "hard_share": 0.15, "size": {}, "sample_loss": None}
    signals = {
        "meta": META, "mode": "full", "wall_s": 60.0,
        "setup": {"tasks": {"text": task, "vl": task}, "rules": {"start_level": {}, "learning": {}}, "noise_share": 0.1},
        "summary": {
            "vl/noisy/2": {"learning": {"corrupted_share": share, "corrupted_excluded": {"mean": 0.9, "min": 0.85, "max": 0.95}}},
            "vl/clean/2": {"learning": {"hard_share": {"mean": 0.3, "min": 0.2, "max": 0.4}, "clean_hard_excluded": share}},
            "text/auc/2": {"loss level (last 2 epochs)": {"mean": 0.95, "min": 0.92, "max": 0.97}},
        },
    }
    page = "\n".join(report.signals_section(signals))
    vl = page[page.index("**VL task"):]
    assert "| 2 | `learning` | 5% (8%) | 90% (85%) | 30% (20%) | 5% (8%) |" in vl
    assert "| 2 | `start_level` | – | – | – | – |" in vl
    assert "| 2 | loss level (last 2 epochs) | 0.95 (0.92) |" in page[: page.index("**VL task")]
    assert "hard slice 15%" in vl and "`learning`: `start_level` over the guard's window, and" in page
    assert report.signals_section(None) == []


def test_signal_rule_notes_name_the_window_each_rule_ran_with():
    assert report.signal_rule_note("start_level", {"enabled": True, "rule": "start_level", "window": 3}) == (
        "mean raw loss of the last 3 epochs below the median of epoch 0"
    )
    assert "of the last epoch below" in report.signal_rule_note("start_level_window1", {"rule": "start_level", "window": 1})
    assert "retired" in report.signal_rule_note("improvement", {"rule": "improvement", "window": 2})
    assert report.signal_rule_note("none", {"enabled": False, "rule": "start_level", "window": 3}) == "no guard"
    # A file from before the resolved settings were recorded names no number it cannot know.
    assert "the guard's window" in report.signal_rule_note("learning", {"rule": "learning"})


def _sweep_run(arm, seed, condition, hard, overall, corrupted=None):
    run = _run(arm, seed, overall, corrupted)
    for row in run["epochs"]:
        row["hard"]["loss"] = hard
    return {**run, "condition": condition}


def test_long_evidence_pairs_the_defaults_and_an_arm_to_uniform_in_each_condition():
    runs = []
    for seed in range(2):
        for condition in ("clean", "noisy"):
            corrupted = 0.05 if condition == "noisy" else None
            runs += [
                _sweep_run("uniform", seed, condition, hard=1.0, overall=1.0),
                _sweep_run("defaults", seed, condition, hard=0.9, overall=1.0, corrupted=corrupted),
                _sweep_run("window2", seed, condition, hard=1.1 if seed else 0.95, overall=1.0, corrupted=corrupted),
            ]
    long = {"setup": {"tasks": {"text": {"epochs": 20}}}, "summary": quality.summarize(runs, None)}
    text = report.long_evidence(long, "window2", "window 2")
    assert text.startswith("long runs, `defaults` vs `window2` (window 2), paired to uniform: text (20 epochs): clean: ")
    assert "clean: hard Δ -10.0% vs +2.5% (2/2 vs 1/2 better)" in text
    assert "noisy: hard Δ -10.0% vs +2.5%" in text and "mined corrupted 5% (0.5x) vs 5% (0.5x)" in text
    assert "`window2` against `defaults` seed by seed: hard +13.9% (lower in 0/2)" in text  # 0.95/0.9, 1.1/0.9
    assert report.long_evidence(long, "no_flag_for_good", "no flags") is None
    assert report.long_evidence(None, "window2", "window 2") is None


def test_sweep_section_pairs_each_arm_to_the_defaults_of_its_seed(tmp_path):
    # fraction0.2 lowers clean hard loss in all 4 seeds; patience2 moves it up in two, down in two.
    runs = []
    for seed in range(4):
        for condition in ("clean", "noisy"):
            runs += [
                _sweep_run("uniform", seed, condition, 1.2, 1.0),
                _sweep_run("defaults", seed, condition, 1.0, 1.0, 0.05),
                _sweep_run("fraction0.2", seed, condition, 0.9, 1.0, 0.08),
                _sweep_run("patience2", seed, condition, 1.1 if seed % 2 else 0.9, 1.0, 0.05),
            ]
    never = next(r for r in runs if r["arm"] == "patience2" and r["seed"] == 0 and r["condition"] == "clean")
    never["mining"] = []  # its trigger never fired: it never mined
    sweep = {
        "meta": META, "wall_s": 600.0,
        "setup": {
            "tasks": {"text": {"epochs": 8}}, "plan": {"text": {"seeds": [0, 1, 2, 3]}},
            "arm_settings": quality.recorded_arm_settings({"text": ([0], ["defaults", "fraction0.2", "patience2"])}, quality.FULL, None),
        },
        "summary": quality.summarize(runs, None),
    }
    page = "\n".join(report.sweep_section(sweep, tmp_path))
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert "| `fraction0.2` | `selector.value: 0.2` | clean 2; noisy 2 | -10.0% (4/4 better; better) |" in page
    assert "| `patience2` | `patience: 2` | clean 2, never in 1/4; noisy 2 | +0.0% (2/4 better; no clear difference) |" in page
    assert "8% (defaults 5%)" in page
    row = report.sweep_evidence(sweep, "fraction0.2")
    assert row.startswith("sweep, against the defaults: `selector.value: 0.2`: clean hard Δ -10.0%")
    assert report.sweep_section(None, tmp_path) == [] and report.sweep_evidence(None, "patience2") is None


def test_token_signals_section_tables_each_statistic_with_its_worst_seed():
    def m(mean, lo, hi):
        return {"mean": mean, "min": lo, "max": hi, "std": 0.0}

    data = {
        "meta": META, "wall_s": 30.0, "seeds": [0, 1],
        "summary": {"max": {"auc_wrong_vs_clean": m(0.87, 0.85, 0.89), "auc_wrong_vs_clean_hard": m(0.73, 0.7, 0.76),
                            "top10_wrong_share": m(0.53, 0.5, 0.57)}},
    }
    page = "\n".join(report.token_signals_section(data))
    assert "| `max` | the worst token's loss | 0.87 (0.85) | 0.73 (0.70) | 53% (57%) |" in page
    assert "AUC hard vs rest" not in page  # a suite scored before the clean table had none
    data["clean"] = {"hard_share": m(0.15, 0.15, 0.15),
                     "summary": {"top3": {"auc_hard_vs_rest": m(0.87, 0.83, 0.91), "top10_hard_share": m(0.61, 0.5, 0.67)}}}
    page = "\n".join(report.token_signals_section(data))
    assert "base rate 15%" in page
    assert "| `top3` | mean of the 3 worst tokens (`sample_loss.statistic: worst_tokens`, arm `worst_tokens`) | 0.87 (0.83) | 61% (67%) |" in page
    assert report.token_signals_section(None) == []


def test_overhead_section_shows_the_worst_tokens_ratios_where_measured(tmp_path):
    def row(**extra):
        return {"step_ms_median": {"stock": 10.0, "mining": 9.0}, "time_ratio": 0.9, "peak_rss_mib": {"stock": 500.0, "mining": 500.0},
                "memory_ratio": 1.0, **extra}

    machine = {"platform": "Linux", "cpus": 2, "torch_threads": 1, "device": "cpu"}
    overheads = [
        {"commit": "a" * 40, "dirty": False, "when": "then", "machine": machine, "results": {"text-padded": row()}},
        {"commit": "b" * 40, "dirty": False, "when": "now", "machine": machine,
         "results": {"vl-padded": row(time_ratio_worst_tokens=0.95, memory_ratio_worst_tokens=1.01)}},
    ]
    page = "\n".join(report.overhead_section(overheads, tmp_path))
    assert "| `text-padded` | 10.0 | 9.0 | 0.900 | 500 | 500 | 1.000 | – | – | `aaaaaaaaaaaa` |" in page
    assert "| `vl-padded` | 10.0 | 9.0 | 0.900 | 500 | 500 | 1.000 | 0.950 | 1.010 | `bbbbbbbbbbbb` |" in page
    assert (tmp_path / "overhead.png").is_file()


def _paired(rel, better, of):
    return {"hard_loss": {"mean_relative": rel, "better_in": better, "of": of}}


def test_oracle_check_asks_the_goal_of_the_bound_and_is_absent_without_an_oracle_arm():
    report_data = {"summary": {"vl/clean": {"arms": {"oracle": {"paired": _paired(-0.004, 2, 5)}}},
                               "text/clean": {"arms": {"oracle": {"paired": _paired(-0.31, 8, 8)}}}}}
    [(goal, ok, measured)] = report.oracle_check(report_data, "vl")
    assert ok is False and "oracle" in goal and measured == "-0.4% (2/5 seeds better)"
    assert report.oracle_check(report_data, "text")[0][1] is True
    assert report.oracle_check({"summary": {"vl/clean": {"arms": {}}}}, "vl") == []


def test_oracle_check_passes_on_the_task_accuracy_where_the_loss_cannot_move():
    paired = {**_paired(-0.03, 4, 6), "hard_desc_acc": {"mean_diff": 0.25, "better_in": 6, "of": 6}}
    report_data = {"summary": {"vl/clean": {"arms": {"oracle": {"paired": paired}}}}}
    [(goal, ok, measured)] = report.oracle_check(report_data, "vl")
    assert ok is True and "object-description accuracy at least 0.10" in goal
    assert measured == "-3.0% (4/6 seeds better); object-description accuracy +0.250 (6/6 seeds better)"
    paired["hard_desc_acc"]["mean_diff"] = 0.05
    assert report.oracle_check(report_data, "vl")[0][1] is False


def test_oracle_reach_says_what_share_of_the_bound_an_arm_reaches():
    entry = {"arms": {"oracle": {"paired": _paired(-0.30, 8, 8)}, "defaults": {"paired": _paired(-0.075, 7, 8)}}}
    line = report.oracle_reach(entry, "defaults")
    assert "-30.0% (8/8 seeds better)" in line and "`defaults` reaches 25%" in line
    # No share of a bound that is no gain.
    entry["arms"]["oracle"]["paired"] = _paired(0.01, 1, 5)
    assert "reaches" not in report.oracle_reach(entry, "defaults")
    assert report.oracle_reach({"arms": {}}, "defaults") == ""


def test_oracle_reach_adds_the_task_accuracy_where_both_arms_have_it():
    accuracy = lambda d: {"hard_desc_acc": {"mean_diff": d, "better_in": 1, "of": 1}}  # noqa: E731
    entry = {"arms": {"oracle": {"paired": {**_paired(-0.05, 5, 6), **accuracy(0.3)}},
                      "defaults": {"paired": {**_paired(-0.01, 3, 6), **accuracy(0.04)}}}}
    line = report.oracle_reach(entry, "defaults", "desc_acc")
    assert "object-description accuracy +0.300 vs uniform (1/1 seeds better; `defaults`: +0.040, 1/1)" in line
    assert "reaches" not in line  # the oracle's -5% loss misses its goal: no share of it
    assert "accuracy" not in report.oracle_reach(entry, "defaults")


def _control_run(first: dict, last: dict) -> dict:
    return {"task": "vl", "condition": "clean", "arm": "uniform", "seed": 0,
            "epochs": [{k: {"loss": v} for k, v in first.items()},
                       {k: {"loss": v, "desc_acc": a} for k, (v, a) in last.items()}]}


def test_hard_slice_counts_as_harder_by_its_loss_or_by_its_accuracy():
    first = {"hard": 1.8, "rest": 1.7, "all": 1.72}

    def harder(last):
        report_data = {"runs": [_control_run(first, last)], "summary": {}}
        [ok] = [ok for goal, ok, _ in report.calibration_checks(report_data, "vl") if goal.startswith("the hard slice is harder")]
        return ok

    # One rare word in a caption of coordinates: the loss hardly differs, the accuracy does.
    assert harder({"hard": (0.94, 0.03), "rest": (0.89, 0.6), "all": (0.9, 0.5)}) is True
    assert harder({"hard": (0.94, 0.5), "rest": (0.89, 0.6), "all": (0.9, 0.5)}) is False
    assert harder({"hard": (1.2, 0.5), "rest": (0.89, 0.6), "all": (0.9, 0.5)}) is True


def test_wall_time_gives_the_total_and_the_longest_of_merged_suites():
    assert report.wall_time({"wall_s": 120.0}) == "Wall time of the suite: 2.0 min."
    assert report.wall_time({"wall_s": 120.0, "wall_s_parts": [60.0, 120.0]}) == (
        "Wall time: 2 suites of one process each, 3.0 min of runs in all, the longest 2.0 min.")
    assert report.wall_time({"wall_s": 120.0, "wall_s_parts": [60.0, 120.0], "elapsed_s": 180.0}) == (
        "Wall time: 2 suites of one process each, 3.0 min of runs in all, 3.0 min from the first start to the last end.")


def test_variant_pairs_find_each_changed_knob_against_todays_setting_by_recorded_settings():
    from dataclasses import asdict

    from hardmine.core import MiningSettings

    other_window = 2 if MiningSettings().noise_guard.window == 3 else 3
    fields = {"sample_loss": report.FIELDS_SETTINGS}
    recorded = {
        "uniform": asdict(MiningSettings(start_epoch=quality.NEVER)),
        "today": asdict(MiningSettings()),
        "wider": asdict(MiningSettings(noise_guard={"window": other_window})),
        "words": asdict(MiningSettings(**fields)),
        "words_light": asdict(MiningSettings(**fields, hard_weight=2.0)),
    }
    report_data = {"setup": {"arm_settings": {"vl": recorded}}}
    assert report.variant_pairs(report_data, "vl") == [("wider", "today"), ("words_light", "words")]
    assert report.variant_pairs({"setup": {"arm_settings": {"vl": {"today": recorded["today"]}}}}, "vl") == []


def test_head_to_head_gives_the_task_accuracy_per_seed_where_both_runs_have_it():
    def run(arm, seed, hard, accuracy):
        last = {"hard": {"loss": hard, "desc_acc": accuracy}, "rest": {"loss": 1.0}, "all": {"loss": 1.0}}
        return {"task": "vl", "condition": "clean", "seed": seed, "arm": arm, "epochs": [last]}

    runs = [run("a", 0, 0.9, 0.30), run("b", 0, 1.0, 0.10), run("a", 1, 1.1, 0.10), run("b", 1, 1.0, 0.20)]
    line = report.head_to_head({"runs": runs}, "vl", "clean", "a", "b")
    assert "hard slice -10%, +10%" in line and "(lower in 0 of 2 seeds)" in line
    assert "object-description accuracy +0.20, -0.10 (mean +0.050, higher in 1 of 2 seeds)" in line
    text = [{**r, "task": "text"} for r in runs]
    assert "accuracy" not in report.head_to_head({"runs": text}, "text", "clean", "a", "b")


def test_settings_vs_today_names_what_each_arm_ran_that_today_s_defaults_do_not():
    from hardmine.core import MiningSettings

    today = report.current_defaults()
    before_cap = {k: v for k, v in today.items() if k != "max_active_epochs"}  # recorded before the setting existed
    results = {"setup": {"arm_settings": {"text": {
        "uniform": {**today, "start_epoch": 10_000},
        "defaults": before_cap,
        "window2": {**today, "noise_guard": {**today["noise_guard"], "window": 2}},
        "active5": {**today, "start_epoch": 2, "plateau_delta": 1e6},  # the forced trigger is not a difference
    }}}}
    differ = report.settings_vs_today(results, "text")
    cap = MiningSettings().max_active_epochs
    assert differ == {
        "defaults": f"max_active_epochs `None` (today `{cap}`)",
        "window2": f"noise_guard.window `2` (today `{today['noise_guard']['window']}`)",
    }
