"""Build docs/benchmarks.md (and its plots) from the benchmarks' JSON results.

    python benchmarks/report.py                    # benchmarks/results/quality.json -> docs/benchmarks.md
    python benchmarks/report.py --results R --docs D

Nothing on the page is typed by hand: every number comes from the JSON, and the
page names the commit and machine that produced it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARM_ORDER = ("uniform", "defaults", "original", "guard_off", "correction_off", "sticky_guard")
ARM_NOTES = {
    "uniform": "control: mining on, trigger never fires",
    "defaults": "hardmine's defaults (trigger forced at the same epoch)",
    "original": "EMA, top-k 10%, weight 3, no guard, no correction",
    "guard_off": "defaults without the noise guard",
    "correction_off": "defaults without progress correction",
    "sticky_guard": "defaults with guard rule `sticky`",
}
TASK_NOTES = {
    "text": "tiny text model (library API), reverse a string of spaced letters; hard slice: long strings",
    "vl": "tiny Qwen2-VL (YAML entry point), dense captions of the synthetic corpus; hard slice: `metadata.slice == hard`",
}
ACCURACY = {"text": "exact", "vl": "token_acc"}  # the task-level accuracy each task reports
ACCURACY_NAME = {"exact": "exact match", "token_acc": "token accuracy"}


# ------------------------------------------------------------------ formatting
def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def pct(x: float | None, digits: int = 1, sign: bool = True) -> str:
    if x is None:
        return "–"
    return f"{x * 100:+.{digits}f}%" if sign else f"{x * 100:.{digits}f}%"


def mean_std(m: dict | None, digits: int = 3) -> str:
    if not m:
        return "–"
    return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def arms_in(entry: dict) -> list[str]:
    return [a for a in ARM_ORDER if a in entry["arms"]]


# ------------------------------------------------------------------ plots
def runs_of(report: dict, task: str, condition: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in report["runs"]:
        if r["task"] == task and r["condition"] == condition:
            out.setdefault(r["arm"], []).append(r)
    return out


def curve(runs: list[dict], slice_name: str, metric: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    """Epochs and a (seeds, epochs) array of one eval metric."""
    epochs = sorted({e["epoch"] for r in runs for e in r["epochs"]})
    values = np.full((len(runs), len(epochs)), np.nan)
    for i, r in enumerate(runs):
        for e in r["epochs"]:
            v = e.get(slice_name, {}).get(metric)
            if v is not None:
                values[i, epochs.index(e["epoch"])] = v
    return np.asarray(epochs), values


def plot_loss_curves(report: dict, task: str, path: Path) -> None:
    """Hard-slice eval loss per epoch per arm, mean with a min-max band over seeds; one panel per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = [c for c in report["setup"]["conditions"] if runs_of(report, task, c)]
    fig, axes = plt.subplots(1, len(conditions), figsize=(5.5 * len(conditions), 4), squeeze=False)
    mine_from = report["setup"]["mine_from"]
    for ax, condition in zip(axes[0], conditions):
        by_arm = runs_of(report, task, condition)
        for arm in ARM_ORDER:
            if arm not in by_arm:
                continue
            epochs, values = curve(by_arm[arm], "hard")
            mean = np.nanmean(values, axis=0)
            line, = ax.plot(epochs, mean, label=arm, lw=2 if arm in ("uniform", "defaults") else 1.2)
            if values.shape[0] > 1:
                ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0), color=line.get_color(), alpha=0.15)
        ax.axvline(mine_from + 0.5, color="grey", ls=":", lw=1)
        ax.set_title(f"{task}, {condition} labels: hard-slice eval loss")
        ax.set_xlabel("epoch (dotted: first plan applies after it)")
        ax.set_ylabel("mean per-sample CE")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(report: dict, task: str, path: Path) -> None:
    """The control's learning curves: hard slice vs rest, loss and accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for condition, ls in (("clean", "-"), ("noisy", "--")):
        runs = runs_of(report, task, condition).get("uniform")
        if not runs:
            continue
        for slice_name in ("hard", "rest"):
            epochs, values = curve(runs, slice_name)
            axes[0].plot(epochs, np.nanmean(values, 0), ls=ls, label=f"{slice_name}, {condition}")
            epochs, acc = curve(runs, slice_name, ACCURACY[task])
            if np.isfinite(acc).any(axis=0).sum() > 1:
                axes[1].plot(epochs, np.nanmean(acc, 0), ls=ls, label=f"{slice_name}, {condition}")
    axes[0].set_title(f"{task}: control (uniform) eval loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("mean per-sample CE")
    axes[0].legend(fontsize=8)
    axes[1].set_title(f"{task}: control {ACCURACY_NAME[ACCURACY[task]]}")
    axes[1].set_xlabel("epoch")
    if axes[1].lines:
        axes[1].legend(fontsize=8)
    else:
        axes[1].text(0.5, 0.5, "scored after the last epoch only (see tables)", ha="center", va="center", transform=axes[1].transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mined_shares(report: dict, path: Path) -> None:
    """Mined set's corrupted share per epoch per arm (noisy), and its hard-slice share (clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in report["summary"] if k.endswith("/noisy") or k.endswith("/clean")]
    panels = [(k, "corrupted_share") for k in keys if k.endswith("/noisy")] + [(k, "hard_share") for k in keys if k.endswith("/clean")]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (key, share) in zip(axes[0], panels):
        entry = report["summary"][key]
        base = None
        for arm in arms_in(entry):
            a = entry["arms"][arm]
            per_epoch = a["mined"]["per_epoch"]
            if not per_epoch:
                continue
            epochs = [int(e) for e in per_epoch]
            ax.plot(epochs, [per_epoch[str(e)][share] for e in epochs], marker="o", ms=3, label=arm)
            base = a["mined"]["base_rates"]["corrupted" if share == "corrupted_share" else "hard"]
        if base is not None:
            ax.axhline(base, color="grey", ls=":", lw=1, label="base rate")
            if share == "corrupted_share":
                ax.axhline(1.5 * base, color="red", ls=":", lw=1, label="1.5x base (goal)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{key}: mined set's {share.replace('_', ' ')}")
        ax.set_xlabel("epoch whose end made the plan")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ goals
