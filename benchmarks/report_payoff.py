"""The first screen of docs/benchmarks.md and the README's card: does mining help, and when.

Everything here is computed from a quality suite's JSON (``benchmarks/quality.py``):
per task and label condition, the arm that ran today's defaults against the exact
control (``uniform``: the same run on the same loss path with no plan applied), as a
share of the ``oracle`` arm's gain, beside the spread the order change alone gives
(``placebo``). No number is typed by hand.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: What each task's hard-slice gain is measured in: the text tasks' eval loss, the VL
#: task's object-description accuracy (a caption's loss is mostly coordinate digits).
HEADLINE = {"text": ("hard_loss", "loss"), "counter": ("hard_loss", "loss"), "vl": ("hard_desc_acc", "description accuracy")}
#: The goals of the payoff issue, as numbers.
SHARE_GOAL = 0.5  # of the oracle's gain, on clean labels
SEEDS_GOAL = 7 / 8  # of seeds better than the exact control, on clean labels
WRONG_LABEL_GOAL = 1.0  # mined wrong labels at most this many times their base rate
TRIGGER_ARMS = ("defaults", "plateau", "trigger_start", "trigger_tail", "trigger_stable")
TRIGGER_MODES_NOW = ("start", "plateau")  # the modes hardmine has today (tail and stable were retired)
STEADY_FALL = 0.3  # a control "learns steadily" while its training loss falls this much an epoch


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x * 100:+.{digits}f}%"


def _share(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{int(round(x * 100))}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


#: Settings that only decide when mining starts: an arm that differs from today's defaults in
#: these alone, and whose trigger fired where today's fires in every run, made the same runs.
TRIGGER_KEYS = ("trigger", "plateau_delta", "patience")


def current_arm(report: dict, task: str, today: dict | None) -> str | None:
    """The arm that ran ``today``'s defaults: its recorded settings, or the same but for the trigger
    where that trigger fired at today's ``start_epoch`` in every run (None: no such arm)."""
    return _current(report, task, today)[0]


def same_runs_note(report: dict, task: str, today: dict | None) -> str | None:
    """Why an arm with another trigger stands for today's defaults (None: it ran them exactly)."""
    return _current(report, task, today)[1]


