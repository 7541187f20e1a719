"""Selecting hard samples: the noise guard, then a selector.

Pure functions over arrays; :func:`select_hard` applies them to tracked views.

Eligibility, in order
---------------------
1. The sample was observed (at least one aggregated observation) and belongs
   to an eligible dataset (in fusion: the target only).
2. Noise guard (on by default; ``guard.enabled: false`` turns it off and
   selection is then exactly the selector's rule over observed samples).
   ``rule`` picks how a wrong label is recognised:

   Unset, the rule follows the recorded statistic (:data:`DEFAULT_GUARD_RULES`):
   ``learning`` for ``fields``, ``start_level`` for the others.

   * ``start_level``: ``at_start_level``: the sample's mean *raw* loss over
     the last ``window`` epochs in which it was seen is at least the
     dataset's *start level*, the median raw loss of its first observed
     epoch: the model, trained for several epochs, still does no better on
     it than it did on a typical sample when it was young. Why: as the model
     learns the task it grows confident of the right answer, so a wrong
     label's loss stays at or rises above where it started while every
     learnable sample's falls, hard ones included (slowly). Measured on the
     text task of ``benchmarks/signals.py``, this level test separates wrong
     labels from hard clean samples better than any test of a sample's own
     trend: single per-epoch losses are too noisy for a trend over a few
     epochs to tell them apart. A sample seen in none of the last ``window``
     epochs is excluded as ``insufficient_history``.
     With ``flag_for_good`` (the default), ``flagged_earlier`` too: a sample
     at the start level in each of the last ``window + 1`` epochs, none of
     them the first, is excluded for the rest of the run. Why: trained long
     enough, the model memorises wrong labels and their loss falls below the
     start level (the long runs on docs/benchmarks.md); by then they have sat
     at the level for many epochs, while a hard clean sample rarely stays
     there ``window + 1`` epochs running. The memory is the caller's, as for
     ``sticky``.
   * ``learning``: ``start_level``'s tests, plus ``not_below_own_start``: the
     sample's mean raw loss over those of the last ``window`` epochs that
     came after its *own early level* (its raw loss in the first epoch, after
     its dataset's first, in which it was seen) is not below that level: the
     model has not got any better at it since its own start. Why: a wrong
     label does not always sit at the start level. Where it uses the task's
     common words (a swapped colour in a dense caption), its loss starts as
     low as any sample's, then *rises* as the model learns the right answer
     from the image, while a hard clean sample's loss falls from a high
     start. Measured on the VL task of ``benchmarks/signals.py`` with
     ``sample_loss: fields``: the start level excluded about 1% of the wrong
     labels, this test 43% at epoch 2 and 65% at epoch 8. A sample with no observation after its early level is
     not judged by this test. With ``flag_for_good``, an epoch counts towards
     ``flagged_earlier`` when either test holds in it.
   * ``improvement``: ``not_improving``: its own raw loss must have fallen by
     at least ``min_improvement`` (relative) across the last ``window``
     epochs: from the oldest to the newest epoch in which it was seen within
     the last ``window + 1`` epochs. A sample seen in fewer than two of those
     epochs cannot be judged and is excluded as ``insufficient_history``.
   * ``sticky``: ``improvement``, plus ``flagged_earlier``: a sample that
     failed ``not_improving`` at any earlier selection stays excluded for the
     rest of the run (memorisation cannot undo an earlier failure). The
     memory is the caller's (``flagged`` in, :attr:`Selection.flagged` out),
     so the rule stays a pure function.

   With every rule, ``hard_streak``: a sample that was hard in each of the
   last ``max_hard_streak`` plans is not eligible this time (it gets a rest;
   a sample the model cannot learn should not hold 3x weight for ever).
   Each rule's exclusions are counted separately (a sample can fail several).
3. The selector, over eligible samples, ordered by aggregated loss
   (descending) with ``sample_id`` (ascending) breaking ties:

   * ``top_k``: the ``k`` highest.
   * ``percentile``: the worst ``value`` fraction: exactly
     ``ceil(value * n_eligible)`` samples (rank r, counted from the worst at 0,
     is in the worst fraction when ``r < value * n_eligible``).
   * ``threshold``: every sample with aggregated loss ``>= value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .errors import MINING_KEY, SettingError, check_range
from .identity import dataset_key
from .tracker import LossTracker

SELECTOR_MODES = ("top_k", "percentile", "threshold")
GUARD_RULES = ("start_level", "learning", "improvement", "sticky")
# The rule each recorded statistic (``sample_loss.statistic``) gets when ``noise_guard.rule``
# is not set, as benchmarks/quality.py measured them (docs/benchmarks.md). The mean and the
# worst tokens: start_level (on the text task, learning mined as few wrong labels but left
# overall loss worse under 10% noise in more seeds). The description words (fields):
# learning (on the VL task a wrong colour word starts as low as any word and rises as the
# model learns the right one; start_level mined wrong labels at 3.6x their base rate,
# learning at 1.4x).
DEFAULT_GUARD_RULES = {"mean": "start_level", "worst_tokens": "start_level", "fields": "learning"}


@dataclass(frozen=True)
class SelectorSettings:
    mode: str = "percentile"
    k: int | None = None
    value: float | None = 0.1

    def __post_init__(self) -> None:
        key = f"{MINING_KEY}.selector"
        if self.mode not in SELECTOR_MODES:
            raise SettingError(f"{key}.mode", self.mode, f"one of {list(SELECTOR_MODES)}")
        if self.mode == "top_k":
            check_range(f"{key}.k", self.k, low=1, integer=True)
        elif self.mode == "percentile":
            check_range(f"{key}.value", self.value, low=0.0, high=1.0, low_open=True)
        else:
            check_range(f"{key}.value", self.value)
            if not math.isfinite(self.value):
                raise SettingError(f"{key}.value", self.value, "a finite loss threshold")

    def params(self) -> dict:
        return {"k": self.k} if self.mode == "top_k" else {"value": self.value}


@dataclass(frozen=True)
class GuardSettings:
    enabled: bool = True
    min_improvement: float = 0.1
    # Epochs of raw loss the guard averages. 3 rather than 2: on the text task of
    # benchmarks/quality.py it lowered clean hard-slice loss further (-11.0% against
    # -7.6%, paired to uniform, 8 seeds) and overall loss too, with the same share of
    # wrong labels mined; on the VL task it changed little (docs/benchmarks.md, the
    # noise_guard.window row).
    window: int = 3
    max_hard_streak: int = 3
    # "start_level", "learning", "improvement" or "sticky"; see the module doc. None (the
    # default): the rule of the statistic mining records (MiningSettings resolves it,
    # DEFAULT_GUARD_RULES), start_level for a guard used on its own. Chosen by
    # benchmarks/signals.py and benchmarks/quality.py: the guard-rule replay and the
    # noisy-label arms on docs/benchmarks.md.
    rule: str | None = None
    # Rules start_level, learning: a sample at the start level (rule learning: or not below
    # its own early level) in each of the last window + 1 epochs (the first epoch not among
    # them) is excluded for the rest of the run, so a wrong label the model memorises late
    # cannot come back (see the module doc).
    flag_for_good: bool = True

    def __post_init__(self) -> None:
        key = f"{MINING_KEY}.noise_guard"
        for name in ("enabled", "flag_for_good"):
            if not isinstance(getattr(self, name), bool):
                raise SettingError(f"{key}.{name}", getattr(self, name), "true or false")
        if self.rule is not None and self.rule not in GUARD_RULES:
            raise SettingError(f"{key}.rule", self.rule, f"one of {list(GUARD_RULES)}")
        check_range(f"{key}.min_improvement", self.min_improvement, low=0.0, high=1.0, high_open=True)
        check_range(f"{key}.window", self.window, low=1, high=15, integer=True)
        check_range(f"{key}.max_hard_streak", self.max_hard_streak, low=1, high=16, integer=True)


# ----------------------------------------------------------------- selectors
# Selectors return the chosen positions in ascending order: the plan is a set,
# and ordering a million hard samples by loss costs more than selecting them.
def select_top_k(values: np.ndarray, ids: np.ndarray | None, k: int) -> np.ndarray:
    """Positions of the ``k`` highest values; at the boundary lower sample ids win.

    ``ids=None`` means the positions are already in sample-id order.
    """
    values = np.asarray(values)
    n = values.size
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0 or n == 0:
        return np.empty(0, np.int64)
    if k >= n:
        return np.arange(n)
    kth = np.partition(values, n - k)[n - k]  # the k-th largest value
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)
    tied = tied[: k - above.size] if ids is None else tied[np.argsort(ids[tied], kind="stable")[: k - above.size]]
    return np.sort(np.concatenate([above, tied]))


def percentile_count(fraction: float, n: int) -> int:
    """How many of ``n`` samples lie in the worst ``fraction``: ceil(fraction * n).

    Rounded to 9 decimals first so that 0.1 * 30 counts 3, not 4.
    """
    return min(n, math.ceil(round(fraction * n, 9)))


def select_percentile(values: np.ndarray, ids: np.ndarray | None, fraction: float) -> np.ndarray:
    return select_top_k(values, ids, percentile_count(fraction, np.asarray(values).size))


def select_threshold(values: np.ndarray, ids: np.ndarray | None, threshold: float) -> np.ndarray:
    values = np.asarray(values)
    return np.flatnonzero(values >= threshold)


def apply_selector(values: np.ndarray, ids: np.ndarray | None, settings: SelectorSettings) -> np.ndarray:
    if settings.mode == "top_k":
        return select_top_k(values, ids, settings.k)
    if settings.mode == "percentile":
        return select_percentile(values, ids, settings.value)
    return select_threshold(values, ids, settings.value)


# --------------------------------------------------------------- noise guard
def raw_improvement(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative fall of the raw loss across a (slots, n) history, oldest first.

    Returns ``(improvement, judgeable)``: improvement = (oldest - newest) / oldest
    between the oldest and newest finite entries; judgeable where there are at
    least two finite entries. A zero oldest loss counts as no improvement.
    """
    history = np.asarray(history)
    seen = np.isfinite(history)
    n_seen = np.zeros(history.shape[1], np.uint8)
    for row in seen:
        n_seen += row
    oldest = np.full(history.shape[1], np.nan, history.dtype)
    newest = np.full(history.shape[1], np.nan, history.dtype)
    for j in range(history.shape[0]):
        np.copyto(newest, history[j], where=seen[j])
        k = history.shape[0] - 1 - j
        np.copyto(oldest, history[k], where=seen[k])
    improvement = np.zeros(history.shape[1], np.float64)
    np.divide(oldest.astype(np.float64) - newest, oldest, out=improvement, where=(n_seen >= 2) & (oldest > 0))
    return improvement, n_seen >= 2


