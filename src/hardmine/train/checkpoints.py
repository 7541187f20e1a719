"""Checkpoint marking: a checkpoint folder is complete, or marked as a save that did not finish.

The trainer mixin writes :data:`INCOMPLETE_MARKER` into a checkpoint folder before
anything else and removes it after the last file (the mining state included), so
an interrupted save (Ctrl-C, a killed job) leaves a folder that resume refuses by
name instead of loading half of it.
"""

from __future__ import annotations

from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..core.errors import UserInputError


class CheckpointError(UserInputError):
    """A checkpoint to resume from is missing, incomplete or not a checkpoint."""


#: Present in a checkpoint folder while its save is in progress.
INCOMPLETE_MARKER = "hardmine-save-incomplete"


def mark_incomplete(folder: Path) -> None:
    """Before a save writes anything into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INCOMPLETE_MARKER).write_text("this checkpoint's save did not finish; hardmine will not resume from it\n")


def mark_complete(folder: Path) -> None:
    """After a save's last file (on every rank) is on disk."""
    (folder / INCOMPLETE_MARKER).unlink(missing_ok=True)


def check_checkpoint(folder: str | Path) -> Path:
    """``folder`` if it is a checkpoint hardmine can resume from; a clear error otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    if (folder / INCOMPLETE_MARKER).exists():
        earlier = last_complete_checkpoint(folder.parent)
        hint = f"; the last complete one is {earlier}" if earlier is not None else ""
        raise CheckpointError(f"{folder}: this checkpoint is incomplete (its save was interrupted){hint}")
    if not (folder / TRAINER_STATE_NAME).is_file():
        raise CheckpointError(f"{folder}: not a Trainer checkpoint (no {TRAINER_STATE_NAME})")
    return folder


def last_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint-N folder with the highest N whose save finished, or None."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    steps = []
    for child in run_dir.iterdir():
        prefix, _, number = child.name.partition("-")
        if prefix == PREFIX_CHECKPOINT_DIR and number.isdigit() and child.is_dir():
            if not (child / INCOMPLETE_MARKER).exists() and (child / TRAINER_STATE_NAME).is_file():
                steps.append((int(number), child))
    return max(steps)[1] if steps else None
