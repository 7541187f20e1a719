"""Loading any checkpoint (a built-in, a folder, a hub name) for hardmine's training.

:func:`load_model_and_processor` and :func:`load_processor` resolve ``builtin:``
names through the cache (:mod:`hardmine.models.builtin`), give a VL checkpoint
whose stock processor cannot be built here an image-only one, switch the
model's cache off (packed rows), and make sure the chat template marks the
answers to supervise.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from .builtin import builtin_spec, materialize_builtin, parse_builtin_name
from .processor import ImageOnlyQwen2VLProcessor, ensure_training_template, register_image_only_processor

Task = Literal["vl", "text"]


#: Prefix that marks a built-in model name in ``model.model``.
def detect_task(config) -> Task:
    """``"vl"`` for a config with a vision tower (Qwen2-VL family), else ``"text"``."""
    return "vl" if getattr(config, "vision_config", None) is not None else "text"


def _disable_cache(model) -> None:
    # With use_cache=True, transformers builds a cache object in the forward, and a
    # forward with a cache does not derive the block-diagonal mask of a packed row
    # from position_ids: packed samples then silently attend to each other. Trainer
    # only switches off model.config.use_cache, while the text model of a VL model
    # reads text_config.use_cache, so both are switched off here.
    model.config.use_cache = False
    text_config = getattr(model.config, "text_config", None)
    if text_config is not None:
        text_config.use_cache = False


def _load_vl_processor(path: str):
    register_image_only_processor()
    processor = AutoProcessor.from_pretrained(path)
    if hasattr(processor, "image_processor"):
        return processor
    # AutoProcessor returned something without an image processor: either only the
    # tokenizer (the processor class is unknown here), or it failed. Build the
    # image-only processor from the two parts a Qwen-VL checkpoint always has.
    return _image_only_processor_from(path)


def _image_only_processor_from(path: str):
    try:
        image_processor = AutoImageProcessor.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"model: cannot load an image processor and a tokenizer from {path!r}: {err}") from err
    return ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )


def load_model_and_processor(
    spec: str,
    *,
    task: Task | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, Any, Task]:
    """Load ``(model, processor_or_tokenizer, task)`` from a built-in name, folder or hub name.

    - ``builtin:<name>`` is materialised (see :func:`materialize_builtin`) and loaded
      from its folder like any checkpoint.
    - Anything else goes to ``from_pretrained``: ``AutoModelForImageTextToText`` +
      ``AutoProcessor`` for ``task="vl"``, ``AutoModelForCausalLM`` + ``AutoTokenizer``
      for ``task="text"``. With ``task=None`` the task is read from the config: a
      config with a ``vision_config`` is VL.

    A VL checkpoint whose stock processor cannot be built here (Qwen's needs
    torchvision for its video part) gets an :class:`ImageOnlyQwen2VLProcessor` made
    from its image processor and tokenizer. The model's ``use_cache`` is switched off
    in ``config`` and ``text_config`` (see ``_disable_cache``), and a ChatML chat
    template without ``{% generation %}`` marks gets hardmine's marked one (see
    :func:`ensure_training_template`), so that only answers are supervised.
    """
    path, task, _ = _resolve_checkpoint(spec, task)
    load_kwargs = {} if dtype is None else {"dtype": _resolve_dtype(dtype)}
    model, processor = _load(path, task, load_kwargs)
    _disable_cache(model)
    ensure_training_template(processor)
    return model, processor, task


def load_processor(spec: str, *, task: Task | None = None) -> tuple[Any, Task]:
    """``(processor_or_tokenizer, task)`` of a checkpoint, without loading its weights.

    The same processor :func:`load_model_and_processor` gives (chat template
    included), for work that only encodes, such as checking sample lengths.
    """
    path, task, _ = _resolve_checkpoint(spec, task)
    processor = _load_processor(path, task)
    ensure_training_template(processor)
    return processor, task


def _resolve_checkpoint(spec: str, task: Task | None) -> tuple[str, Task, bool]:
    """(folder or hub name, task, whether it is a built-in) for a model spec."""
    if task is not None and task not in ("vl", "text"):
        raise ValueError(f"task: got {task!r}; expected 'vl', 'text' or None")
    builtin = parse_builtin_name(spec)
    if builtin is not None:
        built = builtin_spec(builtin)
        if task is not None and task != built.task:
            raise ValueError(f"task: got {task!r} for {spec!r}; that built-in is a {built.task!r} model")
        return str(materialize_builtin(builtin)), built.task, True
    if task is None:
        task = detect_task(AutoConfig.from_pretrained(spec))
    return spec, task, False


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    # "auto" keeps the checkpoint's dtype; names such as "bfloat16" (as written in
    # a YAML config) become torch dtypes.
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype: got {dtype!r}; expected 'auto', a floating torch dtype or its name (e.g. 'bfloat16')")
    return resolved


def _load(path: str, task: Task, load_kwargs: dict[str, Any]):
    if task == "vl":
        model = AutoModelForImageTextToText.from_pretrained(path, **load_kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
    return model, _load_processor(path, task)


def _load_processor(path: str, task: Task):
    if task != "vl":
        return AutoTokenizer.from_pretrained(path)
    try:
        return _load_vl_processor(path)
    except (ImportError, OSError, ValueError):
        return _image_only_processor_from(path)
