"""Real tiny models for the per-sample loss tests, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def builtin_dirs(tmp_path_factory):
    from hardmine.models import materialize_builtin

    # The same root as tests/models and tests/data: built once per session, and
    # never in the user's ~/.cache.
    root = tmp_path_factory.getbasetemp() / "hardmine-builtin"
    return {"vl": materialize_builtin("tiny-qwen2-vl", root), "text": materialize_builtin("tiny-text", root)}


@pytest.fixture
def load_builtin(builtin_dirs):
    """A fresh (model, processor) of the ``"vl"`` or ``"text"`` built-in, in eval mode."""
    from hardmine.models import load_model_and_processor

    def load(task):
        model, processor, _ = load_model_and_processor(str(builtin_dirs[task]))
        return model.eval(), processor

    return load


@pytest.fixture
def one_thread():
    """Run the test on one torch thread, then restore the previous count.

    On this small shared machine, two torch threads competing with other processes
    for two cores made the model tests tens of times slower; one thread does not
    suffer that. The count is global, so it is put back afterwards.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
