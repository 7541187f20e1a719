"""Tables from a run: per mining epoch what was picked, and the curves it produced.

:func:`run_report` returns plain JSON-ready data (what ``--json`` prints);
:func:`format_report` the text table. Epochs are 0-based, as the dumps and
``hsm/epoch`` number them; Trainer's ``epoch`` after epoch ``n`` is ``n + 1``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..core.audit import quantiles
from ..core.guard import EXCLUSIONS
from ..core.miner import WORST_TOKENS
from .run import Run



# ------------------------------------------------------------------ epochs
def _epoch_numbers(run: Run) -> list[int]:
    epochs = set(run.dumps) | set(run.epoch_log)
    epochs |= {int(row["hsm/epoch"]) for row in run.log_history if "hsm/epoch" in row}
    return sorted(epochs)


def _hsm_row(run: Run, epoch: int) -> dict[str, Any]:
    """The epoch's hsm/* values: the epoch log's line, else Trainer's row."""
    if epoch in run.epoch_log:
        return run.epoch_log[epoch]
    rows = [r for r in run.log_history if r.get("hsm/epoch") == epoch]
    return rows[-1] if rows else {}


def _sample_key(row: dict) -> tuple[str, int]:
    return row["dataset"], int(row["base_idx"])


def churn(current: list[dict], previous: list[dict] | None) -> dict[str, Any]:
    """How the hard set changed since the previous plan (Jaccard distance of the two sets)."""
    now = {_sample_key(r) for r in current}
    before = {_sample_key(r) for r in previous or []}
    union = now | before
    return {
        "previous_plan": previous is not None,
        "entered": len(now - before),
        "left": len(before - now),
        "kept": len(now & before),
        "jaccard_distance": (1.0 - len(now & before) / len(union)) if union else 0.0,
    }


def population_summary(run: Run, epoch: int) -> dict[str, Any] | None:
    """What the epoch's population file holds: sample counts, eligible ones, and each rule's exclusions."""
    population = run.population(epoch, columns=("eligible", "hard", "excluded", "slice"))
    if population is None:
        return None
    cols = population.columns
    rules = population.meta.get("rules", [])
    excluded = {rule: int(np.count_nonzero(cols["excluded"] & np.uint8(1 << i))) for i, rule in enumerate(rules)}
    out = {
        "file": run.dumps[epoch]["population"],
        "samples": int(cols["eligible"].size),
        "eligible": int(cols["eligible"].sum()),
        "hard": int(cols["hard"].sum()),
        "excluded": excluded,
    }
    names = population.meta.get("slices") or []
    if names:
        codes = cols["slice"][cols["eligible"]]
        out["eligible_slices"] = _shares(names[c] if c >= 0 else None for c in codes.tolist())
    return out


def slice_shares(dump: dict, population: dict[str, Any] | None) -> dict[str, Any] | None:
    """Share of each ``metadata.slice`` in the hard set, the dataset and (with a population) the eligible set."""
    rows = dump["samples"]
    if not any("slice" in r for r in rows) and not any(d.get("slices") for d in (dump.get("datasets") or {}).values()):
        return None
    out: dict[str, Any] = {"hard_set": _shares(r.get("slice") for r in rows)}
    dataset_counts: dict[str, int] = {}
    for info in (dump.get("datasets") or {}).values():
        for name, count in (info.get("slices") or {}).items():
            dataset_counts[name] = dataset_counts.get(name, 0) + int(count)
    total = sum(dataset_counts.values())
    out["dataset"] = {k: v / total for k, v in sorted(dataset_counts.items())} if total else {}
    if population is not None and "eligible_slices" in population:
        out["eligible"] = population["eligible_slices"]
    return out


def _shares(values: Iterable[str | None]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for v in values:
        key = "(none)" if v is None else str(v)
        counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())} if total else {}


