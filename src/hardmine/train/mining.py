"""Mining inside training: record per-sample losses, mine at epoch end, reweight.

Follows the data flow of DESIGN.md on any number of ranks:

1. every rank appends the per-sample losses of its own micro-batches to an
   :class:`ObservationLog` (no collective per step);
2. at the end of an epoch the logs are gathered to rank 0 once; duplicates
   that distributed sharding adds to even out the last batch are dropped by
   their position in the epoch's global order (each position is one sample
   occurrence);
3. rank 0 feeds the engine (:class:`hardmine.core.HardSampleMiner`), which
   triggers, selects and makes a plan; rank 0 writes the dump;
4. the plan is broadcast and every rank's sampler builds the same next epoch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..core import HardSampleMiner, HardSamplePlan, Pool, hard_vs_all
from .distributed import broadcast_object, gather_columns, rank

logger = logging.getLogger("hardmine")

SELECTION_MODE_CODES = {"top_k": 0, "percentile": 1, "threshold": 2}
STATE_FILE = "hardmine_mining.npz"


class ObservationLog:
    """One rank's per-sample losses of the current epoch, as flat columns."""

    COLUMNS = {"sample_id": np.int64, "loss": np.float32, "step": np.int64, "position": np.int64}

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []

    def append(self, sample_id, loss, position, step: int) -> None:
        sample_id = np.asarray(sample_id, dtype=np.int64).reshape(-1)
        part = {
            "sample_id": sample_id,
            "loss": np.asarray(loss, dtype=np.float32).reshape(-1),
            "position": np.asarray(position, dtype=np.int64).reshape(-1),
            "step": np.full(sample_id.size, int(step), np.int64),
        }
        if len({v.size for v in part.values()}) != 1:
            raise ValueError(f"observation columns differ in length: { {k: v.size for k, v in part.items()} }")
        self._parts.append(part)

    def __len__(self) -> int:
        return sum(p["sample_id"].size for p in self._parts)

    def drain(self) -> dict[str, np.ndarray]:
        out = {
            name: np.concatenate([p[name] for p in self._parts]) if self._parts else np.empty(0, dtype)
            for name, dtype in self.COLUMNS.items()
        }
        self._parts = []
        return out


