"""The training target of a dense caption: its objects as compact JSON in norm1000.

``render_objects`` turns a record's objects (after augmentation, in the final
image's pixel frame) into the text the model learns to produce::

    [{"desc":"red square","bbox_2d":[89,179,446,536]},{"desc":"green line","line":[0,893,1000,848]}]

* Coordinates are ``norm1000``: ``round(v / width * 1000)`` for x and the same
  with ``height`` for y, rounded half up, clamped to ``[0, 1000]``. Qwen-VL's
  grounding format uses this frame, and it makes the text independent of the
  image resolution (which the processor may change anyway).
* Order is deterministic: by the top-left corner of each object's bounding box
  (y, then x, in pixels), then ``desc``, then the geometry itself. A fixed
  reading order means the model is never penalised for listing the same objects
  in another order; top-to-bottom, left-to-right is the order a reader uses.
* Compact separators (no spaces): the same JSON in fewer tokens.

``parse_rendered`` reads such text back (for tests and evaluation) and raises
``ValueError`` naming what is malformed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from .records import GEOMETRY_KINDS, MIN_POINTS, SceneObject

NORM = 1000


def norm1000(value: float, size: int) -> int:
    """``value`` (pixels along an axis of length ``size``) as an integer in ``[0, 1000]``.

    Half-up rounding (not Python's round-half-to-even) so that equal inputs
    never round differently depending on parity.
    """
    if size <= 0:
        raise ValueError(f"size: got {size}; expected a positive integer")
    scaled = math.floor(value / size * NORM + 0.5)
    return min(NORM, max(0, int(scaled)))


def _sort_key(obj: SceneObject) -> tuple:
    x1, y1, _, _ = obj.bounds()
    return (y1, x1, obj.desc, GEOMETRY_KINDS.index(obj.kind), tuple(obj.flat()))


def _normalised(obj: SceneObject, width: int, height: int) -> list[int]:
    if obj.kind == "bbox_2d":
        x1, y1, x2, y2 = obj.bounds()
        pairs = [(x1, y1), (x2, y2)]
    else:
        pairs = [(float(x), float(y)) for x, y in obj.points]
    out: list[int] = []
    for x, y in pairs:
        out.append(norm1000(x, width))
        out.append(norm1000(y, height))
    return out


def render_entries(objects: Sequence[SceneObject], width: int, height: int) -> list[dict[str, Any]]:
    """The sorted, normalised entries that :func:`render_objects` serialises."""
    return [{"desc": o.desc, o.kind: _normalised(o, width, height)} for o in sorted(objects, key=_sort_key)]


def render_objects(objects: Sequence[SceneObject], width: int, height: int) -> str:
    """The target text: a compact JSON list, one entry per object, coordinates in norm1000."""
    return json.dumps(render_entries(objects, width, height), ensure_ascii=False, separators=(",", ":"))


def field_value_spans(text: str, fields: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the string values under the keys ``fields`` in compact JSON text.

    The spans cover the values as written (escapes included), without their
    quotes: in ``{"desc":"red square",...}`` the span of ``desc`` is ``red square``.
    Keys are matched as :func:`render_objects` writes them (``"key":"``, no spaces).
    """
    keys = "|".join(re.escape(json.dumps(f, ensure_ascii=False)[1:-1]) for f in fields)
    pattern = re.compile(r'"(?:%s)":"((?:[^"\\]|\\.)*)"' % keys)
    return [match.span(1) for match in pattern.finditer(text)]


def parse_rendered(text: str) -> list[dict[str, Any]]:
    """Parse target text back into ``[{"desc": str, kind: [int, ...]}, ...]``.

    Raises ``ValueError`` if the text is not a JSON list of such entries with
    integer coordinates in ``[0, 1000]`` and the right point counts.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"rendered objects: invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, list):
        raise ValueError(f"rendered objects: expected a JSON list, got {type(value).__name__}")
    return [_check_entry(entry, i) for i, entry in enumerate(value)]


def _check_entry(entry: Any, i: int) -> dict[str, Any]:
    where = f"rendered objects[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - {"desc", *GEOMETRY_KINDS})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected 'desc' and one of {', '.join(GEOMETRY_KINDS)}")
    desc = entry.get("desc")
    if not isinstance(desc, str) or not desc.strip():
        raise ValueError(f"{where}.desc: expected a non-empty string, got {desc!r}")
    kinds = [k for k in GEOMETRY_KINDS if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"{where}: expected exactly one geometry of {', '.join(GEOMETRY_KINDS)}, got {kinds}")
    kind = kinds[0]
    coords = entry[kind]
    if not isinstance(coords, list):
        raise ValueError(f"{where}.{kind}: expected a list of integers, got {type(coords).__name__}")
    for j, v in enumerate(coords):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= NORM:
            raise ValueError(f"{where}.{kind}[{j}]: got {v!r}; expected an integer in [0, {NORM}]")
    if kind == "bbox_2d" and len(coords) != 4:
        raise ValueError(f"{where}.bbox_2d: expected 4 numbers, got {len(coords)}")
    if len(coords) % 2 or len(coords) < 2 * MIN_POINTS[kind]:
        raise ValueError(
            f"{where}.{kind}: expected an even count of at least {2 * MIN_POINTS[kind]} numbers, got {len(coords)}"
        )
    return {"desc": desc, kind: list(coords)}
