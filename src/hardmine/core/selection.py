"""Selecting hard samples: the noise guard, then a selector.

Pure functions over arrays; :func:`select_hard` applies them to tracked views.

Eligibility, in order
---------------------
1. The sample was observed (at least one aggregated observation) and belongs
   to an eligible dataset (in fusion: the target only).
2. The noise guard (:mod:`hardmine.core.guard`; on by default, and with
   ``guard.enabled: false`` selection is exactly the selector's rule over
   observed samples).
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
from .guard import GuardSettings, judge_view
from .identity import dataset_key
from .tracker import LossTracker

SELECTOR_MODES = ("top_k", "percentile", "threshold")


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
    # With flag_for_good: name -> one flag per sample of the dataset (excluded for good so far)
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

    ``flagged`` (the guard's ``flag_for_good``): per dataset, one flag per sample,
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
