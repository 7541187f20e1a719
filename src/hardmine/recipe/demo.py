"""``hardmine demo``: synthetic corpus -> tiny VL model -> where to look.

Generates the dense-caption corpus (one target with a harder minority slice,
two sources), trains the built-in tiny Qwen2-VL on it with fusion and
augmentation, and prints where the run, its TensorBoard logs and checkpoints
are.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

DEMO_CONFIG = "demo.yaml"


def demo_config_path() -> Path:
    return Path(str(resources.files("hardmine") / "configs" / DEMO_CONFIG))


def run_demo(output_dir: Path, *, fast: bool = False) -> int:
    from ..config import load_config
    from ..data.synth import make_dataset
    from .checks import CONFIG_CHECKS as CHECKS
    from .run import run_training

    started = time.perf_counter()
    output_dir = Path(output_dir).resolve()
    sizes = dict(target_size=120, source_sizes={"shapes_a": 60, "shapes_b": 60}, val_size=24) if fast else dict(
        target_size=600, source_sizes={"shapes_a": 300, "shapes_b": 300}, val_size=60
    )
    print(f"hardmine demo: writing the synthetic corpus to {output_dir / 'data'}")
    fusion = make_dataset(output_dir / "data", seed=0, **sizes)
    overrides = [f"custom.fusion_config={fusion}", f"training.output_dir={output_dir / 'run'}"]
    if fast:
        # Three epochs, mining forced from the end of epoch 1, so that even the
        # short run shows a plan applied (and the checks accept it).
        overrides += [
            "training.num_train_epochs=3", "data.num_workers=0",
            "custom.hard_sample_mining.start_epoch=1", "custom.hard_sample_mining.plateau_delta=1.0",
        ]
    cfg = load_config(demo_config_path(), overrides, checks=CHECKS)
    result = run_training(cfg, slice_eval=True)
    minutes = (time.perf_counter() - started) / 60
    print()
    print(f"hardmine demo finished in {minutes:.1f} min")
    print(f"  run:         {result.output_dir}")
    print(f"  checkpoints: {result.output_dir}/checkpoint-*")
    print(f"  final model: {result.final_dir}")
    if result.logging_dir is not None:
        print(f"  logs:        tensorboard --logdir {result.logging_dir}")
    if result.mining_history:
        print(f"  inspect:     hardmine inspect {result.output_dir} --plot plot.png --sheet sheet.png --top 10")
    for key, value in sorted(result.metrics.items()):
        if key.endswith("_loss"):
            print(f"  {key}: {value:.4f}")
    print()
    print(format_epoch_table(result.mining_history, result.slice_history))
    return 0


def format_epoch_table(mining: list[dict], slices: list[dict]) -> str:
    """Per epoch: mining active?, hard-set size, target eval loss on the hard slice vs the rest."""
    by_epoch = {row["epoch"]: row for row in mining}
    lines = [
        "target validation loss by slice (per-sample mean cross-entropy)",
        f"{'epoch':>5}  {'mining':>8}  {'hard set':>8}  {'hard slice':>10}  {'rest':>8}",
    ]
    for row in slices:
        epoch = row["epoch"]
        m = by_epoch.get(epoch, {})
        active = "active" if m.get("hsm/active") else ("finished" if m.get("hsm/finished") else ("off" if m else "-"))
        num_hard = int(m["hsm/num_hard"]) if "hsm/num_hard" in m else 0
        hard, rest = row.get("slice/hard_loss", float("nan")), row.get("slice/easy_loss", float("nan"))
        lines.append(f"{epoch:>5}  {active:>8}  {num_hard:>8}  {hard:>10.4f}  {rest:>8.4f}")
    return "\n".join(lines)