def flat_settings(settings: dict, prefix: str = "") -> dict[str, Any]:
    """Recorded settings, flat under dotted keys (``noise_guard.window``: 3)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def same_settings(recorded: dict, today: dict, ignore: tuple[str, ...] = ()) -> bool:
    """Whether an arm's recorded settings are today's, on the keys both have. A key only one side has is
    a setting added or retired since the runs: an added one whose default keeps what hardmine did before
    it (``shadow: false``, ``noise_guard.rest: all``), or a retired one that became a constant at the
    value it had (``sample_loss.tokens``, ``aggregation.level_decay``) or never applied (the retired
    guard rules' ``noise_guard.min_improvement``)."""
    a, b = flat_settings(recorded), flat_settings(today)
    return all(a[k] == b[k] for k in a.keys() & b.keys() if k not in ignore)


def _current(report: dict, task: str, today: dict | None) -> tuple[str | None, str | None]:
    recorded = report["setup"].get("arm_settings", {}).get(task, {})
    if today is None:
        return None, None
    for arm in ("defaults", *TRIGGER_ARMS, *recorded):
        if arm in recorded and arm != "uniform" and same_settings(recorded[arm], today):
            return arm, None
    if today.get("trigger") != "start":
        return None, None
    for arm in ("defaults", *recorded):
        settings = recorded.get(arm)
        if arm == "uniform" or settings is None or not same_settings(settings, today, TRIGGER_KEYS):
            continue
        fired = [e for c in ("clean", "noisy") for e in report["summary"].get(f"{task}/{c}", {}).get("arms", {}).get(arm, {}).get("fired_epoch", [])]
        if fired and all(e == today["start_epoch"] for e in fired):
            note = (f"`{task}`: arm `{arm}` ran `trigger: {settings.get('trigger')}`, which fired at the end of epoch "
                    f"{today['start_epoch']} in all {len(fired)} runs, where today's `trigger: start` fires: the same runs.")
            return arm, note
    return None, None


def placebo_spread(entry: dict, key: str) -> tuple[float, float] | None:
    """The lowest and highest per-seed relative difference of the placebo to the control."""
    rel = entry["arms"].get("placebo", {}).get("paired", {}).get(key, {}).get("relative")
    rel = [r for r in rel or [] if r is not None]
    return (min(rel), max(rel)) if rel else None


def _abs_spread(entry: dict, key: str) -> str:
    diffs = entry["arms"].get("placebo", {}).get("paired", {}).get(key, {}).get("diff")
    return "–" if not diffs else f"{min(diffs):+.3f} to {max(diffs):+.3f}"


def _spread(pair: tuple[float, float] | None) -> str:
    return "–" if pair is None else f"{_pct(pair[0])} to {_pct(pair[1])}"


def arm_outcome(entry: dict, arm: str, task: str) -> dict[str, Any] | None:
    """One arm's headline numbers in one task and condition (None: the arm did not run there)."""
    a = entry["arms"].get(arm)
    if a is None:
        return None
    key, _ = HEADLINE[task]
    paired, overall = a["paired"].get(key), a["paired"].get("all_loss")
    mined = a["mined"]["overall"]
    return {
        "relative": None if paired is None else paired["mean_relative"],
        "diff": None if paired is None else paired["mean_diff"],
        "share": a.get("share_of_oracle", {}).get(key),
        "better": None if paired is None else (paired["better_in"], paired["of"]),
        "overall": None if overall is None else overall["mean_relative"],
        "wrong_ratio": mined.get("corrupted_ratio_to_base"),
        "fired": a.get("fired_epoch", []),
    }


def overall_within_placebo(outcome: dict, entry: dict) -> bool:
    spread = placebo_spread(entry, "all_loss")
    return outcome["overall"] is not None and spread is not None and outcome["overall"] <= spread[1]


def payoff_rows(report: dict, today: dict[str, dict]) -> list[dict[str, Any]]:
    """Per task and condition, today's defaults against the exact control."""
    rows = []
    for task in report["setup"]["tasks"]:
        arm = current_arm(report, task, today.get(task))
        for condition in ("clean", "noisy"):
            entry = report["summary"].get(f"{task}/{condition}")
            if not entry or arm is None or arm not in entry["arms"]:
                continue
            rows.append({"task": task, "condition": condition, "arm": arm, "entry": entry,
                         **arm_outcome(entry, arm, task)})
    return rows


def change(r: dict, task: str) -> str:
    """An arm's headline change: relative for a loss, absolute for an accuracy (whose control may be 0)."""
    key, _ = HEADLINE[task]
    if key.endswith("acc"):
        return "–" if r["diff"] is None else f"{r['diff']:+.3f}"
    return _pct(r["relative"])


def payoff_table(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        key, metric = HEADLINE[r["task"]]
        better = "–" if r["better"] is None else f"{r['better'][0]}/{r['better'][1]}"
        placebo_hard = _spread(placebo_spread(r["entry"], key)) if not key.endswith("acc") else _abs_spread(r["entry"], key)
        wrong = "–" if r["condition"] == "clean" or r["wrong_ratio"] is None else f"{r['wrong_ratio']:.2f}x"
        out.append([
            f"`{r['task']}`", r["condition"], f"hard-slice {metric}: {change(r, r['task'])} ({_share(r['share'])} of the oracle's)",
            better, _pct(r["overall"]), f"{placebo_hard}; overall {_spread(placebo_spread(r['entry'], 'all_loss'))}", wrong,
        ])
    return _table(["task", "labels", "today's defaults vs the exact control", "seeds better", "overall loss",
                   "placebo (order change only), per seed", "wrong labels mined (x base rate)"], out)


def _better(r: dict) -> str:
    return "–" if r["better"] is None else f"{r['better'][0]}/{r['better'][1]}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _seeds_needed(r: dict) -> str:
    if r["better"] is None:
        return f"{SEEDS_GOAL:.0%} of the"
    of = r["better"][1]
    return f"{math.ceil(round(SEEDS_GOAL * of, 9))} of {of}"


def goal_lines(rows: list[dict]) -> list[str]:
    """Each goal, met or not, in one line."""
    lines = []
    for r in rows:
        task, cond = r["task"], r["condition"]
        if cond == "clean":
            share_ok = r["share"] is not None and r["share"] >= SHARE_GOAL
            seeds_ok = r["better"] is not None and r["better"][0] >= SEEDS_GOAL * r["better"][1]
            ok = share_ok and seeds_ok and overall_within_placebo(r, r["entry"])
            worst_placebo = (placebo_spread(r["entry"], "all_loss") or (np.nan, np.nan))[1]
            lines.append(
                f"- {'met' if ok else '**not met**'}: `{task}`, clean labels: at least {SHARE_GOAL:.0%} of the oracle's "
                f"hard-slice gain ({_share(r['share'])}), better in at least {_seeds_needed(r)} seeds "
                f"({_better(r)}), overall loss within the placebo's spread ({_pct(r['overall'])}; the placebo's worst "
                f"seed: {_pct(worst_placebo)})."
            )
        else:
            ok = r["overall"] is not None and r["overall"] < 0 and r["wrong_ratio"] is not None and r["wrong_ratio"] <= WRONG_LABEL_GOAL
            lines.append(
                f"- {'met' if ok else '**not met**'}: `{task}`, 10% wrong labels: overall loss below the control "
                f"({_pct(r['overall'])}) and wrong labels mined at no more than {WRONG_LABEL_GOAL:.1f}x their base rate "
                f"({_ratio(r['wrong_ratio'])})."
            )
    return lines


def fired_cell(fired: list[int | None] | dict[str, int | None]) -> str:
    """When a trigger fired over the seeds: ``2 (6), 3 (1), never (1)``."""
    values = list(fired.values()) if isinstance(fired, dict) else list(fired)
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    order = sorted(counts, key=lambda v: (v is None, v if v is not None else 0))
    return ", ".join(f"{'never' if v is None else v} ({counts[v]})" for v in order)


def trigger_rows(report: dict, task: str, condition: str) -> list[list[str]]:
    entry = report["summary"].get(f"{task}/{condition}")
    if not entry:
        return []
    recorded = report["setup"].get("arm_settings", {}).get(task, {})
    rows = []
    for arm in TRIGGER_ARMS:
        outcome = arm_outcome(entry, arm, task)
        if outcome is None:
            continue
        s = recorded.get(arm, {})
        mode = s.get("trigger", "plateau")
        what = f"`{mode}`" + (f", `plateau_delta` {s.get('plateau_delta'):g}" if mode == "plateau" else "")
        rows.append([f"`{arm}`", what, fired_cell(outcome["fired"]),
                     f"{change(outcome, task)} ({_share(outcome['share'])})", _better(outcome), _pct(outcome["overall"]),
                     _ratio(outcome["wrong_ratio"]) if condition == "noisy" else "–"])
    for name, fired in entry.get("trigger", {}).get("candidates", {}).items():
        rows.append(["replayed on the control", f"`plateau`, {name.replace('=', ' ')}", fired_cell(fired), "", "", "", ""])
    return rows


def steady_line(report: dict, task: str) -> str | None:
    """How steadily the clean control learns: its epochs whose training loss fell by STEADY_FALL or more."""
    entry = report["summary"].get(f"{task}/clean")
    falls = [f for seed in (entry or {}).get("control_train_fall", {}).values() for f in seed]
    if not falls:
        return None
    steady = sum(f >= STEADY_FALL for f in falls)
    return (f"`{task}`: the clean control's training loss fell by {STEADY_FALL:.0%} or more in {steady} of its "
            f"{len(falls)} epoch-to-epoch steps (median fall {np.median(falls):.0%}).")


def trigger_section(report: dict) -> list[str]:
    """The trigger's modes compared on every task, on clean and noisy labels."""
    L = ["## The trigger", "",
         "Each arm is the defaults of its suite with one trigger; all arms of a seed are identical until their first plan, so "
         "arms that fire at the same epoch are the same run. Gains are paired to the exact control; in brackets, as a "
         "share of the oracle's. The plateau test at other deltas is replayed on the control (when it would fire).", ""]
    for task in report["setup"]["tasks"]:
        line = steady_line(report, task)
        if line:
            L.append(f"- {line}")
    L.append("")
    for task in report["setup"]["tasks"]:
        metric = HEADLINE[task][1]
        for condition in ("clean", "noisy"):
            rows = trigger_rows(report, task, condition)
            if len(rows) <= len(report["summary"].get(f"{task}/{condition}", {}).get("trigger", {}).get("candidates", {})):
                continue  # no trigger arm ran here
            L += [f"**`{task}`, {condition} labels**", ""]
            L += _table(["arm", "trigger", "fired at the end of epoch (seeds)", f"hard-slice {metric} (share of oracle)",
                         "seeds better", "overall loss", "wrong labels mined"], rows) + [""]
    return L


def readme_card(rows: list[dict]) -> str:
    """The README's one paragraph on "does it help, and when", from the same rows as the page's first table
    (at most 120 words: the README's rule for a paragraph)."""
    clean = [r for r in rows if r["condition"] == "clean"]
    noisy = [r for r in rows if r["condition"] == "noisy"]

    def gain(r: dict) -> str:
        return f"{r['task']} {HEADLINE[r['task']][1]} {change(r, r['task'])} ({_better(r)})"

    text = ("On the benchmark suite (8 paired seeds a task, against the exact control) the defaults changed the hard "
            "slice, with clean labels, by: " + ", ".join(gain(r) for r in clean) + ".")
    if noisy:
        text += (" With 10% wrong labels, overall eval loss: " + ", ".join(f"{_pct(r['overall'], 0)} ({r['task']})" for r in noisy)
                 + "; wrong labels mined at " + ", ".join(_ratio(r["wrong_ratio"]) for r in noisy) + " their base rate.")
    shares = [r for r in clean if r["share"] is not None]
    if shares:
        best = max(shares, key=lambda r: r["share"])
        text += (f" It came closest to the oracle (mining told the hard slice) on {best['task']}, "
                 f"{_share(best['share'])} of its gain. Switch it on when a minority of target samples stays wrong "
                 "while the rest is learnt.")
    return text


def today_settings(tasks) -> dict[str, dict]:
    """Today's default MiningSettings as a suite records an arm's settings (JSON types), per task."""
    import dataclasses
    import json

    from hardmine.core import MiningSettings

    recorded = json.loads(json.dumps(dataclasses.asdict(MiningSettings())))
    return {task: recorded for task in tasks}


def first_screen(report: dict) -> list[str]:
    """The page's first screen: the payoff table, then the goals, met or not."""
    today = today_settings(report["setup"]["tasks"])
    rows = payoff_rows(report, today)
    if not rows:
        return ["No arm of this suite ran today's defaults: the first table needs a rerun of `make bench`.", ""]
    return [
        "## Does it help, and when",
        "",
        "Today's defaults against the exact control: the same run on the same loss path with no plan ever applied "
        "(arm `uniform`), so the two are bitwise equal until the first plan and every difference is mining's. Mean over "
        "seeds of the paired relative difference; in brackets, the gain as a share of the `oracle` arm's (mining told "
        "which samples are the hard slice). The placebo column is what an order change alone does, seed by seed "
        "(arm `placebo`: mining starts, marks nothing).",
        "",
        *payoff_table(rows),
        "",
        "Goals:",
        "",
        *goal_lines(rows),
        "",
        *[f"- {n}" for n in dict.fromkeys(same_runs_note(report, r["task"], today[r["task"]]) for r in rows) if n],
        "",
        f"In the README: {readme_card(rows)}",
        "",
    ]


README_BEGIN = "<!-- payoff: generated by benchmarks/report.py from benchmarks/results/quality.json -->"
README_END = "<!-- /payoff -->"


def write_readme_card(readme, report: dict) -> bool:
    """Replace the README's generated paragraph (between the markers) with today's; False: no markers."""
    from pathlib import Path

    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    card = readme_card(payoff_rows(report, today_settings(report["setup"]["tasks"])))
    path.write_text(f"{head}{README_BEGIN}\n{card}\n{README_END}{tail}", encoding="utf-8")
    return True


def trigger_evidence(report: dict, task: str) -> str:
    """The defaults table's cell for ``trigger``: each trigger arm that ran, by its mode, with its
    hard-slice change, seeds better and when it fired."""
    recorded = report["setup"].get("arm_settings", {}).get(task, {})
    out = []
    for cond in ("clean", "noisy"):
        e = report["summary"].get(f"{task}/{cond}")
        arms = [a for a in TRIGGER_ARMS if e and a in e["arms"] and recorded.get(a, {}).get("trigger") in TRIGGER_MODES_NOW]
        parts = []
        for arm in arms:
            o = arm_outcome(e, arm, task)
            parts.append(f"`{recorded[arm]['trigger']}` {change(o, task)} ({_better(o)}; fired {fired_cell(o['fired'])})")
        if parts:
            out.append(f"{cond} hard Δ " + " vs ".join(parts))
    return ", ".join(out)


def rest_evidence(report: dict, task: str) -> str:
    """The defaults table's cell for ``noise_guard.rest``: each rest arm against the arm of today's defaults."""
    out = []
    for cond in ("clean", "noisy"):
        e = report["summary"].get(f"{task}/{cond}") or {}
        for arm in ("rest_stalled", "rest_half", "rest_none"):
            a = e.get("arms", {}).get(arm)
            if not a or "hard_loss" not in a.get("paired_reference", {}):
                continue
            hard, overall = a["paired_reference"]["hard_loss"], a["paired_reference"]["all_loss"]
            out.append(f"{cond} `{arm.removeprefix('rest_')}` vs `all`: hard Δ {_pct(hard['mean_relative'])} "
                       f"({hard['better_in']}/{hard['of']} lower), overall Δ {_pct(overall['mean_relative'])}")
    return ", ".join(out)


#: The VL arms that record another statistic than the mean, and what they record.
STATISTIC_ARMS = (("defaults", "mean"), ("descriptions", "fields"), ("descriptions_weight2", "fields, weight 2"),
                  ("mixed", "mixed"), ("mixed_weight2", "mixed, weight 2"))


def statistic_evidence(report: dict, task: str) -> str:
    """The defaults table's cell for ``sample_loss.statistic`` on a dense-caption task: each statistic's
    hard-slice description accuracy gain (share of the oracle's), overall loss, and wrong labels mined."""
    key = HEADLINE[task][0]
    if not key.endswith("acc"):
        return ""
    clean, noisy = (report["summary"].get(f"{task}/{c}") or {"arms": {}} for c in ("clean", "noisy"))
    out = []
    for arm, what in STATISTIC_ARMS:
        if arm not in clean["arms"]:
            continue
        c = arm_outcome(clean, arm, task)
        n = arm_outcome(noisy, arm, task) if arm in noisy["arms"] else None
        out.append(f"{what} (`{arm}`): clean {change(c, task)} ({_share(c['share'])} of the oracle's, {_better(c)}), "
                   f"overall {_pct(c['overall'])}" + (f", noisy wrong labels {_ratio(n['wrong_ratio'])}" if n else ""))
    return "; ".join(out)
