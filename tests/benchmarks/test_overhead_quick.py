"""benchmarks/overhead.py runs at toy size (one configuration, two rounds) and writes its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "overhead.py"


def test_overhead_runs_at_toy_size(tmp_path):
    out = tmp_path / "overhead.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "2", "--configs", "text-padded", "--scale", "1000", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    text = result["results"]["text-padded"]
    assert set(text["step_ms_median"]) == {"stock", "mining", "worst_tokens"} and text["time_ratio"] > 0
    assert result["mining_step_at_scale"]["target_samples"] == 1000
