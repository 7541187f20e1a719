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

from .audit import Population, population_table
from .errors import MINING_KEY, UserInputError, check_range
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
    # Per mined dataset, aligned with the plan's base_idx: "last_loss" (last raw
    # loss) and "count" (observations in the aggregate); empty when inactive.
    hard_stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    population: Population | None = None  # with end_epoch(..., population=True)


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

    def end_epoch(self, epoch: int, monitored: float | None = None, *, population: bool = False) -> EpochReport:
        """Close ``epoch``. ``monitored`` defaults to the epoch's mean training loss.

        ``population``: also record every mined-dataset sample's statistics and
        exclusion rule (:func:`hardmine.core.audit.population_table`) when a
        selection is made; it must be taken before the tracker closes the epoch.
        """
        if monitored is None:
            monitored = self.tracker.epoch_mean_loss(epoch)
        active = self.trigger.update(epoch, monitored)
        selection = None
        hard_stats: dict[str, dict[str, np.ndarray]] = {}
        table = None
        if active:
            s = self.settings
            earlier_flags = self.flagged  # what this selection's guard saw (rule sticky)
            selection = select_hard(self.tracker, self.eligible, epoch, s.selector, s.guard, flagged=self.flagged)
            self.flagged = dict(selection.flagged)
            hard_stats = self._hard_stats(selection, epoch)
            if population:
                table = population_table(
                    self.tracker, self.eligible, epoch, selection, s.selector, s.guard, flagged=earlier_flags
                )
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
            hard_stats=hard_stats,
            population=table,
        )

    def _hard_stats(self, selection: Selection, epoch: int) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for name, base in selection.datasets.items():
            view = self.tracker.view(name, epoch)
            out[name] = {"last_loss": view.last[base].astype(np.float64), "count": view.count[base].astype(np.int64)}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "eligible": list(self.eligible),
            "tracker": self.tracker.state_dict(),
            "trigger": self.trigger.state_dict(),
            "plan": None if self.plan is None else self.plan.state_dict(),
            "flagged": {name: flags.copy() for name, flags in self.flagged.items()},
        }

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Raise :class:`MiningStateMismatch`, naming each changed key, unless ``state`` fits these settings."""
        changed = settings_changes(state["settings"], asdict(self.settings))
        if list(state["eligible"]) != list(self.eligible):
            changed.append(f"mined datasets: {list(state['eligible'])} in the checkpoint, {list(self.eligible)} now")
        if changed:
            raise MiningStateMismatch(
                "the checkpoint's mining state was made with other settings; resume with the same settings "
                "(or start a new run):\n" + "\n".join(f"  - {c}" for c in changed)
            )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.check_state(state)
        self.tracker.load_state_dict(state["tracker"])
        self.trigger.load_state_dict(state["trigger"])
        self.plan = None if state["plan"] is None else HardSamplePlan.from_state_dict(state["plan"])
        # Absent in states saved before the sticky rule existed: nothing flagged then.
        self.flagged = {name: np.asarray(flags, bool) for name, flags in (state.get("flagged") or {}).items()}



class MiningStateMismatch(UserInputError):
    """Resuming with mining settings other than those the checkpoint was made with."""


#: Engine setting paths -> their YAML keys under custom.hard_sample_mining.
_YAML_NAMES = {
    "trigger.start_epoch": "start_epoch",
    "trigger.plateau_delta": "plateau_delta",
    "trigger.patience": "patience",
    "trigger.higher_is_better": "higher_is_better",
    "guard.enabled": "noise_guard.enabled",
    "guard.min_improvement": "noise_guard.min_improvement",
    "guard.window": "noise_guard.window",
    "guard.max_hard_streak": "noise_guard.max_hard_streak",
    "aggregation": "aggregation.mode",
    "ema_decay": "aggregation.ema_decay",
    "progress_correction": "aggregation.progress_correction",
    "level_decay": "aggregation.level_decay",
    "history_epochs": "aggregation.history_epochs",
}


def _flatten_settings(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_settings(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def settings_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per setting that differs, named by its YAML key: ``key: old in the checkpoint, new now``."""
    old, new = _flatten_settings(saved), _flatten_settings(current)
    lines = []
    for path in sorted(set(old) | set(new)):
        if old.get(path) != new.get(path):
            name = f"{MINING_KEY}.{_YAML_NAMES.get(path, path)}"
            lines.append(f"{name}: {old.get(path)!r} in the checkpoint, {new.get(path)!r} now")
    return lines


def hard_vs_all(selection: Selection) -> dict[str, float]:
    """Mean aggregated loss of the hard set and of all observed samples."""
    hard = np.concatenate(list(selection.losses.values())) if selection.losses else np.empty(0)
    every = selection.all_losses
    return {
        "hard_mean": float(hard.mean()) if hard.size else float("nan"),
        "all_mean": float(every.mean()) if every.size else float("nan"),
    }
