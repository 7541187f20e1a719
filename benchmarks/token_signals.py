"""Which per-sample loss statistic tells the VL task's wrong labels apart? Scored on the trained controls.

    python benchmarks/token_signals.py --work /tmp/hardmine-quality-vl/work   # after quality.py --tasks vl

hardmine mines on each sample's mean token cross-entropy. In a dense caption a
wrong description is 2 tokens (colour and shape) among the 26 or more of a
one-object caption (coordinate digits and JSON), so the mean dilutes it. This script takes the final model of each noisy ``uniform``
run of the VL quality suite, scores every training sample (the same noisy
labels it trained on, no augmentation), and asks how well each statistic of the
sample's token losses ranks wrong labels above clean samples, and above clean
samples of the hard slice, which mining wants to find (AUC, 0.5 = chance); and
which share of the top 10% by the statistic are wrong labels (base rate 10%).

Statistics: ``mean`` (what hardmine records), ``max`` (the single worst token),
``top3`` (the mean of the 3 worst tokens).

Writes ``<out>/token-signals.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the task's corruption and provenance are the quality benchmark's own)

STATISTICS = ("mean", "max", "top3")


def token_statistics(token_losses: np.ndarray) -> dict[str, float]:
    """The statistics of one sample's supervised token losses."""
    worst = np.sort(token_losses)[::-1]
    return {"mean": float(token_losses.mean()), "max": float(worst[0]), "top3": float(worst[:3].mean())}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half."""
    p, n = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def score_run(run_dir: Path, seed: int) -> dict[str, np.ndarray]:
    """Per training sample of one finished VL run: each statistic of its token losses under the final model."""
    import torch

    from hardmine.config import load_config
    from hardmine.data.collate import PaddedCollator, split_metadata
    from hardmine.data.dataset import CaptionDataset
    from hardmine.models import load_model_and_processor
    from hardmine.recipe.checks import check_data
    from hardmine.recipe.run import CHECKS, _pad_token_id

    cfg = load_config(run_dir / "config.yaml", checks=CHECKS)
    model, processor, _ = load_model_and_processor(str(run_dir / "final"))
    dataset = CaptionDataset(check_data(cfg).train, processor=processor, seed=seed, max_length=cfg.data.max_length)
    collator = PaddedCollator(pad_token_id=_pad_token_id(processor))
    rows = []
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(dataset), 16):
            inputs, _ = split_metadata(collator([dataset[i] for i in range(lo, min(lo + 16, len(dataset)))]))
            logits = model(**inputs).logits[:, :-1].float()
            target = inputs["labels"][:, 1:]
            mask = target != -100
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
            rows += [token_statistics(ce[b][mask[b]].numpy()) for b in range(ce.shape[0])]
    return {k: np.asarray([r[k] for r in rows]) for k in STATISTICS}


def judge(stats: dict[str, np.ndarray], wrong: np.ndarray, hard: np.ndarray) -> dict[str, dict[str, float]]:
    top = max(1, wrong.size // 10)
    return {
        k: {
            "auc_wrong_vs_clean": auc(v[wrong], v[~wrong]),
            "auc_wrong_vs_clean_hard": auc(v[wrong], v[~wrong & hard]),
            "top10_wrong_share": float(wrong[np.argsort(-v, kind="stable")[:top]].mean()),
        }
        for k, v in stats.items()
    }


def main(argv=None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="the --work folder of a VL quality suite (quality.py --tasks vl)")
    ap.add_argument("--out", default=str(quality.REPO / "benchmarks" / "results"))
    opts = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    meta = quality.machine_meta()
    started = time.perf_counter()
    per_seed: dict[str, Any] = {}
    for seed_dir in sorted(Path(opts.work, "vl").glob("seed*"), key=lambda p: int(p.name[4:])):
        run_dir = seed_dir / "noisy" / "uniform"
        if not (run_dir / "final").is_dir():
            continue
        seed = int(seed_dir.name[4:])
        lines = (seed_dir / "data" / "target" / "train.jsonl").read_text(encoding="utf-8").splitlines()
        hard = np.asarray([json.loads(line)["metadata"]["slice"] == "hard" for line in lines])
        wrong = np.zeros(hard.size, bool)
        wrong[quality.corrupted_indices(hard.size, seed)] = True
        per_seed[str(seed)] = judge(score_run(run_dir, seed), wrong, hard)
        print(seed, json.dumps(per_seed[str(seed)]), flush=True)
    if not per_seed:
        raise SystemExit(f"--work {opts.work}: no finished noisy uniform VL run under vl/seed*/noisy/uniform/final")
    summary = {
        k: {m: quality.stats([per_seed[s][k][m] for s in per_seed]) for m in next(iter(per_seed.values()))[k]}
        for k in STATISTICS
    }
    report = {"benchmark": "hardmine.token_signals/1", "meta": meta, "wall_s": round(time.perf_counter() - started, 1),
              "seeds": [int(s) for s in per_seed], "per_seed": per_seed, "summary": summary}
    out = Path(opts.out) / "token-signals.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
