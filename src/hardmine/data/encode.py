"""Encoding a chat into model features, with only the assistant's answer supervised.

The chat template does the masking: the assistant turn (answer plus its end-of-turn
token) sits inside ``{% generation %}`` ... ``{% endgeneration %}``, and the
tokenizer's ``apply_chat_template(..., return_assistant_tokens_mask=True)`` reports
which tokens came from there. For a VL processor the mask is then carried over the
processor's image expansion (each placeholder becomes one token per merged patch),
checking that everything else tokenises identically. Every other token (system and
user prompt, image tokens, role headers) gets the label -100, which the loss ignores.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

#: Label of a token the loss ignores (the value transformers' losses skip).
IGNORE_INDEX = -100

#: The user's request in a dense-caption sample. Short on purpose: the tiny
#: built-in models pay for every prompt token at every step.
DEFAULT_INSTRUCTION = "Describe every object in the image as JSON."

# Keys a processor may return besides input_ids / attention_mask, kept as they are.
_VISION_KEYS = ("pixel_values", "image_grid_thw")


def dense_caption_messages(target_text: str, instruction: str = DEFAULT_INSTRUCTION) -> list[dict[str, Any]]:
    """A two-turn chat: the user sends one image and ``instruction``; the assistant answers ``target_text``."""
    if not isinstance(target_text, str) or not target_text:
        raise ValueError(f"target_text: got {target_text!r}; expected a non-empty string")
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
        {"role": "assistant", "content": [{"type": "text", "text": target_text}]},
    ]


def count_image_parts(messages: Sequence[dict[str, Any]]) -> int:
    """How many ``{"type": "image"}`` parts the chat holds (each needs one image)."""
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image")
    return count


def encode_chat(
    processor,
    messages: Sequence[dict[str, Any]],
    images: Sequence[Any] | None = None,
    *,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenise a chat and label it for supervised fine-tuning.

    ``processor`` is a VL processor (with ``image_processor``) or a plain tokenizer;
    its chat template must mark the assistant turns with ``{% generation %}``.
    ``images`` (PIL images) fill the chat's image parts in order.

    Returns 1-D tensors ``input_ids``, ``labels`` (the token id on assistant tokens,
    -100 elsewhere) and ``attention_mask``; with images also ``pixel_values``
    (patches x features), ``image_grid_thw`` (images x 3) and, when the processor
    makes it, ``mm_token_type_ids`` (Qwen-VL models need it to place image tokens in
    their 3D rope). A sample longer than ``max_length`` is an error, never cut.
    """
    images = list(images) if images else []
    n_parts = count_image_parts(messages)
    if n_parts != len(images):
        raise ValueError(f"images: got {len(images)} image(s) for a chat with {n_parts} image part(s); expected equal")
    if images and not hasattr(processor, "image_processor"):
        raise ValueError(
            f"processor: {type(processor).__name__} has no image processor, but the chat holds "
            f"{len(images)} image(s); expected a vision-language processor"
        )
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length: got {max_length!r}; expected an integer >= 2 or None")

    tokenizer = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None) or tokenizer.chat_template
    text_ids, assistant = _assistant_mask(tokenizer, template, messages)
    if not assistant.any():
        raise ValueError(
            "messages: no assistant token to supervise; expected at least one assistant turn with text "
            "(and a chat template that marks it with {% generation %})"
        )

    if hasattr(processor, "image_processor"):
        # The processor expands each image placeholder into one token per merged
        # patch and makes pixel_values / image_grid_thw / mm_token_type_ids.
        rendered = tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False)
        out = processor(text=[rendered], images=images or None, add_special_tokens=False, return_tensors="pt")
        input_ids = _one_row(out, "input_ids").long()
        assistant = _expand_over_images(text_ids, assistant, input_ids, out, processor)
    else:
        out, input_ids = {}, text_ids

    length = int(input_ids.numel())
    if max_length is not None and length > max_length:
        raise ValueError(
            f"max_length: the encoded sample is {length} tokens, longer than max_length={max_length}; "
            "raise data.max_length or shorten the sample (it is never truncated, which would cut the answer)"
        )
    features: dict[str, torch.Tensor] = {
        "input_ids": input_ids,
        "labels": torch.where(assistant, input_ids, torch.full_like(input_ids, IGNORE_INDEX)),
        "attention_mask": torch.ones_like(input_ids),
    }
    if "mm_token_type_ids" in out:
        features["mm_token_type_ids"] = _one_row(out, "mm_token_type_ids").long()
    for key in _VISION_KEYS:
        if images and key in out:
            features[key] = out[key]
    if images and "pixel_values" not in features:
        raise ValueError(f"processor: {type(processor).__name__} returned no pixel_values for {len(images)} image(s)")
    return features


