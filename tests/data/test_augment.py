"""Augmentation: geometry lands on the same pixels as the drawing, for every op; randomness is explicit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from hardmine.core.errors import SettingError
from hardmine.data.augment import (
    AugmentationConfig,
    AugmentParams,
    apply_params,
    augment,
    augmentation_rng,
    clip_object,
    clip_polygon,
    clip_polyline,
    polygon_area,
    sample_params,
)
from hardmine.data.records import SceneObject

W, H = 160, 120
BACKGROUND = (90, 90, 90)
BOX_RGB, POLY_RGB, LINE_RGB = (255, 0, 255), (0, 220, 255), (255, 230, 0)
LINE_WIDTH = 5
# Every colour that can appear: the drawing, the background, and the black fill that rotation brings in.
PALETTE = np.array([BOX_RGB, POLY_RGB, LINE_RGB, BACKGROUND, (0, 0, 0)], dtype=np.float64)

OFF = dict(
    hflip_prob=0.0,
    vflip_prob=0.0,
    rotation_prob=0.0,
    crop_prob=0.0,
    resize_prob=0.0,
    color_jitter_prob=0.0,
    gamma_prob=0.0,
)


def only(**settings) -> AugmentationConfig:
    return AugmentationConfig(**{**OFF, **settings})


GEOMETRIC_OPS = {
    "hflip": only(hflip_prob=1.0),
    "vflip": only(vflip_prob=1.0),
    "rotation": only(rotation_prob=1.0, rotation_degrees=35.0),
    "crop": only(crop_prob=1.0, crop_min_coverage=0.5),
    "resize-down": only(resize_prob=1.0, resize_scale=(0.5, 0.8)),
    "resize-up": only(resize_prob=1.0, resize_scale=(1.2, 1.6)),
    "all-geometric": only(hflip_prob=1.0, vflip_prob=1.0, rotation_prob=1.0, crop_prob=1.0, resize_prob=1.0),
}


def scene() -> tuple[Image.Image, list[SceneObject]]:
    """A filled box, a filled pentagon and a thick line, each in its own colour."""
    image = Image.new("RGB", (W, H), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 20, 59, 49], fill=BOX_RGB)  # PIL's end is inclusive: the box is [20, 20, 60, 50]
    pentagon = [(110, 15), (135, 33), (126, 60), (94, 60), (85, 33)]
    draw.polygon(pentagon, fill=POLY_RGB)
    line = [(30, 95), (120, 80)]
    draw.line(line, fill=LINE_RGB, width=LINE_WIDTH)
    objects = [
        SceneObject.from_flat("magenta box", "bbox_2d", [20, 20, 60, 50]),
        # PIL fills a polygon's border pixels too: half a pixel beyond the continuous outline.
        SceneObject("cyan pentagon", "poly", np.array(pentagon, dtype=float) + 0.5),
        SceneObject("yellow line", "line", np.array(line, dtype=float) + 0.5),
    ]
    return image, objects


def colour_mask(image: Image.Image, rgb) -> np.ndarray:
    """Pixels whose nearest palette colour is ``rgb`` (an interpolated edge counts when at least half covered)."""
    pixels = np.asarray(image, dtype=np.float64)
    distance = ((pixels[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1)
    index = [tuple(c) for c in PALETTE.astype(int).tolist()].index(tuple(rgb))
    return distance.argmin(-1) == index


def pixel_centres(width: int, height: int):
    ys, xs = np.mgrid[0:height, 0:width]
    return xs + 0.5, ys + 0.5


def raster_box(obj: SceneObject, width: int, height: int) -> np.ndarray:
    x1, y1, x2, y2 = obj.bounds()
    xs, ys = pixel_centres(width, height)
    return (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)


def raster_polygon(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Even-odd rule at pixel centres."""
    xs, ys = pixel_centres(width, height)
    inside = np.zeros(xs.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(points, np.roll(points, -1, axis=0)):
        crosses = (ya > ys) != (yb > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = xa + (ys - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (xs < x_at)
    return inside


def bbox_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def distance_to_polyline(px: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of each (x, y) row of ``px`` to the polyline."""
    best = np.full(len(px), np.inf)
    for a, b in zip(points[:-1], points[1:]):
        d = b - a
        t = np.clip(((px - a) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(px - (a + t[:, None] * d), axis=1))
    return best


def check_geometry_matches_pixels(image: Image.Image, objects, width: int, height: int, scale: float) -> set[str]:
    """Assert every returned object sits on its colour; returns the descs that were kept."""
    assert image.size == (width, height)
    kept = set()
    for obj in objects:
        kept.add(obj.desc)
        if obj.kind == "bbox_2d":
            mask = colour_mask(image, BOX_RGB)
            # A box stays axis-aligned: after a rotation it is the bounding box of the rotated drawing.
            assert iou(raster_box(obj, width, height), bbox_of(mask)) >= 0.8, obj
        elif obj.kind == "poly":
            mask = colour_mask(image, POLY_RGB)
            assert iou(raster_polygon(obj.points, width, height), mask) >= 0.8, obj
        else:
            mask = colour_mask(image, LINE_RGB)
            ys, xs = np.nonzero(mask)
            coloured = np.stack([xs + 0.5, ys + 0.5], axis=1)
            # The endpoints (and the points between them) lie on coloured pixels ...
            steps = np.linspace(0, 1, 20)[:, None]
            samples = np.concatenate([a + steps * (b - a) for a, b in zip(obj.points[:-1], obj.points[1:])])
            nearest = np.min(np.linalg.norm(samples[:, None, :] - coloured[None], axis=2), axis=1)
            assert nearest.max() <= 2.5, (obj, nearest.max())
            # ... and the coloured pixels lie along the line (none of it was lost from the geometry).
            reach = LINE_WIDTH / 2 * max(1.0, scale) + 2.0
            assert np.mean(distance_to_polyline(coloured, obj.points) <= reach) >= 0.97, obj
    return kept


@pytest.mark.parametrize("op", list(GEOMETRIC_OPS), ids=list(GEOMETRIC_OPS))
def test_each_geometric_op_moves_geometry_with_the_pixels(op):
    config = GEOMETRIC_OPS[op]
    image, objects = scene()
    kept_any = set()
    for position in range(4):
        rng = augmentation_rng(7, 0, position)
        params = sample_params(config, augmentation_rng(7, 0, position), W, H)
        out, moved, width, height = augment(image, objects, config, rng)
        scale = width / W
        assert out.mode == "RGB" and np.asarray(out).dtype == np.uint8
        kept_any |= check_geometry_matches_pixels(out, moved, width, height, scale)
        assert params.geometric
    assert len(kept_any) == 3  # every kind was checked at least once


def test_hflip_moves_a_box_exactly():
    image, objects = scene()
    _, moved, width, height = apply_params(image, objects, AugmentParams(hflip=True))
    assert (width, height) == (W, H)
    assert moved[0].bounds() == (W - 60.0, 20.0, W - 20.0, 50.0)


def test_vflip_moves_a_line_exactly():
    image, objects = scene()
    _, moved, _, _ = apply_params(image, objects, AugmentParams(vflip=True))
    assert moved[2].points.tolist() == [[30.5, H - 95.5], [120.5, H - 80.5]]


def test_rotation_turns_a_box_into_the_bounding_box_of_its_rotated_corners():
    image = Image.new("RGB", (100, 100), BACKGROUND)
    box = SceneObject.from_flat("square", "bbox_2d", [40, 40, 60, 60])  # centred: rotates in place
    _, moved, _, _ = apply_params(image, [box], AugmentParams(rotation=45.0))
    half = 10 * np.sqrt(2)
    np.testing.assert_allclose(moved[0].bounds(), (50 - half, 50 - half, 50 + half, 50 + half), atol=1e-3)


def test_crop_is_resized_back_to_the_original_frame():
    image, objects = scene()
    out, moved, width, height = apply_params(image, objects, AugmentParams(crop=(0, 0, W // 2, H // 2)))
    assert (width, height) == (W, H) == out.size
    # The crop [0, 80] x [0, 60] is scaled by 2: the box [20, 20, 60, 50] becomes [40, 40, 120, 100].
    np.testing.assert_allclose(moved[0].bounds(), (40, 40, 120, 100), atol=1e-3)
    # The pentagon (mostly right of x = 80) keeps under 25% of its area and is dropped; so is the line.
    assert [o.desc for o in moved] == ["magenta box"]


def test_resize_scales_coordinates_and_reports_the_new_size():
    image, objects = scene()
    out, moved, width, height = apply_params(image, objects, AugmentParams(resize=(80, 60)))
    assert out.size == (width, height) == (80, 60)
    np.testing.assert_allclose(moved[0].bounds(), (10, 10, 30, 25), atol=1e-3)


@pytest.mark.parametrize(
    "config",
    [
        only(color_jitter_prob=1.0, brightness=0.4, contrast=0.5, saturation=0.8),
        only(gamma_prob=1.0, gamma_range=(0.4, 0.5)),
        only(color_jitter_prob=1.0, gamma_prob=1.0, gamma_range=(2.0, 3.0)),
    ],
    ids=["color-jitter", "gamma", "both"],
)
def test_photometric_ops_change_pixels_but_not_geometry(config):
    image, objects = scene()
    out, moved, width, height = augment(image, objects, config, augmentation_rng(1, 2, 3))
    assert moved == tuple(objects)
    assert (width, height) == (W, H) and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(image))


ALL_ON = only(
    hflip_prob=0.5,
    vflip_prob=0.5,
    rotation_prob=1.0,
    crop_prob=1.0,
    resize_prob=1.0,
    color_jitter_prob=1.0,
    gamma_prob=1.0,
)


def test_same_seed_gives_identical_output_and_another_epoch_or_position_differs():
    image, objects = scene()

    def run(seed, epoch, position):
        out, moved, width, height = augment(image, objects, ALL_ON, augmentation_rng(seed, epoch, position))
        return np.asarray(out).tobytes(), moved, width, height

    first = run(3, 1, 5)
    assert run(3, 1, 5) == first  # byte-identical image, equal objects and size
    for other in (run(3, 2, 5), run(3, 1, 6), run(4, 1, 5)):
        assert other[0] != first[0] and other[1] != first[1]


def test_augmentation_rng_is_default_rng_of_seed_epoch_position():
    assert augmentation_rng(1, 2, 3).random() == np.random.default_rng([1, 2, 3]).random()


def test_no_global_random_state_is_touched():
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    python_state = random.getstate()
    image, objects = scene()
    for position in range(3):
        augment(image, objects, ALL_ON, augmentation_rng(0, 0, position))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert random.getstate() == python_state


def test_enabling_one_op_does_not_reshuffle_another():
    base = only(rotation_prob=1.0)
    more = only(rotation_prob=1.0, hflip_prob=1.0)
    assert sample_params(base, augmentation_rng(0, 0, 0), W, H).rotation == sample_params(
        more, augmentation_rng(0, 0, 0), W, H
    ).rotation


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_output_is_always_three_channel_uint8(mode):
    image, objects = scene()
    config = only(hflip_prob=1.0, gamma_prob=1.0)
    out, _, _, _ = augment(image.convert(mode), objects, config, augmentation_rng(0, 0, 0))
    array = np.asarray(out)
    assert out.mode == "RGB" and array.dtype == np.uint8 and array.shape == (H, W, 3)


def test_disabled_config_returns_the_sample_unchanged():
    image, objects = scene()
    out, moved, width, height = augment(image, objects, AugmentationConfig(enabled=False), augmentation_rng(0, 0, 0))
    assert np.array_equal(np.asarray(out), np.asarray(image)) and moved == tuple(objects) and (width, height) == (W, H)


def test_a_sample_without_objects_is_augmented():
    image, _ = scene()
    out, moved, width, height = apply_params(image, [], AugmentParams(rotation=10.0, resize=(50, 40)))
    assert moved == () and out.size == (width, height) == (50, 40)


def test_a_crop_window_that_does_not_fit_is_an_error():
    image, objects = scene()
    with pytest.raises(ValueError, match="does not fit a 160x120 image"):
        apply_params(image, objects, AugmentParams(crop=(100, 0, 80, 60)))


# --------------------------------------------------------------------------- clip and drop rule


def box_corners(x1, y1, x2, y2):
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=float)


def test_box_partly_outside_is_clipped():
    np.testing.assert_array_equal(clip_object("bbox_2d", box_corners(-10, 0, 30, 20), 100, 100), [[0, 0], [30, 20]])


@pytest.mark.parametrize(
    "box, kept",
    [
        ((-30, 0, 10, 10), True),  # exactly 25% visible: kept
        ((-31, 0, 10, 10), False),  # just under 25%: dropped
        ((-40, 0, 10, 20), False),  # 20% visible
        ((100, 10, 120, 20), False),  # touches the border only: degenerate
        ((-50, -50, -10, -10), False),  # fully outside
        ((10, 10, 20, 20), True),
    ],
)
def test_box_drop_rule(box, kept):
    assert (clip_object("bbox_2d", box_corners(*box), 100, 100) is not None) == kept


def test_min_visible_is_configurable():
    corners = box_corners(-30, 0, 10, 10)
    assert clip_object("bbox_2d", corners, 100, 100, min_visible=0.3) is None
    assert clip_object("bbox_2d", box_corners(-90, 0, 10, 10), 100, 100, min_visible=0.0) is not None


def test_polygon_is_clipped_to_its_visible_part():
    triangle = np.array([[-20.0, 0.0], [20.0, 0.0], [0.0, 40.0]])
    clipped = clip_object("poly", triangle, 100, 100)
    assert clipped is not None and (clipped[:, 0] >= 0).all()
    assert polygon_area(clipped) == pytest.approx(polygon_area(triangle) / 2)
    # The visible part, not points squashed onto the border: the cut runs along x = 0 from (0, 0) to (0, 40).
    assert {tuple(p) for p in clipped.tolist()} == {(0.0, 0.0), (20.0, 0.0), (0.0, 40.0)}


def test_polygon_around_a_corner_gains_the_corner_vertex():
    diamond = np.array([[0.0, -10.0], [10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]])
    clipped = clip_polygon(diamond, 100, 100)
    assert {tuple(p) for p in clipped.tolist()} == {(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)}


@pytest.mark.parametrize(
    "points, kept",
    [
        ([[-30.0, 0.0], [10.0, 0.0], [10.0, 10.0], [-30.0, 10.0]], True),  # 25% visible
        ([[-40.0, 0.0], [10.0, 0.0], [10.0, 10.0], [-40.0, 10.0]], False),  # 20% visible
        ([[-40.0, 0.0], [-10.0, 0.0], [-20.0, 10.0]], False),  # fully outside
        ([[-30.0, 0.0], [-10.0, 0.0], [10.0, 0.0]], False),  # zero area and 1 distinct point left: dropped
        # Zero area from the start (the record contract allows it): nothing to measure, kept while 3 points remain.
        ([[0.0, 0.0], [0.0, 50.0], [0.0, 90.0]], True),
    ],
)
def test_polygon_drop_rule(points, kept):
    assert (clip_object("poly", np.array(points), 100, 100) is not None) == kept


def test_line_is_cut_where_it_leaves_the_image():
    clipped = clip_object("line", np.array([[50.0, 50.0], [150.0, 100.0]]), 100, 100)
    np.testing.assert_allclose(clipped, [[50, 50], [100, 75]])


@pytest.mark.parametrize(
    "points, kept",
    [
        ([[90.0, 50.0], [130.0, 50.0]], True),  # 25% of its length visible
        ([[95.0, 50.0], [130.0, 50.0]], False),  # a 5-pixel stub of 35
        ([[110.0, 50.0], [130.0, 50.0]], False),  # fully outside
        ([[100.0, 50.0], [130.0, 50.0]], False),  # a single point on the border
        ([[10.0, 10.0], [10.0, 10.0]], False),  # one distinct point
    ],
)
def test_line_drop_rule(points, kept):
    assert (clip_object("line", np.array(points), 100, 100) is not None) == kept


def test_a_polyline_that_leaves_and_returns_keeps_its_longest_visible_run():
    points = np.array([[10.0, 50.0], [20.0, 50.0], [20.0, 150.0], [40.0, 150.0], [40.0, 10.0], [90.0, 10.0]])
    clipped = clip_polyline(points, 100, 100)
    np.testing.assert_allclose(clipped, [[40, 100], [40, 10], [90, 10]])


def test_crop_drops_an_object_it_cuts_away_and_clips_one_it_cuts_through():
    image = Image.new("RGB", (100, 100), BACKGROUND)
    gone = SceneObject.from_flat("gone", "bbox_2d", [70, 70, 90, 90])
    cut = SceneObject.from_flat("cut", "bbox_2d", [40, 40, 60, 60])
    _, moved, _, _ = apply_params(image, [gone, cut], AugmentParams(crop=(0, 0, 50, 50)))
    assert [o.desc for o in moved] == ["cut"]
    np.testing.assert_allclose(moved[0].bounds(), (80, 80, 100, 100), atol=1e-3)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "changes, key, fragment",
    [
        ({"hflip_prob": 1.5}, "hflip_prob", "got 1.5; expected a"),
        ({"hflip_prob": 1.5}, "hflip_prob", "in [0.0, 1.0]"),
        ({"gamma_prob": -0.1}, "gamma_prob", "in [0.0, 1.0]"),
        ({"rotation_degrees": 200}, "rotation_degrees", "in [0.0, 180.0]"),
        ({"crop_min_coverage": 0.0}, "crop_min_coverage", "in (0.0, 1.0]"),
        ({"brightness": 2}, "brightness", "in [0.0, 1.0]"),
        ({"min_visible": "a"}, "min_visible", "got 'a'"),
        ({"resize_scale": (1.5, 0.5)}, "resize_scale", "0 < low <= high <= 4.0"),
        ({"resize_scale": (0.0, 1.0)}, "resize_scale", "0 < low <= high"),
        ({"resize_scale": 1.0}, "resize_scale", "a [low, high] pair"),
        ({"gamma_range": (0.5, 6)}, "gamma_range", "<= 5.0"),
        ({"enabled": "yes"}, "enabled", "expected true or false"),
    ],
)
def test_config_errors_name_the_key_value_and_range(changes, key, fragment):
    with pytest.raises(SettingError) as info:
        AugmentationConfig(**changes)
    message = str(info.value)
    assert message.startswith(f"custom.augmentation.{key}: ")
    assert fragment in message
    assert isinstance(info.value, ValueError)


def test_config_from_yaml_mapping_accepts_lists_and_rejects_unknown_keys():
    config = AugmentationConfig.from_mapping({"resize_scale": [0.5, 1.0], "hflip_prob": 0})
    assert config.resize_scale == (0.5, 1.0) and config.hflip_prob == 0
    with pytest.raises(SettingError, match=r"custom\.augmentation\.hflip_p: .*did you mean 'hflip_prob'"):
        AugmentationConfig.from_mapping({"hflip_p": 0.5})


def test_defaults_are_explicit():
    config = AugmentationConfig()
    assert config.enabled and config.hflip_prob == 0.5 and config.vflip_prob == 0.0
    assert config.crop_min_coverage == 0.6 and config.min_visible == 0.25
