"""The quality benchmark's pipeline runs end to end in --quick mode and reports.

Asserts that it runs and writes what the results page is built from, never
what the numbers are: the quick sizes are far too small to mean anything.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def test_quick_quality_benchmark_writes_results_and_page(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    _run("quality.py", "--quick", "--out", str(results), "--work", str(tmp_path / "work"))
    report = json.loads((results / "quality.json").read_text())
    assert report["benchmark"] == "hardmine.quality/1" and report["mode"] == "quick"
    assert {"commit", "timestamp", "processor", "torch"} <= set(report["meta"])
    assert {(r["task"], r["condition"], r["arm"]) for r in report["runs"]} == {
        (t, c, a) for t in ("text", "counter", "vl") for c in ("clean", "noisy") for a in ("uniform", "defaults")
    }
    for run in report["runs"]:
        assert {"epochs", "mining", "mined", "steps", "base_rates", "wall_s"} <= set(run)
        assert {"hard", "rest", "all"} <= set(run["epochs"][-1])
    steps = {(r["task"], r["arm"]) : r["steps"] for r in report["runs"]}
    assert steps[("text", "uniform")] == steps[("text", "defaults")]  # same number of optimizer steps
    for key in ("text/clean", "text/noisy", "counter/clean", "counter/noisy", "vl/clean", "vl/noisy"):
        entry = report["summary"][key]
        assert {"default", "candidates", "forced_epoch"} <= set(entry["trigger"])
        defaults = entry["arms"]["defaults"]
        assert {"metrics", "paired", "fired_epoch", "identical_until_first_plan", "mined", "guard_exclusions"} <= set(defaults)
        assert {"hard_loss", "all_loss"} <= set(defaults["paired"])
        assert defaults["fired_epoch"] == [report["setup"]["mine_from"]]
        assert len(entry["control_train_fall"]["0"]) == report["setup"]["tasks"][key.split("/")[0]]["epochs"] - 1
    assert report["summary"]["text/noisy"]["arms"]["defaults"]["mined"]["base_rates"]["corrupted"] > 0

    _run("report.py", "--results", str(results), "--docs", str(docs))
    page = (docs / "benchmarks.md").read_text()
    assert report["meta"]["commit"][:12] in page
    assert "## Task `text`" in page and "## Task `counter`" in page and "## Task `vl`" in page
    for png in ("calibration_text.png", "hard_loss_text.png", "hard_loss_vl.png", "mined_shares.png"):
        assert (docs / "benchmarks" / png).stat().st_size > 1000
