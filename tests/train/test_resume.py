"""A run resumed from a checkpoint continues with the same plan and data order."""

import json
from dataclasses import replace

import pytest
import yaml

from hardmine.config import load_config
from hardmine.data.synth import make_dataset
from hardmine.recipe.run import CHECKS, run_training

pytestmark = pytest.mark.integration


def cfg(tmp_path, fusion, out):
    tree = {
        "model": {"model": "builtin:tiny-qwen2-vl"},
        "training": {
            "output_dir": str(out), "num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 2e-3,
            "logging_steps": 1, "report_to": [], "disable_tqdm": True, "seed": 0, "save_strategy": "epoch",
            "dataloader_pin_memory": False,
        },
        "data": {"num_workers": 0, "max_length": 512},
        "custom": {
            "fusion_config": str(fusion),
            "augmentation": {"enabled": True},
            "hard_sample_mining": {"enabled": True, "start_epoch": 0, "plateau_delta": 1.0, "noise_guard": {"enabled": False},
                                   "selector": {"mode": "top_k", "k": 6}},
        },
    }
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_config(path, checks=CHECKS)


def test_resume_after_a_mined_epoch_matches_the_uninterrupted_run(tmp_path):
    fusion = make_dataset(tmp_path / "data", seed=0, target_size=40, source_sizes={"shapes_a": 16, "shapes_b": 16}, val_size=4)
    straight = run_training(cfg(tmp_path, fusion, tmp_path / "straight"))
    steps_per_epoch = straight.trainer.state.global_step // 3
    # Resume from the checkpoint written at the end of epoch 1 (a plan is active then).
    checkpoint = tmp_path / "straight" / f"checkpoint-{2 * steps_per_epoch}"
    resumed = run_training(cfg(tmp_path, fusion, tmp_path / "resumed"), resume_from_checkpoint=str(checkpoint))

    def losses(result, start):
        return [h["loss"] for h in result.trainer.state.log_history if "loss" in h and h["step"] > start]

    start = 2 * steps_per_epoch
    assert losses(resumed, start) == pytest.approx(losses(straight, start), rel=1e-5)
    for epoch in (2,):
        a = json.loads((tmp_path / "straight" / f"hard_samples_epoch_{epoch}.json").read_text())
        b = json.loads((tmp_path / "resumed" / f"hard_samples_epoch_{epoch}.json").read_text())
        assert [s["base_idx"] for s in a["samples"]] == [s["base_idx"] for s in b["samples"]]
    assert resumed.trainer.train_sampler.schedule(2).digest() == straight.trainer.train_sampler.schedule(2).digest()

    # Resuming with other mining settings names what changed, and writes nothing.
    from hardmine.core.miner import MiningStateMismatch

    changed = cfg(tmp_path, fusion, tmp_path / "changed")
    mining = replace(changed.custom.hard_sample_mining, hard_weight=4.0)
    changed = changed.model_copy(update={"custom": changed.custom.model_copy(update={"hard_sample_mining": mining})})
    with pytest.raises(MiningStateMismatch, match="custom.hard_sample_mining.hard_weight: 3.0 in the checkpoint, 4.0 now"):
        run_training(changed, resume_from_checkpoint=str(checkpoint))
    assert not (tmp_path / "changed").exists()


def test_a_save_interrupted_by_ctrl_c_leaves_a_checkpoint_resume_refuses(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from hardmine import cli
    from hardmine.train.checkpoints import INCOMPLETE_MARKER, last_complete_checkpoint

    fusion = make_dataset(tmp_path / "data", seed=0, target_size=8, source_sizes={"shapes_a": 2}, val_size=2)
    config = cfg(tmp_path, fusion, tmp_path / "run")
    path = tmp_path / "run.yaml"  # written by cfg()
    ready = tmp_path / "ready"
    script = Path(__file__).with_name("run_interrupted_save.py")
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(ready)], stdout=stderr, stderr=stderr)
        try:
            deadline = time.monotonic() + 300
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the run never reached its save: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) != 0
        finally:
            proc.kill()
            proc.wait()
    checkpoint = Path(ready.read_text())
    assert checkpoint.name.startswith("checkpoint-") and (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / INCOMPLETE_MARKER).is_file()  # weights written, the rest not: marked
    assert last_complete_checkpoint(tmp_path / "run") is None
    status = cli.main(["train", "--config", str(path), "--resume", str(checkpoint)])
    assert status == 2
    assert config.training["output_dir"] == str(tmp_path / "run")
