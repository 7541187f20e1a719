"""The record contract: what one JSONL line may hold, validated up front.

Two record forms share one reader (:func:`read_jsonl`); a line's keys decide
which it is.

Dense caption (one image in, a described list of objects out)::

    {"images": ["img/0001.png"], "width": 640, "height": 480,
     "objects": [{"desc": "red square", "bbox_2d": [10, 20, 110, 120]},
                 {"desc": "blue triangle", "poly": [300, 40, 360, 140, 240, 140]},
                 {"desc": "green line", "line": [20, 400, 600, 380]}],
     "summary": "optional text", "metadata": {"any": "json object"}}

* ``images``: exactly one path, relative to the JSONL file's directory (an
  absolute path is used as is); the file must exist.
* ``width`` / ``height``: positive integers, the pixel frame of every
  coordinate. They must equal the image's own size (read from its header only)
  unless ``check_image_size=False``: a mismatch would put every box in the
  wrong place without any error later.
* ``objects``: each has a non-empty string ``desc`` and exactly one geometry:
  ``bbox_2d`` ``[x1, y1, x2, y2]`` with ``x1 < x2`` and ``y1 < y2``; ``poly``, a
  flat ``[x, y, ...]`` list of at least 3 points; ``line``, a flat list of at
  least 2 points. Coordinates are finite numbers inside ``[0, width] x [0, height]``.
  An empty ``objects`` list is a valid "nothing here" record.

Chat (text or generic vision-language SFT)::

    {"messages": [{"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}],
     "images": ["optional/relative/path.png"]}

* ``role`` is ``system``, ``user`` or ``assistant``; ``content`` a string; at
  least one assistant turn (there is nothing to supervise otherwise).

Unknown keys are errors at every level (with the closest known key suggested)
rather than being carried along unseen; extra per-record data belongs in
``metadata``. A bad line raises :class:`RecordError` ``"{path}:{line}: {reason}"``.
With ``skip_invalid=True`` bad lines are skipped, and every skip is counted,
listed in the :class:`ReadReport` and logged; nothing is dropped silently.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import numpy as np

from ..core.errors import UserInputError

logger = logging.getLogger(__name__)

GeometryKind = Literal["bbox_2d", "poly", "line"]

#: Geometry keys, in the order they are reported in messages.
GEOMETRY_KINDS: tuple[str, ...] = ("bbox_2d", "poly", "line")

#: Minimum number of points per geometry kind (a box is stored as 2 corners).
MIN_POINTS = {"bbox_2d": 2, "poly": 3, "line": 2}

ROLES = ("system", "user", "assistant")

_DENSE_KEYS = ("images", "width", "height", "objects", "summary", "metadata")
_CHAT_KEYS = ("messages", "images")
_OBJECT_KEYS = ("desc",) + GEOMETRY_KINDS
_MESSAGE_KEYS = ("role", "content")

#: How many skipped lines are logged one by one before only the total is logged.
_LOG_SKIPS = 20


class RecordError(UserInputError):
    """A JSONL line breaks the record contract; the message is ``path:line: reason``."""

    def __init__(self, path: Union[str, os.PathLike], line_no: int, reason: str):
        self.path = str(path)
        self.line_no = line_no
        self.reason = reason
        super().__init__(f"{self.path}:{line_no}: {reason}")


class _Invalid(ValueError):
    """Internal: a reason without its file and line (added by the reader)."""


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One described object: ``points`` is a read-only float64 ``(k, 2)`` array of (x, y).

    A ``bbox_2d`` is stored as its two corners ``[[x1, y1], [x2, y2]]``; ``poly``
    and ``line`` as their vertices in order.
    """

    desc: str
    kind: GeometryKind
    points: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.desc, str) or not self.desc.strip():
            raise ValueError(f"SceneObject.desc: got {self.desc!r}; expected a non-empty string")
        if self.kind not in GEOMETRY_KINDS:
            raise ValueError(f"SceneObject.kind: got {self.kind!r}; expected one of {', '.join(GEOMETRY_KINDS)}")
        points = np.array(self.points, dtype=np.float64)  # a copy: the caller's array stays theirs
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"SceneObject.points: got shape {points.shape}; expected (k, 2)")
        need = MIN_POINTS[self.kind]
        if self.kind == "bbox_2d" and len(points) != 2:
            raise ValueError(f"SceneObject.points: a bbox_2d has 2 corners, got {len(points)} points")
        if len(points) < need:
            raise ValueError(f"SceneObject.points: a {self.kind} needs at least {need} points, got {len(points)}")
        if not np.isfinite(points).all():
            raise ValueError("SceneObject.points: every coordinate must be finite")
        points.setflags(write=False)
        object.__setattr__(self, "points", points)

    @classmethod
    def from_flat(cls, desc: str, kind: GeometryKind, coords: Sequence[float]) -> "SceneObject":
        """Build from the flat JSON form (``[x1, y1, x2, y2, ...]``)."""
        return cls(desc, kind, np.asarray(coords, dtype=np.float64).reshape(-1, 2))

    def flat(self) -> list[float]:
        """The flat JSON form of the geometry (pixel coordinates)."""
        return [float(v) for v in self.points.reshape(-1)]

    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box ``(x1, y1, x2, y2)`` of the points."""
        lo = self.points.min(axis=0)
        hi = self.points.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SceneObject):
            return NotImplemented
        return (
            self.desc == other.desc
            and self.kind == other.kind
            and self.points.shape == other.points.shape
            and bool(np.array_equal(self.points, other.points))
        )

    def __hash__(self) -> int:
        return hash((self.desc, self.kind, self.points.tobytes()))

    def __repr__(self) -> str:
        return f"SceneObject(desc={self.desc!r}, kind={self.kind!r}, points={self.flat()})"


@dataclass(frozen=True)
class DenseCaptionRecord:
    """One image with its described objects. ``image`` is an absolute path."""

    image: Path
    width: int
    height: int
    objects: tuple[SceneObject, ...]
    summary: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatRecord:
    """A conversation; ``images`` are absolute paths (possibly none).

    Each message is a plain ``{"role": ..., "content": ...}`` dict, validated:
    the form chat templates and processors take as is.
    """

    messages: tuple[dict[str, str], ...]
    images: tuple[Path, ...] = ()

    def as_chat(self) -> list[dict[str, str]]:
        """Fresh copies of the messages (safe to modify, e.g. to add image parts)."""
        return [dict(m) for m in self.messages]


Record = Union[DenseCaptionRecord, ChatRecord]


@dataclass(frozen=True)
class ReadReport:
    """What :func:`read_jsonl` did with a file: kept and skipped lines, and why each was skipped."""

    path: str
    kept: int
    skipped: int
    reasons: tuple[tuple[int, str], ...] = ()
    #: The 1-based line of each kept record, aligned with the returned records
    #: (blank and skipped lines make it differ from the record index).
    lines: tuple[int, ...] = ()


# --------------------------------------------------------------------------- reading


def read_jsonl(
    path: Union[str, os.PathLike],
    *,
    skip_invalid: bool = False,
    check_image_size: bool = True,
    log_skips: bool = True,
) -> tuple[list[Record], ReadReport]:
    """Parse and validate every line of a JSONL file.

    Blank lines are ignored. A bad line raises :class:`RecordError` naming the
    file, the 1-based line number, the field, its value and what was expected.
    With ``skip_invalid=True`` bad lines are skipped instead; each one is listed
    in the returned :class:`ReadReport` and logged at WARNING.
    """
    path = Path(path)
    base_dir = path.parent.absolute()
    records: list[Record] = []
    lines: list[int] = []
    reasons: list[tuple[int, str]] = []
    # Bytes, decoded line by line: an encoding error then names its line instead of failing the file.
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
                if not text.strip():
                    continue
                records.append(parse_record(_load_json(text), base_dir, check_image_size=check_image_size))
                lines.append(line_no)
            except (_Invalid, UnicodeDecodeError) as exc:
                reason = f"not UTF-8 text ({exc.reason})" if isinstance(exc, UnicodeDecodeError) else str(exc)
                if not skip_invalid:
                    raise RecordError(path, line_no, reason) from None
                reasons.append((line_no, reason))
                if log_skips and len(reasons) <= _LOG_SKIPS:
                    logger.warning("skipping invalid record %s:%d: %s", path, line_no, reason)
    report = ReadReport(
        path=str(path), kept=len(records), skipped=len(reasons), reasons=tuple(reasons), lines=tuple(lines)
    )
    if reasons and log_skips:
        logger.warning("%s: skipped %d invalid record(s), kept %d", path, report.skipped, report.kept)
    return records, report


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Invalid(f"invalid JSON: {exc.msg} at column {exc.colno}") from None


def _reject_constant(name: str) -> Any:
    # json accepts NaN/Infinity by default; they are not JSON and never valid coordinates.
    raise _Invalid(f"invalid JSON: {name} is not a JSON value")


def parse_record(obj: Any, base_dir: Union[str, os.PathLike], *, check_image_size: bool = True) -> Record:
    """Validate one decoded JSON value; paths resolve against ``base_dir``.

    Raises ``ValueError`` with the reason (no file or line: :func:`read_jsonl` adds them).
    """
    if not isinstance(obj, dict):
        raise _Invalid(f"a record must be a JSON object, got {_json_type(obj)}")
    has_chat, has_dense = "messages" in obj, "objects" in obj
    if has_chat and has_dense:
        raise _Invalid("a record has either 'objects' (dense caption) or 'messages' (chat), not both")
    if has_chat:
        return _parse_chat(obj, Path(base_dir))
    if has_dense:
        return _parse_dense(obj, Path(base_dir), check_image_size)
    raise _Invalid(
        f"a record needs 'objects' (dense caption) or 'messages' (chat); got keys {sorted(obj)}"
    )


def _parse_dense(obj: dict, base_dir: Path, check_image_size: bool) -> DenseCaptionRecord:
    _check_keys(obj, _DENSE_KEYS, "record", hint=" (put extra fields in 'metadata')")
    for key in ("images", "width", "height"):
        if key not in obj:
            raise _Invalid(f"missing required key '{key}' in a dense-caption record")
    images = _image_paths(obj["images"], base_dir)
    if len(images) != 1:
        raise _Invalid(f"images: a dense-caption record has exactly 1 image, got {len(images)}")
    width = _positive_int(obj["width"], "width")
    height = _positive_int(obj["height"], "height")
    if check_image_size:
        _check_size(images[0], obj["images"][0], width, height)
    raw_objects = obj["objects"]
    if not isinstance(raw_objects, list):
        raise _Invalid(f"objects: expected a list, got {_json_type(raw_objects)}")
    objects = tuple(_parse_object(o, f"objects[{i}]", width, height) for i, o in enumerate(raw_objects))
    summary = obj.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise _Invalid(f"summary: expected a string, got {_json_type(summary)} {summary!r}")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _Invalid(f"metadata: expected a JSON object, got {_json_type(metadata)}")
    return DenseCaptionRecord(images[0], width, height, objects, summary, metadata)


def _parse_object(obj: Any, where: str, width: int, height: int) -> SceneObject:
    if not isinstance(obj, dict):
        raise _Invalid(f"{where}: expected a JSON object, got {_json_type(obj)}")
    _check_keys(obj, _OBJECT_KEYS, where)
    desc = obj.get("desc")
    if not isinstance(desc, str) or not desc.strip():
        shown = "missing" if "desc" not in obj else f"{desc!r}"
        raise _Invalid(f"{where}.desc: expected a non-empty string, got {shown}")
    kinds = [k for k in GEOMETRY_KINDS if k in obj]
    if len(kinds) != 1:
        got = ", ".join(kinds) if kinds else "none"
        raise _Invalid(f"{where}: expected exactly one geometry of {', '.join(GEOMETRY_KINDS)}; got {got}")
    kind = kinds[0]
    key = f"{where}.{kind}"
    coords = _coordinates(obj[kind], key)
    if kind == "bbox_2d":
        if len(coords) != 4:
            raise _Invalid(f"{key}: expected 4 numbers [x1, y1, x2, y2], got {len(coords)}")
        x1, y1, x2, y2 = coords
        if not x1 < x2:
            raise _Invalid(f"{key}: x1 ({_num(x1)}) must be < x2 ({_num(x2)})")
        if not y1 < y2:
            raise _Invalid(f"{key}: y1 ({_num(y1)}) must be < y2 ({_num(y2)})")
    else:
        need = MIN_POINTS[kind]
        if len(coords) % 2:
            raise _Invalid(f"{key}: expected an even count of numbers (x, y pairs), got {len(coords)}")
        if len(coords) < 2 * need:
            raise _Invalid(f"{key}: expected at least {need} points ({2 * need} numbers), got {len(coords)} numbers")
    for i, value in enumerate(coords):
        axis, limit = ("x", width) if i % 2 == 0 else ("y", height)
        if not 0 <= value <= limit:
            raise _Invalid(
                f"{key}[{i}]: {axis} = {_num(value)} lies outside the image; expected 0 <= {axis} <= {limit} "
                f"({'width' if axis == 'x' else 'height'})"
            )
    return SceneObject.from_flat(desc, kind, coords)


def _parse_chat(obj: dict, base_dir: Path) -> ChatRecord:
    _check_keys(obj, _CHAT_KEYS, "record", hint=" (a chat record has only 'messages' and 'images')")
    raw = obj["messages"]
    if not isinstance(raw, list) or not raw:
        raise _Invalid(f"messages: expected a non-empty list, got {_json_type(raw)} {_short(raw)}")
    messages = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _Invalid(f"{where}: expected a JSON object, got {_json_type(message)}")
        _check_keys(message, _MESSAGE_KEYS, where)
        role = message.get("role")
        if role not in ROLES:
            raise _Invalid(f"{where}.role: got {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise _Invalid(f"{where}.content: expected a string, got {_json_type(content)}")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise _Invalid("messages: expected at least one 'assistant' turn (nothing to supervise otherwise)")
    images = _image_paths(obj.get("images", []), base_dir)
    return ChatRecord(tuple(messages), tuple(images))


# --------------------------------------------------------------------------- field helpers


def _check_keys(obj: dict, allowed: Sequence[str], where: str, hint: str = "") -> None:
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f"; did you mean '{close[0]}'?" if close else ""
            raise _Invalid(f"{where}: unknown key '{key}'{suggestion} allowed: {', '.join(allowed)}{hint}")


def _image_paths(value: Any, base_dir: Path) -> list[Path]:
    if not isinstance(value, list):
        raise _Invalid(f"images: expected a list of paths, got {_json_type(value)} {_short(value)}")
    paths = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _Invalid(f"images[{i}]: expected a non-empty path string, got {_short(item)}")
        resolved = base_dir / item
        if not resolved.is_file():
            raise _Invalid(f"images[{i}]: image file {item!r} not found (looked for {resolved})")
        paths.append(resolved)
    return paths


def _check_size(image: Path, shown: str, width: int, height: int) -> None:
    from PIL import Image, UnidentifiedImageError  # PIL only where an image is actually opened

    try:
        with Image.open(image) as im:  # reads the header, not the pixels
            actual = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise _Invalid(f"images[0]: cannot read image {shown!r}: {exc}") from None
    if actual != (width, height):
        raise _Invalid(
            f"width/height: the record says {width}x{height} but image {shown!r} is {actual[0]}x{actual[1]}; "
            "coordinates must be in the image's own pixel frame"
        )


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Invalid(f"{key}: expected a positive integer, got {_json_type(value)} {_short(value)}")
    return value


def _coordinates(value: Any, key: str) -> list[float]:
    if not isinstance(value, list):
        raise _Invalid(f"{key}: expected a flat list of numbers, got {_json_type(value)} {_short(value)}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise _Invalid(f"{key}[{i}]: expected a finite number, got {_json_type(item)} {_short(item)}")
    return [float(v) for v in value]


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if _jsonable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _num(value: float) -> str:
    """A coordinate as the user wrote it: ``40`` rather than ``40.0``."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def objects_to_json(objects: Sequence[SceneObject]) -> list[dict[str, Any]]:
    """Objects in the record's JSON form (pixel coordinates), e.g. for writing a JSONL line."""
    return [{"desc": o.desc, o.kind: _json_coords(o)} for o in objects]


def _json_coords(obj: SceneObject) -> list[float | int]:
    if obj.kind == "bbox_2d":
        x1, y1, x2, y2 = obj.bounds()
        values = [x1, y1, x2, y2]
    else:
        values = obj.flat()
    return [int(v) if float(v).is_integer() else v for v in values]


def record_to_json(record: DenseCaptionRecord, base_dir: Union[str, os.PathLike]) -> dict[str, Any]:
    """The JSONL form of a dense-caption record, with its image path relative to ``base_dir``."""
    out: dict[str, Any] = {
        "images": [Path(os.path.relpath(record.image, Path(base_dir).absolute())).as_posix()],
        "width": record.width,
        "height": record.height,
        "objects": objects_to_json(record.objects),
    }
    if record.summary is not None:
        out["summary"] = record.summary
    if record.metadata:
        out["metadata"] = dict(record.metadata)
    return out

