"""GPU check: a 2-epoch mining run of the tiny VL model, DeepSpeed ZeRO-2, bf16.

    torchrun --nproc_per_node 1 scripts/gpu_zero2_mining.py --output-dir runs/gpu-check

Prints one JSON line: the device, steps, per-epoch mining metrics, the dumps
written, wall time and peak GPU memory. Exits non-zero if mining did not
activate or no dump was written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from hardmine.config import load_config
from hardmine.data.synth import make_dataset
from hardmine.train import distributed
from hardmine.recipe.run import CHECKS, run_training


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default="runs/gpu-check")
    opts = ap.parse_args()
    out = Path(opts.output_dir).resolve()
    started = time.perf_counter()
    fusion = out / "data" / "fusion.yaml"
    if distributed.current_ranks().is_main or not fusion.exists():
        fusion = make_dataset(out / "data", seed=0, target_size=160, source_sizes={"shapes_a": 80, "shapes_b": 80}, val_size=16)
    distributed.barrier(distributed.current_ranks())
    tree = {
        "model": {"model": "builtin:tiny-qwen2-vl"},
        "training": {
            "output_dir": str(out / "run"), "num_train_epochs": 2, "per_device_train_batch_size": 8,
            "learning_rate": 2e-3, "logging_steps": 5, "report_to": [], "disable_tqdm": True, "seed": 0,
            "bf16": True, "save_strategy": "epoch",
        },
        "data": {"num_workers": 2, "max_length": 512},
        "deepspeed": {"enabled": True, "config": "zero2"},
        "custom": {
            "fusion_config": str(fusion),
            "hard_sample_mining": {"enabled": True, "start_epoch": 0, "plateau_delta": 1.0, "dump": True,
                                   "noise_guard": {"enabled": False}},
        },
    }
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump(tree))
    torch.cuda.reset_peak_memory_stats()
    result = run_training(load_config(config, checks=CHECKS))
    dumps = sorted(p.name for p in (out / "run").glob("hard_samples_epoch_*.json"))
    report = {
        "check": "gpu_zero2_mining",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "world_size": distributed.current_ranks().world_size,
        "global_step": result.trainer.state.global_step,
        "mining": result.mining_history,
        "dumps": dumps,
        "eval": {k: round(v, 4) for k, v in result.metrics.items() if k.endswith("_loss")},
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    is_main = distributed.current_ranks().is_main
    distributed.shutdown()
    if not is_main:
        return 0  # rank 0 holds the mining history and reports
    print(json.dumps(report))
    return 0 if dumps and any(row.get("hsm/active") for row in result.mining_history) else 1


if __name__ == "__main__":
    sys.exit(main())
