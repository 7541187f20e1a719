import json
import subprocess
import sys

import numpy as np

from hardmine.selfcheck import Scenario, run_selfcheck


def _mean(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return float(np.mean(vals)) if vals else float("nan")


def test_safeguards_pick_more_hard_and_fewer_mislabelled_samples():
    for seed in (0, 1):
        result = run_selfcheck(Scenario(seed=seed))
        ours, naive = result["hardmine"], result["naive"]
        assert any(r["active"] for r in ours)
        assert _mean(ours, "noisy_share") < _mean(naive, "noisy_share")
        assert _mean(ours, "hard_share") > _mean(naive, "hard_share")


def test_cli_selfcheck_json():
    out = subprocess.run(
        [sys.executable, "-m", "hardmine", "selfcheck", "--json", "--samples", "500"],
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    assert data["scenario"]["size"] == 500 and len(data["hardmine"]) == 10


def test_cli_rejects_bad_arguments():
    bad = subprocess.run([sys.executable, "-m", "hardmine", "selfcheck", "--samples", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--samples must be >= 1" in bad.stderr
