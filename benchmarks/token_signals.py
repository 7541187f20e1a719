"""Which per-sample loss statistic finds the VL task's wrong labels, and its hard slice? Scored on the trained controls.

    python benchmarks/quality.py --tasks vl --out V --work V/work
    python benchmarks/token_signals.py --suite V --work V/work

hardmine mines on each sample's mean token cross-entropy. In a dense caption a
wrong description is a couple of tokens (colour and shape) among the many of
its coordinate digits and JSON, so the mean dilutes it (the JSON records both
counts). This script takes the final model of each noisy ``uniform``
run of the VL quality suite, scores every training sample (the same noisy
labels it trained on, no augmentation), and asks how well each statistic of the
sample's token losses ranks wrong labels above clean samples, and above clean
samples of the hard slice, which mining wants to find (AUC, 0.5 = chance); and
which share of the top 10% by the statistic are wrong labels (base rate 10%).
The final model of each clean ``uniform`` run does the same on clean labels,
where the question is the one mining asks: how well the statistic ranks the
hard slice above the rest, and the hard slice's share of the top 10%.

Statistics: ``mean`` (what hardmine records), ``max`` (the single worst token),
``top3`` (the mean of the 3 worst tokens); and ``tokens``, no loss at all but
the sample's number of supervised tokens, as a reference: where a task's hard
captions are longer (the ``crowded`` corpus: 2-3 objects against one), a
statistic that grows with a caption's length finds the hard slice for that
reason alone, and one that ranks it no better than ``tokens`` has learnt
nothing from the model. On the ``rare`` corpus both slices have one object.
And ``descriptions``: the mean loss over the tokens of the caption's
description words alone (its JSON ``desc`` values), what hardmine records with
``sample_loss: {statistic: fields, fields: [desc]}``: how much of the dilution
a statistic restricted to the words that matter undoes.

One more, a candidate for a noise guard rather than for ranking hard samples:
``confidence3``, the model's top-1 probability at the sample's 3 worst tokens.
A wrong description contradicts what the model has learnt from every other
scene, so it predicts the true word there with confidence; at a hard scene's
worst tokens it may be unsure, but at a word it has not learnt yet (the rare
colour words of the VL task's hard slice) it may be as sure of a common word
as at a wrong label. High ``confidence3`` with a high loss reads as a wrong label;
its AUC "wrong vs clean hard slice" is the question a guard built on it would
answer, and its AUC "hard vs rest" on clean labels says what it would cost.

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
import quality  # noqa: E402  (the task's corruption, scoring and provenance are the quality benchmark's own)
from signals import auc  # noqa: E402  (one AUC for every signal score)

STATISTICS = ("mean", "max", "top3", "descriptions", "tokens", "confidence3")


def token_statistics(
    token_losses: np.ndarray, top1_probs: np.ndarray | None = None, description_mask: np.ndarray | None = None
) -> dict[str, float]:
    """The statistics of one sample's supervised token losses; ``max`` and ``top3`` are what
    hardmine records with ``sample_loss: {statistic: worst_tokens, tokens: 1 or 3}``. With
    ``top1_probs`` (the model's top-1 probability at each of those tokens), ``confidence3``:
    their mean at the 3 tokens of highest loss (ties: the earlier token, as hardmine breaks them).
    With ``description_mask`` (the tokens of the caption's description words), ``descriptions``:
    the mean loss over those tokens alone (nan where the caption has none)."""
    import torch

    from hardmine.train.loss import worst_token_means

    losses = torch.as_tensor(token_losses, dtype=torch.float32)
    one_sample = torch.zeros(losses.numel(), dtype=torch.long)
    worst = {k: float(worst_token_means(losses, one_sample, 1, k)[0]) for k in (1, 3)}
    out = {"mean": float(token_losses.mean()), "max": worst[1], "top3": worst[3]}
    if top1_probs is not None:
        out["confidence3"] = float(np.asarray(top1_probs)[np.argsort(-np.asarray(token_losses), kind="stable")[:3]].mean())
    if description_mask is not None:
        chosen = np.asarray(token_losses)[np.asarray(description_mask, dtype=bool)]
        out["descriptions"] = float(chosen.mean()) if chosen.size else float("nan")
    return out


def top10_share(values: np.ndarray, flagged: np.ndarray) -> float:
    """The share of flagged samples among the 10% that score highest."""
    top = max(1, flagged.size // 10)
    return float(flagged[np.argsort(-values, kind="stable")[:top]].mean())


def score_run(run_dir: Path, seed: int) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Per training sample of one finished VL run: each statistic of its token losses under the final model,
    and the token counts (supervised tokens per sample, tokens per object description)."""
    import torch

    from hardmine.config import load_config
    from hardmine.data.collate import PaddedCollator
    from hardmine.data.dataset import CaptionDataset
    from hardmine.models import load_model_and_processor
    from hardmine.recipe.checks import check_data
    from hardmine.recipe.run import CHECKS, _pad_token_id

    cfg = load_config(run_dir / "config.yaml", checks=CHECKS)
    model, processor, _ = load_model_and_processor(str(run_dir / "final"))
    pools = check_data(cfg).train
    dataset = CaptionDataset(pools, processor=processor, seed=seed, max_length=cfg.data.max_length)
    collator = PaddedCollator(pad_token_id=_pad_token_id(processor))
    rows = []
    tokenizer = getattr(processor, "tokenizer", processor)
    counts = {
        "supervised_tokens": [],
        "description_tokens": [len(tokenizer(o.desc)["input_ids"]) for r in pools[0].records for o in r.objects],
    }
    model.eval()
    with torch.no_grad():
        for inputs in quality.caption_batches(dataset, collator):
            logits = model(**inputs).logits
            ce, mask = quality.token_losses(logits, inputs["labels"])
            top1 = logits[:, :-1].float().log_softmax(-1).max(-1).values.exp()  # shifted as the losses are
            targets = inputs["labels"][:, 1:]
            for b in range(ce.shape[0]):
                spans = quality.description_spans(targets[b][mask[b]].tolist(), tokenizer)
                words = np.logical_or.reduce(spans) if spans else np.zeros(int(mask[b].sum()), dtype=bool)
                rows.append(token_statistics(ce[b][mask[b]].numpy(), top1[b][mask[b]].numpy(), words))
            counts["supervised_tokens"] += mask.sum(1).tolist()
    stats = {k: np.asarray([r[k] for r in rows]) for k in STATISTICS if k != "tokens"}
    return stats | {"tokens": np.asarray(counts["supervised_tokens"], dtype=np.float64)}, counts


def judge(stats: dict[str, np.ndarray], wrong: np.ndarray, hard: np.ndarray) -> dict[str, dict[str, float]]:
    return {
        k: {
            "auc_wrong_vs_clean": auc(v[wrong], v[~wrong]),
            "auc_wrong_vs_clean_hard": auc(v[wrong], v[~wrong & hard]),
            "top10_wrong_share": top10_share(v, wrong),
        }
        for k, v in stats.items()
    }


def judge_clean(stats: dict[str, np.ndarray], hard: np.ndarray) -> dict[str, dict[str, float]]:
    """On clean labels: how each statistic ranks the hard slice above the rest."""
    return {
        k: {
            "auc_hard_vs_rest": auc(v[hard], v[~hard]),
            "top10_hard_share": top10_share(v, hard),
        }
        for k, v in stats.items()
    }


def summarise(per_seed: dict[str, Any]) -> dict[str, Any]:
    """Per statistic and measure: mean and spread over seeds."""
    first = next(iter(per_seed.values()))
    return {k: {m: quality.stats([per_seed[s][k][m] for s in per_seed]) for m in first[k]} for k in STATISTICS}


def seed_folder(work_dirs: list[str], seed: int) -> Path:
    """A seed's runs: the one ``--work`` folder holding its finished clean and noisy ``uniform`` runs
    (seeds split over parallel suites lie in different folders). None or several is an error: an
    older suite's runs left in another folder must not be scored as this suite's."""
    finished = [
        Path(w, "vl", f"seed{seed}") for w in work_dirs
        if all(Path(w, "vl", f"seed{seed}", c, "uniform", "final").is_dir() for c in quality.CONDITIONS)
    ]
    if len(finished) != 1:
        raise SystemExit(
            f"--work {' '.join(work_dirs)}: {len(finished)} folders hold finished uniform runs of seed {seed} "
            f"({', '.join(map(str, finished)) or 'none'}); expected exactly one"
        )
    return finished[0]


def main(argv=None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, help="the --out folder of a VL quality suite (its quality.json)")
    ap.add_argument("--work", required=True, nargs="+",
                    help="that suite's --work folder (its trained runs); several where its seeds ran in parallel suites")
    ap.add_argument("--out", default=str(quality.REPO / "benchmarks" / "results"))
    opts = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    meta = quality.machine_meta()
    suite = json.loads((Path(opts.suite) / "quality.json").read_text(encoding="utf-8"))
    plan = suite["setup"]["plan"].get("vl")
    if plan is None or set(quality.CONDITIONS) - set(suite["setup"]["conditions"]) or "uniform" not in plan["arms"]:
        raise SystemExit(f"--suite {opts.suite}: its quality.json has no clean and noisy uniform VL runs")
    started = time.perf_counter()
    per_seed: dict[str, Any] = {}
    clean_per_seed: dict[str, Any] = {}
    hard_shares = []
    counts: dict[str, list[int]] = {"supervised_tokens": [], "description_tokens": []}
    for seed in plan["seeds"]:  # the suite's own seeds, not whatever else lies in --work
        seed_dir = seed_folder(opts.work, seed)
        lines = (seed_dir / "data" / "target" / "train.jsonl").read_text(encoding="utf-8").splitlines()
        hard = np.asarray([json.loads(line)["metadata"]["slice"] == "hard" for line in lines])
        wrong = np.zeros(hard.size, bool)
        wrong[quality.corrupted_indices(hard.size, seed)] = True
        stats, seed_counts = score_run(seed_dir / "noisy" / "uniform", seed)
        per_seed[str(seed)] = judge(stats, wrong, hard)
        for key, values in seed_counts.items():
            counts[key] += values
        clean_per_seed[str(seed)] = judge_clean(score_run(seed_dir / "clean" / "uniform", seed)[0], hard)
        hard_shares.append(float(hard.mean()))
        print(seed, json.dumps(per_seed[str(seed)]), json.dumps(clean_per_seed[str(seed)]), flush=True)
    report = {
        "benchmark": "hardmine.token_signals/1", "meta": meta, "wall_s": round(time.perf_counter() - started, 1),
        # The models scored were trained by the suite: its provenance, beside this script's own.
        "suite": {k: suite["meta"].get(k) for k in ("started_commit", "started_at", "timestamp", "dirty")} | {"mode": suite["mode"]},
        "seeds": [int(s) for s in per_seed], "per_seed": per_seed, "summary": summarise(per_seed),
        "clean": {"per_seed": clean_per_seed, "summary": summarise(clean_per_seed), "hard_share": quality.stats(hard_shares)},
        "token_counts": {k: {"min": int(np.min(v)), "median": float(np.median(v)), "max": int(np.max(v))} for k, v in counts.items()},
    }
    out = Path(opts.out) / "token-signals.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
