"""One figure of a run: what mining picked and what the curves did.

Panels: the aggregated-loss distribution of each mining epoch with its
selection cut; hard-set size, eligible samples and exclusions per epoch; the
training and evaluation curves with the first plan marked; the hard set's slice
shares against the dataset's. With a second run (``--against``) a last row
compares their evaluation and slice losses.

Drawn with matplotlib's object API on the Agg canvas: no display, no pyplot
global state. Returns PNG bytes; the caller writes them.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..core.guard import EXCLUSIONS
from .report import curves
from .run import Run

MAX_DISTRIBUTIONS = 6  # more overlaid histograms stop being readable


def _figure(rows: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.6 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.05, 0.85, max(n, 1))]


def draw_distributions(ax, run: Run, report: dict[str, Any]) -> None:
    active = [e for e in report["epochs"] if e["dump"] is not None]
    if len(active) > MAX_DISTRIBUTIONS:  # first, last and evenly between
        keep = np.unique(np.linspace(0, len(active) - 1, MAX_DISTRIBUTIONS).round().astype(int))
        active = [active[i] for i in keep]
    if not active:
        _empty(ax, "mining never became active")
        ax.set_title("Aggregated loss per mining epoch")
        return
    for colour, e in zip(_colours(len(active)), active):
        hist = (run.dumps[e["epoch"]].get("decision") or {}).get("histogram")
        if hist is not None:
            edges = np.asarray(hist["edges"])
            counts = np.asarray(hist["all"], float)
            density = counts / max(counts.sum(), 1) / np.diff(edges)
            ax.stairs(density, edges, color=colour, linewidth=1.6, label=f"epoch {e['epoch']}: all observed")
        else:  # a format-1 dump holds only the hard set's losses
            losses = [r["loss"] for r in run.dumps[e["epoch"]]["samples"] if r["loss"] is not None]
            if losses:
                ax.hist(losses, bins=20, density=True, histtype="step", color=colour, label=f"epoch {e['epoch']}: hard set")
        if e["cut"] is not None:
            ax.axvline(e["cut"], color=colour, linestyle="--", linewidth=1.2)
    ax.plot([], [], color="grey", linestyle="--", label="selection cut (lowest hard loss)")
    ax.set_title("Aggregated loss per mining epoch (dashed: selection cut)")
    ax.set_xlabel("aggregated loss (progress-corrected, loss units)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)


def draw_sizes(ax, report: dict[str, Any]) -> None:
    epochs = [e["epoch"] for e in report["epochs"]]
    hard = [e.get("num_hard") or 0 for e in report["epochs"]]
    bars = ax.bar(epochs, hard, color="tab:red", alpha=0.75, label="hard set")
    ax.bar_label(bars, labels=[str(h) if h else "" for h in hard], fontsize=8)
    eligible = [(e["epoch"], e["eligible"]) for e in report["epochs"] if e.get("eligible") is not None]
    if eligible:
        ax.plot(*zip(*eligible), "o-", color="tab:green", label="eligible")
    for rule in EXCLUSIONS:
        points = [(e["epoch"], e["excluded"][rule]) for e in report["epochs"] if (e.get("excluded") or {}).get(rule) is not None]
        if points and any(v for _, v in points):
            ax.plot(*zip(*points), "s--", color=EXCLUSIONS[rule].colour, label=f"excluded: {rule.replace('_', ' ')}")
    inactive = [e["epoch"] for e in report["epochs"] if not e["active"]]
    for i, epoch in enumerate(inactive):
        ax.axvspan(epoch - 0.5, epoch + 0.5, color="0.9", zorder=0, label="mining off" if i == 0 else None)
    ax.set_title("Hard set, eligible samples and guard exclusions")
    ax.set_xlabel("epoch (0-based, the dump's number)")
    ax.set_ylabel("samples")
    ax.set_xticks(epochs)
    ax.legend(fontsize=8, loc="center left")


def _mark_mining(ax, report: dict[str, Any]) -> None:
    first = report["first_active_epoch"]
    if first is not None:
        # The plan made at the end of epoch n applies from epoch n + 1: Trainer's epoch n + 1.
        ax.axvline(first + 1, color="tab:red", linestyle=":", linewidth=1.5, label=f"first plan (end of epoch {first})")


def draw_curves(ax, run: Run, report: dict[str, Any]) -> None:
    data = curves(run)
    if not data:
        _empty(ax, "no trainer_state.json with logged losses")
    if "loss" in data:
        ax.plot(*zip(*data["loss"]), color="0.45", linewidth=1, label="train loss")
    for key in sorted(k for k in data if k.startswith("eval_")):
        ax.plot(*zip(*data[key]), "o-", markersize=4, label=key)
    _mark_mining(ax, report)
    top = _upper_limit(data)
    if top is not None:
        ax.set_ylim(top=top)
    ax.set_title("Training and evaluation loss" + (" (first epoch's training loss runs above the axis)" if top is not None else ""))
    ax.set_xlabel("epoch (Trainer's count: n + 1 after epoch n)")
    _integer_epochs(ax)
    ax.set_ylabel("loss")
    if data:
        ax.legend(fontsize=8)


def _upper_limit(data: dict[str, list[tuple[float, float]]]) -> float | None:
    """A y limit that leaves out the first epoch's steep fall, which would flatten everything else."""
    later = [y for key, points in data.items() for x, y in points if x >= 1.0 or key != "loss"]
    early = [y for x, y in data.get("loss", []) if x < 1.0]
    if not later or not early or max(early) <= max(later) * 1.5:
        return None
    low = min(later)
    return max(later) + 0.15 * (max(later) - low)


