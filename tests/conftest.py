"""Test tiers: unmarked tests are ``unit``; ``gpu`` tests skip without CUDA."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

TIERS = ("unit", "integration", "distributed", "gpu")
_OWN_CACHE: list[str] = []  # the cache this session made, removed when it ends


def pytest_configure(config):
    # Built-in models are built into a cache; tests use their own (inherited by
    # the torchrun subprocesses) unless HARDMINE_CACHE points somewhere already.
    if "HARDMINE_CACHE" not in os.environ:
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="hardmine-test-cache-"))
        os.environ["HARDMINE_CACHE"] = _OWN_CACHE[-1]


def pytest_unconfigure(config):
    for path in _OWN_CACHE:
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("gpu") and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())

