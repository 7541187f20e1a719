"""The guard-signal benchmark runs in --quick mode, and its replay is the engine's real first plan."""

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import quality  # noqa: E402
import signals  # noqa: E402
from hardmine.core.selection import GuardSettings  # noqa: E402


def test_quick_signals_benchmark_writes_its_summary(tmp_path):
    assert signals.main(["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "work")]) == 0
    report = json.loads((tmp_path / "signals.json").read_text())
    assert report["benchmark"] == "hardmine.signals/2" and report["mode"] == "quick"
    assert {(r["task"], r["condition"], r["select_at"]) for r in report["rows"]} == {
        (task, condition, 2) for task in ("text", "vl") for condition in ("clean", "noisy")
    }
    for row in report["rows"]:
        assert set(row["rules"]) == set(signals.RULES)
    for task in ("text", "vl"):
        assert set(report["summary"][f"{task}/noisy/2"]["learning"]) >= {"corrupted_share", "corrupted_excluded", "hard_share"}
        assert set(report["summary"][f"{task}/auc/2"]) == {
            "fall over the last 2 epochs", "fall over the last epoch", "trend since epoch 0", "loss level (last 2 epochs)",
        }
    assert report["setup"]["tasks"]["vl"]["sample_loss"]["statistic"] == "fields"
    guards = report["setup"]["guards"]  # resolved: what each rule meant when it ran
    assert set(guards) == set(signals.RULES)
    assert guards["start_level"]["window"] == GuardSettings().window
    assert guards["start_level_window2"]["window"] == 2 and guards["none"]["enabled"] is False


def test_replayed_first_plan_equals_the_plan_of_a_real_mining_run(tmp_path):
    size = quality.QUICK["text"]
    data = quality.make_text_data(size, 0)
    rec = signals.record_uniform("text", size, data, condition="noisy", seed=0, work=tmp_path / "uniform")
    replay = signals.replay_first_plan(rec, {}, 2, "replay")  # hardmine's default guard, first plan at epoch 2
    quality.run_text(size, data, condition="noisy", seed=0, arm="defaults", mine_from=2, out_dir=tmp_path / "mined")
    mined = quality.read_mined_sets(tmp_path / "mined")[2]
    assert mined.size > 0
    assert replay["mined"] == sorted(mined.tolist())
