"""The YAML schema: ``model``, ``training``, ``data``, ``deepspeed``, ``custom``.

Every default is explicit here. Mining defaults come from
:class:`hardmine.core.MiningSettings` so the engine and the YAML cannot drift.
``training`` passes any ``transformers.TrainingArguments`` field through; its
keys are checked against that class when the config is validated.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..core import GuardSettings, MiningSettings, SelectorSettings, TrackerSettings, TriggerSettings

_MINING = MiningSettings()
_TRIGGER = TriggerSettings()
_SELECTOR = SelectorSettings()
_GUARD = GuardSettings()
_TRACKER = TrackerSettings()


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


class SelectorSection(_Strict):
    mode: Literal["top_k", "percentile", "threshold"] = _SELECTOR.mode
    k: Optional[int] = _SELECTOR.k
    value: Optional[float] = _SELECTOR.value


class AggregationSection(_Strict):
    mode: Literal["mean", "ema"] = _TRACKER.aggregation
    ema_decay: float = _TRACKER.ema_decay
    progress_correction: bool = _TRACKER.progress_correction
    level_decay: float = _TRACKER.level_decay
    history_epochs: int = _MINING.history_epochs


class NoiseGuardSection(_Strict):
    enabled: bool = _GUARD.enabled
    min_improvement: float = _GUARD.min_improvement
    window: int = _GUARD.window
    max_hard_streak: int = _GUARD.max_hard_streak


class HardSampleMiningSection(_Strict):
    enabled: bool = False
    start_epoch: int = _TRIGGER.start_epoch
    plateau_delta: float = _TRIGGER.plateau_delta
    patience: int = _TRIGGER.patience
    monitor: str = Field("train_loss", description="train_loss, or an eval metric such as eval_loss")
    higher_is_better: bool = _TRIGGER.higher_is_better
    selector: SelectorSection = SelectorSection()
    aggregation: AggregationSection = AggregationSection()
    noise_guard: NoiseGuardSection = NoiseGuardSection()
    hard_weight: float = _MINING.hard_weight
    dump: bool = Field(True, description="write output_dir/hard_samples_epoch_{n}.json")
    dump_population: bool = Field(
        False, description="also write every target sample's statistics per mining epoch (hard_samples_epoch_{n}.population.npz)"
    )

    def to_settings(self) -> MiningSettings:
        """The engine's settings; raises :class:`hardmine.core.SettingError` naming the key."""
        return MiningSettings(
            trigger=TriggerSettings(
                start_epoch=self.start_epoch,
                plateau_delta=self.plateau_delta,
                patience=self.patience,
                higher_is_better=self.higher_is_better,
            ),
            selector=SelectorSettings(mode=self.selector.mode, k=self.selector.k, value=self.selector.value),
            guard=GuardSettings(
                enabled=self.noise_guard.enabled,
                min_improvement=self.noise_guard.min_improvement,
                window=self.noise_guard.window,
                max_hard_streak=self.noise_guard.max_hard_streak,
            ),
            aggregation=self.aggregation.mode,
            ema_decay=self.aggregation.ema_decay,
            progress_correction=self.aggregation.progress_correction,
            level_decay=self.aggregation.level_decay,
            history_epochs=self.aggregation.history_epochs,
            hard_weight=self.hard_weight,
        )


class CustomSection(_Strict):
    train_jsonl: Optional[str] = Field(None, description="one training dataset (or use fusion_config)")
    val_jsonl: Optional[str] = None
    dataset_name: str = Field("target", min_length=1, description="name of the train_jsonl dataset")
    fusion_config: Optional[str] = Field(None, description="YAML with one target and its sources")
    skip_invalid_records: bool = Field(False, description="skip (count and log) bad JSONL lines instead of failing")
    augmentation: dict[str, Any] = Field(default_factory=dict, description="see hardmine.data.augment")
    hard_sample_mining: HardSampleMiningSection = HardSampleMiningSection()


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

#: Keys of ``training`` that hardmine itself reads; all others go to TrainingArguments.
HARDMINE_TRAINING_KEYS = {"packing": bool, "tiled_loss": bool}
