"""Per-sample augmentation that moves boxes, polygons and lines with the image.

Library: kornia
---------------
The geometry runs through ``kornia.augmentation.AugmentationSequential`` with
``data_keys=["input", "keypoints"]``, so one transformation matrix per op moves
the pixels and the points together; the photometric ops are
``kornia.enhance`` functions. Why kornia:

* Apache-2.0, pure PyTorch (no compiled extension, nothing beyond the torch
  we already need), maintained, and it carries keypoints through a whole
  sequence of ops with each op's own pixel convention (flip, rotation about the
  centre, half-pixel crop and resize).
* albumentations' last MIT release is 2.0.8; the project continues under AGPL,
  which a library like this cannot depend on.
* torchvision's v2 transforms would do, but the only torchvision build matching
  the CPU torch here is a CUDA one, and installing it breaks ``transformers``'
  processor imports.

Every object travels as keypoints: a box as its 4 corners, a polygon and a line
as their vertices. One point set for all three kinds is one code path (kornia's
``bbox`` key would cover boxes only), and it gives the rotation rule for free:
after a rotation a box becomes the axis-aligned bounding box of its 4 rotated
corners. Points are shifted by -0.5 on the way in and +0.5 on the way out
because records use continuous pixel coordinates (a box edge lies on a pixel
border; ``x = width`` is the right edge) while kornia indexes pixel centres.

Randomness
----------
Only the ``numpy.random.Generator`` passed in: :func:`sample_params` draws
every op's decision and parameters from it (always the same number of draws, in
a fixed order, so enabling one op does not reshuffle another's values), and
those parameters are handed to kornia explicitly (``params=``), so kornia never
samples and torch's, numpy's and Python's global generators are never touched.
:func:`augmentation_rng` makes the per-sample generator from
``(seed, epoch, position)``, so a run (and a resumed run) is reproducible.

Ops, in the order applied
-------------------------
1. horizontal flip, 2. vertical flip, 3. rotation by an angle uniform in
   ``[-rotation_degrees, rotation_degrees]`` about the image centre, same
   image size, corners filled black (kornia's sign convention: positive is
   counter-clockwise on screen),
4. random crop covering a fraction of the area uniform in
   ``[crop_min_coverage, 1]``, with the image's aspect ratio, **resized back**
   to the original size: a zoom-in without distortion that keeps the frame,
   and so the vision model's token count, stable,
5. resize by a factor uniform in ``resize_scale`` (the image's size changes;
   :func:`augment` returns the new width and height),
6. colour jitter: brightness (additive, kornia's convention), contrast,
   saturation, 7. gamma (log-uniform in ``gamma_range``, so gamma and 1/gamma
   are equally likely).

Each op has its own probability. Photometric ops never move geometry: when no
geometric op fires, the objects are returned exactly as given.

Objects pushed out of the image
-------------------------------
After the geometric ops each object is clipped to the output frame
``[0, width] x [0, height]`` and kept only if enough of it is still visible
(``min_visible``, default 25%):

* box: the axis-aligned box of its transformed corners, clipped; dropped when
  the clipped area is below ``min_visible`` of the area before clipping, or zero.
* polygon: clipped to the frame as a polygon (Sutherland-Hodgman, so the
  visible part is exact rather than points squashed onto the border); dropped
  when its area falls below ``min_visible`` of the area before clipping, or
  fewer than 3 distinct points remain.
* line: each segment clipped to the frame (Liang-Barsky); the longest
  connected visible run is kept; dropped when fewer than 2 distinct points
  remain or its length falls below ``min_visible`` of the length before
  clipping (a 1-pixel stub of a long line is not a useful label).

Dropping is part of the op, not an error: an augmented sample may have fewer
objects than its record (or none), and the caption target is rendered from
what is returned.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..core.errors import SettingError, check_range
from .records import SceneObject

if TYPE_CHECKING:  # torch and kornia load on first use, so configs validate without them
    from PIL import Image

#: Where the augmentation settings live in a hardmine YAML config.
AUGMENTATION_KEY = "custom.augmentation"

_PROBS = ("hflip_prob", "vflip_prob", "rotation_prob", "crop_prob", "resize_prob", "color_jitter_prob", "gamma_prob")


@dataclass(frozen=True)
class AugmentationConfig:
    """Augmentation settings (``custom.augmentation`` in a config).

    Defaults are mild: a horizontal flip half of the time (set ``hflip_prob: 0``
    when descriptions say "left" or "right": a flip would make them false), no
    vertical flip (scenes usually have an up), small rotations, crops and
    rescales on some samples, and gentle photometric changes. Every probability
    is in ``[0, 1]``; setting one to 0 switches that op off.
    """

    #: Master switch; ``False`` returns every sample unchanged.
    enabled: bool = True
    #: Probability of a horizontal flip.
    hflip_prob: float = 0.5
    #: Probability of a vertical flip.
    vflip_prob: float = 0.0
    #: Probability of a rotation.
    rotation_prob: float = 0.2
    #: Largest rotation in degrees, either way; in [0, 180].
    rotation_degrees: float = 10.0
    #: Probability of a random crop (resized back to the original size).
    crop_prob: float = 0.3
    #: Smallest share of the image area a crop keeps; in (0, 1].
    crop_min_coverage: float = 0.6
    #: Probability of a resize by a factor drawn from ``resize_scale``.
    resize_prob: float = 0.2
    #: (low, high) resize factor; 0 < low <= high <= 4.
    resize_scale: tuple[float, float] = (0.75, 1.25)
    #: Probability of colour jitter (brightness, contrast, saturation together).
    color_jitter_prob: float = 0.5
    #: Brightness shift drawn from [-brightness, brightness] (added to [0, 1] intensities); in [0, 1].
    brightness: float = 0.2
    #: Contrast factor drawn from [1 - contrast, 1 + contrast]; in [0, 1].
    contrast: float = 0.2
    #: Saturation factor drawn from [1 - saturation, 1 + saturation]; in [0, 1].
    saturation: float = 0.2
    #: Probability of a gamma change.
    gamma_prob: float = 0.2
    #: (low, high) gamma, drawn log-uniformly; 0 < low <= high <= 5.
    gamma_range: tuple[float, float] = (0.8, 1.25)
    #: Share of an object (area; length for lines) that must stay visible after clipping; in [0, 1].
    min_visible: float = 0.25

    def __post_init__(self) -> None:
        key = AUGMENTATION_KEY
        if not isinstance(self.enabled, bool):
            raise SettingError(f"{key}.enabled", self.enabled, "true or false")
        for name in _PROBS:
            check_range(f"{key}.{name}", getattr(self, name), low=0.0, high=1.0)
        check_range(f"{key}.rotation_degrees", self.rotation_degrees, low=0.0, high=180.0)
        check_range(f"{key}.crop_min_coverage", self.crop_min_coverage, low=0.0, high=1.0, low_open=True)
        for name in ("brightness", "contrast", "saturation", "min_visible"):
            check_range(f"{key}.{name}", getattr(self, name), low=0.0, high=1.0)
        object.__setattr__(self, "resize_scale", _range_pair(f"{key}.resize_scale", self.resize_scale, 4.0))
        object.__setattr__(self, "gamma_range", _range_pair(f"{key}.gamma_range", self.gamma_range, 5.0))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], key: str = AUGMENTATION_KEY) -> "AugmentationConfig":
        """Build from a YAML mapping; an unknown key is an error naming the closest known one."""
        known = [f.name for f in fields(cls)]
        for name in values:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise SettingError(f"{key}.{name}", values[name], f"no such setting{hint} (known: {', '.join(known)})")
        return cls(**dict(values))


def _range_pair(key: str, value: Any, high: float) -> tuple[float, float]:
    expected = f"a [low, high] pair with 0 < low <= high <= {high}"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise SettingError(key, value, expected)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v <= high):
            raise SettingError(key, value, expected)
    if value[0] > value[1]:
        raise SettingError(key, value, expected)
    return (float(value[0]), float(value[1]))


def augmentation_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator for one sample: the same (seed, epoch, position) always gives the same draws."""
    return np.random.default_rng([seed, epoch, position])


