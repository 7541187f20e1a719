"""The mining engine: tracker + trigger + selection + plan, one epoch at a time.

A training integration calls :meth:`HardSampleMiner.observe` with the epoch's
per-sample losses (on rank 0, once gathered) and :meth:`HardSampleMiner.end_epoch`
once per epoch; it then builds the next epoch's schedule from ``miner.plan``.
No trainer, no torch: the whole mining decision is testable on arrays.

Order at the end of epoch ``n``: the trigger sees the epoch's monitored value;
if mining is active the guard and selector run over the tracker and a new plan
(version + 1) replaces the old one; the tracker then records which samples the
plan made hard and frees its raw-history slot for epoch ``n + 1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import MINING_KEY, check_range
from .plan import HardSamplePlan
from .selection import GuardSettings, Selection, SelectorSettings, select_hard
from .tracker import LossTracker, TrackerSettings
from .trigger import PlateauTrigger, TriggerSettings


@dataclass(frozen=True)
class MiningSettings:
    """Every knob of mining, with hardmine's defaults."""

    trigger: TriggerSettings = field(default_factory=TriggerSettings)
    selector: SelectorSettings = field(default_factory=SelectorSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    aggregation: str = "ema"
    ema_decay: float = 0.5
    progress_correction: bool = True
    level_decay: float = 0.9
    # Aggregate from epoch start_epoch - history_epochs on: epoch-0 losses
    # mostly measure how young the model was.
    history_epochs: int = 1
    hard_weight: float = 3.0

    def __post_init__(self) -> None:
        check_range(f"{MINING_KEY}.hard_weight", self.hard_weight, low=1.0)
        check_range(f"{MINING_KEY}.aggregation.history_epochs", self.history_epochs, low=0, integer=True)
        self.tracker_settings()  # validates the aggregation keys

    def tracker_settings(self) -> TrackerSettings:
        return TrackerSettings(
            aggregation=self.aggregation,
            ema_decay=self.ema_decay,
            progress_correction=self.progress_correction,
            level_decay=self.level_decay,
            aggregate_from_epoch=max(0, self.trigger.start_epoch - self.history_epochs),
            history_slots=self.guard.window + 1,
        )


@dataclass
class EpochReport:
    """What happened at the end of one epoch (for logs and telemetry)."""

    epoch: int
    active: bool
    monitored: float | None
    plan: HardSamplePlan | None
    selection: Selection | None
    stats: dict[str, int] = field(default_factory=dict)  # the tracker's counters so far

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "active": self.active, "monitored": self.monitored, **self.stats}
        if self.selection is not None:
            sel = self.selection
            out.update(num_hard=sel.num_hard, observed=sel.observed, eligible=sel.eligible, excluded=dict(sel.excluded))
        return out


class HardSampleMiner:
    def __init__(
        self,
        datasets: Mapping[str, int],
        eligible: Sequence[str],
        settings: MiningSettings | None = None,
    ):
        self.settings = settings or MiningSettings()
        missing = [n for n in eligible if n not in datasets]
        if missing or not eligible or len(set(eligible)) != len(eligible):
            raise ValueError(f"eligible datasets {list(eligible)} must be a non-empty subset of {list(datasets)}")
        self.eligible = tuple(eligible)
        self.tracker = LossTracker(datasets, self.settings.tracker_settings())
        self.trigger = PlateauTrigger(self.settings.trigger)
        self.plan: HardSamplePlan | None = None
        # Guard rule "sticky": per eligible dataset, which samples ever failed the guard.
        self.flagged: dict[str, np.ndarray] = {}

    def observe(self, sample_ids, losses, *, epoch: int, steps) -> None:
        self.tracker.update(sample_ids, losses, epoch=epoch, steps=steps)

    def end_epoch(self, epoch: int, monitored: float | None = None) -> EpochReport:
        """Close ``epoch``. ``monitored`` defaults to the epoch's mean training loss."""
        if monitored is None:
            monitored = self.tracker.epoch_mean_loss(epoch)
        active = self.trigger.update(epoch, monitored)
        selection = None
        if active:
            s = self.settings
            selection = select_hard(self.tracker, self.eligible, epoch, s.selector, s.guard, flagged=self.flagged)
            self.flagged = dict(selection.flagged)
            self.plan = HardSamplePlan(
                epoch=epoch,
                version=(self.plan.version + 1) if self.plan is not None else 1,
                hard_weight=s.hard_weight,
                mode=selection.mode,
                params=selection.params,
                base_idx=dict(selection.datasets),
                losses=dict(selection.losses),
            )
        self.tracker.close_epoch(epoch, hard=selection.datasets if selection is not None else None)
        return EpochReport(
            epoch=epoch,
            active=active,
            monitored=monitored,
            plan=self.plan if active else None,
            selection=selection,
            stats=dict(self.tracker.stats),
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "eligible": list(self.eligible),
            "tracker": self.tracker.state_dict(),
            "trigger": self.trigger.state_dict(),
            "plan": None if self.plan is None else self.plan.state_dict(),
            "flagged": {name: flags.copy() for name, flags in self.flagged.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["settings"] != asdict(self.settings) or list(state["eligible"]) != list(self.eligible):
            raise ValueError("mining state was saved with different settings or eligible datasets")
        self.tracker.load_state_dict(state["tracker"])
        self.trigger.load_state_dict(state["trigger"])
        self.plan = None if state["plan"] is None else HardSamplePlan.from_state_dict(state["plan"])
        # Absent in states saved before the sticky rule existed: nothing flagged then.
        self.flagged = {name: np.asarray(flags, bool) for name, flags in (state.get("flagged") or {}).items()}



def hard_vs_all(selection: Selection) -> dict[str, float]:
    """Mean aggregated loss of the hard set and of all observed samples."""
    hard = np.concatenate(list(selection.losses.values())) if selection.losses else np.empty(0)
    every = selection.all_losses
    return {
        "hard_mean": float(hard.mean()) if hard.size else float("nan"),
        "all_mean": float(every.mean()) if every.size else float("nan"),
    }