def answer_token_mask(processor, answer: str, spans: Sequence[tuple[int, int]], labels: torch.Tensor) -> torch.Tensor:
    """1 on the supervised tokens that cover any character span of ``answer``, else 0 (int64, like ``labels``).

    ``labels`` are :func:`encode_chat`'s for a chat whose assistant turn is ``answer``:
    its supervised tokens start with ``answer`` tokenised on its own, which is
    checked, so the tokenizer's character offsets of that tokenisation place the
    spans. A token that covers part of a span counts (a word piece, or one byte of
    a character split over several tokens).
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"processor: {type(tokenizer).__name__} is not a fast tokenizer; sample_loss fields need its character offsets"
        )
    encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.as_tensor(encoded["input_ids"], dtype=torch.long)
    supervised = (labels != IGNORE_INDEX).nonzero(as_tuple=True)[0]
    first = int(supervised[0]) if supervised.numel() else 0
    if supervised.numel() < ids.numel() or not torch.equal(labels[first : first + ids.numel()], ids):
        raise ValueError(
            "the answer tokenised on its own differs from its tokens inside the chat template; "
            "cannot place the sample_loss fields on its tokens"
        )
    offsets = torch.as_tensor(encoded["offset_mapping"], dtype=torch.long).reshape(-1, 2)
    covered = torch.zeros(ids.numel(), dtype=torch.bool)
    for lo, hi in spans:
        covered |= (offsets[:, 0] < hi) & (offsets[:, 1] > lo)
    mask = torch.zeros_like(labels, dtype=torch.long)
    mask[first : first + ids.numel()] = covered.long()
    return mask


def _assistant_mask(tokenizer, template, messages) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of the chat (one token per image placeholder) and its assistant mask.

    The mask comes from the tokenizer, which every transformers 5.x release computes
    correctly; processors only learned to carry it across image expansion recently,
    so it is expanded here instead (:func:`_expand_over_images`).
    """
    out = tokenizer.apply_chat_template(
        list(messages), chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    if "assistant_masks" not in out:
        raise ValueError(
            f"processor: {type(tokenizer).__name__} returned no assistant mask; expected a chat template "
            "that wraps assistant turns in {% generation %} ... {% endgeneration %}"
        )
    ids = torch.as_tensor(out["input_ids"], dtype=torch.long).reshape(-1)
    mask = torch.as_tensor(out["assistant_masks"], dtype=torch.bool).reshape(-1)
    if ids.shape != mask.shape:
        raise ValueError(f"processor: assistant mask of {mask.numel()} tokens for {ids.numel()} tokens; expected equal")
    return ids, mask


def _expand_over_images(text_ids, mask, input_ids, out, processor) -> torch.Tensor:
    """The assistant mask of the processor's ``input_ids``, where placeholders became runs.

    Each image token of ``text_ids`` becomes as many tokens as the processor made for
    that image; everything else maps one to one, which is checked.
    """
    image_token = getattr(processor, "image_token_id", None)
    repeats = torch.ones_like(text_ids)
    if image_token is not None and "image_grid_thw" in out:
        merge = int(getattr(processor.image_processor, "merge_size", 1))
        per_image = (torch.as_tensor(out["image_grid_thw"]).prod(dim=1) // (merge * merge)).long()
        placeholders = (text_ids == image_token).nonzero(as_tuple=True)[0]
        if placeholders.numel() != per_image.numel():
            raise ValueError(
                f"processor: {placeholders.numel()} image placeholder(s) in the chat for "
                f"{per_image.numel()} processed image(s); expected equal"
            )
        repeats[placeholders] = per_image
    expanded_ids = torch.repeat_interleave(text_ids, repeats)
    if not torch.equal(expanded_ids, input_ids):
        raise ValueError(
            f"processor: its {input_ids.numel()} tokens do not match the chat template's {text_ids.numel()} "
            "tokens with image placeholders expanded; expected the same tokenisation"
        )
    return torch.repeat_interleave(mask, repeats)


def _one_row(out, key: str) -> torch.Tensor:
    value = out[key]
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if value.ndim != 2 or value.shape[0] != 1:
        raise ValueError(f"processor output {key!r}: got shape {tuple(value.shape)}; expected (1, length)")
    return value[0]