@dataclass(frozen=True)
class AugmentParams:
    """The drawn parameters of one sample's augmentation (``None``/``False``: op not applied)."""

    hflip: bool = False
    vflip: bool = False
    #: Rotation angle in degrees.
    rotation: float | None = None
    #: Crop window ``(x0, y0, crop_width, crop_height)`` in pixels of the frame it is applied to.
    crop: tuple[int, int, int, int] | None = None
    #: Output size ``(width, height)`` of the resize.
    resize: tuple[int, int] | None = None
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    gamma: float | None = None

    @property
    def geometric(self) -> bool:
        return self.hflip or self.vflip or self.rotation is not None or self.crop is not None or self.resize is not None


def sample_params(config: AugmentationConfig, rng: np.random.Generator, width: int, height: int) -> AugmentParams:
    """Draw one sample's augmentation from ``rng`` (a fixed number of draws, in a fixed order)."""
    gates = rng.random(len(_PROBS))
    fire = {name: bool(g < getattr(config, name)) for name, g in zip(_PROBS, gates)}
    angle = float(rng.uniform(-config.rotation_degrees, config.rotation_degrees))
    coverage = float(rng.uniform(config.crop_min_coverage, 1.0))
    crop_at = rng.random(2)
    scale = float(rng.uniform(*config.resize_scale))
    brightness = float(rng.uniform(-config.brightness, config.brightness))
    contrast = float(rng.uniform(1.0 - config.contrast, 1.0 + config.contrast))
    saturation = float(rng.uniform(1.0 - config.saturation, 1.0 + config.saturation))
    low, high = config.gamma_range
    gamma = float(math.exp(rng.uniform(math.log(low), math.log(high))))

    crop = None
    if fire["crop_prob"]:
        # Same aspect ratio as the image: the crop is resized back without distortion.
        side = math.sqrt(coverage)
        cw = min(width, max(1, round(width * side)))
        ch = min(height, max(1, round(height * side)))
        x0 = min(width - cw, int(crop_at[0] * (width - cw + 1)))
        y0 = min(height - ch, int(crop_at[1] * (height - ch + 1)))
        crop = (x0, y0, cw, ch)
    resize = (max(1, round(width * scale)), max(1, round(height * scale))) if fire["resize_prob"] else None
    jitter = fire["color_jitter_prob"]
    return AugmentParams(
        hflip=fire["hflip_prob"],
        vflip=fire["vflip_prob"],
        rotation=angle if fire["rotation_prob"] else None,
        crop=crop,
        resize=resize,
        brightness=brightness if jitter else None,
        contrast=contrast if jitter else None,
        saturation=saturation if jitter else None,
        gamma=gamma if fire["gamma_prob"] else None,
    )


