"""2 ranks on CPU (gloo): DDP and DeepSpeed ZeRO-2, mining active, consistent plans."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardmine.core import HardSampleMiner
from hardmine.data.synth import make_dataset

pytestmark = pytest.mark.distributed

RUNNER = Path(__file__).with_name("run_mining.py")
TARGET, SOURCES = 40, {"shapes_a": 20, "shapes_b": 20}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("corpus"), seed=0, target_size=TARGET, source_sizes=SOURCES, val_size=8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, fusion: Path, zero2: bool, *extra: str) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(RUNNER), "--fusion", str(fusion), "--out", str(out)] + (["--zero2"] if zero2 else []) + list(extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("zero2", [False, True], ids=["ddp", "zero2"])
def test_two_ranks_agree_and_count_each_sample_once(tmp_path, corpus, zero2):
    if zero2:
        pytest.importorskip("deepspeed")
    ranks = launch(tmp_path / ("zero2" if zero2 else "ddp"), corpus, zero2)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["deepspeed"] for r in ranks] == [zero2, zero2]
    # Same number of optimizer steps as one process would take: 40 + 10 + 6 = 56
    # samples an epoch, 2 ranks x 4 x GA 2 = 16 a step -> 4 steps an epoch.
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 12
    for epoch in ("0", "1", "2"):
        a, b = ranks[0]["epochs"][epoch], ranks[1]["epochs"][epoch]
        # Identical plans and identical next-epoch orders on both ranks.
        assert a["plan"] == b["plan"] and a["next_schedule"] == b["next_schedule"]
        # The union of the ranks' shards is exactly the schedule (padding repeats removed).
        seen = set(a["positions"]) | set(b["positions"])
        assert seen == set(range(a["this_schedule_len"]))
    assert ranks[0]["epochs"]["0"]["plan"] is None and ranks[0]["epochs"]["1"]["plan"] is not None
    # Each real sample occurrence counted once: target occurrences per epoch = 40.
    assert ranks[0]["epochs"]["2"]["observations"] == 3 * TARGET


@pytest.mark.parametrize("trigger", ["plateau", "start"])
def test_mined_set_equals_single_process_selection(tmp_path, corpus, trigger):
    # Recording the worst tokens' mean: the ranks also gather each sample's mean loss for the trigger.
    ranks = launch(tmp_path / "recompute", corpus, False, "--worst-tokens", "--trigger", trigger)
    fed = ranks[0]["fed"]
    from hardmine.config import load_config

    cfg = load_config(tmp_path / "recompute" / "config.yaml")
    miner = HardSampleMiner({"target": TARGET}, ["target"], cfg.custom.hard_sample_mining)
    dumps = sorted((tmp_path / "recompute" / "run").glob("hard_samples_epoch_*.json"))
    planned = 0
    for epoch in ("0", "1", "2"):
        obs = fed[epoch]
        miner.observe(np.array(obs["ids"], np.int64), np.array(obs["losses"], np.float32), epoch=int(epoch), steps=np.array(obs["steps"]))
        report = miner.end_epoch(int(epoch))
        # The trigger saw the epoch's mean token loss, below the recorded worst tokens' mean.
        assert 0 < ranks[0]["epochs"][epoch]["monitored"] < np.mean(obs["losses"])
        assert ranks[0]["epochs"][epoch]["plan"] == ranks[1]["epochs"][epoch]["plan"]
        assert (report.plan is None) == (ranks[0]["epochs"][epoch]["plan"] is None)
        if report.plan is not None:
            planned += 1
            dumped = json.loads((tmp_path / "recompute" / "run" / f"hard_samples_epoch_{epoch}.json").read_text())
            assert [s["base_idx"] for s in dumped["samples"]] == [s["base_idx"] for s in report.plan.to_json_dict()["samples"]]
    assert len(dumps) == planned
    assert planned == 2


@pytest.mark.parametrize(("zero2", "trigger"), [(False, "plateau"), (True, "plateau"), (False, "start")],
                         ids=["ddp", "zero2", "ddp-start"])
def test_resume_restores_mining_state_on_every_rank(tmp_path, corpus, zero2, trigger):
    if zero2:
        pytest.importorskip("deepspeed")
    straight = launch(tmp_path / "straight", corpus, zero2, "--save", "--trigger", trigger)
    # 4 optimizer steps an epoch: the checkpoint after epoch 1 holds plan version 1.
    checkpoint = tmp_path / "straight" / "run" / "checkpoint-8"
    resumed = launch(tmp_path / "resumed", corpus, zero2, "--resume", str(checkpoint), "--trigger", trigger)
    for r in range(2):
        a, b = straight[r]["epochs"]["2"], resumed[r]["epochs"]["2"]
        assert b["plan"] == a["plan"] and b["next_schedule"] == a["next_schedule"]
        assert sorted(b["positions"]) == sorted(a["positions"])
    assert resumed[0]["global_step"] == straight[0]["global_step"] == 12
