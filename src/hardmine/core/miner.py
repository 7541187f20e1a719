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

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .audit import Population, population_table
from .errors import MINING_KEY, SettingError, UserInputError, check_range
from .plan import HardSamplePlan
from .guard import DEFAULT_GUARD_RULES, GuardSettings
from .selection import Selection, SelectorSettings, select_hard
from .tracker import LossTracker, TrackerSettings
from .trigger import Trigger, TriggerSettings


#: Keyword arguments for pydantic, which validates these dataclasses for the YAML
#: config (a plain dict: the core does not import pydantic). Unknown keys are errors.
_STRICT = {"extra": "forbid"}


#: The mining state a checkpoint holds; a state of another format is refused with one message.
MINING_STATE_FORMAT = "hardmine.mining-state/2"

#: Statistics of a sample's token losses that mining can record.
SAMPLE_LOSS_STATISTICS = ("mean", "worst_tokens", "fields", "mixed")
#: Statistic worst_tokens: the mean of this many highest token losses. Three: a couple of wrong
#: or unlearnt words in a long answer set it, one token alone would be a single noisy loss.
WORST_TOKENS = 3
#: Statistics that read the tokens of the answer's fields (the batch's ``loss_focus``).
FIELD_STATISTICS = ("fields", "mixed")


@dataclass(frozen=True)
class SampleLossSettings:
    """Which statistic of a sample's token losses mining records (``custom.hard_sample_mining.sample_loss``).

    ``mean``: the masked mean cross-entropy, the model's own loss per sample.
    ``worst_tokens``: the mean of the sample's :data:`WORST_TOKENS` highest token losses. In
    a long answer that is mostly learnt (a dense caption is mostly coordinate
    digits) a few wrong tokens barely move the mean; they set the worst tokens.
    ``fields``: the mean loss over the tokens of the answer's JSON string values
    under the keys in ``fields`` (a dense caption's ``desc``: the words that name
    each object, not its coordinates). The batch says which tokens those are
    (``loss_focus``, made by hardmine's caption dataset); a sample with none of
    them records NaN, which mining skips.
    ``mixed``: the mean of the two: half the sample's mean token loss, half its
    fields' mean (the mean alone where it has no field tokens). The fields tell a
    caption's wrong or unlearnt words; the mean keeps what the whole answer costs.
    """

    __pydantic_config__ = _STRICT

    statistic: str = "mean"
    fields: tuple[str, ...] = ("desc",)

    def __post_init__(self) -> None:
        key = f"{MINING_KEY}.sample_loss"
        if self.statistic not in SAMPLE_LOSS_STATISTICS:
            raise SettingError(f"{key}.statistic", self.statistic, f"one of {list(SAMPLE_LOSS_STATISTICS)}")
        if isinstance(self.fields, str) or not isinstance(self.fields, Sequence) or not self.fields or not all(
            isinstance(f, str) and f for f in self.fields
        ):
            raise SettingError(f"{key}.fields", self.fields, "a non-empty list of JSON key names")
        object.__setattr__(self, "fields", tuple(self.fields))  # frozen; a list from the caller becomes a tuple

    @property
    def reads_fields(self) -> bool:
        """Whether the statistic needs each token's field flag (the batch's ``loss_focus``)."""
        return self.statistic in FIELD_STATISTICS


@dataclass(frozen=True)
class AggregationSettings:
    """How a sample's observations become one loss (``custom.hard_sample_mining.aggregation``)."""

    __pydantic_config__ = _STRICT

    mode: str = "ema"  # "ema" or "mean"
    ema_decay: float = 0.5
    progress_correction: bool = True  # divide each loss by the training-loss level at its step
    # Aggregate from epoch start_epoch - history_epochs on: epoch-0 losses
    # mostly measure how young the model was.
    history_epochs: int = 1

    def __post_init__(self) -> None:
        check_range(f"{MINING_KEY}.aggregation.history_epochs", self.history_epochs, low=0, integer=True)
        TrackerSettings(  # checks the rest
            aggregation=self.mode, ema_decay=self.ema_decay, progress_correction=self.progress_correction,
        )


