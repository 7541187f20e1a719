"""The hard-sample plan and its JSON dump.

A plan gives every sample of a mined dataset a weight: ``hard_weight`` for the
mined samples, 1 for everything else. It records the epoch whose end produced
it (it applies from the next epoch) and a version that grows by one per plan.

Dump format (``hard_samples_epoch_{n}.json``), version 2::

    {
      "format": "hardmine.hard_samples/2",
      "epoch": n, "version": v,
      "selection": {"mode": "percentile", "params": {"value": 0.1}},
      "weights": {"hard": 3.0, "min": 1.0, "max": 3.0},
      "num_hard": 2,
      "decision": {                       # what the selection saw (may be absent)
        "monitor": "train_loss", "monitored": 0.71,
        "sample_loss": {"statistic": "mean", "fields": ["desc"]},   # what each loss is
        "observed": 120, "eligible": 96,
        "excluded": {"insufficient_history": 0, "at_start_level": 20, "hard_streak": 4},
        "loss_scale": 0.69,               # training-loss level: aggregate = corrected * scale
        "cut": 1.93,                      # lowest hard loss, or the threshold
        "quantiles": {"all": {"min": .., "q10": .., ..., "max": .., "mean": ..}, "hard": {...}},
        "histogram": {"edges": [41 floats], "all": [40 counts], "hard": [40 counts]}
      },
      "datasets": {"target": {"size": 120, "source": "/data/target/train.jsonl",
                              "slices": {"easy": 102, "hard": 18}}},
      "population": "hard_samples_epoch_n.population.npz",   # or null
      "samples": [
        {"sample_id": 123, "dataset": "target", "base_idx": 7, "loss": 2.31,
         "last_loss": 2.52, "count": 3, "weight": 3.0,
         "source": "/data/target/train.jsonl", "line": 8,
         "images": ["/data/target/images/train_00007.png"], "slice": "hard"}, ...
      ]
    }

``samples`` are ordered worst first; ``loss`` is the aggregated loss that
ranked them (see :mod:`hardmine.core.tracker`), ``last_loss`` the last raw
loss, ``count`` the observations in the aggregate. The location fields
(``source``, ``line``, ``images``, ``slice``) are present when the training
integration knows them (:class:`hardmine.core.audit.SampleCatalog`).
``weights.max`` is 1 when the plan is empty. Non-finite numbers are written
as null (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .files import write_atomically
from .identity import sample_ids

DUMP_FORMAT = "hardmine.hard_samples/2"


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
    def to_json_dict(
        self,
        *,
        sample_stats: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        catalogs: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The dump document.

        ``sample_stats``: per dataset, columns aligned with ``base_idx``
        (``last_loss``, ``count``); ``catalogs``: per dataset, an object whose
        ``describe(base_idx)`` gives the location fields; ``extra``: top-level
        blocks (``decision``, ``datasets``, ``population``).
        """
        samples = []
        for name, base in self.base_idx.items():
            ids = sample_ids(name, base)
            stats = {k: np.asarray(v).tolist() for k, v in (sample_stats or {}).get(name, {}).items()}
            catalog = (catalogs or {}).get(name)
            for i, (sid, b, loss) in enumerate(zip(ids.tolist(), base.tolist(), self.losses[name].tolist())):
                row = {"sample_id": sid, "dataset": name, "base_idx": b, "loss": _json_number(loss)}
                row.update({k: _json_number(v[i]) for k, v in stats.items()})
                row["weight"] = float(self.hard_weight)
                if catalog is not None:
                    row.update(catalog.describe(b))
                samples.append(row)
        # Worst first; a null (non-finite) loss last.
        samples.sort(key=lambda s: (s["loss"] is None, -(s["loss"] or 0.0), s["sample_id"]))
        low, high = self.weight_range()
        doc = {
            "format": DUMP_FORMAT,
            "epoch": self.epoch,
            "version": self.version,
            "selection": {"mode": self.mode, "params": dict(self.params)},
            "weights": {"hard": float(self.hard_weight), "min": low, "max": high},
            "num_hard": self.num_hard,
        }
        doc.update(extra or {})
        doc["samples"] = samples
        return doc

    def dump(self, directory: str | os.PathLike, **details: Any) -> Path:
        """Write ``hard_samples_epoch_{epoch}.json`` atomically; return its path.

        ``details`` go to :meth:`to_json_dict`.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / dump_filename(self.epoch)
        text = json.dumps(self.to_json_dict(**details), indent=1, allow_nan=False) + "\n"
        return write_atomically(path, text.encode("utf-8"))

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> "HardSamplePlan":
        got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        if isinstance(got, str) and got.startswith("hardmine.hard_samples/") and got != DUMP_FORMAT:
            raise ValueError(f"a hard-sample dump of format {got!r}, written by an earlier hardmine; this version reads only {DUMP_FORMAT!r}")
        if got != DUMP_FORMAT:
            raise ValueError(f"not a hardmine hard-sample dump: format {got!r}, expected {DUMP_FORMAT!r}")
        base: dict[str, list] = {}
        losses: dict[str, list] = {}
        for s in data["samples"]:
            base.setdefault(s["dataset"], []).append(s["base_idx"])
            losses.setdefault(s["dataset"], []).append(math.nan if s["loss"] is None else s["loss"])
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
        try:
            return cls.from_json_dict(data)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a complete hard-sample dump ({type(e).__name__}: {e})") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

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


def _json_number(value: Any) -> Any:
    """A JSON-safe scalar: non-finite floats become null, numpy scalars plain Python."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
