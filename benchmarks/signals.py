"""Which noise-guard rule tells wrong labels from hard samples? Replayed on real training losses.

    python benchmarks/signals.py                  # text 8 seeds, VL 6 seeds, clean and noisy (~20 min on one core)
    python benchmarks/signals.py --tasks text     # the text task alone (~4 min)
    python benchmarks/signals.py --quick          # 1 seed, tiny sizes (~1 min)

The guard decides what the first plan may mark, before mining changes
anything: until then a mining run *is* its uniform control. So each rule can
be judged exactly, and cheaply, on the control alone: this script trains the
uniform runs of ``benchmarks/quality.py``'s tasks (clean, and with 10% of the
target labels wrong), records every per-sample loss the mining engine is given,
and replays hardmine's own engine (``HardSampleMiner``, forced to select at the
end of epoch ``e``) with each candidate guard on the recorded losses. For each
rule and epoch it reports the mined set's share of wrong labels and of the hard
slice, and which share of each group the guard excluded. The text task records
the mean token loss; the VL task records ``sample_loss: fields`` (the loss over
the description words, arm ``descriptions``), where a wrong label and an
unlearnt rare word score high on the same tokens. A plan made later in a real
mining run sees a model already trained on reweighted epochs; the replay at a
late epoch shows what the guard makes of the control's losses there.

It also scores single per-sample signals by how well they rank hard clean
samples above wrong labels (AUC, 0.5 = chance): a sample's loss trend over
the epochs seen so far against its loss level, which is what the
``start_level`` rule rests on.

Writes ``<out>/signals.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the tasks and provenance are the quality benchmark's own)

#: Candidate guards (``noise_guard`` sections), replayed as hardmine runs them.
RULES: dict[str, dict[str, Any]] = {
    "none": {"enabled": False},
    "start_level": {"rule": "start_level"},  # the default guard (window 3)
    "start_level_window2": {"rule": "start_level", "window": 2},  # the default until 00ecd35
    "start_level_window1": {"rule": "start_level", "window": 1},
    "learning": {"rule": "learning"},
}
SELECT_AT = {"text": (2, 3, 4, 5, 6), "vl": (2, 3, 4, 5, 6, 7, 8)}
SEEDS = {"text": list(range(8)), "vl": list(range(6))}
# What each task records: the VL task's descriptions arm, the text task's mean.
SAMPLE_LOSS = {"text": None, "vl": {"statistic": "fields", "fields": ["desc"]}}


# ------------------------------------------------------------------ recording
@dataclasses.dataclass
class Recording:
    """Every observation the mining engine was given in one uniform run."""

    base_idx: np.ndarray
    loss: np.ndarray
    epoch: np.ndarray
    step: np.ndarray
    hard: np.ndarray  # per base_idx
    corrupted: np.ndarray  # per base_idx, bool

    def raw_matrix(self) -> np.ndarray:
        """(epochs, samples) raw loss, one observation per sample and epoch."""
        out = np.full((int(self.epoch.max()) + 1, self.hard.size), np.nan)
        out[self.epoch, self.base_idx] = self.loss
        return out


def record_uniform(
    task: str, size, data: dict, *, condition: str, seed: int, work: Path, sample_loss: dict | None = None,
) -> Recording:
    """Every observation of one uniform run of ``task`` (text or vl), recording ``sample_loss``'s statistic."""
    from hardmine.core import MiningSettings
    from hardmine.core.identity import split_sample_ids

    parts: list[tuple[np.ndarray, ...]] = []

    def observer(ids, losses, *, epoch, steps):
        ids = np.asarray(ids, np.int64)
        parts.append((ids.copy(), np.asarray(losses, np.float32).copy(), np.full(ids.size, epoch), np.asarray(steps).copy()))

    settings = MiningSettings(start_epoch=quality.NEVER, **({"sample_loss": sample_loss} if sample_loss else {}))
    run = quality.run_text if task == "text" else quality.run_vl
    run(
        size, data, condition=condition, seed=seed, arm="uniform", mine_from=None,
        out_dir=work / task / f"seed{seed}" / condition, settings=settings, observer=observer,
    )
    ids, loss, epoch, step = (np.concatenate(c) for c in zip(*parts))
    _, base = split_sample_ids(ids)  # one dataset: the base index is the identity
    hard = np.asarray(data["train_hard"], bool)
    corrupted = np.zeros(hard.size, bool)
    if condition == "noisy":
        corrupted[data["corrupted"]] = True
    return Recording(base, loss, epoch, step, hard, corrupted)


