"""Data: the record contract, caption targets, augmentation and the synthetic corpus.

Importing this package loads numpy only; torch and kornia load when an image
is first augmented, PIL and yaml when an image or a YAML file is written.
"""

from .augment import (
    AUGMENTATION_KEY,
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
from .records import (
    GEOMETRY_KINDS,
    ChatRecord,
    DenseCaptionRecord,
    ReadReport,
    Record,
    RecordError,
    SceneObject,
    objects_to_json,
    parse_record,
    read_jsonl,
    record_to_json,
)
from .render import norm1000, parse_rendered, render_entries, render_objects
from .synth import HARD_SHARE, SOURCE_RATIOS, TARGET_NAME, draw_scene, make_dataset

__all__ = [
    "AUGMENTATION_KEY",
    "GEOMETRY_KINDS",
    "HARD_SHARE",
    "SOURCE_RATIOS",
    "TARGET_NAME",
    "AugmentParams",
    "AugmentationConfig",
    "ChatRecord",
    "DenseCaptionRecord",
    "ReadReport",
    "Record",
    "RecordError",
    "SceneObject",
    "apply_params",
    "augment",
    "augmentation_rng",
    "clip_object",
    "clip_polygon",
    "clip_polyline",
    "draw_scene",
    "make_dataset",
    "norm1000",
    "objects_to_json",
    "parse_record",
    "parse_rendered",
    "polygon_area",
    "read_jsonl",
    "record_to_json",
    "render_entries",
    "render_objects",
    "sample_params",
]
