"""The recipe's run (``hardmine train``): a validated config in, a trained checkpoint out.

The whole pipeline is built before training starts, so a bad record or a
missing file fails before any step is taken.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, HardmineConfig, Problem
from ..config.schema import HARDMINE_TRAINING_KEYS, TRAINING_DEFAULTS
from ..data.augment import AugmentationConfig
from ..data.catalog import pool_catalog
from ..data.collate import PackedCollator, PaddedCollator
from ..data.dataset import CaptionDataset
from ..train.checkpoints import check_checkpoint
from ..train.distributed import Ranks, barrier, current_ranks, local_rank, shutdown
from ..train.mining import HardMining
from ..train.sampler import ScheduleSampler
from ..train.trainer import HardmineTrainer
from .checks import CONFIG_CHECKS as CHECKS  # noqa: F401 - the checks a caller of load_config passes
from .checks import check_data
from .slices import SliceEvalCallback

logger = logging.getLogger("hardmine")


def training_arguments(cfg: HardmineConfig, *, has_eval: bool = False):
    from transformers import TrainingArguments

    kwargs = {**TRAINING_DEFAULTS, **{k: v for k, v in cfg.training.items() if k not in HARDMINE_TRAINING_KEYS}}
    kwargs["remove_unused_columns"] = False
    if has_eval:
        kwargs.setdefault("eval_strategy", "epoch")
    kwargs.setdefault("dataloader_num_workers", cfg.data.num_workers)
    kwargs.setdefault("dataloader_persistent_workers", cfg.data.persistent_workers and cfg.data.num_workers > 0)
    kwargs.setdefault("dataloader_pin_memory", cfg.data.pin_memory)
    if cfg.data.prefetch_factor is not None:
        kwargs.setdefault("dataloader_prefetch_factor", cfg.data.prefetch_factor)
    if cfg.deepspeed.enabled:
        kwargs["deepspeed"] = deepspeed_config(cfg.deepspeed.config)
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as e:
        # Values of the right type that transformers still refuses (an unknown
        # strategy name, contradicting options): a config error, before any load.
        raise ConfigError("training", [Problem("training", str(e).strip())]) from None


def deepspeed_config(name_or_path: str) -> dict:
    if name_or_path == "zero2":
        return {
            "zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True},
            "zero_allow_untested_optimizer": True,
            "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"},
            "fp16": {"enabled": "auto"},
        }
    try:
        return json.loads(Path(name_or_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(str(name_or_path), [Problem("deepspeed.config", f"cannot read it as DeepSpeed JSON: {e}")]) from None


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    logging_dir: Path | None  # TensorBoard logs (None when not reporting to TensorBoard)
    metrics: dict[str, float]
    trainer: Any
    mining_history: list[dict[str, Any]] = field(default_factory=list)  # per epoch, hsm/ metrics (rank 0)
    slice_history: list[dict[str, Any]] = field(default_factory=list)  # per epoch, slice/ losses


def run_training(
    cfg: HardmineConfig, *, resume_from_checkpoint: str | bool | None = None, slice_eval: bool = False
) -> TrainResult:
    """Train as ``cfg`` says. ``slice_eval``: also score the target's validation
    slices (``metadata.slice``) after every epoch (``slice/<name>_loss``)."""
    from ..models import BUILTIN_PREFIX, load_model_and_processor, materialize_builtin

    # Everything the user gave is checked before the model loads: the checkpoint
    # to resume from, every record and every encoded length, the arguments.
    if resume_from_checkpoint not in (None, False, True):
        check_checkpoint(resume_from_checkpoint)
    data = check_data(cfg)
    train_pools, val_pools = data.train, data.val
    args = training_arguments(cfg, has_eval=bool(val_pools))
    pools = [p.as_pool() for p in train_pools]
    sampler = ScheduleSampler(pools, seed=args.seed)
    mining = None
    section = cfg.custom.hard_sample_mining
    if section.enabled:
        mining = HardMining(
            section, pools, sampler, output_dir=args.output_dir,
            catalogs={p.name: pool_catalog(p) for p in train_pools[:1]},  # the mined target
            ranks=Ranks.of(args),
        )
    if mining is not None and resume_from_checkpoint not in (None, False, True):
        mining.check_resumable(resume_from_checkpoint)  # other settings: say which, before anything loads
    if cfg.model.model.startswith(BUILTIN_PREFIX):
        # One process per machine builds the tiny model into the cache: once a
        # process group exists, transformers writes weights from rank 0 only.
        if local_rank() == 0:
            materialize_builtin(cfg.model.model)
        barrier(Ranks.of(args))
    model, processor, task = load_model_and_processor(cfg.model.model, task=cfg.model.task, dtype=cfg.model.dtype)
    augmentation = AugmentationConfig.from_mapping(cfg.custom.augmentation)
    common = dict(processor=processor, seed=args.seed, augmentation=augmentation, max_length=cfg.data.max_length)
    loss_fields = section.sample_loss.fields if section.enabled and section.sample_loss.reads_fields else None
    train_ds = CaptionDataset(train_pools, **common, loss_fields=loss_fields)
    eval_ds = {p.name: CaptionDataset([p], **common) for p in val_pools} or None
    if cfg.training.get("packing", False):
        collator = PackedCollator(model=model)
    else:
        collator = PaddedCollator(pad_token_id=_pad_token_id(processor))
    trainer = HardmineTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        train_sampler=sampler,
        mining=mining,
        tiled_loss=cfg.training.get("tiled_loss"),  # None: on exactly when mining is on
    )
    slices = None
    if slice_eval and val_pools and val_pools[0].name == train_pools[0].name:
        slices = SliceEvalCallback(CaptionDataset([val_pools[0]], **common), collator, trainer)
        trainer.add_callback(slices)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    final_dir = Path(args.output_dir) / "final"
    trainer.save_model(str(final_dir))
    processor.save_pretrained(str(final_dir))
    metrics = trainer.evaluate() if eval_ds is not None else {}
    return TrainResult(
        Path(args.output_dir),
        final_dir,
        _tensorboard_dir(trainer),
        metrics,
        trainer,
        mining_history=list(mining.history) if mining is not None else [],
        slice_history=list(slices.rows) if slices is not None else [],
    )


def train_and_leave(cfg: HardmineConfig, *, resume_from_checkpoint: str | bool | None = None) -> TrainResult | None:
    """``hardmine train``: :func:`run_training`, then leave the process group.

    The result on the main process, None on the others. A process that exits
    without leaving the group can abort in interpreter teardown.
    """
    result = run_training(cfg, resume_from_checkpoint=resume_from_checkpoint)
    is_main = current_ranks().is_main
    shutdown()
    return result if is_main else None


def _tensorboard_dir(trainer) -> Path | None:
    """Where the TensorBoard callback wrote (it picks the folder at train start)."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and getattr(callback, "logging_dir", None):
            return Path(callback.logging_dir)
    return None


def _pad_token_id(processor) -> int:
    tokenizer = getattr(processor, "tokenizer", processor)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
    return int(pad)