# ------------------------------------------------------------------ replay
def resolved_guards(rules: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each candidate's full guard settings as the engine resolves them: the JSON keeps
    what a rule meant when it ran, after a default (the window, say) has moved."""
    from hardmine.core import MiningSettings

    return {name: dataclasses.asdict(MiningSettings(noise_guard=guard).noise_guard) for name, guard in rules.items()}


def replay_first_plan(rec: Recording, guard: dict, select_at: int, name: str) -> dict[str, Any]:
    """The first plan hardmine's engine makes at the end of ``select_at`` with this guard, on these losses."""
    from hardmine.core import HardSampleMiner, MiningSettings, sample_ids

    settings = MiningSettings(start_epoch=select_at, plateau_delta=quality.FORCE_DELTA, noise_guard=guard)
    miner = HardSampleMiner({name: rec.hard.size}, [name], settings)
    for epoch in range(select_at + 1):
        at = rec.epoch == epoch
        miner.observe(sample_ids(name, rec.base_idx[at]), rec.loss[at], epoch=epoch, steps=rec.step[at])
        report = miner.end_epoch(epoch, population=epoch == select_at)
    mined = report.plan.base_idx[name]
    clean_hard = rec.hard & ~rec.corrupted
    row = {
        "mined": sorted(int(i) for i in mined),
        "num_mined": int(mined.size),
        "eligible": int(report.selection.eligible),
        "hard_share": float(rec.hard[mined].mean()) if mined.size else None,
        "corrupted_share": float(rec.corrupted[mined].mean()) if mined.size and rec.corrupted.any() else None,
        "excluded_by_rule": dict(report.selection.excluded),
    }
    # The engine's own audit table: which samples the guard let through.
    excluded = ~np.asarray(report.population.columns["eligible"], bool)
    row["clean_hard_excluded"] = float(excluded[clean_hard].mean())
    row["corrupted_excluded"] = float(excluded[rec.corrupted].mean()) if rec.corrupted.any() else None
    return row


# ------------------------------------------------------------------ single signals
def auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties counted half."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not positive.size or not negative.size:
        return None
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="stable")
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(1, scores.size + 1)
    for value in np.unique(scores):  # average ranks of ties
        tie = scores == value
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: positive.size].sum() - positive.size * (positive.size + 1) / 2) / (positive.size * negative.size))


def trend(raw: np.ndarray, first: int, last: int) -> np.ndarray:
    """Per sample, the least-squares slope of log raw loss over epochs ``first..last`` (negative: falling)."""
    x = np.arange(first, last + 1, dtype=float)
    x -= x.mean()
    y = np.log(raw[first : last + 1])
    return (x[:, None] * (y - y.mean(0))).sum(0) / (x**2).sum()


def signal_aucs(rec: Recording, select_at: int) -> dict[str, float | None]:
    """How well each signal ranks hard clean samples as more learnable than wrong labels."""
    raw = rec.raw_matrix()
    clean_hard = rec.hard & ~rec.corrupted
    window = raw[select_at - 1 : select_at + 1].mean(0)
    signals = {
        # higher = looks more learnable
        "fall over the last 2 epochs": (raw[select_at - 2] - raw[select_at]) / raw[select_at - 2],
        "fall over the last epoch": (raw[select_at - 1] - raw[select_at]) / raw[select_at - 1],
        "trend since epoch 0": -trend(raw, 0, select_at),
        "loss level (last 2 epochs)": -window,
    }
    return {k: auc(v[clean_hard], v[rec.corrupted]) for k, v in signals.items()}


