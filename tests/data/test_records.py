"""The record contract: every rule fails with file:line and a reason naming field, value and expectation."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hardmine.data.records import (
    ChatRecord,
    DenseCaptionRecord,
    RecordError,
    SceneObject,
    read_jsonl,
    record_to_json,
)

W, H = 64, 48


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (W, H), (10, 20, 30)).save(tmp_path / "img" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "small.png")
    return tmp_path


def dense(**changes) -> dict:
    record = {
        "images": ["img/a.png"],
        "width": W,
        "height": H,
        "objects": [
            {"desc": "red square", "bbox_2d": [4, 5, 20, 30]},
            {"desc": "blue triangle", "poly": [30, 10, 50, 10, 40, 40]},
            {"desc": "green line", "line": [0, 47, 64, 0]},
        ],
        "summary": "three shapes",
        "metadata": {"slice": "easy"},
    }
    record.update(changes)
    return record


def chat(**changes) -> dict:
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    record.update(changes)
    return record


def write(root: Path, lines: list) -> Path:
    path = root / "data.jsonl"
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, bytes):
                f.write(line + b"\n")
            elif isinstance(line, str):
                f.write(line.encode() + b"\n")
            else:
                f.write(json.dumps(line).encode() + b"\n")
    return path


def with_object(index: int, obj: dict) -> dict:
    record = dense()
    record["objects"][index] = obj
    return record


def error_of(root: Path, bad, line_no: int = 3) -> RecordError:
    """Write the bad record at ``line_no`` (after good lines and a blank one) and return the error."""
    lines = [dense(), ""][: line_no - 1] + [bad]
    path = write(root, lines)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    err = info.value
    assert str(err).startswith(f"{path}:{line_no}: "), str(err)
    assert err.line_no == line_no and err.path == str(path)
    return err


def test_valid_dense_record_parses(root):
    records, report = read_jsonl(write(root, [dense(), "", "   ", dense(summary=None, metadata={})]))
    assert report.kept == 2 and report.skipped == 0 and report.reasons == ()
    rec = records[0]
    assert isinstance(rec, DenseCaptionRecord)
    assert rec.image == (root / "img" / "a.png").absolute() and rec.image.is_absolute()
    assert (rec.width, rec.height, rec.summary, rec.metadata) == (W, H, "three shapes", {"slice": "easy"})
    kinds = [o.kind for o in rec.objects]
    assert kinds == ["bbox_2d", "poly", "line"]
    assert rec.objects[0].points.shape == (2, 2) and rec.objects[0].points.dtype == np.float64
    assert rec.objects[1].points.tolist() == [[30, 10], [50, 10], [40, 40]]
    assert rec.objects[2].flat() == [0, 47, 64, 0]
    assert records[1].summary is None


def test_valid_chat_record_parses(root):
    records, _ = read_jsonl(write(root, [chat(), chat(images=["img/a.png"])]))
    assert records[0] == ChatRecord(({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}), ())
    assert records[1].images == ((root / "img" / "a.png").absolute(),)
    copies = records[0].as_chat()
    assert copies == list(records[0].messages)
    copies[0]["content"] = "changed"
    assert records[0].messages[0]["content"] == "hi"


def test_the_example_message_from_the_contract(root):
    err = error_of(root, with_object(2, {"desc": "x", "bbox_2d": [40, 1, 12, 9]}))
    assert err.reason == "objects[2].bbox_2d: x1 (40) must be < x2 (12)"


BAD_DENSE = [
    ("invalid-json", '{"images": [', "invalid JSON"),
    ("nan", '{"objects": [], "width": NaN}', "NaN is not a JSON value"),
    ("not-object", "[1, 2]", "a record must be a JSON object, got array"),
    ("no-form", {"width": 3}, "needs 'objects' (dense caption) or 'messages' (chat)"),
    ("both-forms", dense(messages=[]), "not both"),
    ("unknown-key", dense(widht=3), "unknown key 'widht'; did you mean 'width'?"),
    ("missing-images", {k: v for k, v in dense().items() if k != "images"}, "missing required key 'images'"),
    ("missing-height", {k: v for k, v in dense().items() if k != "height"}, "missing required key 'height'"),
    ("images-not-list", dense(images="img/a.png"), 'images: expected a list of paths, got string "img/a.png"'),
    ("two-images", dense(images=["img/a.png", "img/a.png"]), "exactly 1 image, got 2"),
    ("zero-images", dense(images=[]), "exactly 1 image, got 0"),
    ("missing-file", dense(images=["img/nope.png"]), "images[0]: image file 'img/nope.png' not found"),
    ("image-path-type", dense(images=[3]), "images[0]: expected a non-empty path string, got 3"),
    ("width-zero", dense(width=0), "width: expected a positive integer, got integer 0"),
    ("width-float", dense(width=64.0), "width: expected a positive integer, got number 64.0"),
    ("height-str", dense(height="48"), 'height: expected a positive integer, got string "48"'),
    ("height-bool", dense(height=True), "height: expected a positive integer, got boolean true"),
    ("size-mismatch", dense(images=["img/small.png"]), "the record says 64x48 but image 'img/small.png' is 32x32"),
    ("objects-not-list", dense(objects={"desc": "a"}), "objects: expected a list, got object"),
    ("object-not-dict", dense(objects=["red"]), "objects[0]: expected a JSON object, got string"),
    (
        "desc-missing",
        with_object(1, {"poly": [0, 0, 1, 0, 1, 1]}),
        "objects[1].desc: expected a non-empty string, got missing",
    ),
    (
        "desc-empty",
        with_object(0, {"desc": "  ", "bbox_2d": [0, 0, 1, 1]}),
        "objects[0].desc: expected a non-empty string, got '  '",
    ),
    (
        "desc-type",
        with_object(0, {"desc": 5, "bbox_2d": [0, 0, 1, 1]}),
        "objects[0].desc: expected a non-empty string, got 5",
    ),
    (
        "no-geometry",
        with_object(2, {"desc": "a"}),
        "objects[2]: expected exactly one geometry of bbox_2d, poly, line; got none",
    ),
    (
        "two-geometries",
        with_object(0, {"desc": "a", "bbox_2d": [0, 0, 1, 1], "line": [0, 0, 1, 1]}),
        "objects[0]: expected exactly one geometry of bbox_2d, poly, line; got bbox_2d, line",
    ),
    (
        "object-typo",
        with_object(0, {"desc": "a", "bbox": [0, 0, 1, 1]}),
        "objects[0]: unknown key 'bbox'; did you mean 'bbox_2d'?",
    ),
    (
        "bbox-count",
        with_object(0, {"desc": "a", "bbox_2d": [0, 0, 1]}),
        "objects[0].bbox_2d: expected 4 numbers [x1, y1, x2, y2], got 3",
    ),
    (
        "bbox-x-order",
        with_object(1, {"desc": "a", "bbox_2d": [9, 0, 9, 5]}),
        "objects[1].bbox_2d: x1 (9) must be < x2 (9)",
    ),
    (
        "bbox-y-order",
        with_object(1, {"desc": "a", "bbox_2d": [0, 7.5, 9, 2]}),
        "objects[1].bbox_2d: y1 (7.5) must be < y2 (2)",
    ),
    (
        "bbox-type",
        with_object(0, {"desc": "a", "bbox_2d": [0, "1", 2, 3]}),
        'objects[0].bbox_2d[1]: expected a finite number, got string "1"',
    ),
    (
        "bbox-nested",
        with_object(0, {"desc": "a", "bbox_2d": [[0, 1], [2, 3]]}),
        "objects[0].bbox_2d[0]: expected a finite number, got array [0, 1]",
    ),
    (
        "bbox-not-list",
        with_object(0, {"desc": "a", "bbox_2d": "0,0,1,1"}),
        "objects[0].bbox_2d: expected a flat list of numbers",
    ),
    (
        "x-outside",
        with_object(0, {"desc": "a", "bbox_2d": [0, 0, 65, 5]}),
        "objects[0].bbox_2d[2]: x = 65 lies outside the image; expected 0 <= x <= 64 (width)",
    ),
    (
        "y-negative",
        with_object(2, {"desc": "a", "line": [0, -1, 5, 5]}),
        "objects[2].line[1]: y = -1 lies outside the image; expected 0 <= y <= 48 (height)",
    ),
    (
        "poly-odd",
        with_object(1, {"desc": "a", "poly": [0, 0, 1, 0, 1]}),
        "objects[1].poly: expected an even count of numbers (x, y pairs), got 5",
    ),
    (
        "poly-two-points",
        with_object(1, {"desc": "a", "poly": [0, 0, 1, 0]}),
        "objects[1].poly: expected at least 3 points (6 numbers), got 4 numbers",
    ),
    (
        "line-one-point",
        with_object(2, {"desc": "a", "line": [3, 3]}),
        "objects[2].line: expected at least 2 points (4 numbers), got 2 numbers",
    ),
    (
        "line-odd",
        with_object(2, {"desc": "a", "line": [3, 3, 4]}),
        "objects[2].line: expected an even count of numbers",
    ),
    ("summary-type", dense(summary=["x"]), "summary: expected a string, got array"),
    ("metadata-type", dense(metadata="easy"), "metadata: expected a JSON object, got string"),
]


@pytest.mark.parametrize("bad, expected", [case[1:] for case in BAD_DENSE], ids=[case[0] for case in BAD_DENSE])
def test_dense_record_rule_fails_with_file_line_and_reason(root, bad, expected):
    assert expected in error_of(root, bad).reason


BAD_CHAT = [
    ("empty", chat(messages=[]), "messages: expected a non-empty list, got array []"),
    ("not-list", chat(messages="hi"), 'messages: expected a non-empty list, got string "hi"'),
    ("message-type", chat(messages=["hi"]), "messages[0]: expected a JSON object, got string"),
    (
        "bad-role",
        chat(messages=[{"role": "bot", "content": "x"}]),
        "messages[0].role: got 'bot'; expected one of system, user, assistant",
    ),
    (
        "content-type",
        chat(messages=[{"role": "assistant", "content": None}]),
        "messages[0].content: expected a string, got null",
    ),
    (
        "message-key",
        chat(messages=[{"role": "assistant", "content": "x", "name": "a"}]),
        "messages[0]: unknown key 'name'",
    ),
    ("no-assistant", chat(messages=[{"role": "user", "content": "x"}]), "at least one 'assistant' turn"),
    ("extra-key", chat(width=3), "record: unknown key 'width'"),
    ("missing-image", chat(images=["img/none.png"]), "images[0]: image file 'img/none.png' not found"),
]


@pytest.mark.parametrize("bad, expected", [case[1:] for case in BAD_CHAT], ids=[case[0] for case in BAD_CHAT])
def test_chat_record_rule_fails_with_file_line_and_reason(root, bad, expected):
    assert expected in error_of(root, bad).reason


def test_line_numbers_count_blank_lines_and_the_first_bad_line_wins(root):
    err = error_of(root, dense(width=-1), line_no=2)
    assert "width" in err.reason
    path = write(root, ["", "", dense(), dense(height=0), dense(width=0)])
    with pytest.raises(RecordError, match=r"data\.jsonl:4: height"):
        read_jsonl(path)


def test_non_utf8_line_is_reported_with_its_line(root):
    path = write(root, [dense(), b"\xff\xfe{}"])
    with pytest.raises(RecordError, match=r":2: not UTF-8 text"):
        read_jsonl(path)


def test_record_error_is_a_value_error(root):
    with pytest.raises(ValueError):
        read_jsonl(write(root, ["{"]))


def test_skip_invalid_counts_lists_and_logs_every_skip(root, caplog):
    lines = [dense(), dense(width=0), "", chat(), "not json", dense(objects=[{"desc": "a"}]), dense()]
    path = write(root, lines)
    with caplog.at_level(logging.WARNING, logger="hardmine.data.records"):
        records, report = read_jsonl(path, skip_invalid=True)
    assert [type(r).__name__ for r in records] == ["DenseCaptionRecord", "ChatRecord", "DenseCaptionRecord"]
    assert (report.kept, report.skipped) == (3, 3)
    assert [line for line, _ in report.reasons] == [2, 5, 6]
    assert "width" in report.reasons[0][1] and "invalid JSON" in report.reasons[1][1]
    assert "objects[0]" in report.reasons[2][1]
    logged = caplog.text
    assert f"{path}:2" in logged and f"{path}:6" in logged and "skipped 3 invalid record(s), kept 3" in logged


def test_skip_invalid_on_a_clean_file_logs_nothing(root, caplog):
    with caplog.at_level(logging.WARNING, logger="hardmine.data.records"):
        _, report = read_jsonl(write(root, [dense()]), skip_invalid=True)
    assert report.skipped == 0 and caplog.text == ""


def test_image_size_check_can_be_turned_off(root):
    records, _ = read_jsonl(write(root, [dense(images=["img/small.png"])]), check_image_size=False)
    assert records[0].width == W


def test_absolute_image_paths_are_used_as_is(root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("other") / "b.png"
    Image.new("RGB", (W, H)).save(elsewhere)
    records, _ = read_jsonl(write(root, [dense(images=[str(elsewhere)])]))
    assert records[0].image == elsewhere


def test_empty_objects_list_is_a_valid_record(root):
    records, _ = read_jsonl(write(root, [dense(objects=[])]))
    assert records[0].objects == ()


def test_record_to_json_round_trips(root):
    records, _ = read_jsonl(write(root, [dense()]))
    again = root / "again.jsonl"
    again.write_text(json.dumps(record_to_json(records[0], root)) + "\n")
    assert read_jsonl(again)[0] == records
    assert record_to_json(records[0], root)["objects"] == dense()["objects"]


def test_scene_object_is_immutable_and_compares_by_value():
    raw = np.array([[1.0, 2.0], [3.0, 4.0]])
    obj = SceneObject("a", "bbox_2d", raw)
    raw[0, 0] = 99.0  # the object holds its own copy
    assert obj.points[0, 0] == 1.0
    with pytest.raises(ValueError):
        obj.points[0, 0] = 5.0
    assert obj == SceneObject.from_flat("a", "bbox_2d", [1, 2, 3, 4])
    assert obj != SceneObject.from_flat("a", "bbox_2d", [1, 2, 3, 5])
    assert hash(obj) == hash(copy.deepcopy(obj))
    assert obj.bounds() == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (("", "line", [[0, 0], [1, 1]]), "SceneObject.desc"),
        (("a", "circle", [[0, 0], [1, 1]]), "SceneObject.kind"),
        (("a", "poly", [[0, 0], [1, 1]]), "a poly needs at least 3 points"),
        (("a", "bbox_2d", [[0, 0], [1, 1], [2, 2]]), "a bbox_2d has 2 corners"),
        (("a", "line", [0, 0, 1, 1]), "expected (k, 2)"),
        (("a", "line", [[0, 0], [np.nan, 1]]), "finite"),
    ],
)
def test_scene_object_validates_itself(args, message):
    with pytest.raises(ValueError) as info:
        SceneObject(*args)
    assert message in str(info.value)
