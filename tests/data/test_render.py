"""Caption targets: norm1000 coordinates, a deterministic order, and a strict parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardmine.data.records import SceneObject
from hardmine.data.render import field_value_spans, norm1000, parse_rendered, render_entries, render_objects


@pytest.mark.parametrize(
    "value, size, expected",
    [
        (0, 640, 0),
        (640, 640, 1000),
        (320, 640, 500),
        (1, 3, 333),
        (2, 3, 667),
        (0.5, 1000, 1),  # half up, where round-half-to-even would give 0
        (2.5, 1000, 3),
        (-4, 100, 0),  # clamped
        (100.4, 100, 1000),
    ],
)
def test_norm1000(value, size, expected):
    assert norm1000(value, size) == expected


def test_norm1000_rejects_a_bad_size():
    with pytest.raises(ValueError, match="size: got 0"):
        norm1000(1, 0)


def test_render_is_compact_json_in_norm1000():
    objects = [
        SceneObject.from_flat("red square", "bbox_2d", [64, 48, 128, 96]),
        SceneObject.from_flat("blue triangle", "poly", [320, 240, 640, 240, 480, 480]),
        SceneObject.from_flat("green line", "line", [0, 480, 640, 0]),
    ]
    text = render_objects(objects, 640, 480)
    assert text == (
        '[{"desc":"green line","line":[0,1000,1000,0]},'
        '{"desc":"red square","bbox_2d":[100,100,200,200]},'
        '{"desc":"blue triangle","poly":[500,500,1000,500,750,1000]}]'
    )


def test_order_is_by_top_left_then_desc_and_independent_of_input_order():
    a = SceneObject.from_flat("b thing", "bbox_2d", [50, 10, 60, 20])
    b = SceneObject.from_flat("a thing", "bbox_2d", [50, 10, 70, 30])  # same top-left: desc decides
    c = SceneObject.from_flat("z", "poly", [90, 5, 99, 9, 95, 30])  # highest top
    d = SceneObject.from_flat("y", "line", [5, 10, 1, 40])  # same y as a/b, leftmost (min x of the points)
    e = SceneObject.from_flat("x", "bbox_2d", [0, 80, 10, 90])
    expected = ["z", "y", "a thing", "b thing", "x"]
    for order in ([a, b, c, d, e], [e, d, c, b, a], [c, a, e, b, d]):
        assert [entry["desc"] for entry in render_entries(order, 100, 100)] == expected


def test_identical_descs_and_corners_still_order_deterministically():
    a = SceneObject.from_flat("dot", "bbox_2d", [0, 0, 5, 5])
    b = SceneObject.from_flat("dot", "bbox_2d", [0, 0, 9, 9])
    assert render_objects([a, b], 100, 100) == render_objects([b, a], 100, 100)


def test_unicode_descriptions_stay_readable():
    text = render_objects([SceneObject.from_flat("rote Böschung", "bbox_2d", [0, 0, 1, 1])], 10, 10)
    assert "Böschung" in text


def test_parse_round_trips():
    objects = [
        SceneObject.from_flat("red square", "bbox_2d", [1, 2, 30, 40]),
        SceneObject.from_flat("line", "line", [0, 0, 10, 10, 20, 0]),
    ]
    text = render_objects(objects, 100, 50)
    assert parse_rendered(text) == json.loads(text)
    assert parse_rendered(text)[0] == {"desc": "line", "line": [0, 0, 100, 200, 200, 0]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[{", "invalid JSON"),
        ('{"desc": "a"}', "expected a JSON list"),
        ('["a"]', "rendered objects[0]: expected an object"),
        ('[{"desc": "", "bbox_2d": [0, 0, 1, 1]}]', "rendered objects[0].desc"),
        ('[{"desc": "a"}]', "expected exactly one geometry"),
        ('[{"desc": "a", "bbox_2d": [0, 0, 1, 1], "line": [0, 0, 1, 1]}]', "expected exactly one geometry"),
        ('[{"desc": "a", "box": [0, 0, 1, 1]}]', "unknown key(s) ['box']"),
        ('[{"desc": "a", "bbox_2d": [0, 0, 1]}]', "bbox_2d: expected 4 numbers"),
        ('[{"desc": "a", "bbox_2d": [0, 0, 1, 1001]}]', "bbox_2d[3]: got 1001; expected an integer in [0, 1000]"),
        ('[{"desc": "a", "line": [0, 0.5, 1, 1]}]', "line[1]: got 0.5"),
        ('[{"desc": "a", "poly": [0, 0, 1, 1]}]', "poly: expected an even count of at least 6 numbers"),
        ('[{"desc": "a", "line": "0 0 1 1"}]', "expected a list of integers"),
    ],
)
def test_parse_rejects_malformed_text(text, message):
    with pytest.raises(ValueError) as info:
        parse_rendered(text)
    assert message in str(info.value)


_coord = st.floats(min_value=0, max_value=200, allow_nan=False)


@st.composite
def scene_objects(draw):
    kind = draw(st.sampled_from(["bbox_2d", "poly", "line"]))
    desc = draw(st.sampled_from(["red square", "blue triangle", "green line"]))
    if kind == "bbox_2d":
        x1, x2 = sorted(draw(st.lists(_coord, min_size=2, max_size=2, unique=True)))
        y1, y2 = sorted(draw(st.lists(_coord, min_size=2, max_size=2, unique=True)))
        return SceneObject.from_flat(desc, kind, [x1, y1, x2, y2])
    n = draw(st.integers(3 if kind == "poly" else 2, 6))
    return SceneObject.from_flat(desc, kind, draw(st.lists(_coord, min_size=2 * n, max_size=2 * n)))


@settings(max_examples=60, deadline=None)
@given(st.lists(scene_objects(), max_size=6), st.randoms(use_true_random=False))
def test_render_properties(objects, random):
    text = render_objects(objects, 200, 200)
    parsed = parse_rendered(text)  # always valid target text
    assert len(parsed) == len(objects)
    shuffled = list(objects)
    random.shuffle(shuffled)
    assert render_objects(shuffled, 200, 200) == text


def test_field_value_spans_cover_the_values_of_the_named_keys_only():
    objects = [
        SceneObject.from_flat('a "tall" 紫色 box', "bbox_2d", [10, 10, 40, 40]),
        SceneObject.from_flat("red line", "line", [50, 50, 90, 90]),
    ]
    text = render_objects(objects, 100, 100)
    spans = field_value_spans(text, ["desc"])
    assert [json.loads(f'"{text[lo:hi]}"') for lo, hi in spans] == ['a "tall" 紫色 box', "red line"]
    assert field_value_spans(text, ["label"]) == []
