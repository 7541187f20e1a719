"""benchmarks/core_scale.py runs at toy size with hardmine's default settings and prints its JSON line."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "core_scale.py"


def test_core_scale_prints_its_json_line_at_toy_size():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--samples", "3000", "--batch", "64", "--repeats", "4"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "core_scale" and result["samples"] == 3000
    assert 0 < result["num_hard"] <= 300 and result["bytes_per_sample"] > 0
