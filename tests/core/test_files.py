"""Atomic writes: the old file or the whole new one, never half, and no stray temporary file."""

import os
import stat

import pytest

from hardmine.core.files import write_atomically


def test_writes_bytes_or_through_a_function_with_a_new_files_permissions(tmp_path):
    target = tmp_path / "out.json"
    write_atomically(target, b"one")
    assert target.read_bytes() == b"one"
    write_atomically(target, lambda f: f.write(b"two"))
    assert target.read_bytes() == b"two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
