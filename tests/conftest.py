"""Test tiers: unmarked tests are ``unit``; ``gpu`` tests skip without CUDA."""

from __future__ import annotations

import os
import tempfile

import pytest

TIERS = ("unit", "integration", "distributed", "gpu")


def pytest_configure(config):
    # Built-in models are built into a cache; tests use their own (inherited by
    # the torchrun subprocesses) unless HARDMINE_CACHE points somewhere already.
    os.environ.setdefault("HARDMINE_CACHE", tempfile.mkdtemp(prefix="hardmine-test-cache-"))


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

