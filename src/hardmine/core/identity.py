"""Stable sample identity.

A record is identified for life by ``(dataset name, base_idx)``. Its ``sample_id``
is a non-negative int64 that packs both:

    sample_id = dataset_key(name) << BASE_IDX_BITS | base_idx

``dataset_key`` comes from BLAKE2b of the UTF-8 name, never from Python's
``hash()`` (which is salted per process), so the id is identical across
processes, runs and machines. Integer order is the total order used to break
ties: all samples of one dataset are contiguous and ordered by ``base_idx``.
int64 is also the dtype ids travel in through collators and collectives.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

BASE_IDX_BITS = 40
DATASET_KEY_BITS = 23  # 23 + 40 = 63 bits: the id stays a non-negative int64
MAX_BASE_IDX = (1 << BASE_IDX_BITS) - 1
_BASE_MASK = np.int64(MAX_BASE_IDX)


def dataset_key(name: str) -> int:
    """The 23-bit key of a dataset name (stable everywhere)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - DATASET_KEY_BITS)


def sample_id(name: str, base_idx: int) -> int:
    """The sample id of one record."""
    base_idx = int(base_idx)
    if not 0 <= base_idx <= MAX_BASE_IDX:
        raise ValueError(f"base_idx {base_idx} of dataset {name!r} is out of range; expected 0..{MAX_BASE_IDX}")
    return (dataset_key(name) << BASE_IDX_BITS) | base_idx


def sample_ids(name: str, base_idx: np.ndarray) -> np.ndarray:
    """Vectorised :func:`sample_id` for one dataset; returns int64."""
    base = np.asarray(base_idx, dtype=np.int64)
    if base.size and (base.min() < 0 or base.max() > MAX_BASE_IDX):
        raise ValueError(
            f"base_idx of dataset {name!r} out of range [{int(base.min())}, {int(base.max())}]; "
            f"expected 0..{MAX_BASE_IDX}"
        )
    return (np.int64(dataset_key(name)) << np.int64(BASE_IDX_BITS)) | base


def split_sample_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`sample_ids`: ``(dataset_keys, base_idx)`` as int64 arrays."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> np.int64(BASE_IDX_BITS), ids & _BASE_MASK


def check_distinct_keys(names: Iterable[str]) -> dict[int, str]:
    """Map key -> name, raising if two different names share a key.

    With 23-bit keys a collision between a handful of dataset names is
    unlikely (about 1 in 800,000 for two names) but not impossible; when it
    happens the user must rename one dataset rather than have their losses mixed.
    """
    by_key: dict[int, str] = {}
    for name in names:
        key = dataset_key(name)
        other = by_key.get(key)
        if other is not None and other != name:
            raise ValueError(
                f"dataset names {other!r} and {name!r} map to the same sample-id key {key}; rename one of them"
            )
        by_key[key] = name
    return by_key