def augment(
    image: "Image.Image",
    objects: Sequence[SceneObject],
    config: AugmentationConfig,
    rng: np.random.Generator,
) -> tuple["Image.Image", tuple[SceneObject, ...], int, int]:
    """Augment one sample: ``(image, objects, width, height)`` after the ops ``rng`` draws.

    The image comes back as 3-channel uint8 RGB; objects are in its pixel frame,
    clipped or dropped by the rule in the module docstring.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if not config.enabled:
        return rgb, tuple(objects), rgb.width, rgb.height
    params = sample_params(config, rng, rgb.width, rgb.height)
    return apply_params(rgb, objects, params, min_visible=config.min_visible)


def apply_params(
    image: "Image.Image",
    objects: Sequence[SceneObject],
    params: AugmentParams,
    *,
    min_visible: float = 0.25,
) -> tuple["Image.Image", tuple[SceneObject, ...], int, int]:
    """Apply already drawn parameters (deterministic; :func:`augment` = sample + apply)."""
    import torch
    from PIL import Image

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    objects = tuple(objects)
    photometric = any(v is not None for v in (params.brightness, params.contrast, params.saturation, params.gamma))
    if not params.geometric and not photometric:
        return rgb, objects, rgb.width, rgb.height
    array = np.asarray(rgb, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
    if params.geometric:
        tensor, objects = _apply_geometry(tensor, objects, params, min_visible)
    if photometric:
        tensor = _apply_photometric(tensor, params)
    out = (tensor.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()
    height, width = out.shape[:2]
    return Image.fromarray(out), objects, width, height


# --------------------------------------------------------------------------- geometry through kornia


def _object_points(obj: SceneObject) -> np.ndarray:
    if obj.kind == "bbox_2d":
        x1, y1, x2, y2 = obj.bounds()
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)
    return obj.points


def _apply_geometry(tensor, objects, params: AugmentParams, min_visible: float):
    import torch
    import kornia.augmentation as K
    from kornia.augmentation.container.params import ParamItem

    _, _, h, w = tensor.shape
    modules, datas = [], []

    def shape_now():
        return torch.tensor([1, 3, h, w])

    if params.hflip:
        modules.append(K.RandomHorizontalFlip(p=1.0))
        datas.append({"batch_prob": torch.tensor([1.0]), "forward_input_shape": shape_now()})
    if params.vflip:
        modules.append(K.RandomVerticalFlip(p=1.0))
        datas.append({"batch_prob": torch.tensor([1.0]), "forward_input_shape": shape_now()})
    if params.rotation is not None:
        modules.append(K.RandomRotation(degrees=0.0, p=1.0))
        datas.append(
            {
                "degrees": torch.tensor([params.rotation], dtype=torch.float32),
                "batch_prob": torch.tensor([1.0]),
                "forward_input_shape": shape_now(),
            }
        )
    if params.crop is not None:
        x0, y0, cw, ch = params.crop
        if not (0 <= x0 and 0 <= y0 and 1 <= cw and 1 <= ch and x0 + cw <= w and y0 + ch <= h):
            raise ValueError(f"AugmentParams.crop: window {params.crop} does not fit a {w}x{h} image")
        # align_corners=False: the half-pixel convention maps the continuous window [x0, x0+cw] onto [0, w].
        modules.append(K.RandomResizedCrop((h, w), align_corners=False, p=1.0))
        datas.append(
            {
                "src": _corners(x0, y0, cw, ch),
                "dst": _corners(0, 0, w, h),
                "input_size": torch.tensor([[h, w]]),
                "output_size": torch.tensor([[h, w]]),
                "batch_prob": torch.tensor([1.0]),
                "forward_input_shape": shape_now(),
            }
        )
    if params.resize is not None:
        new_w, new_h = params.resize
        if new_w < 1 or new_h < 1:
            raise ValueError(f"AugmentParams.resize: got {params.resize}; expected a size of at least 1x1")
        modules.append(K.Resize((new_h, new_w), align_corners=False))
        datas.append(
            {
                "src": _corners(0, 0, w, h),
                "dst": _corners(0, 0, new_w, new_h),
                "input_size": torch.tensor([[h, w]]),
                "output_size": torch.tensor([[new_h, new_w]]),
                "batch_prob": torch.tensor([1.0]),
                "forward_input_shape": shape_now(),
            }
        )
        h, w = new_h, new_w

    point_sets = [_object_points(o) for o in objects]
    counts = [len(p) for p in point_sets]
    data_keys = ["input", "keypoints"] if point_sets else ["input"]
    sequence = K.AugmentationSequential(*modules, data_keys=data_keys)
    names = [name for name, _ in sequence.named_children()]
    replay = [ParamItem(name, data) for name, data in zip(names, datas)]
    if point_sets:
        # Continuous pixel coordinates -> kornia's pixel-centre indices, and back after.
        keypoints = torch.from_numpy(np.concatenate(point_sets) - 0.5).to(torch.float32).unsqueeze(0)
        out_image, out_points = sequence(tensor, keypoints, params=replay)
        # float32 matrices leave ~1e-6 px noise; 4 decimals keep written coordinates readable.
        moved = np.round(out_points[0].to(torch.float64).numpy() + 0.5, 4)
    else:
        out_image = sequence(tensor, params=replay)
        moved = np.zeros((0, 2))
    out_h, out_w = out_image.shape[-2:]
    kept = []
    start = 0
    for obj, count in zip(objects, counts):
        clipped = clip_object(obj.kind, moved[start : start + count], out_w, out_h, min_visible)
        start += count
        if clipped is not None:
            kept.append(SceneObject(obj.desc, obj.kind, clipped))
    return out_image, tuple(kept)


def _corners(x0: float, y0: float, width: float, height: float):
    """The 4 corner pixel centres (kornia's inclusive convention) of a ``width x height`` window."""
    import torch

    x1, y1 = x0 + width - 1, y0 + height - 1
    return torch.tensor([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], dtype=torch.float32)


def _apply_photometric(tensor, params: AugmentParams):
    from kornia import enhance

    if params.brightness is not None:
        tensor = enhance.adjust_brightness(tensor, float(params.brightness))
    if params.contrast is not None:
        tensor = enhance.adjust_contrast(tensor, float(params.contrast))
    if params.saturation is not None:
        tensor = enhance.adjust_saturation(tensor, float(params.saturation))
    if params.gamma is not None:
        tensor = enhance.adjust_gamma(tensor, float(params.gamma))
    return tensor


# --------------------------------------------------------------------------- clip and drop (pure numpy)


def clip_object(kind: str, points: np.ndarray, width: float, height: float, min_visible: float = 0.25):
    """Clip transformed points of one object to ``[0, width] x [0, height]``.

    ``points`` are a box's 4 transformed corners or a polygon's / line's
    vertices. Returns the kept geometry as a ``(k, 2)`` array (a box as its 2
    corners) or ``None`` when the object is dropped (module docstring).
    """
    points = np.asarray(points, dtype=np.float64)
    if kind == "bbox_2d":
        return _clip_box(points, width, height, min_visible)
    if kind == "poly":
        return _clip_polygon_object(points, width, height, min_visible)
    if kind == "line":
        return _clip_line_object(points, width, height, min_visible)
    raise ValueError(f"kind: got {kind!r}; expected bbox_2d, poly or line")


def _clip_box(corners, width, height, min_visible):
    x1, y1 = corners.min(axis=0)
    x2, y2 = corners.max(axis=0)
    before = (x2 - x1) * (y2 - y1)
    cx1, cx2 = np.clip([x1, x2], 0.0, width)
    cy1, cy2 = np.clip([y1, y2], 0.0, height)
    after = (cx2 - cx1) * (cy2 - cy1)
    if cx2 <= cx1 or cy2 <= cy1 or after < min_visible * before:
        return None
    return np.array([[cx1, cy1], [cx2, cy2]])


def polygon_area(points: np.ndarray) -> float:
    """Unsigned area of a simple polygon (shoelace formula)."""
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """The part of a polygon inside the frame (Sutherland-Hodgman against the 4 borders)."""
    # Each border: (axis, limit, keep_below). A point is inside when its coordinate is on the kept side.
    poly = [tuple(p) for p in np.asarray(points, dtype=np.float64)]
    for axis, limit, below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        if not poly:
            break
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cur_in = cur[axis] <= limit if below else cur[axis] >= limit
            prev_in = prev[axis] <= limit if below else prev[axis] >= limit
            if cur_in != prev_in:
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                crossing = [prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])]
                crossing[axis] = limit  # exactly on the border despite rounding
                out.append(tuple(crossing))
            if cur_in:
                out.append(cur)
        poly = out
    return _dedupe_consecutive(np.array(poly, dtype=np.float64).reshape(-1, 2), closed=True)


