"""The noise guard: which observed samples may be mined at all.

Pure functions over arrays; :func:`hardmine.core.selection.select_hard` applies
them to tracked views. Every rule and every exclusion is declared once here
(:data:`GUARD_RULES`, :data:`EXCLUSIONS`); counts, logs, population files,
``hardmine inspect`` and its plots read their names, labels and colours from
these declarations. Adding a rule touches this module and its test.

Why a guard: a sample the model still gets wrong after several epochs is either
hard or wrongly labelled, and naive loss mining picks the second kind first. As
the model learns the task it grows confident of the right answer, so a wrong
label's loss stays at or rises above where it started while every learnable
sample's falls, hard ones included (slowly). Each rule compares a sample's
recent raw loss with a *level* it should have left behind had it been
learnable:

* ``start_level`` (test ``at_start_level``): the dataset's *start level*, the
  median raw loss of its first observed epoch. The sample's mean raw loss over
  the last ``window`` epochs in which it was seen is at least that level: the
  model, trained for several epochs, still does no better on it than it did on a
  typical sample when it was young. Measured on the text task of
  ``benchmarks/signals.py``, this level separates wrong labels from hard clean
  samples better than any test of a sample's own trend: single per-epoch losses
  are too noisy for a trend over a few epochs to tell them apart.
* ``learning``: ``start_level``'s test, plus ``not_below_own_start``: the
  sample's *own early level* (its raw loss in its first epoch after its
  dataset's first). Over those of the last ``window`` epochs that came after it,
  its mean raw loss is not below that level: the model has not got better at it.
  Why: where a wrong label uses the task's common words (a swapped colour in a
  dense caption) its loss starts as low as any sample's, then *rises* as the
  model learns the right answer from the image, while a hard clean sample's loss
  falls from a high start (the guard-rule replay of docs/benchmarks.md, VL task).

Unset, the rule follows the recorded statistic (:data:`DEFAULT_GUARD_RULES`).

With every rule:

* ``insufficient_history``: seen in none of the last ``window`` epochs.
* ``hard_streak``: hard in each of the last ``max_hard_streak`` plans; it gets
  a rest (a sample the model cannot learn should not hold 3x weight for ever).
  Resting only those whose loss stopped falling, a half at a time, or none
  changed nothing measurable (the ``noise_guard.max_hard_streak`` row of
  docs/benchmarks.md).
* ``flagged_earlier`` (with ``flag_for_good``, the default): a sample at or above
  one of its rule's levels in each of the last ``window + 1`` epochs, none of them
  the dataset's first, is excluded for the rest of the run. Why: trained long
  enough, the model memorises wrong labels and their loss falls below the level;
  by then they have sat there for many epochs, while a hard clean sample rarely
  stays there ``window + 1`` epochs running. The memory is the caller's
  (``flagged`` in, :attr:`GuardVerdict.flagged` out), so the guard stays pure.

Each exclusion is counted separately (a sample can fail several).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import MINING_KEY, SettingError, check_range


# ------------------------------------------------------------------ declarations
@dataclass(frozen=True)
class Exclusion:
    """One reason the guard excludes a sample.

    ``name``: its key in counts, ``hsm/excluded_<name>`` and population files;
    ``label``: its short column name in ``hardmine inspect``; ``colour``: its
    line in inspect's plot; ``meaning``: one line for inspect's legend.
    """

    name: str
    label: str
    colour: str
    meaning: str


@dataclass(frozen=True)
class EarlyLevels:
    """Each sample's own early level (rule ``learning``), aligned with a history's columns."""

    loss: np.ndarray  # raw loss in the sample's first epoch after its dataset's first (NaN: none yet)
    epoch: np.ndarray  # that epoch (-1: none yet)
    history_end: int  # the epoch of the history's newest row

    def after(self, rows: int) -> np.ndarray:
        """(rows, n): True where the history's last ``rows`` rows are later than the sample's early level."""
        row_epochs = np.arange(self.history_end - rows + 1, self.history_end + 1)
        early = np.asarray(self.epoch)
        return (row_epochs[:, None] > early[None, :]) & (early >= 0)[None, :]


#: A level test's level: (rows of raw loss, oldest first; the start level; the early levels)
#: -> (the level per sample or one for all, which rows count), or None: it cannot judge yet.
Level = Callable[[np.ndarray, float, "EarlyLevels | None"], "tuple[np.ndarray | float, np.ndarray] | None"]


def start_level(rows: np.ndarray, level: float, early: EarlyLevels | None):
    """The dataset's start level, over every row (NaN level: nobody reaches it)."""
    return level, np.isfinite(rows)


