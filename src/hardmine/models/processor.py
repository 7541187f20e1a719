"""The processor side of hardmine's models: Qwen's special tokens, the chat
template that marks the answers to supervise, and an image-only Qwen2-VL processor.

:class:`ImageOnlyQwen2VLProcessor` must be registered with ``AutoProcessor``
before a checkpoint that names it is loaded; :func:`register_image_only_processor`
does that, and the loaders call it (importing this module changes nothing).
"""

from __future__ import annotations

import logging
import re

from transformers import AutoProcessor, PretrainedConfig
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

logger = logging.getLogger(__name__)


# Qwen's own special tokens, so that chat templates, the processor and the model
# config use the same names as a real Qwen2-VL checkpoint.
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

#: Chat template of the built-in models. Qwen's layout (``<|im_start|>role\n ...
#: <|im_end|>\n``, an image as ``<|vision_start|><|image_pad|><|vision_end|>``), no
#: default system prompt (tokens the tiny model would pay for at every step), and the
#: assistant's answer plus its ``<|im_end|>`` inside ``{% generation %}`` so that
#: ``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly the
#: tokens to supervise. Content may be a string or a list of typed parts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- else -%}{{- raise_exception('assistant turns may hold only text parts') -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- else -%}{{- raise_exception('unknown content part type: ' + part['type']) -}}{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)



class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """A Qwen2-VL processor with an image processor and a tokenizer, and no video one.

    The stock ``Qwen2VLProcessor`` requires a video processor, which needs
    torchvision; on a CPU-only torch there is no torchvision build to match. The
    sub-processors a ``ProcessorMixin`` loads and saves are read from the names of
    ``__init__``'s parameters, so leaving ``video_processor`` out of the signature is
    what makes this class image-only. Everything else (image token expansion,
    ``mm_token_type_ids``, chat templates) is inherited unchanged.

    ``AutoProcessor.from_pretrained`` finds this class by the name saved in
    ``processor_config.json`` only if the class is registered; unregistered, it
    silently falls back to returning just the tokenizer. Importing this module
    is registered by :func:`register_image_only_processor`.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        if tokenizer is None:
            raise ValueError("ImageOnlyQwen2VLProcessor: tokenizer is None; expected a tokenizer")
        # The same token attributes Qwen2VLProcessor.__init__ sets; its __init__
        # cannot be called because it passes a video processor on to ProcessorMixin.
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_PAD
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_PAD
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


class _ImageOnlyProcessorRegistrationKey(PretrainedConfig):
    """Key under which :class:`ImageOnlyQwen2VLProcessor` is registered with AutoProcessor.

    AutoProcessor resolves a saved ``processor_class`` name by looking through its
    registered classes, whatever config they are registered under. Registering under
    ``Qwen2VLConfig`` itself would replace the stock processor for every real
    Qwen2-VL checkpoint in the process; this private key avoids that side effect.
    """

    model_type = "hardmine_image_only_processor"



def register_image_only_processor() -> None:
    """Let ``AutoProcessor`` find :class:`ImageOnlyQwen2VLProcessor` by the name a checkpoint saved.

    Idempotent; called by the loaders before ``AutoProcessor.from_pretrained``.
    """
    AutoProcessor.register(_ImageOnlyProcessorRegistrationKey, ImageOnlyQwen2VLProcessor, exist_ok=True)


_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_marks(template: str | None) -> bool:
    """Whether a chat template marks assistant turns with ``{% generation %}``."""
    return bool(template) and bool(_GENERATION_TAG.search(template))


def ensure_training_template(processor) -> bool:
    """Give a ChatML checkpoint a chat template that marks the assistant's answers.

    Label masking reads ``{% generation %}`` marks, which Qwen's own templates do
    not have. A template in Qwen's ChatML layout (``<|im_start|>role ...
    <|im_end|>``) is replaced by :data:`CHAT_TEMPLATE`, the same layout with the
    marks, without Qwen's default system prompt (give one explicitly if wanted).
    Any other template is left alone, and encoding then fails with a clear error.
    Returns whether the template was replaced.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None)
    if template is None:
        template = getattr(tokenizer, "chat_template", None)
    if template is not None and not isinstance(template, str):
        return False  # a dict of named templates: the user's choice, left alone
    if has_generation_marks(template):
        return False
    # ChatML: the template says so, or (no template at all) the vocabulary has its markers.
    chatml = "<|im_start|>" in template if template else "<|im_start|>" in tokenizer.get_vocab()
    if not chatml:
        return False
    logger.warning(
        "model: the chat template of %s does not mark assistant turns with {%% generation %%}; "
        "using hardmine's ChatML template (same layout, no default system prompt) so that "
        "only the answers are supervised",
        getattr(tokenizer, "name_or_path", "the checkpoint"),
    )
    processor.chat_template = CHAT_TEMPLATE
    tokenizer.chat_template = CHAT_TEMPLATE
    return True