def streak_reached(hard_bits: np.ndarray, max_hard_streak: int) -> np.ndarray:
    """True where the sample was hard in each of the last ``max_hard_streak`` plans."""
    mask = np.uint16((1 << max_hard_streak) - 1)
    return (hard_bits & mask) == mask


def recent_raw_loss(history: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw loss over the last ``window`` rows of a (slots, n) history, and where any was seen."""
    recent = np.asarray(history)[-window:]
    seen = np.isfinite(recent)
    n_seen = seen.sum(0)
    total = np.where(seen, recent, 0).astype(np.float64).sum(0)
    mean = np.divide(total, n_seen, out=np.full(total.shape, np.nan), where=n_seen > 0)
    return mean, n_seen > 0


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


def not_below_own_start(history: np.ndarray, early: EarlyLevels, window: int) -> np.ndarray:
    """True where the mean raw loss over the last ``window`` rows that came after the
    sample's early level is at least that level (not judged, False, without such a row)."""
    recent = np.asarray(history)[-window:]
    counted = np.isfinite(recent) & early.after(recent.shape[0])
    n_counted = counted.sum(0)
    total = np.where(counted, recent, 0).astype(np.float64).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n_counted
        return (n_counted > 0) & (mean >= np.asarray(early.loss, np.float64))


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's judgement of observed samples: who is eligible, and each rule's exclusions."""

    eligible: np.ndarray
    masks: dict[str, np.ndarray]  # rule -> excluded by it (a sample can fail several)
    flagged: np.ndarray | None  # rules sticky, start_level, learning: the memory to keep (earlier | flagged now)

    @property
    def counts(self) -> dict[str, int]:
        return {rule: int(np.count_nonzero(mask)) for rule, mask in self.masks.items()}


def guard_mask(history, hard_bits, guard: GuardSettings, flagged=None, start_level: float = math.nan, early=None):
    """Eligibility under the noise guard (for observed samples) and per-rule counts."""
    verdict = judge_guard(history, hard_bits, guard, flagged, start_level, early=early)
    return verdict.eligible, verdict.counts


def judge_guard(
    history, hard_bits, guard: GuardSettings, flagged=None, start_level: float = math.nan, may_flag: bool = False,
    early: EarlyLevels | None = None,
) -> GuardVerdict:
    """The guard over observed samples: ``history`` (slots, n) of raw losses, oldest first.

    ``flagged`` (rules ``sticky``, ``start_level`` and ``learning``): which samples an earlier
    selection excluded for good (None: none). ``start_level`` (rules
    ``start_level`` and ``learning``): the median raw loss of the dataset's first observed
    epoch; NaN (not known yet) excludes nobody by that rule. ``may_flag``
    (rules ``start_level`` and ``learning``): the last ``window + 1`` history rows are all later
    than the dataset's first epoch, so a sample at the level in each of them
    is flagged for good (a loss seen in the first epoch says more about when
    in it the sample came than about the sample). ``early`` (rule ``learning``):
    the samples' own early levels; None: none known yet.
    """
    history = np.asarray(history)
    n = history.shape[1]
    if not guard.enabled:
        return GuardVerdict(np.ones(n, bool), {}, None)
    masks: dict[str, np.ndarray] = {}
    rule = guard.rule or DEFAULT_GUARD_RULES["mean"]  # unset outside MiningSettings: the mean's rule
    by_level = rule in ("start_level", "learning")
    if by_level:
        recent, judgeable = recent_raw_loss(history, guard.window)
        masks["insufficient_history"] = ~judgeable
        with np.errstate(invalid="ignore"):  # NaN start level: nobody excluded
            masks["at_start_level"] = judgeable & (recent >= start_level)
        if rule == "learning" and early is not None:
            masks["not_below_own_start"] = not_below_own_start(history, early, guard.window)
    else:
        # The tracker may keep more history than the guard looks at.
        improvement, judgeable = raw_improvement(history[-(guard.window + 1) :])
        masks["insufficient_history"] = ~judgeable
        masks["not_improving"] = judgeable & (improvement < guard.min_improvement)
    masks["hard_streak"] = streak_reached(np.asarray(hard_bits), guard.max_hard_streak)
    flags = None
    if rule == "sticky" or (by_level and guard.flag_for_good):
        earlier = np.zeros(n, bool) if flagged is None else np.asarray(flagged, bool)
        if earlier.shape != (n,):
            raise ValueError(f"flagged has shape {earlier.shape}; expected ({n},), one flag per sample")
        masks["flagged_earlier"] = earlier
        if rule == "sticky":
            flags = earlier | masks["not_improving"]
        elif may_flag:
            rows = history[-(guard.window + 1) :]
            with np.errstate(invalid="ignore"):
                unlearnt = rows >= start_level  # NaN start level: False
                if rule == "learning" and early is not None:
                    unlearnt |= early.after(rows.shape[0]) & (rows >= np.asarray(early.loss)[None, :])
            # Seen in each of those epochs, and unlearnt in each: not one sign of learning.
            flags = earlier | (np.isfinite(rows) & unlearnt).all(0)
        else:
            flags = earlier
    eligible = np.ones(n, bool)
    for mask in masks.values():
        eligible &= ~mask
    return GuardVerdict(eligible, masks, flags)


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


# ------------------------------------------------------------ whole selection
@dataclass
class Selection:
    """The outcome of one selection over the eligible datasets."""

    mode: str
    params: dict
    datasets: dict[str, np.ndarray] = field(default_factory=dict)  # name -> base_idx, ascending
    losses: dict[str, np.ndarray] = field(default_factory=dict)  # name -> aggregated loss, aligned
    observed: int = 0
    eligible: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    scale: float = 1.0
    observed_corrected: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    # rule sticky: name -> one flag per sample of the dataset (failed the guard so far)
    flagged: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_hard(self) -> int:
        return int(sum(v.size for v in self.datasets.values()))

    @property
    def all_losses(self) -> np.ndarray:
        """Aggregated loss (loss units) of every observed eligible sample."""
        return self.observed_corrected * self.scale


def select_hard(
    tracker: LossTracker,
    eligible_datasets: Sequence[str],
    epoch: int,
    selector: SelectorSettings,
    guard: GuardSettings,
    flagged: Mapping[str, np.ndarray] | None = None,
) -> Selection:
    """Apply the guard and the selector jointly over ``eligible_datasets``.

    ``flagged`` (guard rule ``sticky``): per dataset, one flag per sample,
    the :attr:`Selection.flagged` of the previous selection; missing: none.

    Candidates are laid out in sample-id order (datasets by key, then
    base_idx), so a candidate's position breaks ties exactly as its sample id
    would, and no id array is built.
    """
    if not eligible_datasets:
        raise ValueError("select_hard needs at least one eligible dataset")
    if len(set(eligible_datasets)) != len(eligible_datasets):
        raise ValueError(f"eligible datasets must be distinct, got {list(eligible_datasets)}")
    if guard.enabled and tracker.settings.history_slots < guard.window + 1:
        raise ValueError(
            f"the guard looks back {guard.window} epochs, but the tracker keeps only "
            f"{tracker.settings.history_slots} epochs of history (needs window + 1)"
        )
    names = sorted(eligible_datasets, key=dataset_key)
    values, bases, observed_corrected = [], [], []
    excluded: dict[str, int] = {}
    new_flags: dict[str, np.ndarray] = {}
    observed = 0
    scale = 1.0
    for name in names:
        view = tracker.view(name, epoch)
        scale = view.scale  # one tracker level: the same for every dataset
        seen_mask = view.count > 0
        n_seen = int(np.count_nonzero(seen_mask))
        observed += n_seen
        if n_seen == seen_mask.size:  # no copies when every sample was observed
            seen, corrected = None, view.corrected
        else:
            seen = np.flatnonzero(seen_mask)
            corrected = view.corrected[seen]
        observed_corrected.append(corrected)
        before = None if flagged is None or name not in flagged else np.asarray(flagged[name], bool)
        if before is not None and before.shape != seen_mask.shape:
            raise ValueError(f"flagged[{name!r}] has {before.size} flags; dataset {name!r} has {seen_mask.size} samples")
        earlier = None if before is None else (before if seen is None else before[seen])
        # The guard's rows are epochs epoch - window .. epoch; all later than the first?
        may_flag = view.first_epoch >= 0 and epoch - guard.window > view.first_epoch
        verdict = judge_view(view, seen, epoch, guard, earlier, may_flag)
        ok, counts, now = verdict.eligible, verdict.counts, verdict.flagged
        if now is not None:
            full = np.zeros(seen_mask.size, bool) if before is None else before.copy()
            if seen is None:
                full[:] = now
            else:
                full[seen] = now
            new_flags[name] = full
        for rule, c in counts.items():
            excluded[rule] = excluded.get(rule, 0) + c
        keep = np.flatnonzero(ok)
        values.append(corrected[keep])
        bases.append(keep if seen is None else seen[keep])
    values_all = values[0] if len(values) == 1 else np.concatenate(values)
    if selector.mode == "threshold":
        # In the stored precision: a loss recorded as exactly the threshold
        # (float32) must count as reaching it.
        chosen = np.flatnonzero(values_all >= np.float32(selector.value / scale))
    else:
        chosen = apply_selector(values_all, None, selector)
    sel = Selection(
        mode=selector.mode,
        params=selector.params(),
        observed=observed,
        eligible=int(values_all.size),
        excluded=excluded,
        scale=scale,
        observed_corrected=observed_corrected[0] if len(names) == 1 else np.concatenate(observed_corrected),
        flagged=new_flags,
    )
    offsets = np.cumsum([0] + [b.size for b in bases])
    for d, name in enumerate(names):
        lo, hi = np.searchsorted(chosen, offsets[d]), np.searchsorted(chosen, offsets[d + 1])
        mine = chosen[lo:hi] - offsets[d]
        sel.datasets[name] = bases[d][mine]
        sel.losses[name] = values[d][mine].astype(np.float64) * scale
    return sel
