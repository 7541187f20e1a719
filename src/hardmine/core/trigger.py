"""When mining starts: the trigger.

Epochs are numbered from 0. At the end of epoch ``n`` the trigger is given the
monitored value of that epoch (by default the mean training loss of the epoch;
lower is better unless ``higher_is_better``). Mining becomes active at the end
of the first epoch ``n >= start_epoch`` at which the mode's test passes:

* ``start`` (the default): always. Mining starts at the end of ``start_epoch``
  whatever the loss does. Why the default: a model that still learns steadily
  (its loss falls by a third an epoch) never passes a plateau test, and that is
  where mining helped most; where the loss does flatten, the plateau test fired
  at ``start_epoch`` too (the trigger tables of docs/benchmarks.md).
* ``plateau``: at least ``patience`` earlier epochs were monitored, and the value
  improved by less than ``plateau_delta`` (relative) over the last ``patience``
  epochs: ``(v[n - patience] - v[n]) / |v[n - patience]| < plateau_delta`` (signs
  flipped when higher is better).

Once active it stays active, and mining re-selects at the end of every epoch.
A plan made at the end of epoch ``n`` applies from epoch ``n + 1``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .errors import MINING_KEY, SettingError, check_range

TRIGGER_MODES = ("start", "plateau")


@dataclass(frozen=True)
class TriggerSettings:
    start_epoch: int = 2
    plateau_delta: float = 0.25
    patience: int = 1
    higher_is_better: bool = False
    mode: str = "start"

    def __post_init__(self) -> None:
        check_range(f"{MINING_KEY}.start_epoch", self.start_epoch, low=0, integer=True)
        check_range(f"{MINING_KEY}.plateau_delta", self.plateau_delta, low=0.0)
        check_range(f"{MINING_KEY}.patience", self.patience, low=1, integer=True)
        if not isinstance(self.higher_is_better, bool):
            raise SettingError(f"{MINING_KEY}.higher_is_better", self.higher_is_better, "true or false")
        if self.mode not in TRIGGER_MODES:
            raise SettingError(f"{MINING_KEY}.trigger", self.mode, f"one of {list(TRIGGER_MODES)}")


class Trigger:
    """Decides, epoch by epoch, when mining becomes active (see the module doc)."""

    def __init__(self, settings: TriggerSettings | None = None):
        self.settings = settings or TriggerSettings()
        self.values: dict[int, float] = {}
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
        if self.settings.mode == "start":
            return True
        improvement = self.relative_improvement(epoch)
        return improvement is not None and improvement < self.settings.plateau_delta

    def update(self, epoch: int, value: float | None) -> bool:
        """Record the end of ``epoch``; return whether mining is active from now on."""
        epoch = int(epoch)
        if self.values and epoch <= max(self.values):
            raise ValueError(f"epoch {epoch} reported after epoch {max(self.values)}")
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"monitored value of epoch {epoch} is {value}; expected a finite number")
            self.values[epoch] = value
        if not self.active and epoch >= self.settings.start_epoch and self.passes(epoch):
            self.active = True
            self.activated_at = epoch
        return self.active

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "values": {str(k): v for k, v in self.values.items()},
            "active": self.active,
            "activated_at": self.activated_at,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = {int(k): float(v) for k, v in state["values"].items()}
        self.active = bool(state["active"])
        self.activated_at = state["activated_at"]
