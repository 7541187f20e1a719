"""A procedural dense-caption corpus: the data of ``hardmine demo``, the tests and the benchmarks.

Each scene is a small square PNG with 1-4 flat-coloured objects, each described
by colour and shape: squares (``bbox_2d``), triangles and pentagons (``poly``)
and thick lines (``line``), e.g. ``"red square"``, ``"blue triangle"``,
``"green line"``. A tiny model learns this task in minutes on a CPU, so mining
has something real to act on.

Datasets written by :func:`make_dataset`:

* ``target``: light background, 4 common colours. About 15% of its samples
  (exactly ``round(0.15 * n)`` per split) form a **hard slice**: always 4
  objects, small, low contrast (colours blended towards the background) and
  half of them in rare colour words (purple, orange, cyan, pink) that the easy
  samples never use. Every record says which slice it is in
  (``metadata.slice``: ``"hard"`` or ``"easy"``) so benchmarks can score the
  hard slice apart. That is the ``standard`` preset (the demo's);
  ``target_preset="rare"`` (the quality benchmark's) draws one large
  object per scene, named in a common colour word in the easy slice and in a
  rare one in the hard slice; ``target_preset="crowded"`` draws one large
  object per scene too, and 2-3 smaller ones, common colours only, in the
  hard slice.
* ``shapes_a``: dark background, common colours plus white, larger objects.
* ``shapes_b``: vertical colour gradient behind the objects, the rare colours
  plus red and blue. Together the sources carry the rare words too, as real
  auxiliary data would.

Source records are all ``metadata.slice == "easy"``; ``metadata.style`` names
the dataset. Layout under ``out_dir``::

    fusion.yaml                  target + sources, paths relative to this file
    <name>/train.jsonl, <name>/val.jsonl
    <name>/images/train_00000.png, ..., val_00000.png, ...

Determinism: every sample is drawn from its own generator seeded by
``(seed, dataset key, split, index)`` and the hard slice from one seeded
permutation per split, so the same arguments give byte-identical JSONL and
PNGs. Coordinates are integers, so no float formatting differs between
machines.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from ..core.identity import dataset_key

TARGET_NAME = "target"
#: Source datasets and their fusion ratios (draws per epoch = ratio x target size).
SOURCE_RATIOS: dict[str, float] = {"shapes_a": 0.25, "shapes_b": 0.15}
#: Whether each source is augmented during training (one of each, so both paths run).
SOURCE_AUGMENTATION: dict[str, bool] = {"shapes_a": True, "shapes_b": False}
#: Share of the target's samples in the hard slice, per split.
HARD_SHARE = 0.15

RGB = tuple[int, int, int]

COMMON_COLOURS: dict[str, RGB] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 80, 220),
    "yellow": (235, 200, 30),
}
RARE_COLOURS: dict[str, RGB] = {
    "purple": (135, 60, 180),
    "orange": (240, 130, 20),
    "cyan": (30, 185, 200),
    "pink": (240, 110, 170),
}
_WHITE = {"white": (245, 245, 245)}

#: Shape words and their geometry kinds, with how often each is drawn.
SHAPES: tuple[tuple[str, str, float], ...] = (
    ("square", "bbox_2d", 0.35),
    ("triangle", "poly", 0.25),
    ("pentagon", "poly", 0.15),
    ("line", "line", 0.25),
)
_SPLIT_CODE = {"train": 0, "val": 1}
_STREAM_SAMPLE, _STREAM_HARD = 1, 2


@dataclass(frozen=True)
class Style:
    """How one dataset's scenes look. Sizes are fractions of the image side."""

    name: str
    palette: Mapping[str, RGB]
    background: str  # "light", "dark" or "gradient"
    objects: tuple[int, int]  # inclusive range of object counts
    size: tuple[float, float]
    contrast: float = 1.0  # 1: the palette colour; lower blends it towards the background
    rare_share: float = 0.0  # hard scenes only: the share of objects named in a rare colour word


TARGET_EASY = Style("target", COMMON_COLOURS, "light", (1, 3), (0.18, 0.34))
TARGET_HARD = Style(
    "target", {**COMMON_COLOURS, **RARE_COLOURS}, "light", (4, 4), (0.09, 0.15), contrast=0.5, rare_share=0.5
)
#: The target's (easy, hard) scene styles, by preset name. ``standard`` is the
#: demo's corpus. On the standard corpus the tiny model on a CPU budget names
#: objects at about chance; it learns to name one large object per scene.
#: ``rare`` is the quality benchmark's: one large object per scene, whose
#: colour word in the hard slice is one of the rare ones, which the easy scenes
#: never use, so the hard slice is learnt only from its own few samples and
#: showing them more often can teach it (measured: the benchmark's oracle arm).
#: ``crowded``: 2-3 smaller objects of the common colours in the hard slice,
#: which the model learns partly, but showing them more often does not help
#: within the budget.
TARGET_PRESETS: dict[str, tuple[Style, Style]] = {
    "standard": (TARGET_EASY, TARGET_HARD),
    "crowded": (
        Style("target", COMMON_COLOURS, "light", (1, 1), (0.45, 0.7)),
        Style("target", COMMON_COLOURS, "light", (2, 3), (0.26, 0.36)),
    ),
    "rare": (
        Style("target", COMMON_COLOURS, "light", (1, 1), (0.45, 0.7)),
        Style("target", {**COMMON_COLOURS, **RARE_COLOURS}, "light", (1, 1), (0.45, 0.7), rare_share=1.0),
    ),
}
SOURCE_STYLES: dict[str, Style] = {
    "shapes_a": Style("shapes_a", {**COMMON_COLOURS, **_WHITE}, "dark", (1, 4), (0.2, 0.36)),
    "shapes_b": Style(
        "shapes_b", {**RARE_COLOURS, "red": COMMON_COLOURS["red"], "blue": COMMON_COLOURS["blue"]}, "gradient",
        (1, 4), (0.15, 0.3),
    ),
}


