"""Auditing a selection from files alone: where samples live, what the decision saw.

Three pieces, all numpy + stdlib:

* :class:`SampleCatalog`: where each sample of one dataset lives (source file
  and 1-based line, image paths, ``metadata.slice``). The data layer builds it;
  the dump writes it beside each hard sample, so a row reads
  ``train.jsonl:812, images/0811.png``.
* :func:`loss_summary`: quantiles and a fixed-bin histogram of the aggregated
  loss of every observed sample and of the hard set, plus the selection's cut.
  Small enough to sit in every dump; ``hardmine inspect`` plots from it.
* :func:`population_table` / :func:`write_population` /
  :func:`recompute_selection`: every sample of the mined datasets at one epoch
  end, with the numbers the guard and the selector used and the rule that
  excluded it, stored as a compressed ``.npz`` next to the dump
  (``custom.hard_sample_mining.dump_population: true``). Replaying the
  selector on that file gives the dump's hard set exactly.

Population file (``hard_samples_epoch_{n}.population.npz``)
-----------------------------------------------------------
One row per sample of the mined datasets, in sample-id order (the order that
breaks selection ties)::

    sample_id   int64    identity (see hardmine.core.identity)
    dataset     int16    index into meta["datasets"]
    base_idx    int64    index of the sample in its dataset
    count       uint32   observations in the aggregate
    last        float32  last raw loss (NaN: never seen)
    corrected   float32  aggregate in progress-corrected units (what is ranked)
    loss        float32  aggregate in loss units: corrected * meta["scale"] (NaN: unobserved)
    excluded    uint8    bit i set: rule meta["rules"][i] excluded the sample
    eligible    bool     passed every rule (the selector's candidates)
    hard        bool     selected
    slice       int16    index into meta["slices"]; -1: the record names none

``meta`` (a JSON string in the array ``meta``) holds the format, epoch, scale,
selector mode and params, guard settings, datasets and names of rules and
slices. Rules, in bit order: ``unobserved`` (no observation entered the
aggregate), then the guard's exclusions in the order of
:data:`hardmine.core.guard.EXCLUSIONS` (meta ``start_levels`` holds each
dataset's start level). An unobserved sample carries only its first
bit, as the guard never judges it.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .files import write_atomically
from .identity import dataset_key, sample_ids
from .guard import EXCLUSIONS, GuardSettings, GuardVerdict, judge_view
from .selection import Selection, SelectorSettings, apply_selector

POPULATION_FORMAT = "hardmine.population/2"
EXCLUSION_RULES = ("unobserved", *EXCLUSIONS)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
HISTOGRAM_BINS = 40


def population_filename(epoch: int) -> str:
    return f"hard_samples_epoch_{int(epoch)}.population.npz"


# ------------------------------------------------------------------ catalog
@dataclass(frozen=True)
class SampleCatalog:
    """Where each sample of one dataset lives; sequences are indexed by base_idx.

    ``lines`` are 1-based line numbers in ``source`` (None where unknown, e.g. a
    dataset that is not a file); ``slices`` the record's ``metadata.slice`` or None.
    """

    source: str | None
    lines: Sequence[int | None]
    images: Sequence[Sequence[str]]
    slices: Sequence[str | None]

    def __post_init__(self) -> None:
        sizes = {len(self.lines), len(self.images), len(self.slices)}
        if len(sizes) != 1:
            raise ValueError(
                f"catalog columns differ in length: lines {len(self.lines)}, images {len(self.images)}, "
                f"slices {len(self.slices)}"
            )

    def __len__(self) -> int:
        return len(self.lines)

    def describe(self, base_idx: int) -> dict[str, Any]:
        """The dump's location fields of one sample."""
        out: dict[str, Any] = {
            "source": self.source,
            "line": self.lines[base_idx],
            "images": [str(p) for p in self.images[base_idx]],
        }
        if self.slices[base_idx] is not None:
            out["slice"] = self.slices[base_idx]
        return out

    def slice_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in self.slices:
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))


