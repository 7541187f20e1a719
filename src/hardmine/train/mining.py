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

Files (rank 0, in ``output_dir``, with ``dump: true``)
------------------------------------------------------
* ``hard_samples_epoch_{n}.json``: each plan, with where every hard sample
  lives and the statistics the decision used (format in
  :mod:`hardmine.core.plan`);
* ``hard_samples_epoch_{n}.population.npz`` (``dump_population: true``): every
  target sample's statistics and exclusion rule (:mod:`hardmine.core.audit`);
* ``hard_samples_epochs.jsonl``: one line per closed epoch, mining active or
  not: ``epoch``, ``monitor``, ``selection_mode`` and the ``hsm/*`` metrics.
  A resumed run appends again; the last line of an epoch counts.

Metrics (``Trainer.log``, one row per closed epoch; all floats)
---------------------------------------------------------------
=============================  ====================================================
``hsm/epoch``                  the closed epoch, 0-based: the ``n`` of the dump
                               (the row's ``epoch`` is Trainer's count, ``n + 1``)
``hsm/active``                 1 in an epoch that made a plan: the trigger has fired and
                               ``max_active_epochs`` plans are not yet made
``hsm/finished``               1 once those plans are made: no more reweighting
``hsm/shadow``                 1 in shadow mode: plans are made and dumped, never applied
``hsm/monitored``              the monitored value the trigger saw
``hsm/observations``           per-sample losses recorded this epoch
``hsm/nonfinite``              NaN/inf losses so far (never aggregated)
``hsm/num_hard``               size of the new hard set            (active only)
``hsm/eligible``               samples that passed the noise guard (active only)
``hsm/excluded_<rule>``        samples each guard rule excluded    (active only)
``hsm/weight_min`` / ``_max``  sampling weights of the new plan    (active only)
``hsm/plan_version``           1 for the first plan, +1 per plan   (active only)
``hsm/hard_loss_mean``         mean aggregated loss, hard set      (active only)
``hsm/all_loss_mean``          mean aggregated loss, all observed  (active only)
``hsm/dump_failed``            1 when the dump could not be written
=============================  ====================================================

The selection mode (``top_k``, ``percentile``, ``threshold``) is a name, not a
number: on every active epoch it is in the Trainer's log history as
``hsm/selection_mode`` beside the row's metrics (not passed to ``Trainer.log``,
whose reporters take scalars), in TensorBoard once as text, in each dump, each
line of the epoch log and the console line. TensorBoard also gets, per active epoch,
histograms ``hsm/aggregated_loss_target`` (every observed target sample) and
``hsm/aggregated_loss_hard`` (the new hard set).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..core import HardSampleMiner, HardSamplePlan, Pool
from ..core.audit import SampleCatalog, add_slices, finite_or_none, loss_summary, write_population
from ..core.files import write_atomically
from ..core.miner import hard_vs_all
from .distributed import Ranks, broadcast_object, gather_columns

logger = logging.getLogger("hardmine")

STATE_FILE = "hardmine_mining.npz"
EPOCH_LOG = "hard_samples_epochs.jsonl"


#: The key of an active epoch's selection mode in the Trainer's log history (a name, not a metric).
SELECTION_MODE = "hsm/selection_mode"


class MiningError(RuntimeError):
    """Mining could not close an epoch; raised on every rank so that none hangs."""


class ObservationLog:
    """One rank's per-sample losses of the current epoch, as flat columns.

    Losses may arrive as device tensors: they stay on the device until
    :meth:`flush` copies all of them to the host at once (the trainer flushes
    once per optimizer step), so mining costs one device-to-host copy a step
    however many micro-batches the step accumulates.
    """

    COLUMNS = {"sample_id": np.int64, "loss": np.float32, "step": np.int64, "position": np.int64}
    #: Where the recorded loss is not the mean token loss (``sample_loss: worst_tokens``),
    #: each sample's mean token loss as well: the epoch's training loss the trigger monitors.
    MEAN_LOSS = "mean_loss"
    _LOSSES = ("loss", MEAN_LOSS)

    def __init__(self, *, with_mean_loss: bool = False) -> None:
        """``with_mean_loss``: every observation also carries its sample's mean token loss.

        Fixed for the log's life, so that every rank drains the same columns, even a
        rank that saw nothing this epoch (the gather is a collective per column).
        """
        self.with_mean_loss = with_mean_loss
        self._parts: list[dict[str, Any]] = []
        self._pending = 0  # parts with a loss still on the device

    def append(self, sample_id, loss, position, step: int, mean_loss=None) -> None:
        sample_id = np.asarray(sample_id, dtype=np.int64).reshape(-1)
        part = {
            "sample_id": sample_id,
            "position": np.asarray(position, dtype=np.int64).reshape(-1),
            "step": np.full(sample_id.size, int(step), np.int64),
        }
        on_device = False
        for name, value in (("loss", loss), (self.MEAN_LOSS, mean_loss)):
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                part[name], on_device = value.detach().reshape(-1), True
            else:
                part[name] = np.asarray(value, dtype=np.float32).reshape(-1)
        if (self.MEAN_LOSS in part) != self.with_mean_loss:
            raise ValueError(
                f"this log expects {self.MEAN_LOSS} with every observation; got one without it" if self.with_mean_loss
                else f"this log takes no {self.MEAN_LOSS}; got one"
            )
        sizes = {k: int(v.numel() if isinstance(v, torch.Tensor) else v.size) for k, v in part.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"observation columns differ in length: {sizes}")
        self._parts.append(part)
        self._pending += on_device

    def flush(self) -> None:
        """Copy every loss still on the device to the host, in one copy."""
        if not self._pending:
            return
        waiting = [(p, name) for p in self._parts for name in self._LOSSES if isinstance(p.get(name), torch.Tensor)]
        host = torch.cat([p[name].float() for p, name in waiting]).cpu().numpy()
        offset = 0
        for part, name in waiting:
            n = part[name].numel()
            part[name], offset = host[offset : offset + n], offset + n
        self._pending = 0

    def __len__(self) -> int:
        return sum(p["sample_id"].size for p in self._parts)

    def drain(self) -> dict[str, np.ndarray]:
        self.flush()
        columns = {**self.COLUMNS, **({self.MEAN_LOSS: np.float32} if self.with_mean_loss else {})}
        out = {
            name: np.concatenate([p[name] for p in self._parts]).astype(dtype, copy=False) if self._parts else np.empty(0, dtype)
            for name, dtype in columns.items()
        }
        self._parts = []
        return out


def finite_mean(values: np.ndarray) -> float | None:
    """Mean of the finite values (as the tracker's epoch mean counts them); None if there are none."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else None


def deduplicate(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep one observation per epoch position, in training order (step, then position)."""
    order = np.lexsort((columns["position"], columns["step"]))
    ordered = {k: np.asarray(v)[order] for k, v in columns.items()}
    _, first = np.unique(ordered["position"], return_index=True)
    first.sort()
    return {k: v[first] for k, v in ordered.items()}


class HardMining:
    """The mining stage of one training run (lives on every rank)."""

    def __init__(
        self,
        settings,
        pools: list[Pool],
        sampler,
        *,
        output_dir: str | Path,
        catalogs: Mapping[str, SampleCatalog] | None = None,
        ranks: Ranks = Ranks(),
    ):
        """``settings``: :class:`MiningSettings` (its ``monitor``, ``dump`` and
        ``dump_population`` included); ``catalogs``: per dataset, where its
        samples live (dump rows then name file, line and images); ``ranks``:
        this process among the training processes (the Trainer's ``Ranks.of(args)``)."""
        self.settings = settings
        self.target = pools[0].name
        self.sampler = sampler
        self.output_dir = Path(output_dir)
        self.log = ObservationLog(with_mean_loss=settings.sample_loss.statistic != "mean")
        # Only rank 0 aggregates; other ranks hold just the plan, via the sampler.
        self.ranks = ranks
        self.miner = HardSampleMiner({self.target: pools[0].size}, [self.target], settings) if ranks.is_main else None
        self.history: list[dict[str, Any]] = []  # one row per epoch (rank 0)
        self.mined_epoch: int | None = None  # the last epoch end_epoch closed
        self.sizes = {p.name: p.size for p in pools}
        self.catalogs = dict(catalogs or {})
        # The last selection mode made (TensorBoard gets it once, as text).
        self.selection_mode: str | None = None
        # Rank 0, after an active epoch: aggregated losses for TensorBoard histograms
        # (tag -> values); None otherwise. Read by the Trainer callback.
        self.histograms: dict[str, np.ndarray] | None = None

    @property
    def monitor(self) -> str:
        return self.settings.monitor

    @property
    def plan(self) -> HardSamplePlan | None:
        return self.sampler.plan

    def record(self, sample_id, loss, position, step: int, mean_loss=None) -> None:
        """One micro-batch's observations: ``loss`` as the settings' ``sample_loss`` records it, and
        ``mean_loss`` each sample's mean token loss where that is not ``loss`` itself."""
        self.log.append(sample_id, loss, position, step, mean_loss)

    def end_epoch(self, epoch: int, monitored: float | None = None) -> dict[str, float]:
        """Gather, mine on rank 0, broadcast the plan; return the hsm/ metrics.

        Called once per epoch on every rank. A second call for an epoch already
        mined is a bug in the caller and raises on every rank.
        """
        if self.mined_epoch is not None and epoch <= self.mined_epoch:
            raise MiningError(f"epoch {epoch} was already mined (last mined epoch: {self.mined_epoch})")
        gathered = gather_columns(self.log.drain(), self.ranks)
        payload = None
        if self.miner is not None:
            try:
                payload = ("ok", *self._mine_on_rank0(epoch, gathered, monitored))
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                # The other ranks wait in the broadcast: tell them, then fail together
                # rather than leave them hanging or train on without mining.
                logger.exception("hardmine: mining failed at the end of epoch %d", epoch)
                payload = ("error", f"{type(e).__name__}: {e}", None)
        status, plan_state, metrics = broadcast_object(payload, self.ranks)
        if status == "error":
            raise MiningError(f"mining failed at the end of epoch {epoch} on rank 0: {plan_state}")
        self.mined_epoch = epoch
        self.selection_mode = metrics.get(SELECTION_MODE, self.selection_mode)
        # Shadow mode: the plan is made, dumped and logged, never handed to the sampler.
        applied = None if self.settings.shadow else plan_state
        self.sampler.plan = None if applied is None else HardSamplePlan.from_state_dict(applied)
        return metrics

    def _mine_on_rank0(self, epoch: int, gathered, monitored):
        obs = deduplicate(gathered)
        self.miner.observe(obs["sample_id"], obs["loss"], epoch=epoch, steps=obs["step"])
        if monitored is None and ObservationLog.MEAN_LOSS in obs:
            # The trigger's train_loss is the training loss, whatever statistic is recorded.
            monitored = finite_mean(obs[ObservationLog.MEAN_LOSS])
        dump = self.settings.dump
        report = self.miner.end_epoch(epoch, monitored, population=dump and self.settings.dump_population)
        metrics = self._metrics(report, observed_now=int(obs["sample_id"].size))
        self.histograms = self._histograms(report)
        if dump:
            try:
                self._write_files(report, metrics)
            except OSError as e:
                # Disk full or no permission: the plan is made and applies, and
                # the run keeps going to its checkpoints; only the file is missing.
                logger.error("hardmine: could not write the dump of epoch %d to %s: %s", epoch, self.output_dir, e)
                metrics["hsm/dump_failed"] = 1.0
        # The selection mode is a name, not a number: beside the metrics, never among the scalars.
        mode = {} if report.selection is None else {SELECTION_MODE: report.selection.mode}
        self.history.append({"epoch": epoch, **metrics, **mode})
        logger.info(self._summary(epoch, metrics, mode.get(SELECTION_MODE)))
        return (None if self.miner.plan is None else self.miner.plan.state_dict(), {**metrics, **mode})

    # ----------------------------------------------------------------- files
    def _write_files(self, report, metrics: Mapping[str, float]) -> None:
        """The dump (and population) of an active epoch, and the epoch log line."""
        if report.plan is not None:
            population = None
            if report.population is not None:
                add_slices(report.population, self.catalogs)
                population = write_population(report.population, self.output_dir).name
            report.plan.dump(
                self.output_dir,
                sample_stats=report.hard_stats,
                catalogs=self.catalogs,
                extra=self._dump_header(report, population),
            )
        row = {
            "epoch": report.epoch,
            "monitor": self.monitor,
            "selection_mode": None if report.selection is None else report.selection.mode,
            **{k: finite_or_none(v) for k, v in metrics.items()},
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / EPOCH_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")

    def _dump_header(self, report, population: str | None) -> dict[str, Any]:
        sel = report.selection
        decision = {
            "monitor": self.monitor,
            "monitored": finite_or_none(report.monitored),
            # The unit of every loss in the dump: mean token loss or the worst tokens' mean.
            "sample_loss": dataclasses.asdict(self.settings.sample_loss),
            "observed": int(sel.observed),
            "eligible": int(sel.eligible),
            "excluded": {k: int(v) for k, v in sel.excluded.items()},
            "loss_scale": finite_or_none(sel.scale),
            **loss_summary(sel),
        }
        datasets = {}
        for name in self.miner.eligible:
            catalog = self.catalogs.get(name)
            datasets[name] = {
                "size": int(self.sizes[name]),
                "source": None if catalog is None else catalog.source,
                "slices": {} if catalog is None else catalog.slice_counts(),
            }
        return {"decision": decision, "datasets": datasets, "population": population}

    @staticmethod
    def _histograms(report) -> dict[str, np.ndarray] | None:
        if report.selection is None:
            return None
        sel = report.selection
        hard = np.concatenate(list(sel.losses.values())) if sel.losses else np.empty(0)
        return {"hsm/aggregated_loss_target": np.asarray(sel.all_losses, np.float64), "hsm/aggregated_loss_hard": hard}

    def _metrics(self, report, observed_now: int) -> dict[str, float]:
        m: dict[str, float] = {
            "hsm/epoch": float(report.epoch),
            "hsm/active": float(report.active),
            "hsm/finished": float(report.finished),
            "hsm/shadow": float(self.settings.shadow),
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
    def _summary(epoch: int, m: Mapping[str, float], mode: str | None) -> str:
        if m.get("hsm/finished"):
            return f"hardmine: epoch {epoch}: mining finished (max_active_epochs reached); every target sample once an epoch"
        if not m.get("hsm/active"):
            return f"hardmine: epoch {epoch}: mining inactive (monitored {m.get('hsm/monitored', float('nan')):.4f})"
        return (
            f"hardmine: epoch {epoch}: {int(m['hsm/num_hard'])} hard of {int(m['hsm/eligible'])} eligible ({mode}), "
            f"weight {m['hsm/weight_max']:g}; loss hard {m['hsm/hard_loss_mean']:.4f} vs all {m['hsm/all_loss_mean']:.4f}"
            + ("; shadow: not applied, the order stays the stock one" if m.get("hsm/shadow") else "")
        )

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "miner": None if self.miner is None else self.miner.state_dict(),
            "plan": None if self.plan is None else self.plan.state_dict(),
            "sampler": self.sampler.state_dict(),
            "history": list(self.history),
            "mined_epoch": self.mined_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.miner is not None:
            if state.get("miner") is None:
                raise ValueError("the checkpoint holds no mining state for rank 0")
            self.miner.load_state_dict(state["miner"])
        self.sampler.load_state_dict(state["sampler"])
        self.sampler.plan = None if state["plan"] is None else HardSamplePlan.from_state_dict(state["plan"])
        self.history = list(state.get("history", []))
        self.mined_epoch = state.get("mined_epoch")

    def save(self, checkpoint_dir: str | Path) -> Path:
        path = Path(checkpoint_dir) / STATE_FILE
        save_state(path, self.state_dict())
        return path

    def check_resumable(self, checkpoint_dir: str | Path) -> None:
        """Raise (naming the keys) if the checkpoint's mining state was made with other settings."""
        path = Path(checkpoint_dir) / STATE_FILE
        if self.miner is not None and path.is_file():
            self.miner.check_state(load_state(path)["miner"])

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
    write_atomically(path, lambda f: np.savez(f, __skeleton__=np.frombuffer(json.dumps(skeleton).encode(), np.uint8), **arrays))


def load_state(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "__skeleton__"}
        skeleton = json.loads(data["__skeleton__"].tobytes().decode())
    return _unflatten(skeleton, arrays)