# --------------------------------------------------------------------------- one scene


def draw_scene(style: Style, rng: np.random.Generator, size: int, *, hard: bool = False):
    """Draw one scene; returns ``(PIL image, list of object dicts in record form)``.

    ``hard`` (target only) names ``style.rare_share`` of the objects in rare colour words.
    """
    from PIL import Image, ImageDraw

    background = _background(style.background, rng, size)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    bg_mean = background.reshape(-1, 3).mean(axis=0)
    count = int(rng.integers(style.objects[0], style.objects[1] + 1))
    placed: list[tuple[int, int, int, int]] = []
    objects = []
    for _ in range(count):
        side = max(6, round(size * float(rng.uniform(*style.size))))
        spot = _free_spot(rng, size, side, placed)
        if spot is None:  # crowded: fewer objects rather than overlapping ones
            continue
        x, y = spot
        placed.append((x, y, x + side, y + side))
        shape, kind = _pick_shape(rng)
        colour_name, rgb = _pick_colour(style, rng, hard)
        fill = tuple(int(round(c * style.contrast + m * (1 - style.contrast))) for c, m in zip(rgb, bg_mean))
        objects.append({"desc": f"{colour_name} {shape}", kind: _draw_shape(draw, shape, x, y, side, fill, rng, size)})
    return image, objects