# ------------------------------------------------------------- loss summary
def quantiles(values: np.ndarray) -> dict[str, float] | None:
    """min, q10 .. q90, max and mean of the finite values (None when there are none)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    qs = np.quantile(values, QUANTILES)
    out = {"min": float(values.min())}
    out.update({f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)})
    out.update(max=float(values.max()), mean=float(values.mean()))
    return out


def selection_cut(selection: Selection) -> float | None:
    """The aggregated loss a sample needed to be hard: the threshold, or the lowest hard loss."""
    if selection.mode == "threshold":
        return float(selection.params["value"])
    hard = [v for v in selection.losses.values() if v.size]
    return float(min(v.min() for v in hard)) if hard else None


def loss_summary(selection: Selection, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Quantiles and a shared-bin histogram of all observed vs hard aggregated losses."""
    every = np.asarray(selection.all_losses, np.float64)
    every = every[np.isfinite(every)]
    hard = np.concatenate([np.asarray(v, np.float64) for v in selection.losses.values()]) if selection.losses else np.empty(0)
    hard = hard[np.isfinite(hard)]
    out: dict[str, Any] = {
        "cut": selection_cut(selection),
        "quantiles": {"all": quantiles(every), "hard": quantiles(hard)},
        "histogram": None,
    }
    if every.size:
        low, high = float(every.min()), float(every.max())
        if high <= low:  # one value: a bin of width 1 around it
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
        out["histogram"] = {
            "edges": edges.tolist(),
            "all": np.histogram(every, edges)[0].tolist(),
            "hard": np.histogram(np.clip(hard, low, high), edges)[0].tolist(),
        }
    return out


# --------------------------------------------------------------- population
@dataclass
class Population:
    """Every sample of the mined datasets at one epoch end (see the module doc)."""

    meta: dict[str, Any]
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.columns["sample_id"].size)

    def rule_mask(self, rule: str) -> np.ndarray:
        return (self.columns["excluded"] & np.uint8(1 << EXCLUSION_RULES.index(rule))) != 0


def _rule_bits(count: np.ndarray, verdict: GuardVerdict, observed: np.ndarray) -> np.ndarray:
    """Exclusion bits per sample: ``unobserved``, then the guard's own masks over the observed."""
    bits = np.zeros(count.size, np.uint8)
    bits[count == 0] |= np.uint8(1 << EXCLUSION_RULES.index("unobserved"))
    for rule, mask in verdict.masks.items():
        bits[observed[mask]] |= np.uint8(1 << EXCLUSION_RULES.index(rule))
    return bits


def population_table(
    tracker,
    datasets: Sequence[str],
    epoch: int,
    selection: Selection,
    selector: SelectorSettings,
    guard: GuardSettings,
    flagged: Mapping[str, np.ndarray] | None = None,
) -> Population:
    """The population behind ``selection``; call before the tracker closes ``epoch``.

    ``flagged``: the guard's memory the selection was given (``flag_for_good``).
    Eligibility and the rule bits come from :func:`judge_guard`, the function
    the selection used: the bits say why each other sample was left out.
    """
    names = sorted(datasets, key=dataset_key)  # sample-id order, as select_hard lays candidates out
    parts: list[dict[str, np.ndarray]] = []
    start_levels: dict[str, float | None] = {}
    scale = 1.0
    for d, name in enumerate(names):
        view = tracker.view(name, epoch)
        scale = view.scale
        n = view.count.size
        observed = np.flatnonzero(view.count > 0)
        eligible = np.zeros(n, bool)
        earlier = None if not flagged or name not in flagged else np.asarray(flagged[name], bool)
        verdict = judge_view(view, observed, epoch, guard, None if earlier is None else earlier[observed])
        eligible[observed[verdict.eligible]] = True
        start_levels[name] = finite_or_none(view.start_level)
        hard = np.zeros(n, bool)
        hard[selection.datasets.get(name, np.empty(0, np.int64))] = True
        base = np.arange(n, dtype=np.int64)
        corrected = np.asarray(view.corrected, np.float32).copy()
        parts.append(
            {
                "sample_id": sample_ids(name, base),
                "dataset": np.full(n, d, np.int16),
                "base_idx": base,
                "count": np.asarray(view.count, np.uint32).copy(),
                "last": np.asarray(view.last, np.float32).copy(),
                "corrected": corrected,
                # NaN where no observation was aggregated: a 0 there would read as "easy".
                "loss": np.where(view.count > 0, corrected * np.float32(scale), np.float32(np.nan)).astype(np.float32),
                "excluded": _rule_bits(view.count, verdict, observed),
                "eligible": eligible,
                "hard": hard,
                "slice": np.full(n, -1, np.int16),
            }
        )
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    meta = {
        "format": POPULATION_FORMAT,
        "epoch": int(epoch),
        "scale": float(scale),
        "selector": {"mode": selector.mode, "params": selector.params()},
        "guard": asdict(guard),
        "start_levels": start_levels,
        "datasets": names,
        "rules": list(EXCLUSION_RULES),
        "slices": [],
        "num_hard": int(columns["hard"].sum()),
    }
    return Population(meta, columns)