def goal_checks(summary: dict, task: str) -> list[tuple[str, bool | None, str]]:
    """Issue 8's goals for the defaults arm, judged on the numbers (None: not measured)."""
    out = []
    clean = summary.get(f"{task}/clean", {}).get("arms", {}).get("defaults")
    if clean and clean["paired"]:
        hard = clean["paired"]["hard_loss"]
        overall = clean["paired"]["all_loss"]
        out.append((
            "clean: hard-slice eval loss at least 10% lower than uniform",
            hard["mean_relative"] <= -0.10, f"mean {pct(hard['mean_relative'])}",
        ))
        out.append(("clean: better in every seed", hard["better_in"] == hard["of"], f"{hard['better_in']} of {hard['of']} seeds"))
        out.append((
            "clean: overall eval loss within +1% of uniform",
            overall["mean_relative"] <= 0.01, f"mean {pct(overall['mean_relative'])}",
        ))
    noisy = summary.get(f"{task}/noisy", {}).get("arms", {}).get("defaults")
    if noisy and noisy["paired"]:
        overall = noisy["paired"]["all_loss"]
        worse = sum(1 for d in overall["diff"] if d > 0)
        out.append((
            "10% noise: overall eval loss no worse than uniform in every seed",
            worse == 0, f"worse in {worse} of {overall['of']} seeds, mean {pct(overall['mean_relative'])}",
        ))
        ratio = noisy["mined"]["overall"]["corrupted_ratio_to_base"]
        out.append((
            "10% noise: mined corrupted share at most 1.5x its base rate",
            None if ratio is None else ratio <= 1.5, f"{fmt(ratio, 2)}x",
        ))
    original = summary.get(f"{task}/noisy", {}).get("arms", {}).get("original")
    if original and original["paired"]:
        overall = original["paired"]["all_loss"]
        out.append((
            "10% noise: the original rule's harm reproduced (overall loss worse than uniform)",
            overall["mean_diff"] > 0, f"worse in {sum(1 for d in overall['diff'] if d > 0)} of {overall['of']} seeds, mean {pct(overall['mean_relative'])}",
        ))
    return out


