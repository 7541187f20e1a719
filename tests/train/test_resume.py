"""A run resumed from a checkpoint continues with the same plan and data order."""

import json

import pytest
import yaml

from hardmine.config import load_config
from hardmine.data.synth import make_dataset
from hardmine.train.entry import CHECKS, run_training

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