def add_slices(population: Population, catalogs: Mapping[str, SampleCatalog]) -> None:
    """Fill the ``slice`` column from the datasets' catalogs (in place)."""
    names = population.meta["datasets"]
    slice_names = sorted({s for n in names if n in catalogs for s in catalogs[n].slices if s is not None})
    code = {s: i for i, s in enumerate(slice_names)}
    cols = population.columns
    for d, name in enumerate(names):
        catalog = catalogs.get(name)
        if catalog is None:
            continue
        rows = np.flatnonzero(cols["dataset"] == d)
        if len(catalog) != rows.size:
            raise ValueError(f"the catalog of dataset {name!r} lists {len(catalog)} samples, the population {rows.size}")
        cols["slice"][rows] = [code.get(s, -1) if s is not None else -1 for s in catalog.slices]
    population.meta["slices"] = slice_names


def recompute_selection(population: Population) -> np.ndarray:
    """Replay the selector on a population: a bool mask of the samples it selects.

    Uses only the file's columns and meta: the guard's verdict (``eligible``),
    the progress-corrected aggregate, the scale and the selector settings.
    """
    meta, cols = population.meta, population.columns
    settings = SelectorSettings(mode=meta["selector"]["mode"], **meta["selector"]["params"])
    candidates = np.flatnonzero(cols["eligible"])
    values = cols["corrected"][candidates]
    if settings.mode == "threshold":
        # As select_hard compares: in the stored float32 precision.
        chosen = np.flatnonzero(values >= np.float32(settings.value / meta["scale"]))
    else:
        chosen = apply_selector(values, cols["sample_id"][candidates], settings)
    mask = np.zeros(len(population), bool)
    mask[candidates[chosen]] = True
    return mask


def write_population(population: Population, directory: str | os.PathLike) -> Path:
    """Write ``hard_samples_epoch_{epoch}.population.npz`` atomically; return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / population_filename(population.meta["epoch"])
    meta = np.frombuffer(json.dumps(population.meta).encode("utf-8"), np.uint8)
    write_atomically(path, lambda f: np.savez_compressed(f, meta=meta, **population.columns))
    return path


def read_population(path: str | os.PathLike, columns: Sequence[str] | None = None) -> Population:
    """Read a population file (only ``columns``, if given); ValueError naming the file when it is not one."""
    wanted = None if columns is None else set(columns)
    try:
        # Our own handle: np.load leaks the one it opens when the zip is broken.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            present = set(data.files)
            columns = {k: data[k] for k in data.files if k != "meta" and (wanted is None or k in wanted)}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # np.load raises all of these for truncated or foreign files.
        raise ValueError(f"{path}: not a readable hardmine population file ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != POPULATION_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"{path}: format {got!r}, expected {POPULATION_FORMAT!r}")
    missing = sorted(({"sample_id", "corrected", "eligible", "hard", "excluded"} if wanted is None else wanted) - present)
    if missing:
        raise ValueError(f"{path}: population file lacks column(s) {missing}")
    return Population(meta, columns)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: a non-finite statistic is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)
