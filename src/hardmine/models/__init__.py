"""Models: built-in tiny models that need no download, and loading of any checkpoint.

Importing this package registers the image-only Qwen2-VL processor with
``AutoProcessor`` (see :mod:`hardmine.models.builtin`).
"""

from hardmine.models.builtin import (
    BUILTIN_PREFIX,
    BUILTINS,
    CHAT_TEMPLATE,
    ImageOnlyQwen2VLProcessor,
    builtin_spec,
    detect_task,
    ensure_training_template,
    load_model_and_processor,
    load_processor,
    materialize_builtin,
)

__all__ = [
    "BUILTIN_PREFIX",
    "BUILTINS",
    "CHAT_TEMPLATE",
    "ImageOnlyQwen2VLProcessor",
    "builtin_spec",
    "detect_task",
    "ensure_training_template",
    "load_model_and_processor",
    "load_processor",
    "materialize_builtin",
]
