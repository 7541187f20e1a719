"""A contact sheet of the hardest samples: image, ground truth drawn and named, loss.

The ground truth is read back from the record's own line of its JSONL file
(the dump names file and line), so the sheet shows exactly what training was
given: ``bbox_2d`` as rectangles, ``poly`` as closed outlines, ``line`` as
polylines, each labelled with its ``desc``. A missing image or source line is
drawn as a labelled placeholder and reported as a warning; the sheet is still
made. Returns PNG bytes and the warnings.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TILE = 256  # pixels of the image area of one tile
CAPTION = 48
PAD = 8
COLUMNS_MAX = 5
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0))


@dataclass
class SheetResult:
    png: bytes
    warnings: list[str] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


class _Lines:
    """Lines of JSONL files, read once each."""

    def __init__(self) -> None:
        self._files: dict[str, list[str] | None] = {}

    def get(self, source: str, line: int) -> str | None:
        if source not in self._files:
            try:
                self._files[source] = Path(source).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                self._files[source] = None
        lines = self._files[source]
        if lines is None or not 1 <= line <= len(lines):
            return None
        return lines[line - 1]


def ground_truth(row: dict[str, Any], lines: _Lines) -> tuple[list[dict], tuple[int, int] | None, str | None]:
    """(objects, (width, height), problem) of a dump row, read from its source line."""
    if not row.get("source") or not row.get("line"):
        return [], None, "the dump names no source line"
    text = lines.get(row["source"], int(row["line"]))
    if text is None:
        return [], None, f"{row['source']}:{row['line']} cannot be read"
    try:
        record = json.loads(text)
        objects = record.get("objects") or []
        size = (int(record["width"]), int(record["height"])) if "width" in record else None
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError, KeyError):
        return [], None, f"{row['source']}:{row['line']} is not a dense-caption record"
    return [o for o in objects if isinstance(o, dict)], size, None


def _points(obj: dict) -> tuple[str, list[tuple[float, float]]] | None:
    for kind in ("bbox_2d", "poly", "line"):
        coords = obj.get(kind)
        if isinstance(coords, list) and len(coords) >= 4 and all(isinstance(v, (int, float)) for v in coords):
            return kind, [(float(coords[i]), float(coords[i + 1])) for i in range(0, len(coords) - 1, 2)]
    return None


def _draw_objects(draw, objects: list[dict], scale: tuple[float, float], offset: tuple[int, int], font) -> None:
    sx, sy = scale
    ox, oy = offset
    for i, obj in enumerate(objects):
        shape = _points(obj)
        if shape is None:
            continue
        kind, pts = shape
        colour = PALETTE[i % len(PALETTE)]
        xy = [(ox + x * sx, oy + y * sy) for x, y in pts]
        # A dark line under the coloured one: visible on an object of the same colour.
        for ink, width in (((20, 20, 20), 4), (colour, 2)):
            if kind == "bbox_2d":
                draw.rectangle([xy[0], xy[1]], outline=ink, width=width)
            elif kind == "poly":
                draw.polygon(xy, outline=ink, width=width)
            else:
                draw.line(xy, fill=ink, width=width)
        label = str(obj.get("desc", ""))[:24]
        x, y = xy[0]
        box = draw.textbbox((x, y), label, font=font)
        # Above the first point, kept inside the tile.
        tx = min(max(ox, x), ox + TILE - (box[2] - box[0]) - 2)
        ty = max(oy, y - (box[3] - box[1]) - 3)
        box = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], fill=(255, 255, 255))
        draw.text((tx, ty), label, fill=colour, font=font)


def _placeholder(draw, origin: tuple[int, int], lines_of_text: list[str], font) -> None:
    x, y = origin
    draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], fill=(225, 225, 225), outline=(160, 0, 0), width=2)
    draw.line([(x, y), (x + TILE - 1, y + TILE - 1)], fill=(190, 190, 190), width=1)
    for i, text in enumerate(lines_of_text):
        draw.text((x + 8, y + TILE // 2 - 20 + 16 * i), text, fill=(160, 0, 0), font=font)


def _tile_caption(rank: int, row: dict[str, Any]) -> list[str]:
    loss = "-" if row.get("loss") is None else f"{row['loss']:.3f}"
    last = "" if row.get("last_loss") is None else f"  last {row['last_loss']:.3f}"
    where = f"{Path(row['source']).name}:{row['line']}" if row.get("source") else f"{row['dataset']}[{row['base_idx']}]"
    tail = f"  slice {row['slice']}" if row.get("slice") else ""
    return [f"#{rank}  loss {loss}{last}", f"{where}{tail}"]


def render_sheet(rows: list[dict[str, Any]], title: str) -> SheetResult:
    """A grid of the given dump rows (hardest first) as PNG bytes, with warnings."""
    from PIL import Image, ImageDraw, UnidentifiedImageError

    n = max(len(rows), 1)
    cols = min(COLUMNS_MAX, n)
    grid_rows = math.ceil(n / cols)
    header = 36
    width = PAD + cols * (TILE + PAD)
    height = header + grid_rows * (TILE + CAPTION + PAD) + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    big, small = _font(18), _font(12)
    draw.text((PAD, 8), title, fill=(0, 0, 0), font=big)
    result = SheetResult(png=b"")
    lines = _Lines()
    if not rows:
        draw.text((PAD, header + 10), "no hard samples in this epoch", fill=(120, 120, 120), font=big)
    for i, row in enumerate(rows):
        x = PAD + (i % cols) * (TILE + PAD)
        y = header + (i // cols) * (TILE + CAPTION + PAD)
        images = row.get("images") or []
        objects, size, problem = ground_truth(row, lines)
        if not images:
            _placeholder(draw, (x, y), ["no image", "(not a vision sample)"], small)
        else:
            path = Path(images[0])
            try:
                with Image.open(path) as im:
                    image = im.convert("RGB")
            except (OSError, UnidentifiedImageError) as e:
                missing = not path.exists()
                reason = "image not found" if missing else f"image unreadable ({type(e).__name__})"
                _placeholder(draw, (x, y), [reason, path.name[:34]], small)
                result.warnings.append(f"{path}: {reason}; drawn as a placeholder")
                result.missing_images.append(str(path))
            else:
                scale = TILE / max(image.size)
                shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
                sheet.paste(shown, (x, y))
                frame = size or image.size  # coordinates are in the record's pixel frame
                _draw_objects(draw, objects, (shown.width / frame[0], shown.height / frame[1]), (x, y), small)
                if problem:
                    result.warnings.append(f"sample {row['dataset']}[{row['base_idx']}]: {problem}; drawn without ground truth")
        for j, text in enumerate(_tile_caption(i + 1, row)):
            draw.text((x, y + TILE + 4 + 16 * j), text, fill=(0, 0, 0), font=small)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    result.png = buffer.getvalue()
    return result
