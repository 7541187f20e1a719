"""The YAML configuration: schema, ``extends:``, overrides, validation.

Imports pydantic, yaml and the core, never transformers: the
``TrainingArguments`` fields are read from its source (see
:mod:`hardmine.config.training_fields`).
"""

from .load import (
    ConfigError,
    Problem,
    apply_overrides,
    dump_config,
    load_config,
    load_mining_settings,
    load_tree,
    parse_config,
)
from .schema import HardmineConfig

__all__ = [
    "ConfigError",
    "HardmineConfig",
    "Problem",
    "apply_overrides",
    "dump_config",
    "load_config",
    "load_mining_settings",
    "load_tree",
    "parse_config",
]
