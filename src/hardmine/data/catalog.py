"""Where each record of a pool lives, for the mining dumps.

The data layer is the one that knows a record's source file and line, its
image paths and its ``metadata.slice``; it hands them to the mining stage as a
:class:`hardmine.core.audit.SampleCatalog` (plain Python, no torch), so the
dumps can say ``train.jsonl:812`` instead of ``base_idx 811``.
"""

from __future__ import annotations

from ..core.audit import SampleCatalog
from .records import DenseCaptionRecord


def pool_catalog(pool) -> SampleCatalog:
    """The catalog of a :class:`hardmine.data.dataset.RecordPool` (records in base_idx order)."""
    images, slices = [], []
    for record in pool.records:
        if isinstance(record, DenseCaptionRecord):
            images.append((str(record.image),))
            slice_name = (record.metadata or {}).get("slice")
            slices.append(None if slice_name is None else str(slice_name))
        else:  # chat records carry images but no metadata
            images.append(tuple(str(p) for p in getattr(record, "images", ())))
            slices.append(None)
    # A pool built in code has no file; its rows then carry no line.
    lines = tuple(getattr(pool, "lines", ()) or ())
    if len(lines) != len(pool.records):
        lines = (None,) * len(pool.records)
    return SampleCatalog(source=getattr(pool, "path", None), lines=lines, images=images, slices=slices)
