"""The YAML configuration: schema, ``extends:``, overrides, validation.

Imports pydantic, yaml and the core; ``transformers`` only inside
:func:`training_argument_names`, when a config is validated.
"""

from .load import ConfigError, Problem, apply_overrides, dump_config, load_config, load_tree, parse_config
from .schema import HardmineConfig, HardSampleMiningSection

__all__ = [
    "ConfigError",
    "HardSampleMiningSection",
    "HardmineConfig",
    "Problem",
    "apply_overrides",
    "dump_config",
    "load_config",
    "load_tree",
    "parse_config",
]