def _clip_polygon_object(points, width, height, min_visible):
    before = polygon_area(points)
    clipped = clip_polygon(points, width, height)
    if _distinct(clipped) < 3:
        return None
    if before > 0 and polygon_area(clipped) < min_visible * before:
        return None
    return clipped


def clip_polyline(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """The longest connected part of a polyline inside the frame (Liang-Barsky per segment)."""
    points = np.asarray(points, dtype=np.float64)
    runs: list[list[np.ndarray]] = []
    current: list[np.ndarray] = []
    for a, b in zip(points[:-1], points[1:]):
        seg = _clip_segment(a, b, width, height)
        if seg is None:
            if current:
                runs.append(current)
            current = []
            continue
        start, end, starts_at_a, _ = seg
        if current and starts_at_a:
            current.append(end)  # continues the previous visible stretch
        else:
            if current:
                runs.append(current)
            current = [start, end]
        if not np.array_equal(end, b):  # leaves the frame: the run ends here
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    if not runs:
        return np.zeros((0, 2))
    best = max(runs, key=lambda run: _length(np.array(run)))
    return _dedupe_consecutive(np.array(best, dtype=np.float64), closed=False)


def _clip_segment(a, b, width, height):
    """Liang-Barsky: the visible part of segment a->b, or None."""
    d = b - a
    t0, t1 = 0.0, 1.0
    for p, q in ((-d[0], a[0]), (d[0], width - a[0]), (-d[1], a[1]), (d[1], height - a[1])):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    if t0 > t1:
        return None
    start = a if t0 == 0.0 else np.clip(a + t0 * d, [0.0, 0.0], [width, height])
    end = b if t1 == 1.0 else np.clip(a + t1 * d, [0.0, 0.0], [width, height])
    return start, end, t0 == 0.0, t1 == 1.0


def _clip_line_object(points, width, height, min_visible):
    before = _length(points)
    clipped = clip_polyline(points, width, height)
    if _distinct(clipped) < 2:
        return None
    if before > 0 and _length(clipped) < min_visible * before:
        return None
    return clipped


def _length(points: np.ndarray) -> float:
    if len(points) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _distinct(points: np.ndarray) -> int:
    return 0 if len(points) == 0 else len(np.unique(np.round(points, 6), axis=0))


def _dedupe_consecutive(points: np.ndarray, *, closed: bool) -> np.ndarray:
    """Drop repeated consecutive points (and, for polygons, a last point equal to the first)."""
    if len(points) < 2:
        return points
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(np.abs(np.diff(points, axis=0)) > 1e-9, axis=1)
    points = points[keep]
    if closed and len(points) > 1 and np.all(np.abs(points[-1] - points[0]) <= 1e-9):
        points = points[:-1]
    return points
