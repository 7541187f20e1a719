"""``hardmine train``: a validated config in, a trained checkpoint out.

The whole pipeline is built before training starts, so a bad record or a
missing file fails before any step is taken.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import HardmineConfig, Problem
from ..config.schema import HARDMINE_TRAINING_KEYS
from ..core import SettingError
from ..data.augment import AugmentationConfig
from ..data.collate import PackedCollator, PaddedCollator
from ..data.dataset import CaptionDataset, RecordPool
from ..data.fusion import FusionConfigError, load_fusion
from ..data.records import read_jsonl
from .distributed import barrier, local_rank
from .mining import HardMining
from .sampler import ScheduleSampler
from .slices import SliceEvalCallback
from .trainer import HardmineTrainer

logger = logging.getLogger("hardmine")

#: TrainingArguments hardmine sets unless the config says otherwise.
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/hardmine",
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "learning_rate": 1e-3,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "report_to": ["tensorboard"],
    "seed": 42,
}


def augmentation_problems(cfg: HardmineConfig) -> list[Problem]:
    """Config check for ``custom.augmentation`` (the data layer owns its fields)."""
    try:
        AugmentationConfig.from_mapping(cfg.custom.augmentation)
    except SettingError as e:
        return [Problem(e.key, f"got {e.value!r}; expected {e.expected}")]
    except ValueError as e:
        return [Problem("custom.augmentation", str(e))]
    return []


def training_problems(cfg: HardmineConfig) -> list[Problem]:
    if cfg.training.get("remove_unused_columns") is True:
        return [
            Problem(
                "training.remove_unused_columns",
                "got True; expected false (hardmine carries sample ids through the batch and removes them itself)",
            )
        ]
    return []


def monitor_problems(cfg: HardmineConfig) -> list[Problem]:
    section = cfg.custom.hard_sample_mining
    if not section.enabled or section.monitor == "train_loss":
        return []
    if not section.monitor.startswith("eval_"):
        return [Problem("custom.hard_sample_mining.monitor", f"got {section.monitor!r}; expected train_loss or an eval_* metric")]
    has_val = cfg.custom.val_jsonl is not None or cfg.custom.fusion_config is not None
    strategy = cfg.training.get("eval_strategy", "epoch" if has_val else "no")
    if not has_val or strategy != "epoch":
        return [
            Problem(
                "custom.hard_sample_mining.monitor",
                f"got {section.monitor!r}; an eval metric needs validation data and training.eval_strategy: epoch",
            )
        ]
    return []


def fusion_problems(cfg: HardmineConfig) -> list[Problem]:
    if cfg.custom.fusion_config is None:
        return []
    try:
        load_fusion(cfg.custom.fusion_config)
    except FusionConfigError as e:
        return [Problem("custom.fusion_config", str(e))]
    return []


CHECKS = (augmentation_problems, training_problems, monitor_problems, fusion_problems)


def _read_pool(name: str, path: str, *, ratio, augment: bool, skip_invalid: bool) -> RecordPool:
    records, report = read_jsonl(path, skip_invalid=skip_invalid)
    if report.skipped:
        logger.warning("%s: skipped %d invalid record(s) of %s", name, report.skipped, path)
    return RecordPool(name=name, records=tuple(records), ratio=ratio, augment=augment)


def build_pools(cfg: HardmineConfig) -> tuple[list[RecordPool], list[RecordPool]]:
    """Training pools (target first) and evaluation pools."""
    c = cfg.custom
    skip = c.skip_invalid_records
    if c.fusion_config is not None:
        spec = load_fusion(c.fusion_config)
        train = [
            _read_pool(d.name, d.train_jsonl, ratio=None if i == 0 else d.ratio, augment=d.augmentation, skip_invalid=skip)
            for i, d in enumerate(spec.datasets)
        ]
        val = [
            _read_pool(d.name, d.val_jsonl, ratio=None, augment=False, skip_invalid=skip)
            for d in spec.datasets
            if d.val_jsonl is not None
        ]
        return train, val
    train = [_read_pool(c.dataset_name, c.train_jsonl, ratio=None, augment=True, skip_invalid=skip)]
    val = [] if c.val_jsonl is None else [_read_pool(c.dataset_name, c.val_jsonl, ratio=None, augment=False, skip_invalid=skip)]
    return train, val


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
    return TrainingArguments(**kwargs)


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
    return json.loads(Path(name_or_path).read_text(encoding="utf-8"))


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
    from ..models.builtin import BUILTIN_PREFIX, load_model_and_processor, materialize_builtin

    train_pools, val_pools = build_pools(cfg)
    args = training_arguments(cfg, has_eval=bool(val_pools))
    if cfg.model.model.startswith(BUILTIN_PREFIX):
        # One process per machine builds the tiny model into the cache: once a
        # process group exists, transformers writes weights from rank 0 only.
        if local_rank() == 0:
            materialize_builtin(cfg.model.model)
        barrier()
    model, processor, task = load_model_and_processor(cfg.model.model, task=cfg.model.task, dtype=cfg.model.dtype)
    augmentation = AugmentationConfig.from_mapping(cfg.custom.augmentation)
    common = dict(processor=processor, seed=args.seed, augmentation=augmentation, max_length=cfg.data.max_length)
    train_ds = CaptionDataset(train_pools, **common)
    eval_ds = {p.name: CaptionDataset([p], **common) for p in val_pools} or None
    if cfg.training.get("packing", False):
        collator = PackedCollator(model=model)
    else:
        collator = PaddedCollator(pad_token_id=_pad_token_id(processor))
    pools = [p.as_pool() for p in train_pools]
    sampler = ScheduleSampler(pools, seed=args.seed)
    mining = None
    section = cfg.custom.hard_sample_mining
    if section.enabled:
        mining = HardMining(
            section.to_settings(), pools, sampler, output_dir=args.output_dir, dump=section.dump, monitor=section.monitor
        )
    trainer = HardmineTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        train_sampler=sampler,
        mining=mining,
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