def epoch_report(run: Run, epoch: int, previous_dump: dict | None, top: int) -> dict[str, Any]:
    hsm = _hsm_row(run, epoch)
    dump = run.dumps.get(epoch)
    decision = (dump or {}).get("decision") or {}
    monitored = decision.get("monitored", hsm.get("hsm/monitored"))
    out: dict[str, Any] = {
        "epoch": epoch,
        "active": bool(dump is not None or hsm.get("hsm/active")),
        "finished": bool(hsm.get("hsm/finished")),  # max_active_epochs reached: no more reweighting
        "monitor": decision.get("monitor", hsm.get("monitor")),
        "monitored": monitored,
        "dump": None,
    }
    if dump is None:
        return out
    rows = dump["samples"]
    population = population_summary(run, epoch)
    excluded = decision.get("excluded")
    if excluded is None:  # a format-1 dump: the counts are only in the metrics
        excluded = {r: int(hsm[f"hsm/excluded_{r}"]) for r in EXCLUSIONS if f"hsm/excluded_{r}" in hsm}
    hard_losses = np.array([r["loss"] for r in rows if r["loss"] is not None], np.float64)
    summary = decision.get("quantiles") or {}
    out.update(
        dump=f"hard_samples_epoch_{epoch}.json",
        format=dump["format"],
        plan_version=dump["version"],
        selection=dump["selection"],
        hard_weight=dump["weights"]["hard"],
        num_hard=dump["num_hard"],
        eligible=decision.get("eligible", _int_or_none(hsm.get("hsm/eligible"))),
        observed=decision.get("observed"),
        excluded=excluded,
        # Dumps made before sample_loss existed recorded the mean token loss.
        sample_loss=decision.get("sample_loss") or {"statistic": "mean"},
        cut=decision.get("cut", float(hard_losses.min()) if hard_losses.size else None),
        churn=churn(rows, None if previous_dump is None else previous_dump["samples"]),
        loss_quantiles={"hard": summary.get("hard") or quantiles(hard_losses), "all": summary.get("all")},
        slices=slice_shares(dump, population),
        population=population,
        hardest=rows[:top],
    )
    return out


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


# ------------------------------------------------------------------ curves
def curves(run: Run) -> dict[str, list[tuple[float, float]]]:
    """``loss`` (training), ``eval_*_loss`` and ``slice/*_loss`` against Trainer's epoch."""
    out: dict[str, list[tuple[float, float]]] = {}
    for row in run.log_history:
        epoch = row.get("epoch")
        if not isinstance(epoch, (int, float)):
            continue
        for key, value in row.items():
            wanted = key == "loss" or (key.startswith("eval_") and key.endswith("_loss")) or (
                key.startswith("slice/") and key.endswith("_loss")
            )
            if wanted and isinstance(value, (int, float)) and math.isfinite(value):
                out.setdefault(key, []).append((float(epoch), float(value)))
    return out


def eval_by_epoch(run: Run) -> dict[str, dict[int, float]]:
    """Evaluation and slice losses per 0-based epoch (the last value logged at that epoch's end)."""
    table: dict[str, dict[int, float]] = {}
    for key, points in curves(run).items():
        if key == "loss":
            continue
        for x, y in points:
            if abs(x - round(x)) < 1e-6 and round(x) >= 1:
                table.setdefault(key, {})[int(round(x)) - 1] = y
    return table


def first_active_epoch(report: dict[str, Any]) -> int | None:
    active = [e["epoch"] for e in report["epochs"] if e["active"]]
    return min(active) if active else None


def run_report(run: Run, top: int = 10) -> dict[str, Any]:
    """Everything ``hardmine inspect`` says about one run, as JSON-ready data."""
    epochs = []
    previous = None
    for epoch in _epoch_numbers(run):
        epochs.append(epoch_report(run, epoch, previous, top))
        previous = run.dumps.get(epoch, previous)
    report = {
        "run": str(run.path),
        "trainer_state": None if run.state_file is None else str(run.state_file),
        "epochs": epochs,
        "eval": {k: {str(e): v for e, v in sorted(d.items())} for k, d in sorted(eval_by_epoch(run).items())},
    }
    report["first_active_epoch"] = first_active_epoch(report)
    return report


# --------------------------------------------------------------- comparing
def compare_runs(this: Run, other: Run) -> dict[str, Any]:
    """Eval and slice losses of two runs, epoch by epoch, and their difference (this - other)."""
    a, b = eval_by_epoch(this), eval_by_epoch(other)
    metrics = {}
    for key in sorted(set(a) | set(b)):
        epochs = sorted(set(a.get(key, {})) | set(b.get(key, {})))
        rows = []
        for e in epochs:
            x, y = a.get(key, {}).get(e), b.get(key, {}).get(e)
            rows.append({"epoch": e, "this": x, "other": y, "diff": None if x is None or y is None else x - y})
        metrics[key] = rows
    return {"this": str(this.path), "other": str(other.path), "metrics": metrics}


