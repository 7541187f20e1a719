"""The hard-sample plan and its JSON dump.

A plan gives every sample of a mined dataset a weight: ``hard_weight`` for the
mined samples, 1 for everything else. It records the epoch whose end produced
it (it applies from the next epoch) and a version that grows by one per plan.

Dump format (``hard_samples_epoch_{n}.json``)::

    {
      "format": "hardmine.hard_samples/1",
      "epoch": n, "version": v,
      "selection": {"mode": "percentile", "params": {"value": 0.1}},
      "weights": {"hard": 3.0, "min": 1.0, "max": 3.0},
      "num_hard": 2,
      "samples": [
        {"sample_id": 123, "dataset": "target", "base_idx": 7, "loss": 2.31}, ...
      ]
    }

``samples`` are ordered worst first; ``loss`` is the aggregated loss that
ranked them (see :mod:`hardmine.core.tracker`). ``weights.max`` is 1 when the
plan is empty.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .identity import sample_ids

DUMP_FORMAT = "hardmine.hard_samples/1"


def dump_filename(epoch: int) -> str:
    return f"hard_samples_epoch_{int(epoch)}.json"


@dataclass
class HardSamplePlan:
    epoch: int
    version: int
    hard_weight: float
    mode: str
    params: dict
    base_idx: dict[str, np.ndarray] = field(default_factory=dict)  # name -> mined base_idx, worst first
    losses: dict[str, np.ndarray] = field(default_factory=dict)  # name -> aggregated loss, aligned

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hard_weight) and self.hard_weight >= 1.0):
            raise ValueError(f"hard_weight must be a finite number >= 1, got {self.hard_weight}")
        for name, base in self.base_idx.items():
            base = np.asarray(base, dtype=np.int64)
            if base.size and base.min() < 0:
                raise ValueError(f"plan lists a negative base_idx ({int(base.min())}) for dataset {name!r}")
            if base.size != np.unique(base).size:
                raise ValueError(f"plan lists a sample of dataset {name!r} more than once")
            self.base_idx[name] = base
            self.losses[name] = np.asarray(self.losses.get(name, np.full(base.size, np.nan)), dtype=np.float64)

    @property
    def num_hard(self) -> int:
        return int(sum(b.size for b in self.base_idx.values()))

    def weights(self, name: str, size: int) -> np.ndarray:
        """Weight of every sample of dataset ``name`` (size ``size``)."""
        w = np.ones(size, np.float64)
        base = self.base_idx.get(name)
        if base is not None and base.size:
            if base.max() >= size:
                raise ValueError(f"plan marks base_idx {int(base.max())} of dataset {name!r}, which has {size} samples")
            w[base] = self.hard_weight
        return w

    def weight_range(self) -> tuple[float, float]:
        return 1.0, (float(self.hard_weight) if self.num_hard else 1.0)

    # ------------------------------------------------------------------ JSON
    def to_json_dict(self) -> dict[str, Any]:
        samples = []
        for name, base in self.base_idx.items():
            ids = sample_ids(name, base)
            for sid, b, loss in zip(ids.tolist(), base.tolist(), self.losses[name].tolist()):
                samples.append({"sample_id": sid, "dataset": name, "base_idx": b, "loss": loss})
        samples.sort(key=lambda s: (-s["loss"], s["sample_id"]))
        low, high = self.weight_range()
        return {
            "format": DUMP_FORMAT,
            "epoch": self.epoch,
            "version": self.version,
            "selection": {"mode": self.mode, "params": dict(self.params)},
            "weights": {"hard": float(self.hard_weight), "min": low, "max": high},
            "num_hard": self.num_hard,
            "samples": samples,
        }

    def dump(self, directory: str | os.PathLike) -> Path:
        """Write ``hard_samples_epoch_{epoch}.json`` atomically; return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / dump_filename(self.epoch)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # mkstemp creates 0600; give the dump the permissions of any new file.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json_dict(), f, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> "HardSamplePlan":
        if data.get("format") != DUMP_FORMAT:
            raise ValueError(f"not a hardmine hard-sample dump: format {data.get('format')!r}, expected {DUMP_FORMAT!r}")
        base: dict[str, list] = {}
        losses: dict[str, list] = {}
        for s in data["samples"]:
            base.setdefault(s["dataset"], []).append(s["base_idx"])
            losses.setdefault(s["dataset"], []).append(s["loss"])
        return cls(
            epoch=int(data["epoch"]),
            version=int(data["version"]),
            hard_weight=float(data["weights"]["hard"]),
            mode=data["selection"]["mode"],
            params=dict(data["selection"]["params"]),
            base_idx={k: np.asarray(v, np.int64) for k, v in base.items()},
            losses={k: np.asarray(v, np.float64) for k, v in losses.items()},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HardSamplePlan":
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_json_dict(data)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "version": self.version,
            "hard_weight": self.hard_weight,
            "mode": self.mode,
            "params": dict(self.params),
            "base_idx": {k: v.copy() for k, v in self.base_idx.items()},
            "losses": {k: v.copy() for k, v in self.losses.items()},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "HardSamplePlan":
        return cls(
            epoch=int(state["epoch"]),
            version=int(state["version"]),
            hard_weight=float(state["hard_weight"]),
            mode=str(state["mode"]),
            params=dict(state["params"]),
            base_idx={k: np.asarray(v, np.int64) for k, v in state["base_idx"].items()},
            losses={k: np.asarray(v, np.float64) for k, v in state["losses"].items()},
        )