def draw_slices(ax, run: Run, report: dict[str, Any]) -> None:
    active = [e for e in report["epochs"] if e.get("slices")]
    data = curves(run)
    slice_curves = sorted(k for k in data if k.startswith("slice/"))
    if not active and not slice_curves:
        _empty(ax, "records carry no metadata.slice")
        ax.set_title("Slices")
        return
    if slice_curves:  # the slices' evaluation loss: did the mined slice improve?
        for key in slice_curves:
            ax.plot(*zip(*data[key]), "o-", markersize=4, label=key)
        _mark_mining(ax, report)
        ax.set_xlabel("epoch (Trainer's count)")
        ax.set_ylabel("validation loss")
        _integer_epochs(ax)
    if active:
        twin = ax.twinx() if slice_curves else ax
        names = sorted({n for e in active for n in e["slices"]["hard_set"]})
        x = np.array([e["epoch"] + 1 for e in active], float)  # aligned with Trainer's epoch
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            shares = [e["slices"]["hard_set"].get(name, 0.0) for e in active]
            bars = twin.bar(x - 0.4 + (i + 0.5) * width, shares, width, alpha=0.35, label=f"share of hard set: {name}")
            base = active[-1]["slices"]["dataset"].get(name)
            if base is not None:
                twin.axhline(base, color=bars.patches[0].get_facecolor(), linestyle="--", alpha=0.9, linewidth=1,
                             label=f"share of dataset: {name}")
        twin.set_ylim(0, 1)
        twin.set_ylabel("share (bars: hard set; dashed: dataset)")
    ax.set_title("Slices: validation loss and share of the hard set")
    # One legend for both axes, where the falling curves leave room.
    handles, labels = ax.get_legend_handles_labels()
    if active and slice_curves:
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    (twin if active and slice_curves else ax).legend(handles, labels, fontsize=8, loc="lower left")


def draw_comparison(axes, this: Run, other: Run, comparison: dict[str, Any], report: dict[str, Any]) -> None:
    """Per metric, this run's loss minus the other's, epoch by epoch: below zero, this run is better.

    The difference, not the two curves: mining moves losses by far less than
    training does, so two overlaid curves hide it.
    """
    groups = (("eval_", "Evaluation loss"), ("slice/", "Validation loss per slice"))
    metrics = comparison.get("metrics", {})
    for ax, (prefix, title) in zip(axes, groups):
        keys = [k for k in metrics if k.startswith(prefix)]
        for i, key in enumerate(keys):
            points = [(r["epoch"] + 1, r["diff"]) for r in metrics[key] if r["diff"] is not None]
            if points:
                ax.plot(*zip(*points), "o-", color=f"C{i}", markersize=4, label=key)
        if not keys:
            _empty(ax, f"no {prefix}* losses in either run")
        ax.axhline(0.0, color="0.3", linewidth=1)
        _mark_mining(ax, report)
        _integer_epochs(ax)
        ax.set_title(f"{title}: {this.name} minus {other.name} (below 0: {this.name} is lower)")
        ax.set_xlabel("epoch (Trainer's count)")
        ax.set_ylabel("loss difference")
        if keys:
            ax.legend(fontsize=8)


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def render_figure(run: Run, report: dict[str, Any], *, other: Run | None = None, comparison: dict | None = None) -> bytes:
    """The run's figure as PNG bytes."""
    rows = 3 if other is not None else 2
    fig = _figure(rows)
    axes = fig.subplots(rows, 2, squeeze=False)
    draw_distributions(axes[0][0], run, report)
    draw_sizes(axes[0][1], report)
    draw_curves(axes[1][0], run, report)
    draw_slices(axes[1][1], run, report)
    if other is not None:
        draw_comparison(axes[2], run, other, comparison or {}, report)
    fig.suptitle(f"hardmine inspect: {run.path}", fontsize=12)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
