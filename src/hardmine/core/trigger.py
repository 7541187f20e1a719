"""When mining starts: the trigger.

Epochs are numbered from 0. At the end of epoch ``n`` the trigger is given the
monitored value of that epoch (by default the mean training loss of the epoch;
lower is better unless ``higher_is_better``) and, for the modes that read the
samples themselves, a signal computed from the mined datasets' per-epoch raw
losses. Mining becomes active at the end of the first epoch ``n >= start_epoch``
at which the mode's test passes:

* ``plateau``: at least ``patience`` earlier epochs were monitored, and the value
  improved by less than ``plateau_delta`` (relative) over the last ``patience``
  epochs: ``(v[n - patience] - v[n]) / |v[n - patience]| < plateau_delta`` (signs
  flipped when higher is better). A model that keeps learning steadily may never
  pass it.
* ``start``: always: mining starts at the end of ``start_epoch`` whatever the loss does.
* ``tail``: over the samples seen in both epochs ``n - 1`` and ``n``, the mean raw loss
  of the worst ``TAIL_FRACTION`` fell by a smaller share than the median did
  (:func:`tail_lag` > 0): a tail the model is not learning as fast as the rest.
* ``stable``: at least ``STABLE_OVERLAP`` of epoch ``n``'s worst ``TAIL_FRACTION``
  were also among epoch ``n - 1``'s worst (:func:`top_overlap`): the same samples
  stay hard, so their rank is not the luck of when in the epoch they came.

Once active it stays active, and mining re-selects at the end of every epoch.
A plan made at the end of epoch ``n`` applies from epoch ``n + 1``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from .errors import MINING_KEY, SettingError, check_range

TRIGGER_MODES = ("plateau", "start", "tail", "stable")
#: Modes whose test reads the samples' per-epoch losses (the miner computes their signal).
SAMPLE_MODES = ("tail", "stable")
#: The tail the sample modes look at: the worst tenth, the share the default selector mines.
TAIL_FRACTION = 0.1
#: Mode ``stable``: half of this epoch's worst tenth were among the last epoch's worst. A
#: tenth drawn at random would overlap by a tenth; half is well clear of that and of the
#: shuffle's effect on single raw losses.
STABLE_OVERLAP = 0.5
#: Samples seen in both epochs below which a sample signal is not computed (no firing).
MIN_SIGNAL_SAMPLES = 20


@dataclass(frozen=True)
class TriggerSettings:
    start_epoch: int = 2
    plateau_delta: float = 0.25
    patience: int = 1
    higher_is_better: bool = False
    mode: str = "plateau"

    def __post_init__(self) -> None:
        check_range(f"{MINING_KEY}.start_epoch", self.start_epoch, low=0, integer=True)
        check_range(f"{MINING_KEY}.plateau_delta", self.plateau_delta, low=0.0)
        check_range(f"{MINING_KEY}.patience", self.patience, low=1, integer=True)
        if not isinstance(self.higher_is_better, bool):
            raise SettingError(f"{MINING_KEY}.higher_is_better", self.higher_is_better, "true or false")
        if self.mode not in TRIGGER_MODES:
            raise SettingError(f"{MINING_KEY}.trigger", self.mode, f"one of {list(TRIGGER_MODES)}")


def _seen_in_both(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    previous, current = np.asarray(previous, np.float64), np.asarray(current, np.float64)
    both = np.isfinite(previous) & np.isfinite(current)
    if np.count_nonzero(both) < MIN_SIGNAL_SAMPLES:
        return None
    return previous[both], current[both]


def tail_lag(previous: np.ndarray, current: np.ndarray, fraction: float = TAIL_FRACTION) -> float | None:
    """Relative fall of the median raw loss minus that of the tail (the mean of the worst
    ``fraction``, in each epoch), between two epochs, over the samples seen in both (NaN:
    not seen). Positive: the tail falls more slowly than the bulk. None: too few samples
    seen in both."""
    pair = _seen_in_both(previous, current)
    if pair is None:
        return None
    before, now = pair
    k = max(1, math.ceil(round(fraction * now.size, 9)))

    def fall(b: float, n: float) -> float:
        return (b - n) / b if b > 0 else 0.0

    tail_before, tail_now = (float(np.sort(x)[-k:].mean()) for x in (before, now))
    return fall(float(np.median(before)), float(np.median(now))) - fall(tail_before, tail_now)


def top_overlap(previous: np.ndarray, current: np.ndarray, fraction: float = TAIL_FRACTION) -> float | None:
    """Share of the worst ``fraction`` of ``current`` that was also in the worst ``fraction``
    of ``previous``, over the samples seen in both. None: too few samples seen in both."""
    pair = _seen_in_both(previous, current)
    if pair is None:
        return None
    before, now = pair
    k = max(1, math.ceil(round(fraction * now.size, 9)))
    # Stable sorts: ties go to the lower position, so the signal is deterministic.
    worst_before = np.argsort(-before, kind="stable")[:k]
    worst_now = np.argsort(-now, kind="stable")[:k]
    return float(np.intersect1d(worst_before, worst_now).size / k)


def sample_signal(mode: str, previous: np.ndarray, current: np.ndarray) -> float | None:
    """The signal of a sample mode from two epochs' raw losses (aligned arrays)."""
    if mode == "tail":
        return tail_lag(previous, current)
    if mode == "stable":
        return top_overlap(previous, current)
    raise ValueError(f"mode {mode!r} reads no sample signal (sample modes: {list(SAMPLE_MODES)})")


