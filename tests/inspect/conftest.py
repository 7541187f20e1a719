"""Runs to inspect: a real tiny training pair (session scope) and a simulated mining run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture
def cli(capsys):
    """Run ``hardmine ARGS``; return (exit status, stdout, stderr)."""
    from hardmine.cli import main

    def run(*args):
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


def _config(tmp: Path, fusion: Path, name: str, mining: dict) -> Path:
    tree = {
        "model": {"model": "builtin:tiny-qwen2-vl"},
        "training": {
            "output_dir": str(tmp / name),
            "num_train_epochs": 3,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 16,
            "learning_rate": 2e-3,
            "logging_steps": 3,
            "report_to": ["tensorboard"],
            "save_strategy": "epoch",
            "disable_tqdm": True,
            "seed": 0,
        },
        "data": {"num_workers": 0, "max_length": 512},
        "custom": {"fusion_config": str(fusion), "augmentation": {"enabled": True}, "hard_sample_mining": mining},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """A 3-epoch mining run on the tiny Qwen2-VL and its control (mining off), with slices.

    Built once per session: about a minute of CPU. Mining fires at the end of
    epochs 1 and 2; the guard (window 1) and the population dump are on, and it
    records each sample's mean of its 3 worst tokens.
    """
    import torch

    from hardmine.config import load_config
    from hardmine.data.synth import make_dataset
    from hardmine.recipe.run import CHECKS, run_training

    tmp = tmp_path_factory.mktemp("inspect-runs")
    fusion = make_dataset(tmp / "data", seed=0, target_size=48, source_sizes={"shapes_a": 24, "shapes_b": 24}, val_size=16)
    mining = {
        "enabled": True, "start_epoch": 1, "plateau_delta": 1.0, "selector": {"mode": "percentile", "value": 0.25},
        "noise_guard": {"window": 1}, "dump_population": True,
        # The token-aware statistic, end to end: YAML, tiled loss, dump, inspect.
        "sample_loss": {"statistic": "worst_tokens"},
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for name, section in (("mined", mining), ("control", {"enabled": False})):
            cfg = load_config(_config(tmp, fusion, name, section), checks=CHECKS)
            runs[name] = run_training(cfg, slice_eval=True)
    finally:
        torch.set_num_threads(threads)
    return {"mined": runs["mined"].output_dir, "control": runs["control"].output_dir, "data": tmp / "data",
            "logging_dir": runs["mined"].logging_dir}