# ------------------------------------------------------------------- text
def _f(value, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if spec.startswith("+") and abs(value) < 5e-5:
        value = 0.0  # no "-0.0000" for runs that agree to the printed digits
    return format(value, spec)


def format_report(report: dict[str, Any], top: int = 10, epoch: int | None = None) -> str:
    """The text report; the hardest samples listed are those of ``epoch`` (default: the last mining epoch)."""
    lines = [f"run: {report['run']}"]
    if report["trainer_state"] is None:
        lines.append("  (no trainer_state.json: no training or evaluation curves)")
    lines += [
        "",
        f"{'epoch':>5}  {'mining':<8} {'monitored':>9}  {'hard/eligible':>13}  {'churn':>5}  {'hard q50':>8}"
        f"  {'all q50':>8}  {'cut':>7}  excluded by the guard",
    ]
    for e in report["epochs"]:
        if e["dump"] is None:
            state = "active" if e["active"] else ("finished" if e.get("finished") else "off")
            lines.append(f"{e['epoch']:>5}  {state:<8} {_f(e['monitored']):>9}")
            continue
        ex = e["excluded"] or {}
        excl = ", ".join(f"{EXCLUSIONS[r].label if r in EXCLUSIONS else r} {n}" for r, n in ex.items() if n) or "none"
        q = e["loss_quantiles"]
        eligible = "-" if e["eligible"] is None else str(e["eligible"])
        lines.append(
            f"{e['epoch']:>5}  {'active':<8} {_f(e['monitored']):>9}  {e['num_hard']:>6}/{eligible:<6}"
            f"  {_f(e['churn']['jaccard_distance'], '.2f'):>5}"
            f"  {_f((q['hard'] or {}).get('q50')):>8}  {_f((q['all'] or {}).get('q50')):>8}  {_f(e['cut'], '.3f'):>7}  {excl}"
        )
    active = [e for e in report["epochs"] if e["dump"] is not None]
    if not active:
        lines += ["", "mining never became active: no hard set to show"]
        return "\n".join(lines)
    lines.append("")
    lines.append(f"loss: {describe_sample_loss(active[-1]['sample_loss'])}, aggregated over epochs (the dump's loss)")
    lines.append("churn: Jaccard distance between this plan's hard set and the previous plan's (1 = all new)")
    lines += [f"{'excluded:' if i == 0 else '':9} {e.label} = {e.meaning}" for i, e in enumerate(EXCLUSIONS.values())]
    for e in active:
        if e["slices"]:
            s = e["slices"]
            parts = [
                f"{name} {share:.0%} of the hard set vs {s['dataset'].get(name, 0.0):.0%} of the dataset"
                + (f" ({s['eligible'].get(name, 0.0):.0%} of eligible)" if "eligible" in s else "")
                for name, share in sorted({**dict.fromkeys(s["dataset"], 0.0), **s["hard_set"]}.items())
            ]
            lines.append(f"epoch {e['epoch']} slices: " + "; ".join(parts))
    last = next((e for e in active if e["epoch"] == epoch), active[-1])
    lines += ["", f"the {min(top, len(last['hardest']))} hardest of epoch {last['epoch']} (of {last['num_hard']} hard):"]
    lines.append(f"{'#':>3}  {'loss':>7}  {'last':>7}  {'n':>3}  {'slice':<6} {'where':<40}  image")
    for i, row in enumerate(last["hardest"][:top], start=1):
        where = f"{row['source']}:{row['line']}" if row.get("source") else f"{row['dataset']}[{row['base_idx']}]"
        image = (row.get("images") or ["-"])[0]
        lines.append(
            f"{i:>3}  {_f(row['loss']):>7}  {_f(row.get('last_loss')):>7}  {row.get('count', '-')!s:>3}  "
            f"{row.get('slice', '-'):<6} {_shorten(where, 40):<40}  {_shorten(image, 60)}"
        )
    return "\n".join(lines)


def describe_sample_loss(sample_loss: dict[str, Any]) -> str:
    """What each recorded loss is, in words (``custom.hard_sample_mining.sample_loss``)."""
    if sample_loss.get("statistic") == "worst_tokens":
        return f"each sample's mean of its {WORST_TOKENS} highest token losses"
    fields = ", ".join(sample_loss.get("fields") or [])
    if sample_loss.get("statistic") == "fields":
        return f"each sample's mean token loss over the values of its answer's {fields} fields"
    if sample_loss.get("statistic") == "mixed":
        return f"half each sample's mean token loss, half its mean over the values of its answer's {fields} fields"
    return "each sample's mean token loss"


def format_comparison(comparison: dict[str, Any]) -> str:
    lines = [f"this run:  {comparison['this']}", f"other run: {comparison['other']}", ""]
    if not comparison["metrics"]:
        return "\n".join(lines + ["neither run logged evaluation losses (no trainer_state.json with eval rows)"])
    lines.append(f"{'metric':<28} {'epoch':>5}  {'this':>8}  {'other':>8}  {'this-other':>10}")
    for key, rows in comparison["metrics"].items():
        for row in rows:
            lines.append(
                f"{key:<28} {row['epoch']:>5}  {_f(row['this']):>8}  {_f(row['other']):>8}  {_f(row['diff'], '+.4f'):>10}"
            )
    lines.append("")
    lines.append("at the last epoch both runs evaluated (negative: this run's loss is lower):")
    for key, rows in comparison["metrics"].items():
        both = [r for r in rows if r["diff"] is not None]
        if both:
            r = both[-1]
            lines.append(f"  {key:<28} epoch {r['epoch']}: {r['this']:.4f} vs {r['other']:.4f} ({_f(r['diff'], '+.4f')})")
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else "..." + text[-(width - 3) :]