def deduplicate(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep one observation per epoch position, in training order (step, then position)."""
    order = np.lexsort((columns["position"], columns["step"]))
    ordered = {k: np.asarray(v)[order] for k, v in columns.items()}
    _, first = np.unique(ordered["position"], return_index=True)
    first.sort()
    return {k: v[first] for k, v in ordered.items()}


class HardMining:
    """The mining stage of one training run (lives on every rank)."""

    def __init__(self, settings, pools: list[Pool], sampler, *, output_dir: str | Path, dump: bool = True, monitor: str = "train_loss"):
        self.settings = settings
        self.target = pools[0].name
        self.sampler = sampler
        self.output_dir = Path(output_dir)
        self.dump = dump
        self.monitor = monitor
        self.log = ObservationLog()
        # Only rank 0 aggregates; other ranks hold just the plan, via the sampler.
        self.miner = HardSampleMiner({self.target: pools[0].size}, [self.target], settings) if rank() == 0 else None
        self.history: list[dict[str, Any]] = []  # one row per epoch (rank 0)

    @property
    def plan(self) -> HardSamplePlan | None:
        return self.sampler.plan

    def record(self, sample_id, loss, position, step: int) -> None:
        self.log.append(sample_id, loss, position, step)

    def end_epoch(self, epoch: int, monitored: float | None = None) -> dict[str, float]:
        """Gather, mine on rank 0, broadcast the plan; return the hsm/ metrics."""
        gathered = gather_columns(self.log.drain())
        payload = None
        if self.miner is not None:
            try:
                payload = self._mine_on_rank0(epoch, gathered, monitored)
            except Exception:  # noqa: BLE001 - mining must never cost the run its checkpoints
                # Training goes on with the plan it had; the other ranks are
                # waiting in the broadcast below, so they must still get one.
                logger.exception("hardmine: mining failed at the end of epoch %d; keeping the previous plan", epoch)
                plan = self.sampler.plan
                payload = (None if plan is None else plan.state_dict(), {"hsm/failed": 1.0})
        plan_state, metrics = broadcast_object(payload)
        self.sampler.plan = None if plan_state is None else HardSamplePlan.from_state_dict(plan_state)
        return metrics

    def _mine_on_rank0(self, epoch: int, gathered, monitored):
        obs = deduplicate(gathered)
        self.miner.observe(obs["sample_id"], obs["loss"], epoch=epoch, steps=obs["step"])
        report = self.miner.end_epoch(epoch, monitored)
        metrics = self._metrics(report, observed_now=int(obs["sample_id"].size))
        if report.plan is not None and self.dump:
            report.plan.dump(self.output_dir)
        self.history.append({"epoch": epoch, **metrics})
        logger.info(self._summary(epoch, metrics))
        return (None if self.miner.plan is None else self.miner.plan.state_dict(), metrics)

    def _metrics(self, report, observed_now: int) -> dict[str, float]:
        m: dict[str, float] = {
            "hsm/active": float(report.active),
            "hsm/observations": float(observed_now),
            "hsm/nonfinite": float(report.stats.get("nonfinite", 0)),
        }
        if report.monitored is not None:
            m["hsm/monitored"] = float(report.monitored)
        if report.selection is not None:
            sel = report.selection
            low, high = report.plan.weight_range()
            m.update(
                {
                    "hsm/num_hard": float(sel.num_hard),
                    "hsm/selection_mode": float(SELECTION_MODE_CODES[sel.mode]),
                    "hsm/weight_min": low,
                    "hsm/weight_max": high,
                    "hsm/eligible": float(sel.eligible),
                    "hsm/plan_version": float(report.plan.version),
                }
            )
            for rule, count in sel.excluded.items():
                m[f"hsm/excluded_{rule}"] = float(count)
            stats = hard_vs_all(sel)
            m["hsm/hard_loss_mean"] = stats["hard_mean"]
            m["hsm/all_loss_mean"] = stats["all_mean"]
        return m

    @staticmethod
    def _summary(epoch: int, m: Mapping[str, float]) -> str:
        if not m.get("hsm/active"):
            return f"hardmine: epoch {epoch}: mining inactive (monitored {m.get('hsm/monitored', float('nan')):.4f})"
        mode = {v: k for k, v in SELECTION_MODE_CODES.items()}[int(m["hsm/selection_mode"])]
        return (
            f"hardmine: epoch {epoch}: {int(m['hsm/num_hard'])} hard of {int(m['hsm/eligible'])} eligible ({mode}), "
            f"weight {m['hsm/weight_max']:g}; loss hard {m['hsm/hard_loss_mean']:.4f} vs all {m['hsm/all_loss_mean']:.4f}"
        )

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "miner": None if self.miner is None else self.miner.state_dict(),
            "plan": None if self.plan is None else self.plan.state_dict(),
            "sampler": self.sampler.state_dict(),
            "history": list(self.history),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.miner is not None:
            if state.get("miner") is None:
                raise ValueError("the checkpoint holds no mining state for rank 0")
            self.miner.load_state_dict(state["miner"])
        self.sampler.load_state_dict(state["sampler"])
        self.sampler.plan = None if state["plan"] is None else HardSamplePlan.from_state_dict(state["plan"])
        self.history = list(state.get("history", []))

    def save(self, checkpoint_dir: str | Path) -> Path:
        path = Path(checkpoint_dir) / STATE_FILE
        save_state(path, self.state_dict())
        return path

    def load(self, checkpoint_dir: str | Path) -> None:
        self.load_state_dict(load_state(Path(checkpoint_dir) / STATE_FILE))


# ------------------------------------------------------- state file (no pickle)
def _flatten(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Move numpy arrays out of a nested state into ``arrays``; keep the rest as JSON."""
    if isinstance(tree, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = tree
        return {"__array__": key}
    if isinstance(tree, Mapping):
        return {str(k): _flatten(v, f"{prefix}/{k}", arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(tree)]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _unflatten(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    arrays: dict[str, np.ndarray] = {}
    skeleton = _flatten(state, "", arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, __skeleton__=np.frombuffer(json.dumps(skeleton).encode(), np.uint8), **arrays)
    tmp.replace(path)


def load_state(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "__skeleton__"}
        skeleton = json.loads(data["__skeleton__"].tobytes().decode())
    return _unflatten(skeleton, arrays)
