"""Padded and packed collators: layout, metadata, and the packed VL rope index."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hardmine.data.collate import METADATA_KEYS, PackedCollator, PaddedCollator, split_metadata
from hardmine.data.encode import IGNORE_INDEX, dense_caption_messages, encode_chat
from hardmine.train.loss import sample_index_for_packed

PAD = 0


def feature(ids, labels=None, **extra):
    ids = torch.tensor(ids)
    labels = ids.clone() if labels is None else torch.tensor(labels)
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), **extra}


def text_features():
    return [
        feature([5, 6, 7], [-100, 6, 7], sample_id=11, position=0),
        feature([8, 9], [-100, 9], sample_id=12, position=1),
        feature([3, 4, 5, 6], [-100, -100, 5, 6], sample_id=13, position=2),
    ]


# --------------------------------------------------------------------------- padded


def test_padded_layout_and_metadata():
    batch = PaddedCollator(PAD)(text_features())
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 9, 0, 0], [3, 4, 5, 6]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [-100, 9, -100, -100], [-100, -100, 5, 6]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["sample_index"].tolist() == [[0, 0, 0, -1], [1, 1, -1, -1], [2, 2, 2, 2]]
    assert batch["sample_id"].dtype == batch["position"].dtype == torch.int64
    assert batch["sample_id"].tolist() == [11, 12, 13] and batch["position"].tolist() == [0, 1, 2]
    model_inputs, meta = split_metadata(batch)
    assert set(model_inputs) == {"input_ids", "labels", "attention_mask"}
    assert set(meta) == set(METADATA_KEYS)  # no loss_focus: these samples carry none


def test_padded_pad_to_multiple_and_no_metadata():
    batch = PaddedCollator(PAD, pad_to_multiple_of=8)([feature([1, 2, 3])])
    assert batch["input_ids"].shape == (1, 8)
    assert set(batch) == {"input_ids", "labels", "attention_mask", "sample_index"}


def test_padded_vision_is_concatenated_in_sample_order():
    grid_a, grid_b = torch.tensor([[1, 2, 2]]), torch.tensor([[1, 2, 4], [1, 2, 2]])
    a = feature([1, 2], mm_token_type_ids=torch.tensor([0, 1]), pixel_values=torch.zeros(4, 3), image_grid_thw=grid_a)
    text_only = feature([1, 2, 3])
    b = feature([1], mm_token_type_ids=torch.tensor([1]), pixel_values=torch.ones(12, 3), image_grid_thw=grid_b)
    batch = PaddedCollator(PAD)([a, text_only, b])
    assert batch["pixel_values"].shape == (16, 3) and batch["pixel_values"][4:].eq(1).all()
    assert batch["image_grid_thw"].tolist() == [[1, 2, 2], [1, 2, 4], [1, 2, 2]]
    assert batch["mm_token_type_ids"].tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize(
    ("features", "match"),
    [
        ([], "empty list"),
        ([feature([1]) | {"extra": 1}], r"unknown key\(s\) \['extra'\]"),
        ([{"input_ids": torch.tensor([1])}], "missing 'labels'"),
        ([feature([1, 2], [1])], r"\['labels'\]: length 1; expected 2"),
        ([feature([1], sample_id=1), feature([2])], r"features\[1\]: missing 'sample_id'"),
        ([feature([1], pixel_values=torch.zeros(4, 3))], "must come together"),
        ([feature([1], pixel_values=torch.zeros(3, 3), image_grid_thw=torch.tensor([[1, 2, 2]]))], "expected 4"),
    ],
)
def test_bad_features_are_errors(features, match):
    with pytest.raises(ValueError, match=match):
        PaddedCollator(PAD)(features)


def test_bad_pad_token():
    with pytest.raises(ValueError, match="pad_token_id: got -1"):
        PaddedCollator(-1)


# --------------------------------------------------------------------------- packed, text


def test_packed_text_row():
    batch = PackedCollator()(text_features())
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 3, 4, 5, 6]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert batch["sample_index"].tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2]]
    assert torch.equal(sample_index_for_packed(batch["position_ids"]), batch["sample_index"])
    assert batch["sample_id"].tolist() == [11, 12, 13] and batch["position"].tolist() == [0, 1, 2]


def test_packed_first_label_of_every_sample_is_ignored():
    # A label on a sample's first token would teach the previous sample's last
    # token to predict it through the model's own (row-wide) shift.
    batch = PackedCollator()([feature([1, 2]), feature([3, 4])])
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, IGNORE_INDEX, 4]]


def test_packed_refuses_padding_inside_a_sample_and_images_without_a_rope_index():
    padded = feature([1, 2]) | {"attention_mask": torch.tensor([1, 0])}
    with pytest.raises(ValueError, match="attention_mask.*has zeros"):
        PackedCollator()([padded])
    with_image = feature([1], mm_token_type_ids=torch.tensor([1]), pixel_values=torch.zeros(4, 3),
                         image_grid_thw=torch.tensor([[1, 2, 2]]))  # fmt: skip
    with pytest.raises(ValueError, match="no rope index"):
        PackedCollator()([with_image])
    with pytest.raises(ValueError, match="both model and rope_index"):
        PackedCollator(object(), rope_index=lambda *a, **k: None)


# --------------------------------------------------------------------------- packed, VL


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
    from hardmine.models import load_model_and_processor, materialize_builtin

    root = tmp_path_factory.getbasetemp() / "hardmine-builtin"  # shared with tests/models
    model, processor, _ = load_model_and_processor(str(materialize_builtin("tiny-qwen2-vl", root)))
    return model, processor


def vl_features(processor):
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(112, 112), (56, 112), (84, 84)]):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        answer = '[{"desc": "red circle", "bbox_2d": [%d, 2, 30, 40]}]' % (i * 100)
        out.append(encode_chat(processor, dense_caption_messages(answer * (i + 1)), [img]) | {"sample_id": i})
    # A text-only sample in the same batch gets plain text positions.
    out.append(encode_chat(processor, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]))
    out[-1]["sample_id"] = 3
    return out


def test_packed_vl_position_ids_match_the_models_padded_rope_index(vl):
    model, processor = vl
    features = vl_features(processor)
    packed = PackedCollator(model=model)(features)
    padded = PaddedCollator(processor.tokenizer.pad_token_id)(features)
    T = packed["input_ids"].shape[1]
    assert packed["position_ids"].shape == (4, 1, T)
    # What the model itself computes for the padded batch (attention mask given).
    expected, _ = model.model.get_rope_index(
        padded["input_ids"], padded["mm_token_type_ids"], padded["image_grid_thw"],
        attention_mask=padded["attention_mask"],
    )  # fmt: skip
    start = 0
    for b, f in enumerate(features):
        n = f["input_ids"].numel()
        rows = packed["position_ids"][:, 0, start : start + n]
        assert rows[0].tolist() == list(range(n))
        assert torch.equal(rows[1:], expected[:, b, :n]), b
        start += n
    assert start == T
    # The image tokens really get 2D positions (rows 2 and 3 differ somewhere).
    assert not torch.equal(packed["position_ids"][2], packed["position_ids"][3])
    assert torch.equal(packed["pixel_values"], padded["pixel_values"])
    assert torch.equal(packed["image_grid_thw"], padded["image_grid_thw"])
    assert packed["mm_token_type_ids"].shape == (1, T)
    assert torch.equal(sample_index_for_packed(packed["position_ids"]), packed["sample_index"])
    assert packed["sample_index"].max().item() == 3


def test_packed_vl_refuses_an_image_sample_without_mm_token_type_ids(vl):
    model, processor = vl
    f = vl_features(processor)[0]
    del f["mm_token_type_ids"]
    with pytest.raises(ValueError, match="no mm_token_type_ids"):
        PackedCollator(model=model)([f])


def test_loss_focus_is_padded_with_zeros_packed_in_order_and_kept_from_the_model():
    features = text_features()
    for f, focus in zip(features, ([0, 1, 0], [0, 1], [0, 0, 1, 1])):
        f["loss_focus"] = torch.tensor(focus)
    padded = PaddedCollator(PAD)(features)
    assert padded["loss_focus"].tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]
    model_inputs, meta = split_metadata(padded)
    assert "loss_focus" not in model_inputs and meta["loss_focus"] is padded["loss_focus"]
    packed = PackedCollator()(features)
    assert packed["loss_focus"].tolist() == [[0, 1, 0, 0, 1, 0, 0, 1, 1]]
    features[1]["loss_focus"] = torch.tensor([1, 1, 1])
    with pytest.raises(ValueError, match=r"features\[1\]\['loss_focus'\]: length 3; expected 2"):
        PaddedCollator(PAD)(features)
