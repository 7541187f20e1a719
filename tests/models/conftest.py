"""Built-in tiny models, built once per test session into pytest's temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def builtin_root(tmp_path_factory):
    # One root for the whole session (tests/train and tests/data use the same
    # path): materialize_builtin builds into it once and reuses it afterwards.
    # Never the user's ~/.cache.
    return tmp_path_factory.getbasetemp() / "hardmine-builtin"


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Hub access switched off while a module's tests run (nothing may be downloaded).

    huggingface_hub reads HF_HUB_OFFLINE once, at import, so the module constant is
    patched as well as the variable; the fresh-process test covers the variable alone.
    """
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def vl_dir(builtin_root, offline):
    from hardmine.models import materialize_builtin

    return materialize_builtin("tiny-qwen2-vl", builtin_root)


@pytest.fixture(scope="module")
def text_dir(builtin_root, offline):
    from hardmine.models import materialize_builtin

    return materialize_builtin("tiny-text", builtin_root)