def verdict(ok: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[ok]


# ------------------------------------------------------------------ page
def arm_table(entry: dict, task: str) -> list[str]:
    acc = ACCURACY[task]
    header = ["arm", "hard loss", "Δ hard vs uniform (paired)", "better in", "rest loss", "overall loss",
              "Δ overall", f"hard {ACCURACY_NAME[acc]}", f"overall {ACCURACY_NAME[acc]}",
              "mined: hard share (x base)", "mined: corrupted share (x base)", "same as control until plan"]
    rows = []
    for arm in arms_in(entry):
        a = entry["arms"][arm]
        m, p = a["metrics"], a["paired"]
        mined = a["mined"]["overall"]
        same = a.get("identical_until_first_plan")
        rows.append([
            f"`{arm}`",
            mean_std(m.get("hard_loss")),
            pct(p["hard_loss"]["mean_relative"]) if "hard_loss" in p else "–",
            f"{p['hard_loss']['better_in']}/{p['hard_loss']['of']}" if "hard_loss" in p else "–",
            mean_std(m.get("rest_loss")),
            mean_std(m.get("all_loss")),
            pct(p["all_loss"]["mean_relative"]) if "all_loss" in p else "–",
            mean_std(m.get(f"hard_{acc}")),
            mean_std(m.get(f"all_{acc}")),
            f"{pct(mined['hard_share'], sign=False)} ({fmt(mined['hard_ratio_to_base'], 1)}x)" if mined["hard_share"] is not None else "–",
            f"{pct(mined['corrupted_share'], sign=False)} ({fmt(mined['corrupted_ratio_to_base'], 1)}x)" if mined["corrupted_share"] is not None else "–",
            "–" if same is None else ("yes" if all(same) else f"**no** {same}"),
        ])
    return table(header, rows)


def per_seed_table(entry: dict) -> list[str]:
    arms = [a for a in arms_in(entry) if a != "uniform"]
    seeds = entry["arms"]["uniform"]["seeds"]
    header = ["seed"] + [f"`{a}` Δ hard / Δ overall" for a in arms]
    rows = []
    for i, seed in enumerate(seeds):
        row = [str(seed)]
        for arm in arms:
            p = entry["arms"][arm]["paired"]
            if "hard_loss" not in p or i >= len(p["hard_loss"]["relative"]):
                row.append("–")
                continue
            row.append(f"{pct(p['hard_loss']['relative'][i])} / {pct(p['all_loss']['relative'][i])}")
        rows.append(row)
    return table(header, rows)


def guard_table(entry: dict, arm: str) -> list[str]:
    g = entry["arms"].get(arm, {}).get("guard_exclusions") or {}
    if not g:
        return []
    rules = sorted({k for row in g.values() for k in row if k.startswith("excluded_")})
    header = ["epoch", "eligible", "mined"] + [r.removeprefix("excluded_") for r in rules]
    mined = entry["arms"][arm]["mined"]["per_epoch"]
    rows = []
    for epoch, row in g.items():
        share = mined.get(epoch, {}).get("corrupted_share")
        rows.append(
            [epoch, fmt(row.get("eligible"), 0), fmt(row.get("num_hard"), 0) + (f" ({pct(share, 0, sign=False)} corrupted)" if share is not None else "")]
            + [fmt(row.get(r), 0) for r in rules]
        )
    return [f"Guard exclusions per epoch, `{arm}` (mean over seeds):", ""] + table(header, rows)


def trigger_lines(entry: dict) -> list[str]:
    t = entry["trigger"]
    fires = t["default"]
    cands = t["candidates"]
    rows = [["default (`plateau_delta` 0.05, `start_epoch` 2)"] + [str(fires[s]) if fires[s] is not None else "never" for s in sorted(fires)]]
    for name, by_seed in cands.items():
        rows.append([f"`{name}`"] + [str(by_seed[s]) if by_seed[s] is not None else "never" for s in sorted(by_seed)])
    header = ["trigger (replayed on the control)"] + [f"seed {s}" for s in sorted(fires)]
    drops = []
    for seed, mon in sorted(t.get("monitored", {}).items()):
        e = sorted(mon, key=int)
        falls = [(mon[e[i - 1]] - mon[e[i]]) / mon[e[i - 1]] for i in range(1, len(e))]
        drops.append(f"seed {seed}: " + ", ".join(pct(-f, 0) for f in falls))
    return table(header, rows) + ["", "Epoch-on-epoch change of the control's training loss: " + "; ".join(drops) + "."]


def describe_setup(report: dict) -> list[str]:
    s = report["setup"]
    lines = []
    for task, size in s["tasks"].items():
        described = ", ".join(f"{k} {v}" for k, v in size.items())
        lines.append(f"- `{task}`: {TASK_NOTES.get(task, task)}. Sizes: {described}.")
    lines.append(
        f"- Seeds {s['seeds']} (each seed draws its own data, label corruption and order; arms of a seed share all three). "
        f"Mining arms first mine at the end of epoch {s['mine_from']} (the plan applies from epoch {s['mine_from'] + 1}). "
        f"Noisy condition: {pct(s['noise_share'], 0, sign=False)} of target training labels replaced by wrong ones; evaluation labels are clean."
    )
    lines.append("- Arms: " + "; ".join(f"`{a}`: {ARM_NOTES[a]}" for a in s["arms"] if a in ARM_NOTES) + ".")
    return lines


def defaults_section(summary: dict) -> list[str]:
    """What the measurements say about each default (numbers from the summary)."""
    lines = ["## What the results say about the defaults", ""]
    for task in ("text", "vl"):
        clean, noisy = summary.get(f"{task}/clean"), summary.get(f"{task}/noisy")
        if not clean and not noisy:
            continue
        lines.append(f"**{task}**")
        lines.append("")
        if noisy:
            arms = noisy["arms"]
            parts = []
            for arm in ("defaults", "sticky_guard", "original", "guard_off"):
                if arm in arms and arms[arm]["mined"]["overall"]["corrupted_share"] is not None:
                    a = arms[arm]
                    parts.append(
                        f"`{arm}` mined {pct(a['mined']['overall']['corrupted_share'], 0, sign=False)} corrupted "
                        f"({fmt(a['mined']['overall']['corrupted_ratio_to_base'], 1)}x base), overall loss "
                        f"{pct(a['paired']['all_loss']['mean_relative'])} vs uniform"
                    )
            if parts:
                lines.append("- Noise guard, 10% noise: " + "; ".join(parts) + ".")
            d = arms.get("defaults", {}).get("mined", {}).get("per_epoch", {})
            if d:
                lines.append(
                    "- The `improvement` guard per epoch (corrupted share of the mined set): "
                    + ", ".join(f"epoch {e}: {pct(v['corrupted_share'], 0, sign=False)}" for e, v in d.items() if v["corrupted_share"] is not None)
                    + "."
                )
            st = arms.get("sticky_guard", {}).get("mined", {}).get("per_epoch", {})
            if st:
                lines.append(
                    "- The `sticky` guard per epoch: "
                    + ", ".join(f"epoch {e}: {pct(v['corrupted_share'], 0, sign=False)} of {fmt(v['num_mined'], 0)}" for e, v in st.items() if v["corrupted_share"] is not None)
                    + "."
                )
        if clean:
            arms = clean["arms"]
            parts = []
            for arm in ("defaults", "sticky_guard", "original", "guard_off", "correction_off"):
                if arm in arms and "hard_loss" in arms[arm]["paired"]:
                    p = arms[arm]["paired"]
                    parts.append(
                        f"`{arm}` hard {pct(p['hard_loss']['mean_relative'])} ({p['hard_loss']['better_in']}/{p['hard_loss']['of']} seeds better), "
                        f"overall {pct(p['all_loss']['mean_relative'])}"
                    )
            if parts:
                lines.append("- Clean labels, paired to uniform: " + "; ".join(parts) + ".")
        trig = (clean or noisy)["trigger"]
        never = sum(1 for v in trig["default"].values() if v is None)
        lines.append(
            f"- Default trigger: never fired in {never} of {len(trig['default'])} clean control runs"
            if clean else f"- Default trigger: never fired in {never} of {len(trig['default'])} control runs"
        )
        if noisy and clean:
            nn = sum(1 for v in noisy["trigger"]["default"].values() if v is None)
            lines[-1] += f" and {nn} of {len(noisy['trigger']['default'])} noisy ones."
        else:
            lines[-1] += "."
        lines.append("")
    return lines


def build_page(report: dict, docs: Path, *, decisions: str | None = None) -> str:
    meta = report["meta"]
    images = docs / "benchmarks"
    images.mkdir(parents=True, exist_ok=True)
    tasks = list(report["setup"]["tasks"])
    for task in tasks:
        plot_calibration(report, task, images / f"calibration_{task}.png")
        plot_loss_curves(report, task, images / f"hard_loss_{task}.png")
    plot_mined_shares(report, images / "mined_shares.png")

    L = [
        "# Benchmarks",
        "",
        "<!-- Generated by benchmarks/report.py from benchmarks/results/*.json. Do not edit by hand:",
        "     rerun `make bench` (or `python benchmarks/quality.py && python benchmarks/report.py`). -->",
        "",
        f"Quality benchmark (`benchmarks/quality.py`, {report['mode']} mode), commit `{(meta['commit'] or 'unknown')[:12]}`"
        + (" with uncommitted changes" if meta.get("dirty") else "")
        + f", {meta['timestamp']}.",
        f"Machine: {meta['processor']} ({meta['machine']}, {meta['cpus']} CPUs, {meta['threads']} torch thread(s)), "
        f"Python {meta['python']}, torch {meta['torch']}, transformers {meta['transformers']}. "
        f"Wall time of the suite: {report['wall_s'] / 60:.1f} min.",
        "",
        "Overhead (step time, memory, mining step at 1M samples) is not measured on this page yet.",
        "",
        "## Set-up",
        "",
        *describe_setup(report),
        "",
        "Every number is the final epoch's evaluation on a clean validation split unless it says otherwise; "
        "loss is the mean over samples of each sample's mean token cross-entropy; ± is the standard deviation over seeds; "
        "Δ is the mean over seeds of the paired relative difference to the same seed's `uniform` run (negative: lower loss). "
        "Exact match is teacher-forced (every answer token is the argmax), which equals greedy decoding's exact match.",
        "",
    ]
    if decisions:
        L += ["## Decisions", "", decisions.strip(), ""]
    L += defaults_section(report["summary"])
    for task in tasks:
        L += [f"## Task `{task}`", "", "### Calibration (the control learns the task, and the hard slice only partly)", ""]
        L += [f"![calibration {task}](benchmarks/calibration_{task}.png)", ""]
        for condition in ("clean", "noisy"):
            entry = report["summary"].get(f"{task}/{condition}")
            if not entry or "uniform" not in entry["arms"]:
                continue
            first = [r["epochs"][0] for r in runs_of(report, task, condition)["uniform"]]
            u = entry["arms"]["uniform"]["metrics"]
            acc = ACCURACY[task]
            L.append(
                f"- {condition}: control eval loss hard {fmt(np.mean([f['hard']['loss'] for f in first]))} → {mean_std(u.get('hard_loss'))}, "
                f"rest {fmt(np.mean([f['rest']['loss'] for f in first]))} → {mean_std(u.get('rest_loss'))}; final {ACCURACY_NAME[acc]} "
                f"hard {mean_std(u.get(f'hard_{acc}'))}, rest {mean_std(u.get(f'rest_{acc}'))}."
            )
        L += ["", "### Results", "", f"![hard-slice loss {task}](benchmarks/hard_loss_{task}.png)", ""]
        for condition in ("clean", "noisy"):
            entry = report["summary"].get(f"{task}/{condition}")
            if not entry:
                continue
            L += [f"#### {condition} labels", ""]
            L += arm_table(entry, task)
            L += ["", "Per seed, paired to `uniform` (hard-slice loss / overall loss, relative):", ""]
            L += per_seed_table(entry)
            L += [""]
            for arm in ("defaults", "sticky_guard"):
                g = guard_table(entry, arm)
                if g:
                    L += g + [""]
            L += ["When the plateau trigger fires:", ""] + trigger_lines(entry) + [""]
        checks = goal_checks(report["summary"], task)
        if checks:
            L += ["### Issue 8's goals for the defaults", ""]
            L += table(["goal", "result", "measured"], [[g, verdict(ok), m] for g, ok, m in checks])
            L += [""]
    L += ["## Mined sets", "", "![mined shares](benchmarks/mined_shares.png)", ""]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--docs", default=str(REPO / "docs"))
    opts = ap.parse_args(argv)
    results, docs = Path(opts.results), Path(opts.docs)
    report = json.loads((results / "quality.json").read_text(encoding="utf-8"))
    decisions_file = results / "decisions.md"
    decisions = decisions_file.read_text(encoding="utf-8") if decisions_file.is_file() else None
    docs.mkdir(parents=True, exist_ok=True)
    page = build_page(report, docs, decisions=decisions)
    (docs / "benchmarks.md").write_text(page, encoding="utf-8")
    print(f"wrote {docs / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