class Trigger:
    """Decides, epoch by epoch, when mining becomes active (see the module doc)."""

    def __init__(self, settings: TriggerSettings | None = None):
        self.settings = settings or TriggerSettings()
        self.values: dict[int, float] = {}
        self.signals: dict[int, float] = {}
        self.active = False
        self.activated_at: int | None = None

    def relative_improvement(self, epoch: int) -> float | None:
        """Improvement of the monitored value over the last ``patience`` epochs."""
        before = self.values.get(epoch - self.settings.patience)
        now = self.values.get(epoch)
        if before is None or now is None:
            return None
        gain = (now - before) if self.settings.higher_is_better else (before - now)
        return gain / abs(before) if before != 0 else (math.inf if gain > 0 else 0.0)

    def passes(self, epoch: int) -> bool:
        """Whether the mode's test passes at the end of ``epoch`` (start epoch aside)."""
        mode = self.settings.mode
        if mode == "start":
            return True
        if mode == "plateau":
            improvement = self.relative_improvement(epoch)
            return improvement is not None and improvement < self.settings.plateau_delta
        signal = self.signals.get(epoch)
        if signal is None:
            return False
        return signal > 0 if mode == "tail" else signal >= STABLE_OVERLAP

    def update(self, epoch: int, value: float | None, signal: float | None = None) -> bool:
        """Record the end of ``epoch``; return whether mining is active from now on.

        ``signal``: the sample signal of the mode (:func:`sample_signal`), None when it
        could not be computed or the mode reads none.
        """
        epoch = int(epoch)
        if self.values and epoch <= max(self.values):
            raise ValueError(f"epoch {epoch} reported after epoch {max(self.values)}")
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"monitored value of epoch {epoch} is {value}; expected a finite number")
            self.values[epoch] = value
        if signal is not None:
            self.signals[epoch] = float(signal)
        if not self.active and epoch >= self.settings.start_epoch and self.passes(epoch):
            self.active = True
            self.activated_at = epoch
        return self.active

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "values": {str(k): v for k, v in self.values.items()},
            "signals": {str(k): v for k, v in self.signals.items()},
            "active": self.active,
            "activated_at": self.activated_at,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = {int(k): float(v) for k, v in state["values"].items()}
        self.signals = {int(k): float(v) for k, v in state["signals"].items()}
        self.active = bool(state["active"])
        self.activated_at = state["activated_at"]
