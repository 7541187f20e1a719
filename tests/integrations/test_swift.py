"""ms-swift's ``swift sft`` with hardmine's plugin: mining fires and dumps, and what cannot be mined is refused.

Runs where ms-swift is installed (its own environment: ``make test-swift``); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("swift")

pytestmark = pytest.mark.integration

PLUGIN = Path(__file__).resolve().parents[2] / "src" / "hardmine" / "integrations" / "swift.py"


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    from hardmine.models import materialize_builtin

    root = tmp_path_factory.mktemp("swift")
    rng = random.Random(0)
    with open(root / "train.jsonl", "w") as f:
        for _ in range(64):
            word = "".join(rng.choice("abcdef") for _ in range(rng.randint(3, 9)))
            chat = [{"role": "user", "content": f"reverse {word}"}, {"role": "assistant", "content": word[::-1]}]
            f.write(json.dumps({"messages": chat}) + "\n")
    return materialize_builtin("tiny-text"), root / "train.jsonl"


def swift_sft(model, data, out, mining_yaml, *extra):
    command = [
        sys.executable, "-m", "swift.cli.sft", "--external_plugins", str(PLUGIN),
        "--model", str(model), "--model_type", "qwen2", "--template", "qwen", "--dataset", str(data),
        "--num_train_epochs", "3", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--output_dir", str(out), "--save_strategy", "no", "--report_to", "none", "--logging_steps", "2",
        "--tuner_type", "full", "--split_dataset_ratio", "0", "--dataloader_num_workers", "0", *extra,
    ]
    env = {**os.environ, "HARDMINE_MINING": str(mining_yaml), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_swift_sft_mines_and_dumps(model_and_data, tmp_path):
    model, data = model_and_data
    mining = tmp_path / "mining.yaml"
    mining.write_text("start_epoch: 1\nplateau_delta: 10.0\nselector: {mode: top_k, k: 8}\n")
    done = swift_sft(model, data, tmp_path / "out", mining)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "out").iterdir()  # swift's versioned run folder
    assert sorted(p.name for p in run.glob("hard_samples_epoch_*.json")) == ["hard_samples_epoch_1.json", "hard_samples_epoch_2.json"]
    rows = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    mined = [r for r in rows if "hsm/active" in r]
    assert [float(r["hsm/active"]) for r in mined] == [0.0, 1.0, 1.0]
    assert all(float(r["hsm/observations"]) == 64 for r in mined)  # every sample once per epoch: hardmine's sampler
    dump = json.loads((run / "hard_samples_epoch_1.json").read_text())
    assert dump["num_hard"] == 8


def test_a_bad_mining_file_is_one_clear_error(model_and_data, tmp_path):
    model, data = model_and_data
    mining = tmp_path / "mining.yaml"
    mining.write_text("start_epoch: 1\nselector: {mode: top_k}\n")
    done = swift_sft(model, data, tmp_path / "out", mining)
    assert done.returncode != 0
    assert "selector.k" in done.stderr and str(mining) in done.stderr


def test_resuming_a_mined_swift_run_is_refused(model_and_data, tmp_path):
    model, data = model_and_data
    mining = tmp_path / "mining.yaml"
    mining.write_text("start_epoch: 1\n")
    done = swift_sft(model, data, tmp_path / "out", mining, "--resume_from_checkpoint", str(tmp_path))
    assert done.returncode != 0
    assert "cannot be used with: --resume_from_checkpoint" in done.stderr
