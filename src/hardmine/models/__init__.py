"""Models: built-in tiny models that need no download, and loading of any checkpoint.

``builtin`` builds and caches the tiny models; ``loading`` loads any checkpoint
(built-ins through the cache); ``processor`` holds the chat template and the
image-only Qwen2-VL processor. Importing the package changes no global state.
"""

from .builtin import BUILTIN_PREFIX, BUILTINS, builtin_spec, materialize_builtin
from .loading import detect_task, load_model_and_processor, load_processor
from .processor import CHAT_TEMPLATE, ImageOnlyQwen2VLProcessor, ensure_training_template, register_image_only_processor

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
    "register_image_only_processor",
]
