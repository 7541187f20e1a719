"""Writing a file so that readers see the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object] | bytes) -> Path:
    """Write ``path`` through a temporary file beside it, then rename it into place.

    ``write`` is the bytes to write, or a function given the open binary file.
    The temporary file is opened like any new file (so the process umask sets
    its permissions, and nothing process-wide is changed), flushed to disk, and
    removed if anything fails, including an interrupt.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            if isinstance(write, (bytes, bytearray)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