def own_early_level(rows: np.ndarray, level: float, early: EarlyLevels | None):
    """The sample's own early level, over the rows after it (None: no early levels known yet)."""
    if early is None:
        return None
    return np.asarray(early.loss, np.float64), np.isfinite(rows) & early.after(rows.shape[0])


@dataclass(frozen=True)
class LevelTest:
    """Excludes (as ``exclusion``) a sample whose mean raw loss over the counted rows of the
    last ``window`` epochs is at or above ``level``."""

    exclusion: str
    level: Level


@dataclass(frozen=True)
class GuardRule:
    name: str
    tests: tuple[LevelTest, ...]


EXCLUSIONS: dict[str, Exclusion] = {
    e.name: e
    for e in (
        Exclusion("insufficient_history", "history", "tab:grey", "seen in none of the last `window` epochs"),
        Exclusion("at_start_level", "start", "tab:red",
                  "loss still at the first epoch's median (rules start_level, learning; likely a wrong label)"),
        Exclusion("not_below_own_start", "own", "tab:pink", "loss not below the sample's own early level (rule learning)"),
        Exclusion("hard_streak", "streak", "tab:purple", "hard in too many plans in a row"),
        Exclusion("flagged_earlier", "flagged", "tab:brown", "excluded for good at an earlier epoch"),
    )
}
_AT_START_LEVEL = LevelTest("at_start_level", start_level)
GUARD_RULES: dict[str, GuardRule] = {
    r.name: r
    for r in (
        GuardRule("start_level", (_AT_START_LEVEL,)),
        GuardRule("learning", (_AT_START_LEVEL, LevelTest("not_below_own_start", own_early_level))),
    )
}
# The rule each recorded statistic (``sample_loss.statistic``) gets when ``noise_guard.rule``
# is not set, as benchmarks/quality.py measured them (docs/benchmarks.md): start_level for
# the mean and the worst tokens; learning where the description words count (fields, mixed),
# as a wrong colour word starts as low as any word and rises as the model learns the right one.
DEFAULT_GUARD_RULES = {"mean": "start_level", "worst_tokens": "start_level", "fields": "learning", "mixed": "learning"}