def _background(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    jitter = rng.integers(-12, 13, size=3)
    if kind == "light":
        colour = np.clip(np.array([228, 226, 220]) + jitter, 0, 255)
        return np.broadcast_to(colour.astype(np.uint8), (size, size, 3)).copy()
    if kind == "dark":
        colour = np.clip(np.array([32, 32, 44]) + jitter, 0, 255)
        return np.broadcast_to(colour.astype(np.uint8), (size, size, 3)).copy()
    if kind == "gradient":
        top = rng.integers(150, 230, size=3)
        bottom = rng.integers(60, 140, size=3)
        t = np.linspace(0.0, 1.0, size)[:, None]
        column = np.round(top[None, :] * (1 - t) + bottom[None, :] * t).astype(np.uint8)
        return np.broadcast_to(column[:, None, :], (size, size, 3)).copy()
    raise ValueError(f"style.background: got {kind!r}; expected light, dark or gradient")


def _free_spot(rng, size: int, side: int, placed, tries: int = 30):
    margin = 2
    high = size - side - margin
    if high < margin:
        return None
    for _ in range(tries):
        x, y = (int(v) for v in rng.integers(margin, high + 1, size=2))
        apart = (
            x + side + margin <= x1 or x >= x2 + margin or y + side + margin <= y1 or y >= y2 + margin
            for x1, y1, x2, y2 in placed
        )
        if all(apart):
            return x, y
    return None


def _pick_shape(rng) -> tuple[str, str]:
    weights = np.array([w for _, _, w in SHAPES])
    i = int(rng.choice(len(SHAPES), p=weights / weights.sum()))
    return SHAPES[i][0], SHAPES[i][1]


def _pick_colour(style: Style, rng, hard: bool) -> tuple[str, RGB]:
    # No draw for a style without rare words, so the standard corpus keeps its exact draws.
    if hard and style.rare_share > 0 and rng.random() < style.rare_share:
        names = sorted(RARE_COLOURS)
        name = names[int(rng.integers(len(names)))]
        return name, RARE_COLOURS[name]
    names = sorted(COMMON_COLOURS) if hard else sorted(style.palette)
    name = names[int(rng.integers(len(names)))]
    return name, style.palette[name]


def _draw_shape(draw, shape: str, x: int, y: int, side: int, fill, rng, size: int) -> list[int]:
    if shape == "square":
        # PIL's rectangle end is inclusive; the record's box edge is the pixel border after it.
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=fill)
        return [x, y, x + side, y + side]
    if shape in ("triangle", "pentagon"):
        n = 3 if shape == "triangle" else 5
        cx, cy, r = x + side / 2, y + side / 2, side / 2
        start = float(rng.uniform(0, 2 * math.pi))
        angles = [start + 2 * math.pi * k / n for k in range(n)]
        points = [(int(round(cx + r * math.cos(a))), int(round(cy + r * math.sin(a)))) for a in angles]
        draw.polygon(points, fill=fill)
        return [v for p in points for v in p]
    if shape == "line":
        angle = float(rng.uniform(0, math.pi))
        cx, cy, r = x + side / 2, y + side / 2, side / 2
        dx, dy = r * math.cos(angle), r * math.sin(angle)
        ends = [(int(round(cx - dx)), int(round(cy - dy))), (int(round(cx + dx)), int(round(cy + dy)))]
        draw.line(ends, fill=fill, width=max(3, size // 28))
        return [v for p in ends for v in p]
    raise ValueError(f"shape: got {shape!r}; expected square, triangle, pentagon or line")


# --------------------------------------------------------------------------- datasets


def write_split(
    out_dir: Union[str, os.PathLike],
    name: str,
    split: str,
    count: int,
    *,
    seed: int,
    image_size: int,
    target_preset: str = "standard",
) -> Path:
    """Write ``count`` scenes of dataset ``name`` as ``<out_dir>/<name>/<split>.jsonl`` plus PNGs."""
    easy_style, hard_style = _target_styles(target_preset)
    root = Path(out_dir) / name
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for stale in images.glob(f"{split}_[0-9]*.png"):  # only files this generator owns
        stale.unlink()
    key = dataset_key(name)
    code = _SPLIT_CODE[split]
    hard = np.zeros(count, dtype=bool)
    if name == TARGET_NAME:
        n_hard = round(HARD_SHARE * count)
        hard[np.random.default_rng([seed, key, code, _STREAM_HARD]).permutation(count)[:n_hard]] = True
    lines = []
    for idx in range(count):
        rng = np.random.default_rng([seed, key, code, _STREAM_SAMPLE, idx])
        style = (hard_style if hard[idx] else easy_style) if name == TARGET_NAME else SOURCE_STYLES[name]
        image, objects = draw_scene(style, rng, image_size, hard=bool(hard[idx]))
        file_name = f"{split}_{idx:05d}.png"
        image.save(images / file_name, format="PNG", compress_level=1)
        record = {
            "images": [f"images/{file_name}"],
            "width": image_size,
            "height": image_size,
            "objects": objects,
            "metadata": {"slice": "hard" if hard[idx] else "easy", "style": name},
        }
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    path = root / f"{split}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def make_dataset(
    out_dir: Union[str, os.PathLike],
    *,
    seed: int,
    target_size: int,
    source_sizes: Mapping[str, int],
    val_size: int,
    image_size: int = 112,
    target_preset: str = "standard",
) -> Path:
    """Write the target and the requested sources under ``out_dir``; returns the fusion YAML's path.

    ``source_sizes`` maps source names (``shapes_a``, ``shapes_b``) to their
    train sizes; each source also gets a small val split of
    ``max(1, val_size // 4)`` scenes (at most its train size).
    ``target_preset`` names the target's scene styles (``TARGET_PRESETS``).
    """
    import yaml

    _check_count("seed", seed, low=0)
    _check_count("target_size", target_size, low=1)
    _check_count("val_size", val_size, low=1)
    _check_count("image_size", image_size, low=32, high=2048)
    _target_styles(target_preset)
    for name, size in source_sizes.items():
        if name not in SOURCE_STYLES:
            raise ValueError(f"source_sizes: unknown source {name!r}; expected some of {', '.join(SOURCE_STYLES)}")
        _check_count(f"source_sizes.{name}", size, low=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = {
        "name": TARGET_NAME,
        **{
            f"{split}_jsonl": _rel(
                write_split(out, TARGET_NAME, split, size, seed=seed, image_size=image_size, target_preset=target_preset), out
            )
            for split, size in (("train", target_size), ("val", val_size))
        },
    }
    sources = []
    for name in SOURCE_STYLES:  # fixed order, whatever the mapping's order
        if name not in source_sizes:
            continue
        size = source_sizes[name]
        source_val = min(size, max(1, val_size // 4))
        sources.append(
            {
                "name": name,
                "train_jsonl": _rel(write_split(out, name, "train", size, seed=seed, image_size=image_size), out),
                "val_jsonl": _rel(write_split(out, name, "val", source_val, seed=seed, image_size=image_size), out),
                "ratio": SOURCE_RATIOS[name],
                "augmentation": SOURCE_AUGMENTATION[name],
            }
        )
    fusion = out / "fusion.yaml"
    header = f"# Synthetic dense-caption corpus written by hardmine.data.synth (seed {seed}).\n"
    body = yaml.safe_dump({"target": target, "sources": sources}, sort_keys=False)
    fusion.write_text(header + body, encoding="utf-8")
    return fusion


def _target_styles(preset: str) -> tuple[Style, Style]:
    if preset not in TARGET_PRESETS:
        raise ValueError(f"target_preset: got {preset!r}; expected one of {', '.join(TARGET_PRESETS)}")
    return TARGET_PRESETS[preset]


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _check_count(key: str, value, *, low: int, high: int | None = None) -> None:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{key}: got {value!r}; expected an integer {bound}")