# ------------------------------------------------------------------ suite
def run(opts) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    sizes = quality.QUICK if opts.quick else quality.FULL
    work = Path(opts.work)
    meta = quality.machine_meta()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    hard_shares: dict[str, list[float]] = {}
    for task in opts.tasks:
        size = sizes[task]
        select_at = [e for e in SELECT_AT[task] if e < size.epochs]
        for seed in opts.seeds[task]:
            if task == "text":
                data = quality.make_text_data(size, seed)
            else:
                data = quality.make_vl_data(size, seed, work / "vl-data" / f"seed{seed}")
            hard_shares.setdefault(task, []).append(float(np.mean(data["train_hard"])))
            for condition in quality.CONDITIONS:
                rec = record_uniform(
                    task, size, data, condition=condition, seed=seed, work=work, sample_loss=SAMPLE_LOSS[task]
                )
                for epoch in select_at:
                    row: dict[str, Any] = {
                        "task": task, "seed": seed, "condition": condition, "select_at": epoch, "rules": {},
                    }
                    for rule, guard in RULES.items():
                        row["rules"][rule] = replay_first_plan(rec, guard, epoch, task)
                    if condition == "noisy":
                        row["signal_auc"] = signal_aucs(rec, epoch)
                    rows.append(row)
                print(f"{task} seed {seed} {condition}: recorded and replayed", flush=True)
    return {
        "benchmark": "hardmine.signals/2",
        "mode": "quick" if opts.quick else "full",
        "meta": meta,
        "setup": {
            "tasks": {
                task: {
                    "size": dataclasses.asdict(sizes[task]), "seeds": list(opts.seeds[task]),
                    "select_at": [e for e in SELECT_AT[task] if e < sizes[task].epochs],
                    "sample_loss": SAMPLE_LOSS[task],
                    "hard_share": float(np.mean(hard_shares[task])),  # the train split's, mean over seeds
                }
                for task in opts.tasks
            },
            "rules": RULES, "guards": resolved_guards(RULES), "noise_share": quality.NOISE_SHARE,
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
        "summary": summarize(rows),
    }


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Means (and worst seed) over seeds, per condition, selection epoch and rule."""
    out: dict[str, Any] = {}
    for row in rows:
        key = f"{row['task']}/{row['condition']}/{row['select_at']}"
        for rule, r in row["rules"].items():
            slot = out.setdefault(key, {}).setdefault(rule, {})
            for k in ("num_mined", "hard_share", "corrupted_share", "clean_hard_excluded", "corrupted_excluded"):
                if r[k] is not None:
                    slot.setdefault(k, []).append(r[k])
        for signal, value in row.get("signal_auc", {}).items():
            if value is not None:
                out.setdefault(f"{row['task']}/auc/{row['select_at']}", {}).setdefault(signal, []).append(value)
    return {
        key: {
            name: (
                {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                if isinstance(v, list) else {m: {"mean": float(np.mean(x)), "min": float(np.min(x)), "max": float(np.max(x))} for m, x in v.items()}
            )
            for name, v in group.items()
        }
        for key, group in out.items()
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, tiny sizes")
    ap.add_argument("--tasks", nargs="+", default=["text", "vl"], choices=["text", "vl"])
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="the same seeds for every task")
    ap.add_argument("--out", default=str(quality.REPO / "benchmarks" / "results"))
    ap.add_argument("--work", default="/tmp/hardmine-signals")
    opts = ap.parse_args(argv)
    opts.seeds = {t: opts.seeds if opts.seeds is not None else ([0] if opts.quick else SEEDS[t]) for t in opts.tasks}
    return opts


def main(argv=None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    opts = parse_args(argv)
    report = run(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "signals.json"
    path.write_text(json.dumps(report, indent=1, default=quality._json_default) + "\n", encoding="utf-8")
    print(f"wrote {path} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