@dataclass(frozen=True)
class GuardSettings:
    enabled: bool = True
    # Epochs of raw loss the guard averages (the noise_guard.window row of docs/benchmarks.md).
    window: int = 3
    max_hard_streak: int = 3
    # A name in GUARD_RULES. None (the default): the rule of the statistic mining records
    # (MiningSettings resolves it, DEFAULT_GUARD_RULES), start_level for a guard used on its own.
    rule: str | None = None
    # Exclude for good a sample at its rule's level in each of the last window + 1 epochs.
    flag_for_good: bool = True

    def __post_init__(self) -> None:
        key = f"{MINING_KEY}.noise_guard"
        for name in ("enabled", "flag_for_good"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(f"{key}.{name}", getattr(self, name), "true or false")
        if self.rule is not None and self.rule not in GUARD_RULES:
            raise SettingError(f"{key}.rule", self.rule, f"one of {list(GUARD_RULES)}")
        check_range(f"{key}.window", self.window, low=1, high=15, integer=True)
        check_range(f"{key}.max_hard_streak", self.max_hard_streak, low=1, high=16, integer=True)

    @property
    def resolved_rule(self) -> GuardRule:
        return GUARD_RULES[self.rule or DEFAULT_GUARD_RULES["mean"]]


# ------------------------------------------------------------------ tests
def streak_reached(hard_bits: np.ndarray, max_hard_streak: int) -> np.ndarray:
    """True where the sample was hard in each of the last ``max_hard_streak`` plans."""
    mask = np.uint16((1 << max_hard_streak) - 1)
    return (hard_bits & mask) == mask


def recent_raw_loss(history: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw loss over the last ``window`` rows of a (slots, n) history, and where any was seen."""
    recent = np.asarray(history)[-window:]
    return _counted_mean(recent, np.isfinite(recent))


def _counted_mean(rows: np.ndarray, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_counted = counted.sum(0)
    total = np.where(counted, rows, 0).astype(np.float64).sum(0)
    mean = np.divide(total, n_counted, out=np.full(total.shape, np.nan), where=n_counted > 0)
    return mean, n_counted > 0


def at_or_above(rows: np.ndarray, level: np.ndarray | float, counted: np.ndarray) -> np.ndarray:
    """True where the mean of the counted rows is at or above ``level`` (False where none counts)."""
    mean, any_counted = _counted_mean(rows, counted)
    with np.errstate(invalid="ignore"):  # a NaN level: nobody reaches it
        return any_counted & (mean >= level)


def not_below_own_start(history: np.ndarray, early: EarlyLevels, window: int) -> np.ndarray:
    """Rule ``learning``'s own test over the last ``window`` rows (False where no row came after the early level)."""
    recent = np.asarray(history)[-window:]
    level, counted = own_early_level(recent, math.nan, early)
    return at_or_above(recent, level, counted)


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's judgement of observed samples: who is eligible, and each exclusion's mask."""

    eligible: np.ndarray
    masks: dict[str, np.ndarray]  # exclusion -> excluded by it (a sample can fail several)
    flagged: np.ndarray | None  # with flag_for_good: the memory to keep (earlier | flagged now)

    @property
    def counts(self) -> dict[str, int]:
        return {name: int(np.count_nonzero(mask)) for name, mask in self.masks.items()}


def judge_guard(
    history, hard_bits, guard: GuardSettings, flagged=None, start_level: float = math.nan, may_flag: bool = False,
    early: EarlyLevels | None = None,
) -> GuardVerdict:
    """The guard over observed samples: ``history`` (slots, n) of raw losses, oldest first.

    ``flagged``: which samples an earlier selection excluded for good (None: none).
    ``start_level``: the median raw loss of the dataset's first observed epoch; NaN
    (not known yet) excludes nobody by it. ``may_flag``: the last ``window + 1``
    history rows are all later than the dataset's first epoch, so a sample at a level
    in each of them is flagged for good (a loss seen in the first epoch says more
    about when in it the sample came than about the sample). ``early``: the samples'
    own early levels; None: none known yet.
    """
    history = np.asarray(history)
    n = history.shape[1]
    if not guard.enabled:
        return GuardVerdict(np.ones(n, bool), {}, None)
    rule = guard.resolved_rule
    recent = history[-guard.window :]
    masks: dict[str, np.ndarray] = {"insufficient_history": ~np.isfinite(recent).any(0)}
    for test in rule.tests:
        judged = test.level(recent, start_level, early)
        if judged is not None:
            masks[test.exclusion] = at_or_above(recent, *judged)
    masks["hard_streak"] = streak_reached(np.asarray(hard_bits), guard.max_hard_streak)
    flags = None
    if guard.flag_for_good:
        earlier = np.zeros(n, bool) if flagged is None else np.asarray(flagged, bool)
        if earlier.shape != (n,):
            raise ValueError(f"flagged has shape {earlier.shape}; expected ({n},), one flag per sample")
        masks["flagged_earlier"] = earlier
        flags = earlier
        if may_flag:
            rows = history[-(guard.window + 1) :]
            unlearnt = np.zeros(rows.shape, bool)
            for test in rule.tests:
                judged = test.level(rows, start_level, early)
                if judged is not None:
                    level, counted = judged  # one level, or one per sample: either broadcasts over the rows
                    with np.errstate(invalid="ignore"):
                        unlearnt |= counted & (rows >= level)
            # Seen in each of those epochs, and unlearnt in each: not one sign of learning.
            flags = earlier | (np.isfinite(rows) & unlearnt).all(0)
    eligible = np.ones(n, bool)
    for mask in masks.values():
        eligible &= ~mask
    return GuardVerdict(eligible, masks, flags)


def guard_mask(history, hard_bits, guard: GuardSettings, flagged=None, start_level: float = math.nan, early=None):
    """Eligibility under the noise guard (for observed samples) and per-exclusion counts."""
    verdict = judge_guard(history, hard_bits, guard, flagged, start_level, early=early)
    return verdict.eligible, verdict.counts


def judge_view(
    view, observed: np.ndarray | None, epoch: int, guard: GuardSettings, flagged=None, may_flag: bool = False,
) -> GuardVerdict:
    """:func:`judge_guard` over the observed samples of a tracker view taken at the end of
    ``epoch`` (``observed``: their positions; None: every sample)."""
    pick = (lambda a: a) if observed is None else (lambda a: a[..., observed])
    early = None
    if view.early_loss is not None:
        early = EarlyLevels(pick(view.early_loss), pick(view.early_epoch), int(epoch))
    return judge_guard(
        pick(view.history), pick(view.hard_bits), guard, flagged, view.start_level, may_flag, early=early
    )
