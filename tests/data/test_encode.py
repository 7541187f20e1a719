"""encode_chat: only the assistant's answer and its end-of-turn token are supervised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hardmine.data.encode import DEFAULT_INSTRUCTION, IGNORE_INDEX, answer_token_mask, dense_caption_messages, encode_chat
from hardmine.data.render import field_value_spans

ANSWER = '[{"desc": "large blue square", "bbox_2d": [10, 200, 340, 1000]}, {"desc": "red line", "line": [0, 0, 5, 9]}]'


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    from transformers import AutoProcessor, AutoTokenizer

    from hardmine.models import materialize_builtin
    from hardmine.models.processor import register_image_only_processor

    register_image_only_processor()  # as hardmine's loaders do: AutoProcessor finds the built-in's processor class

    root = tmp_path_factory.getbasetemp() / "hardmine-builtin"  # shared with tests/models
    vl = AutoProcessor.from_pretrained(materialize_builtin("tiny-qwen2-vl", root))
    text = AutoTokenizer.from_pretrained(materialize_builtin("tiny-text", root))
    return vl, text


def image(h=112, w=112):
    return Image.fromarray(np.full((h, w, 3), 127, dtype=np.uint8))


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def supervised(features):
    return features["input_ids"][features["labels"] != IGNORE_INDEX].tolist()


def test_dense_caption_labels_cover_exactly_the_answer_and_its_end_of_turn(processors):
    processor, _ = processors
    tok = processor.tokenizer
    messages = [{"role": "system", "content": "You are a helpful assistant."}] + dense_caption_messages(ANSWER)
    f = encode_chat(processor, messages, [image()])
    ids, labels = f["input_ids"], f["labels"]
    assert ids.shape == labels.shape == f["attention_mask"].shape == f["mm_token_type_ids"].shape
    assert ids.dtype == labels.dtype == torch.int64

    # Independent expectation: everything up to and including "<|im_start|>assistant\n"
    # is prompt; then the answer's own tokens and <|im_end|>; then the closing "\n".
    header = ids_of(tok, "<|im_start|>assistant\n")
    start = next(i for i in range(len(ids)) if ids[i : i + len(header)].tolist() == header) + len(header)
    answer = ids_of(tok, ANSWER) + [tok.convert_tokens_to_ids("<|im_end|>")]
    expected = torch.full_like(ids, IGNORE_INDEX)
    expected[start : start + len(answer)] = torch.tensor(answer)
    assert ids[start : start + len(answer)].tolist() == answer
    assert torch.equal(labels, expected)
    assert ids[start + len(answer) :].tolist() == ids_of(tok, "\n")  # not supervised

    image_positions = ids == processor.image_token_id
    assert int(image_positions.sum()) == 16
    assert torch.equal(f["mm_token_type_ids"].bool(), image_positions)
    assert bool((labels[image_positions] == IGNORE_INDEX).all())
    assert tok.decode(ids[:start]).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert f["pixel_values"].shape[0] == int(f["image_grid_thw"].prod()) == 64
    assert tuple(f["image_grid_thw"].tolist()[0]) == (1, 8, 8)


def test_two_images_of_different_sizes_expand_in_order(processors):
    processor, tok = processors[0], processors[0].tokenizer
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]},
        {"role": "assistant", "content": "two"},
    ]
    f = encode_chat(processor, messages, [image(56, 56), image(112, 84)])
    assert f["image_grid_thw"].tolist() == [[1, 4, 4], [1, 8, 6]]
    runs = torch.nonzero(f["mm_token_type_ids"]).flatten().tolist()
    assert len(runs) == 4 + 12
    between = f["input_ids"][runs[3] + 1 : runs[4]].tolist()  # "<|vision_end|>and<|vision_start|>"
    assert tok.decode(between) == "<|vision_end|>and<|vision_start|>"
    assert supervised(f) == ids_of(tok, "two") + [tok.convert_tokens_to_ids("<|im_end|>")]


def test_text_chat_masks_every_user_turn_and_supervises_every_assistant_turn(processors):
    _, tok = processors
    messages = [
        {"role": "system", "content": "Reverse the string."},
        {"role": "user", "content": "abc"},
        {"role": "assistant", "content": "cba"},
        {"role": "user", "content": "red"},
        {"role": "assistant", "content": "der"},
    ]
    f = encode_chat(tok, messages)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert supervised(f) == ids_of(tok, "cba") + [end] + ids_of(tok, "der") + [end]
    assert set(f) == {"input_ids", "labels", "attention_mask"}
    assert bool(f["attention_mask"].all())


def test_vl_processor_encodes_a_text_only_chat(processors):
    processor, _ = processors
    f = encode_chat(processor, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert "pixel_values" not in f and not bool(f["mm_token_type_ids"].any())
    assert supervised(f) == ids_of(processor.tokenizer, "hello") + [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_dense_caption_messages_shape():
    messages = dense_caption_messages("[]", instruction="Find the shapes.")
    assert messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find the shapes."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "[]"}]},
    ]
    assert dense_caption_messages("[]")[0]["content"][1]["text"] == DEFAULT_INSTRUCTION
    with pytest.raises(ValueError, match="target_text"):
        dense_caption_messages("")


def test_too_long_is_an_error_naming_the_length(processors):
    processor, _ = processors
    length = encode_chat(processor, dense_caption_messages(ANSWER), [image()])["input_ids"].numel()
    assert encode_chat(processor, dense_caption_messages(ANSWER), [image()], max_length=length)
    with pytest.raises(ValueError, match=rf"{length} tokens, longer than max_length={length - 1}"):
        encode_chat(processor, dense_caption_messages(ANSWER), [image()], max_length=length - 1)


@pytest.mark.parametrize(
    ("which", "messages", "images", "match"),
    [
        ("vl", dense_caption_messages(ANSWER), [], r"images: got 0 image\(s\) for a chat with 1"),
        ("vl", dense_caption_messages(ANSWER), [image(), image()], r"got 2 image\(s\) for a chat with 1"),
        ("vl", [{"role": "user", "content": "hi"}], [], "no assistant token"),
        ("text", dense_caption_messages(ANSWER), [image()], "has no image processor"),
    ],
)
def test_bad_inputs_are_errors(processors, which, messages, images, match):
    processor = processors[0] if which == "vl" else processors[1]
    with pytest.raises(ValueError, match=match):
        encode_chat(processor, messages, images)


def test_bad_max_length(processors):
    with pytest.raises(ValueError, match="max_length: got 0"):
        encode_chat(processors[1], [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], max_length=0)


def test_answer_token_mask_marks_the_tokens_of_the_field_values(processors):
    processor, _ = processors
    answer = '[{"desc":"紫色 square","bbox_2d":[10,200,340,1000]},{"desc":"red line","line":[0,0,5,9]}]'
    features = encode_chat(processor, dense_caption_messages(answer), [image()])
    mask = answer_token_mask(processor, answer, field_value_spans(answer, ["desc"]), features["labels"])
    assert mask.dtype == torch.long and mask.shape == features["labels"].shape
    assert bool((features["labels"][mask == 1] != IGNORE_INDEX).all())  # only supervised tokens
    # The marked tokens are exactly the two descriptions (this tokenizer keeps each
    # value's first word apart from the quote before it).
    assert processor.tokenizer.decode(features["input_ids"][mask == 1]) == "紫色 squarered line"


def test_answer_token_mask_refuses_an_answer_the_template_tokenised_otherwise(processors):
    processor, _ = processors
    features = encode_chat(processor, dense_caption_messages('[{"desc":"red line"}]'), [image()])
    with pytest.raises(ValueError, match="differs from its tokens inside the chat template"):
        answer_token_mask(processor, '[{"desc":"blue line"}]', [(9, 13)], features["labels"])
