"""Reading a run folder: dumps, population files, the epoch log, Trainer's state.

Every file is checked as it is read; anything unreadable raises
:class:`InspectError` naming the file (and line where there is one), never a
traceback.

What a run folder (Trainer's ``output_dir``) may hold:

* ``hard_samples_epoch_{n}.json``: one dump per active mining epoch
  (format 2; format 1 read as well, with fewer fields);
* ``hard_samples_epoch_{n}.population.npz``: named by its dump;
* ``hard_samples_epochs.jsonl``: one line per closed epoch (active or not);
* ``trainer_state.json`` in the folder or its ``checkpoint-*`` folders: the
  training and evaluation curves (``log_history``), including ``hsm/*`` rows.

A folder with none of the first and third is not a mining run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..core.audit import Population, read_population
from ..core.errors import UserInputError
from ..core.plan import DUMP_FORMAT

DUMP_PATTERN = re.compile(r"^hard_samples_epoch_(\d+)\.json$")
EPOCH_LOG = "hard_samples_epochs.jsonl"  # as hardmine.train.mining writes it
TRAINER_STATE = "trainer_state.json"
_DUMP_KEYS = ("epoch", "version", "selection", "weights", "num_hard", "samples")
_ROW_KEYS = ("dataset", "base_idx", "loss")


class InspectError(UserInputError):
    """A run folder or file that cannot be inspected; the message names it."""


@dataclass
class Run:
    """One run folder, read and checked."""

    path: Path
    dumps: dict[int, dict[str, Any]]  # epoch -> dump document
    epoch_log: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> its last line
    log_history: list[dict[str, Any]] = field(default_factory=list)  # Trainer's, oldest first
    state_file: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def population(self, epoch: int, columns: Sequence[str] | None = None) -> Population | None:
        """The population file of ``epoch``'s dump, or the given columns of it (None: the dump names none).

        Not cached: at millions of samples a file per epoch is too much to hold.
        """
        name = self.dumps.get(epoch, {}).get("population")
        if not name:
            return None
        path = self.path / name
        if not path.is_file():
            raise InspectError(f"{path}: population file named by {dump_path(self, epoch).name} not found")
        try:
            return read_population(path, columns)
        except ValueError as e:
            raise InspectError(str(e)) from None


def dump_path(run: Run, epoch: int) -> Path:
    return run.path / f"hard_samples_epoch_{epoch}.json"


def load_run(path: str | Path, *, mining: bool = True) -> Run:
    """Read a run folder; :class:`InspectError` when it is not an inspectable mining run.

    ``mining=False`` accepts a run without mining (a control to compare
    against), which must then have a ``trainer_state.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise InspectError(f"{path}: {'not a folder' if path.exists() else 'no such folder'} (expected a run's output_dir)")
    dumps = {}
    for file in sorted(path.iterdir()):
        match = DUMP_PATTERN.match(file.name)
        if match:
            dumps[int(match.group(1))] = read_dump(file, int(match.group(1)))
    epoch_log = read_epoch_log(path / EPOCH_LOG)
    state_file = latest_trainer_state(path)
    log_history = read_log_history(state_file) if state_file is not None else []
    if not mining and state_file is None:
        raise InspectError(f"{path}: no trainer_state.json in it or its checkpoint-* folders: no curves to compare")
    if mining and not dumps and not epoch_log and not any("hsm/active" in row for row in log_history):
        hint = ""
        if (path / "run").is_dir() and any((path / "run").glob("hard_samples_epoch_*.json")):
            hint = f" (the demo writes its run to {path / 'run'})"
        raise InspectError(
            f"{path}: no hard_samples_epoch_*.json and no {EPOCH_LOG}: not the output folder of a mining run{hint}"
        )
    return Run(path=path, dumps=dumps, epoch_log=epoch_log, log_history=log_history, state_file=state_file)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InspectError(f"{path}: cannot read ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        truncated = " (truncated?)" if e.pos >= len(text.rstrip()) else ""
        raise InspectError(f"{path}:{e.lineno}: not valid JSON: {e.msg}{truncated}") from None


def read_dump(path: Path, epoch: int) -> dict[str, Any]:
    """One dump, checked for what inspect reads."""
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != DUMP_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InspectError(f"{path}: not a hardmine hard-sample dump (format {got!r}; this hardmine reads {DUMP_FORMAT!r})")
    missing = [k for k in _DUMP_KEYS if k not in data]
    if missing:
        raise InspectError(f"{path}: incomplete dump, missing {missing}")
    if data["epoch"] != epoch:
        raise InspectError(f"{path}: the file name says epoch {epoch}, its content says {data['epoch']!r}")
    if not isinstance(data["samples"], list) or len(data["samples"]) != data["num_hard"]:
        raise InspectError(f"{path}: num_hard is {data['num_hard']!r} but 'samples' lists {len(data['samples'])} rows")
    for i, row in enumerate(data["samples"]):
        if not isinstance(row, dict) or any(k not in row for k in _ROW_KEYS):
            raise InspectError(f"{path}: samples[{i}] lacks one of {list(_ROW_KEYS)}")
    return data


def read_epoch_log(path: Path) -> dict[int, dict[str, Any]]:
    """The epoch log; a resumed run appends again, so the last line of an epoch counts."""
    if not path.is_file():
        return {}
    rows: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InspectError(f"{path}:{line_no}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise InspectError(f"{path}:{line_no}: expected an object with an integer 'epoch'")
            rows[row["epoch"]] = row
    return rows


def latest_trainer_state(path: Path) -> Path | None:
    """The ``trainer_state.json`` with the most steps: the folder's own or a checkpoint's."""
    candidates = [path / TRAINER_STATE, *path.glob(f"checkpoint-*/{TRAINER_STATE}")]
    best, best_step = None, -1
    for file in candidates:
        if not file.is_file():
            continue
        data = _read_json(file)
        step = data.get("global_step") if isinstance(data, dict) else None
        if not isinstance(step, int) or not isinstance(data.get("log_history"), list):
            raise InspectError(f"{file}: not a Trainer state file (no global_step and log_history)")
        if step > best_step:
            best, best_step = file, step
    return best


def read_log_history(path: Path) -> list[dict[str, Any]]:
    return [row for row in _read_json(path)["log_history"] if isinstance(row, dict)]
