"""The YAML schema: ``model``, ``training``, ``data``, ``deepspeed``, ``custom``.

Every default is explicit here. The mining section *is* the engine's
:class:`hardmine.core.MiningSettings` (pydantic validates the dataclass and
its nested settings), so the engine and the YAML cannot drift.
``training`` passes any ``transformers.TrainingArguments`` field through; its
keys are checked against that class when the config is validated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..core import MiningSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Strict):
    model: str = Field("builtin:tiny-qwen2-vl", description="builtin:NAME, a local checkpoint path or a hub name")
    task: Optional[Literal["vl", "text"]] = Field(None, description="vl or text; None: read from the checkpoint")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"


class DataSection(_Strict):
    num_workers: int = Field(0, ge=0, description="DataLoader workers")
    persistent_workers: bool = False
    pin_memory: bool = False
    prefetch_factor: Optional[int] = Field(None, ge=1)
    max_length: int = Field(1024, ge=16, description="longest encoded sample (tokens); longer is an error")


class DeepSpeedSection(_Strict):
    enabled: bool = False
    config: str = Field("zero2", description="a built-in name (zero2) or a path to a DeepSpeed JSON file")


def _off_unless_enabled(value: Any) -> Any:
    """A YAML mining section is off unless it says ``enabled: true`` (the library's default is on)."""
    return {"enabled": False, **value} if isinstance(value, Mapping) else value


#: ``custom.hard_sample_mining``: the engine's own :class:`MiningSettings`, validated
#: by pydantic (same keys, same checks), off unless the YAML enables it.
HardSampleMiningSection = Annotated[MiningSettings, BeforeValidator(_off_unless_enabled)]


class CustomSection(_Strict):
    train_jsonl: Optional[str] = Field(None, description="one training dataset (or use fusion_config)")
    val_jsonl: Optional[str] = None
    dataset_name: str = Field("target", min_length=1, description="name of the train_jsonl dataset")
    fusion_config: Optional[str] = Field(None, description="YAML with one target and its sources")
    skip_invalid_records: bool = Field(False, description="skip (count and log) bad JSONL lines instead of failing")
    augmentation: dict[str, Any] = Field(default_factory=dict, description="see hardmine.data.augment")
    hard_sample_mining: HardSampleMiningSection = MiningSettings(enabled=False)


class HardmineConfig(_Strict):
    model: ModelSection = ModelSection()
    training: dict[str, Any] = Field(default_factory=dict)
    data: DataSection = DataSection()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    custom: CustomSection = CustomSection()


#: TrainingArguments the recipe sets unless the config says otherwise
#: (``output_dir`` defaults to ``runs/hardmine`` beside the config; see config.load).
TRAINING_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "learning_rate": 1e-3,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "report_to": ["tensorboard"],
    "seed": 42,
}

#: Keys of ``training`` that hardmine itself reads (their accepted types and how to name them);
#: all others go to TrainingArguments. ``tiled_loss: null``: on exactly when mining is on.
HARDMINE_TRAINING_KEYS = {"packing": ((bool,), "bool"), "tiled_loss": ((bool, type(None)), "bool or null")}