@dataclass(frozen=True)
class MiningSettings:
    """Every knob of mining, with hardmine's defaults: the YAML section ``custom.hard_sample_mining``.

    The same names and shapes as the YAML: where YAML has a mapping
    (``selector``, ``aggregation``, ``noise_guard``) a dict of its keys is
    accepted as well as the settings object. Every value is checked when the
    settings are made; a bad one raises :class:`SettingError` naming its key.
    ``enabled=False`` is the one way to switch mining off.
    """

    __pydantic_config__ = _STRICT

    enabled: bool = True
    # Mine exactly as when on (record, trigger, select, guard, dump, log) but never apply a
    # plan: the sampler keeps the stock order. The exact control of the same settings with
    # shadow off: the two runs are bitwise equal until the active run's first plan applies.
    shadow: bool = False
    start_epoch: int = 2  # 0-based; a plan made at the end of epoch n applies from n + 1
    # Trigger plateau: fires once an epoch's monitor improved by less than this share, so
    # after a first epoch's plunge (docs/benchmarks.md, the trigger tables).
    plateau_delta: float = 0.25
    patience: int = 1
    monitor: str = "train_loss"  # or an eval metric reported after every epoch (eval_<name>_loss)
    higher_is_better: bool = False
    # When mining starts (hardmine.core.trigger): "start" (at start_epoch, whatever the loss
    # does) or "plateau" (once the monitor improved by less than plateau_delta).
    trigger: str = "start"
    sample_loss: SampleLossSettings = field(default_factory=SampleLossSettings)
    selector: SelectorSettings = field(default_factory=SelectorSettings)
    aggregation: AggregationSettings = field(default_factory=AggregationSettings)
    noise_guard: GuardSettings = field(default_factory=GuardSettings)
    hard_weight: float = 3.0
    # Epochs mining reweights once the trigger has fired (plans made at the end of the
    # trigger's epoch and the next ones); after them the schedule shows every target sample
    # once an epoch again (same order rules, no weights). None: to the end of training.
    # Why 5: the max_active_epochs row of docs/benchmarks.md (long runs: reweighting a model
    # that has learnt the task costs more than it gives).
    max_active_epochs: int | None = 5
    dump: bool = True  # output_dir/hard_samples_epoch_{n}.json
    dump_population: bool = False  # also every target sample's statistics per mining epoch

    def __post_init__(self) -> None:
        nested = (
            ("sample_loss", SampleLossSettings), ("selector", SelectorSettings),
            ("aggregation", AggregationSettings), ("noise_guard", GuardSettings),
        )
        for name, cls in nested:
            object.__setattr__(self, name, settings_from(cls, getattr(self, name), f"{MINING_KEY}.{name}"))
        if self.noise_guard.rule is None:  # unset: the rule of the recorded statistic
            rule = DEFAULT_GUARD_RULES[self.sample_loss.statistic]
            object.__setattr__(self, "noise_guard", replace(self.noise_guard, rule=rule))
        for name in ("enabled", "shadow", "higher_is_better", "dump", "dump_population"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(f"{MINING_KEY}.{name}", getattr(self, name), "true or false")
        if not isinstance(self.monitor, str) or not self.monitor:
            raise SettingError(f"{MINING_KEY}.monitor", self.monitor, "train_loss or an eval metric name")
        check_range(f"{MINING_KEY}.hard_weight", self.hard_weight, low=1.0)
        if self.max_active_epochs is not None:
            check_range(f"{MINING_KEY}.max_active_epochs", self.max_active_epochs, low=1, integer=True)
        self.trigger_settings()  # checks trigger, start_epoch, plateau_delta, patience
        self.tracker_settings()

    def trigger_settings(self) -> TriggerSettings:
        return TriggerSettings(
            start_epoch=self.start_epoch, plateau_delta=self.plateau_delta, patience=self.patience,
            higher_is_better=self.higher_is_better, mode=self.trigger,
        )

    @property
    def guard(self) -> GuardSettings:
        return self.noise_guard

    def tracker_settings(self) -> TrackerSettings:
        a = self.aggregation
        return TrackerSettings(
            aggregation=a.mode,
            ema_decay=a.ema_decay,
            progress_correction=a.progress_correction,
            aggregate_from_epoch=max(0, self.start_epoch - a.history_epochs),
            history_slots=self.noise_guard.window + 1,
        )

    def decision_dict(self) -> dict[str, Any]:
        """The settings that decide what is mined (a resumed run must keep them): all but the dump options."""
        return {k: v for k, v in asdict(self).items() if k not in ("dump", "dump_population")}


def settings_from(cls, value, key: str):
    """``value`` as a ``cls`` settings object: itself, or built from a mapping of its keys."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in value if k not in names)
        if unknown:
            raise SettingError(f"{key}.{unknown[0]}", value[unknown[0]], f"a key among {names}")
        return cls(**value)
    raise SettingError(key, value, f"a {cls.__name__} or a mapping of its keys {[f.name for f in fields(cls)]}")


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
    # The trigger fired, and max_active_epochs plans were made: no more reweighting.
    finished: bool = False


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
        self.trigger = Trigger(self.settings.trigger_settings())
        self.plan: HardSamplePlan | None = None
        # The guard's flag_for_good: per eligible dataset, which samples are excluded for good.
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
        fired = self.trigger.update(epoch, monitored)
        finished = fired and self.past_active_epochs(epoch)
        active = fired and not finished
        selection = None
        hard_stats: dict[str, dict[str, np.ndarray]] = {}
        table = None
        if finished and self.plan is not None and self.plan.num_hard:
            # The schedule's own order rules stay (no sample sits out twice running), without weights.
            self.plan = HardSamplePlan(
                epoch=epoch, version=self.plan.version + 1, hard_weight=self.plan.hard_weight,
                mode=self.plan.mode, params=dict(self.plan.params),
                base_idx={name: np.empty(0, np.int64) for name in self.eligible},
            )
        if active:
            s = self.settings
            earlier_flags = self.flagged  # what this selection's guard saw
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
            finished=finished,
        )

    def past_active_epochs(self, epoch: int) -> bool:
        """Whether the plan of ``epoch`` comes after the last of ``max_active_epochs`` (never when unset)."""
        cap, fired_at = self.settings.max_active_epochs, self.trigger.activated_at
        return cap is not None and fired_at is not None and epoch - fired_at >= cap

    def _hard_stats(self, selection: Selection, epoch: int) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for name, base in selection.datasets.items():
            view = self.tracker.view(name, epoch)
            out[name] = {"last_loss": view.last[base].astype(np.float64), "count": view.count[base].astype(np.int64)}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": MINING_STATE_FORMAT,
            "settings": self.settings.decision_dict(),
            "eligible": list(self.eligible),
            "tracker": self.tracker.state_dict(),
            "trigger": self.trigger.state_dict(),
            "plan": None if self.plan is None else self.plan.state_dict(),
            "flagged": {name: flags.copy() for name, flags in self.flagged.items()},
        }

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Raise :class:`MiningStateMismatch`, naming each changed key, unless ``state`` fits these settings."""
        found = state.get("format") if isinstance(state, Mapping) else None
        if found != MINING_STATE_FORMAT:
            raise MiningStateMismatch(
                f"the checkpoint's mining state has format {found!r}; this hardmine reads only {MINING_STATE_FORMAT!r} "
                "(a state written by an earlier version of hardmine, which this one does not read): start a new run"
            )
        changed = settings_changes(state["settings"], self.settings.decision_dict())
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
        self.flagged = {name: np.asarray(flags, bool) for name, flags in state["flagged"].items()}


class MiningStateMismatch(UserInputError):
    """Resuming with mining settings other than those the checkpoint was made with."""


def _flatten_settings(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_settings(value, f"{path}."))
        else:
            flat[path] = list(value) if isinstance(value, tuple) else value  # a checkpoint's JSON holds lists
    return flat


def settings_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per setting that differs, named by its YAML key: ``key: old in the checkpoint, new now``."""
    old, new = _flatten_settings(saved), _flatten_settings(current)
    lines = []
    for path in sorted(set(old) | set(new)):
        if old.get(path) != new.get(path):
            name = f"{MINING_KEY}.{path}"
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
