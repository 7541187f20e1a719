"""Does mining help? A paired-seed quality benchmark of hardmine's rules.

    python benchmarks/quality.py                      # the full suite (about 1.7 h on one core)
    python benchmarks/quality.py --quick              # the pipeline on tiny sizes (~20 s)
    python benchmarks/quality.py --resummarize        # recompute the summary of the JSON
    python benchmarks/quality.py --tasks text --out A & python benchmarks/quality.py --tasks vl --out B
    python benchmarks/quality.py --merge A B          # one core each; then one report in --out
    python benchmarks/quality.py --tasks text --seeds 0 1 2
    python benchmarks/quality.py --sweep --out S          # the defaults with one setting changed at a time

Two tasks, each with a harder minority slice, trained with hardmine as a user
would (no training code of its own here):

* ``text``: the built-in tiny text model learns string rules on spaced letters
  through the library API (``HardMiningMixin`` + ``mining_kwargs``): most
  samples reverse a string and are learnt within a few epochs; a minority (the
  hard slice, 10%) sort one, a rarer and harder rule that is learnt slowly.
* ``vl``: the built-in tiny Qwen2-VL learns dense captions of the synthetic
  corpus (``hardmine.data.synth``) through the YAML entry point
  (``run_training``); the corpus marks its hard slice in ``metadata.slice``.

Arms (same data, same number of optimizer steps; an arm and its control share
initialisation and data order until the arm's first plan applies, which the
benchmark checks and reports). Every mining arm but the sweep's start-epoch
and patience arms keeps hardmine's default trigger, so it fires at the same
epoch in every arm of a seed (the runs are identical until then);
``--mine-from N`` forces every arm to mine from epoch N instead:

* ``uniform``: the control, mining enabled with a trigger that never fires
  (hardmine's sampler keeps the stock Trainer order until a plan exists, so
  this is the stock run);
* ``placebo``: mining starts but selects nothing (threshold above any loss):
  the data order changes from the first plan on, no sample gains weight; the
  spread a different order alone gives a paired difference;
* ``defaults``: hardmine's defaults, nothing changed;
* ``original``: the first rule (EMA, top-k 10%, weight 3, no guard, no
  progress correction, aggregated from epoch 0);
* ``guard_off`` / ``correction_off``: the defaults less one part;
* ``worst_tokens``: the defaults recording each sample's mean of its 3
  highest token losses instead of its mean token loss
  (``sample_loss.statistic: worst_tokens``), which a couple of wrong or
  unlearnt words move even in a caption of coordinate digits
  (``benchmarks/token_signals.py``); ``worst_tokens_guard_off``: the same
  without the noise guard;
* ``descriptions`` (VL only): the defaults recording each sample's mean loss
  over the tokens of its descriptions alone (``sample_loss.statistic:
  fields``, ``fields: [desc]``), not its coordinates;
  ``descriptions_start_level``: the same with guard rule ``start_level``;
  ``descriptions_window2`` / ``descriptions_weight2``: the same with a guard
  window of 2 epochs / a hard weight of 2;
* ``mixed`` / ``mixed_weight2`` (VL only): the defaults recording half each
  sample's mean token loss and half its description words' (``sample_loss:
  mixed``), at hard weight 3 / 2;
* ``plateau``: the defaults with ``trigger: plateau`` (the default until the
  suite at commit 10e3ae0, which also ran arms ``trigger_start``, today's
  default, and ``trigger_tail`` / ``trigger_stable``, two signals of the samples'
  own losses retired after it: the trigger table of docs/benchmarks.md);
* (``rest_stalled`` / ``rest_half`` / ``rest_none``, run at commit 192f455 and
  retired with ``noise_guard.rest``: who of a hard streak rests, read against
  today's defaults; results in ``benchmarks/results/quality.json``);
* ``window2`` (both tasks in the full suite; a sweep arm): the defaults with
  a guard window of 2 epochs instead of 3 (the default until the suite at
  commit b8ff5a2, where this arm was ``window3``, the defaults with 3 instead of 2);
* ``oracle``: not a rule a user can run but the reference for what
  reweighting whole samples can reach: mining is told which samples are the
  hard slice (each observation's recorded loss is replaced by 1 for a hard
  sample, 0 for the rest; the mean token loss, which the trigger monitors,
  stays the real one) and marks all of them, with no guard. Where even this
  arm does not lower the hard slice's eval loss, a rule's null result on
  that task says little about the rule;
* ``start_level_guard`` / ``learning_guard``: the defaults with another guard rule
  (``start_level``: the loss must fall below the median of the first epoch;
  ``learning``: that, and below the sample's own early level);
* ``weight2``: the defaults with hard weight 2 instead of 3 (fewer slots taken
  from the rest of the data);
* ``active5`` / ``active3`` / ``unbounded``: the defaults reweighting for at
  most 5 / 3 epochs after the trigger fires (``max_active_epochs``; 5 is the
  default since the 20-epoch runs at commit fef2b49), then every target sample
  once an epoch / reweighting to the end; run with ``--epochs 20``, where
  mining has many epochs left after the model has learnt the task;
* ``no_flag_for_good``: the defaults with ``noise_guard.flag_for_good: false``
  (the start-level test judged afresh every epoch); run with ``--epochs 20``
  on noisy labels (``make bench`` runs it beside ``uniform``, ``placebo`` and
  ``defaults``), where the model has time to memorise wrong labels;
* the sensitivity sweep (``SWEEP``): the defaults with one setting changed
  (start epoch 3 or 4, patience 2, selector fraction 0.05 or 0.2, mean
  aggregation, EMA decay 0.8, guard window 3, streak cap 2 or 16 (the most
  allowed: none within these runs), weight 5,
  top-k 10% of all target samples instead of 10% of the eligible ones,
  aggregation from 2 epochs before the start epoch).

Each arm's settings are recorded in the JSON (``setup.arm_settings``), so a
page built later knows what ``defaults`` meant when the runs were made.

Conditions: ``clean`` labels, and ``noisy``: 10% of the target training labels
replaced by wrong ones (indices kept, evaluation always clean), so the mined
set's share of corrupted samples can be measured against its base rate.

When the default plateau trigger would have fired is read by replaying it on
the control run's monitored values: until mining starts the runs are identical,
so the replay is exact.

Writes ``<out>/quality.json`` (every run, every epoch, and a summary).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NEVER = 10_000  # a start epoch no run reaches: the control's trigger never fires
FORCE_DELTA = 1e6  # "improved by less than 10^6 relative" always holds: fire at start_epoch
# One default changed at a time (``--sweep``; ``make bench`` runs them on the
# text task): each default is kept only if its neighbours do no better. A
# change that depends on the target's size is a function of it.
SWEEP: dict[str, dict | Callable[[int], dict]] = {
    "start_epoch3": {"start_epoch": 3},
    "start_epoch4": {"start_epoch": 4},
    "patience2": {"patience": 2},
    "fraction0.05": {"selector": {"mode": "percentile", "value": 0.05}},
    "fraction0.2": {"selector": {"mode": "percentile", "value": 0.2}},
    "mean_aggregation": {"aggregation": {"mode": "mean"}},
    "ema_decay0.8": {"aggregation": {"ema_decay": 0.8}},
    "window2": {"noise_guard": {"window": 2}},
    "streak2": {"noise_guard": {"max_hard_streak": 2}},
    "no_streak_cap": {"noise_guard": {"max_hard_streak": 16}},
    "weight5": {"hard_weight": 5.0},
    # The same 10%, counted over all target samples instead of the eligible ones.
    "top_k10": lambda train_size: {"selector": {"mode": "top_k", "k": math.ceil(0.1 * train_size), "value": None}},
    "history2": {"aggregation": {"history_epochs": 2}},
}
SWEEP_ARMS = tuple(SWEEP)
ARMS = (
    "uniform", "placebo", "defaults", "plateau", "start_level_guard", "learning_guard",
    "original", "guard_off", "correction_off", "weight2", "active5", "active3", "unbounded", "no_flag_for_good",
    "worst_tokens", "worst_tokens_guard_off", "descriptions", "descriptions_start_level", "descriptions_window2",
    "descriptions_weight2", "mixed", "mixed_weight2", "oracle", *SWEEP_ARMS,
)
# Arms that need a dense caption's fields (the text task's answers have none).
VL_ONLY_ARMS = ("descriptions", "descriptions_start_level", "descriptions_window2", "descriptions_weight2", "mixed", "mixed_weight2")
FIELDS = {"statistic": "fields", "fields": ["desc"]}
MIXED = {"statistic": "mixed", "fields": ["desc"]}
# The token-aware statistic of arms worst_tokens*: the 3 of benchmarks/token_signals.py.
WORST_TOKENS = {"statistic": "worst_tokens"}
CONDITIONS = ("clean", "noisy")
NOISE_SHARE = 0.1
LETTERS = "abcdefgh"


# ------------------------------------------------------------------ sizes
@dataclasses.dataclass(frozen=True)
class TextSize:
    """Most samples reverse a string (learnt within a few epochs); the hard
    slice sorts one (the same letters, a rarer and harder rule, learnt slowly)."""

    train: int = 1200
    # Eval samples per slice: "all" weighs the two by the training share of the hard slice.
    val_hard: int = 500
    val_rest: int = 500
    hard_share: float = 0.1
    easy_len: tuple[int, int] = (3, 6)
    hard_len: tuple[int, int] = (4, 6)
    easy_op: str = "reverse"
    hard_op: str = "sort"
    epochs: int = 8
    batch: int = 16
    lr: float = 3e-3


@dataclasses.dataclass(frozen=True)
class CounterSize:
    """A base-8 counter written in letters (``a`` = 0 ... ``h`` = 7): every sample
    increments a number of ``digits`` digits. A hard sample's number ends in a run of
    ``carry`` top digits, so the increment carries through all of them; the rest end
    below the top digit. At this learning rate the control learns steadily (its
    training loss falls by 30% or more an epoch, the bar the trigger section of
    docs/benchmarks.md checks, for the whole run) and leaves the carry
    chains partly unlearnt."""

    train: int = 1200
    val_hard: int = 500
    val_rest: int = 500
    hard_share: float = 0.1
    digits: tuple[int, int] = (5, 8)
    carry: tuple[int, int] = (3, 5)
    epochs: int = 10
    batch: int = 16
    lr: float = 1e-3


@dataclasses.dataclass(frozen=True)
class VLSize:
    """Dense captions of the synthetic corpus's ``rare`` preset: one large
    object per scene, named in a common colour word (learnt within the run) or,
    in the hard slice (15%), in a rare one that only the hard slice uses (the
    control hardly names those by the end)."""

    train: int = 300
    val: int = 200  # scored after every epoch, at the corpus's hard share
    # Scored at the end of the run: a corpus of its own, these many per slice.
    val_hard: int = 500
    val_rest: int = 500
    preset: str = "rare"  # hardmine.data.synth.TARGET_PRESETS
    epochs: int = 10
    batch: int = 8
    lr: float = 2e-3


TASKS = ("text", "counter", "vl")
FULL = {"text": TextSize(), "counter": CounterSize(), "vl": VLSize()}
QUICK = {
    "text": TextSize(train=96, val_hard=12, val_rest=36, epochs=3, hard_share=0.25),
    "counter": CounterSize(train=96, val_hard=12, val_rest=36, epochs=3, hard_share=0.25),
    "vl": VLSize(train=24, val=12, val_hard=4, val_rest=8, epochs=3),
}
# Seeds and arms of the full suite per task: the control, the order-only placebo,
# the defaults, the oracle, and per task the questions it answers. The text tasks
# compare the plateau trigger with today's (the counter's control learns steadily,
# so a plateau test may never fire there). The VL task compares statistics for
# dense captions.
PAYOFF_SEEDS = [0, 1, 2, 3, 4, 5, 6, 7]
TEXT_ARMS = ["uniform", "placebo", "defaults", "plateau", "oracle"]
FULL_PLAN = {
    "text": (PAYOFF_SEEDS, TEXT_ARMS),
    "counter": (PAYOFF_SEEDS, TEXT_ARMS),
    "vl": (PAYOFF_SEEDS, ["uniform", "placebo", "defaults", "descriptions", "descriptions_weight2", "mixed", "oracle"]),
}


# ------------------------------------------------------------------ arms
def arm_section(arm: str, *, mine_from: int | None, train_size: int) -> dict[str, Any]:
    """One arm's ``custom.hard_sample_mining`` section: what differs from hardmine's defaults.

    ``mine_from``: None, every mining arm keeps hardmine's default trigger
    (the runs of one seed are identical until the first plan, so the trigger
    fires at the same epoch in every arm of a seed); a number forces every
    mining arm to mine first at the end of that epoch.
    """
    from hardmine.core import MiningSettings

    forced = {} if mine_from is None else {"start_epoch": mine_from, "plateau_delta": FORCE_DELTA}
    start = MiningSettings().start_epoch if mine_from is None else mine_from
    sections = {
        "uniform": {"start_epoch": NEVER},
        # A plan that marks nothing: the order leaves the stock order when mining
        # starts, but no sample gains weight. What the order change alone does.
        # From start_epoch whatever the default trigger does, so it has a spread on every task.
        "placebo": {
            **forced, "trigger": "start", "selector": {"mode": "threshold", "value": 1e30}, "noise_guard": {"enabled": False},
        },
        "defaults": forced,
        # The trigger that was the default until the suite at commit 10e3ae0 (the trigger table).
        "plateau": {**forced, "trigger": "plateau"},
        "original": {
            **forced,
            "selector": {"mode": "top_k", "k": math.ceil(0.1 * train_size), "value": None},
            "noise_guard": {"enabled": False},
            # EMA from epoch 0 on, raw losses: the first rule kept everything.
            "aggregation": {"mode": "ema", "progress_correction": False, "history_epochs": start},
            "hard_weight": 3.0,
        },
        "guard_off": {**forced, "noise_guard": {"enabled": False}},
        "correction_off": {**forced, "aggregation": {"progress_correction": False}},
        "start_level_guard": {**forced, "noise_guard": {"rule": "start_level"}},
        "learning_guard": {**forced, "noise_guard": {"rule": "learning"}},
        "no_flag_for_good": {**forced, "noise_guard": {"flag_for_good": False}},
        "weight2": {**forced, "hard_weight": 2.0},
        # Mining reweights for a bounded number of epochs after the trigger, then every
        # target sample is shown once an epoch again (the long runs: after many epochs of
        # reweighting a model that has learnt the task, mining costs more than it gives).
        "active5": {**forced, "max_active_epochs": 5},
        "active3": {**forced, "max_active_epochs": 3},
        "unbounded": {**forced, "max_active_epochs": None},
        "worst_tokens": {**forced, "sample_loss": WORST_TOKENS},
        "worst_tokens_guard_off": {**forced, "sample_loss": WORST_TOKENS, "noise_guard": {"enabled": False}},
        "descriptions": {**forced, "sample_loss": FIELDS},
        "descriptions_start_level": {**forced, "sample_loss": FIELDS, "noise_guard": {"rule": "start_level"}},
        # The description arm at the guard window it had before the default moved to 3, and
        # at a lower weight for what it mines (an answer to its cost to the rest).
        "descriptions_window2": {**forced, "sample_loss": FIELDS, "noise_guard": {"window": 2}},
        "descriptions_weight2": {**forced, "sample_loss": FIELDS, "hard_weight": 2.0},
        # Half the mean token loss, half the description words' (sample_loss: mixed).
        "mixed": {**forced, "sample_loss": MIXED},
        "mixed_weight2": {**forced, "sample_loss": MIXED, "hard_weight": 2.0},
        # The recorded statistic is replaced by the hard flag (oracle_recording); the
        # worst-tokens statistic only makes the real mean loss travel beside it, for the
        # trigger. Raw flags, so every hard sample observed in the epoch scores 1.
        "oracle": {
            **forced, "trigger": "start", "sample_loss": WORST_TOKENS, "selector": {"mode": "threshold", "value": 0.5},
            "noise_guard": {"enabled": False}, "aggregation": {"progress_correction": False},
        },
        # A sweep arm changes one default; a forced trigger overrides its own start epoch.
        **{name: {**(change(train_size) if callable(change) else change), **forced} for name, change in SWEEP.items()},
    }
    if arm not in sections:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    return sections[arm]


def arm_settings(arm: str, *, mine_from: int | None, train_size: int):
    """The MiningSettings of one arm (the library's own class, nothing reimplemented)."""
    from hardmine.core import MiningSettings

    return MiningSettings(**arm_section(arm, mine_from=mine_from, train_size=train_size))


@contextlib.contextmanager
def oracle_recording(is_hard: np.ndarray):
    """While open, mining records 1 for a training sample of the hard slice and 0 for the rest
    instead of its loss (arm ``oracle``); the mean token loss beside it stays the real one."""
    from hardmine.core.identity import split_sample_ids
    from hardmine.train.mining import HardMining

    real_record = HardMining.record

    def record(self, sample_id, loss, position, step, mean_loss=None):
        _, base_idx = split_sample_ids(np.asarray(sample_id, dtype=np.int64))
        real_record(self, sample_id, is_hard[base_idx].astype(np.float32), position, step, mean_loss=mean_loss)

    HardMining.record = record
    try:
        yield
    finally:
        HardMining.record = real_record


@contextlib.contextmanager
def observing(observer: Callable):
    """While open, ``observer(ids, losses, epoch=, steps=)`` sees every observation the
    mining engine is given (rank 0), as the engine sees it, before the engine does."""
    from hardmine.core.miner import HardSampleMiner

    real_observe = HardSampleMiner.observe

    def observe(self, sample_ids, losses, *, epoch, steps):
        observer(sample_ids, losses, epoch=epoch, steps=steps)
        real_observe(self, sample_ids, losses, epoch=epoch, steps=steps)

    HardSampleMiner.observe = observe
    try:
        yield
    finally:
        HardSampleMiner.observe = real_observe


# ------------------------------------------------------------------ evaluation (shared)
def token_losses(logits, labels):
    """Per-token cross-entropy (0 where unsupervised) and the supervised-token mask, shifted as the
    model shifts its labels (logit t predicts label t+1)."""
    import torch

    target = labels[:, 1:]
    mask = target != -100
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), target.clamp(min=0), reduction="none")
    return ce * mask, mask


def caption_batches(dataset, collator, batch_size: int = 16) -> list[dict]:
    """The model inputs of every sample of a caption dataset, in order, batched."""
    from hardmine.data.collate import split_metadata

    return [
        split_metadata(collator([dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))]))[0]
        for lo in range(0, len(dataset), batch_size)
    ]


def per_sample_scores(logits, labels, tokenizer=None) -> dict[str, np.ndarray]:
    """Per sample: mean CE over supervised tokens, correct and supervised token counts.

    Shifted as the model shifts its labels (logit t predicts label t+1). A
    sample whose every supervised token is the argmax under teacher forcing is
    exactly the sample greedy decoding reproduces, so ``correct == tokens`` is
    exact match without generating.
    """
    ce, mask = token_losses(logits, labels)
    target = labels[:, 1:]
    hit = (logits[:, :-1].argmax(-1) == target.clamp(min=0)) & mask
    tokens = mask.sum(1)
    scores = {
        "loss": (ce.sum(1) / tokens.clamp(min=1)).numpy(),
        "correct": hit.sum(1).numpy(),
        "tokens": tokens.numpy(),
    }
    if tokenizer is not None:
        pairs = [description_hits(target[b][mask[b]].tolist(), hit[b][mask[b]].numpy(), tokenizer) for b in range(target.shape[0])]
        scores["desc_correct"] = np.asarray([h for h, _ in pairs])
        scores["desc_total"] = np.asarray([t for _, t in pairs])
    return scores


def description_spans(token_ids: list[int], tokenizer) -> list[np.ndarray]:
    """Per object of one rendered caption, the mask of its tokens that overlap its description's words."""
    from hardmine.data.render import field_value_spans

    pieces = [tokenizer.decode([t]) for t in token_ids]
    ends = np.cumsum([len(p) for p in pieces])
    starts = ends - np.asarray([len(p) for p in pieces])
    return [(starts < hi) & (ends > lo) for lo, hi in field_value_spans("".join(pieces), ["desc"])]


def description_hits(token_ids: list[int], correct: np.ndarray, tokenizer) -> tuple[int, int]:
    """(objects whose description words are all predicted, objects) in one rendered caption.

    Dense-caption loss is dominated by coordinate digits, which a tiny model
    learns last; whether it names each object right ("purple triangle") is
    what the hard slice (rare colour words) is about.
    """
    spans = description_spans(token_ids, tokenizer)
    return sum(bool(correct[span].all()) for span in spans), len(spans)


def score_batches(model, batches, tokenizer=None) -> dict[str, np.ndarray]:
    """Concatenated per-sample scores over ``batches`` (dicts of model inputs)."""
    import torch

    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for batch in batches:
                out = model(**batch)
                parts.append(per_sample_scores(out.logits, batch["labels"], tokenizer))
    finally:
        model.train(was_training)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def slice_metrics(scores: dict[str, np.ndarray], is_hard: np.ndarray, hard_share: float) -> dict[str, dict[str, float]]:
    """Loss (mean of per-sample means), token accuracy and exact match, per slice.

    The eval sets hold many samples of each slice (their scores are what the
    comparisons read), so ``all`` is the mean of the two slices' metrics weighted
    as training weighs them: ``hard_share`` of the training samples are hard.
    """
    out = {}
    for name, mask in (("hard", is_hard), ("rest", ~is_hard)):
        if not mask.any():
            continue
        correct, tokens = scores["correct"][mask], scores["tokens"][mask]
        out[name] = {
            "loss": float(np.mean(scores["loss"][mask])),
            "token_acc": float(correct.sum() / max(tokens.sum(), 1)),
            "exact": float(np.mean(correct == tokens)),
        }
        if "desc_total" in scores:
            out[name]["desc_acc"] = float(scores["desc_correct"][mask].sum() / max(scores["desc_total"][mask].sum(), 1))
    if "hard" in out and "rest" in out:
        out["all"] = {k: hard_share * out["hard"][k] + (1 - hard_share) * out["rest"][k] for k in out["hard"]}
    return out


# ------------------------------------------------------------------ text task
def spaced(letters: str) -> str:
    return " " + " ".join(letters)


def draw_word(size: TextSize | CounterSize, rng: random.Random, hard: bool) -> str:
    """One input word of a text task: letters of ``LETTERS``, a counter's digits."""
    if isinstance(size, CounterSize):
        n = rng.randint(*size.digits)
        if hard:
            run = rng.randint(size.carry[0], min(size.carry[1], n - 1))
            return "".join(rng.choice(LETTERS) for _ in range(n - run - 1)) + rng.choice(LETTERS[:-1]) + LETTERS[-1] * run
        return "".join(rng.choice(LETTERS) for _ in range(n - 1)) + rng.choice(LETTERS[:-1])
    low, high = size.hard_len if hard else size.easy_len
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high)))


def op_of(size: TextSize | CounterSize, hard: bool) -> str:
    if isinstance(size, CounterSize):
        return "inc"
    return size.hard_op if hard else size.easy_op


def make_text_data(size: TextSize | CounterSize, seed: int) -> dict[str, Any]:
    """A text task's samples: train at the task's hard share, eval ``val_hard`` + ``val_rest``;
    drawn from separate streams, with the noisy condition's wrong answers."""
    def draw(flags: list[bool], stream: int):
        rng = random.Random(seed * 1000 + stream)
        rng.shuffle(flags)
        return [draw_word(size, rng, h) for h in flags], np.asarray(flags)

    n_hard = round(size.hard_share * size.train)
    train_words, train_hard = draw([i < n_hard for i in range(size.train)], 1)
    val_words, val_hard = draw([True] * size.val_hard + [False] * size.val_rest, 2)
    train_ops = [op_of(size, h) for h in train_hard]
    corrupted = corrupted_indices(size.train, seed)
    rng = random.Random(seed * 1000 + 3)
    noisy_answers = {}
    for i in corrupted.tolist():
        right = OPS[train_ops[i]](train_words[i])
        wrong = right
        while wrong == right:  # a wrong label, never the right one by chance
            wrong = "".join(rng.choice(LETTERS) for _ in right)
        noisy_answers[i] = wrong
    return {
        "train_words": train_words, "train_hard": train_hard, "train_ops": train_ops,
        "val_words": val_words, "val_hard": val_hard, "val_ops": [op_of(size, h) for h in val_hard],
        "corrupted": corrupted, "noisy_answers": noisy_answers,
    }


def increment(word: str) -> str:
    """``word`` + 1 as a base-8 number in the digits of ``LETTERS``."""
    digits = [LETTERS.index(c) for c in word]
    i = len(digits) - 1
    while i >= 0 and digits[i] == len(LETTERS) - 1:
        digits[i] = 0
        i -= 1
    digits = [1, *digits] if i < 0 else [*digits[:i], digits[i] + 1, *digits[i + 1 :]]
    return "".join(LETTERS[d] for d in digits)


OPS: dict[str, Callable[[str], str]] = {
    "reverse": lambda w: w[::-1], "sort": lambda w: "".join(sorted(w)), "inc": increment,
}


def corrupted_indices(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 8, 1])
    return np.sort(rng.choice(n, size=round(NOISE_SHARE * n), replace=False))


def encode_example(tokenizer, op: str, word: str, answer: str) -> dict[str, list[int]]:
    prompt = tokenizer(f"{op}{spaced(word)} =", add_special_tokens=False)["input_ids"]
    target = tokenizer(spaced(answer), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


def pad_batch(features, pad_id: int):
    import torch

    width = max(len(f["input_ids"]) for f in features)
    return {
        "input_ids": torch.tensor([f["input_ids"] + [pad_id] * (width - len(f["input_ids"])) for f in features]),
        "labels": torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in features]),
        "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]),
    }


def run_text(
    size: TextSize, data: dict, *, condition: str, seed: int, arm: str, mine_from: int | None, out_dir: Path,
    settings=None, observer: Callable | None = None,
) -> dict:
    """One text run. ``settings`` replaces the arm's MiningSettings; ``observer(ids, losses, epoch=, steps=)``
    sees every observation the mining engine is given (rank 0), as the engine sees it."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hardmine.models import load_model_and_processor
    from hardmine.train.library import HardMiningMixin, mining_kwargs

    class MinedTrainer(HardMiningMixin, Trainer):
        pass

    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    noisy = condition == "noisy"
    train = [
        encode_example(tokenizer, op, w, data["noisy_answers"][i] if noisy and i in data["noisy_answers"] else OPS[op](w))
        for i, (op, w) in enumerate(zip(data["train_ops"], data["train_words"]))
    ]
    val = [encode_example(tokenizer, op, w, OPS[op](w)) for op, w in zip(data["val_ops"], data["val_words"])]
    val_batches = [pad_batch(val[i : i + 64], pad_id) for i in range(0, len(val), 64)]
    val_hard = data["val_hard"]
    hard_share = float(np.mean(data["train_hard"]))

    class EpochEval(TrainerCallback):
        def __init__(self):
            self.rows = []

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            epoch = int(round(state.epoch or 0)) - 1
            self.rows.append({"epoch": epoch, **slice_metrics(score_batches(model, val_batches), val_hard, hard_share)})

    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=size.epochs, per_device_train_batch_size=size.batch,
        learning_rate=size.lr, logging_steps=10_000, report_to=[], disable_tqdm=True, seed=seed,
        save_strategy="no", dataloader_pin_memory=False, use_cpu=True,
    )
    if settings is None:
        settings = arm_settings(arm, mine_from=mine_from, train_size=len(train))
    evaluation = EpochEval()
    trainer = MinedTrainer(
        model=model, args=args, callbacks=[evaluation],
        **mining_kwargs(train, lambda f: pad_batch(f, pad_id), args=args, settings=settings),
    )
    with observing(observer) if observer is not None else contextlib.nullcontext():
        trainer.train()
    return {
        "epochs": evaluation.rows,
        "mining": [dict(r) for r in trainer.mining.history],
        "steps": int(trainer.state.global_step),
    }


# ------------------------------------------------------------------ VL task
# Colour words in two groups: a wrong label swaps a colour for another of its
# own group, so the ``rare`` corpus's rare words stay the hard slice's alone
# (a wrong label is an error in the sample's vocabulary, not a new word).
COLOUR_GROUPS = (("red", "green", "blue", "yellow"), ("purple", "orange", "cyan", "pink"))
SHAPE_WORDS = ("square", "triangle", "pentagon", "line")


def make_vl_data(size: VLSize, seed: int, root: Path) -> dict[str, Any]:
    """The synthetic corpus (target only, ``size.preset``) and a copy of its train split with 10% wrong labels."""
    from hardmine.data.synth import make_dataset

    make_dataset(root, seed=seed, target_size=size.train, source_sizes={}, val_size=size.val, target_preset=size.preset)
    target = root / "target"
    train_lines = (target / "train.jsonl").read_text(encoding="utf-8").splitlines()
    val_lines = (target / "val.jsonl").read_text(encoding="utf-8").splitlines()
    corrupted = corrupted_indices(len(train_lines), seed)
    rng = np.random.default_rng([seed, 8, 2])
    noisy_lines = list(train_lines)
    for i in corrupted.tolist():
        record = json.loads(train_lines[i])
        for obj in record["objects"]:
            obj["desc"] = wrong_description(obj["desc"], rng)
        noisy_lines[i] = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    (target / "train_noisy.jsonl").write_text("".join(l + "\n" for l in noisy_lines), encoding="utf-8")
    eval_jsonl, eval_hard = make_vl_eval(size, seed, root / "eval")
    return {
        "train_jsonl": {"clean": target / "train.jsonl", "noisy": target / "train_noisy.jsonl"},
        "val_jsonl": target / "val.jsonl",
        "eval_jsonl": eval_jsonl,
        "eval_hard": eval_hard,
        "train_hard": np.asarray([json.loads(l)["metadata"]["slice"] == "hard" for l in train_lines]),
        "val_hard": np.asarray([json.loads(l)["metadata"]["slice"] == "hard" for l in val_lines]),
        "corrupted": corrupted,
    }


#: The final eval corpus of seed s is drawn with seed EVAL_SEED + s: scenes of their own.
EVAL_SEED = 1_000_000


def make_vl_eval(size: VLSize, seed: int, root: Path) -> tuple[Path, np.ndarray]:
    """A corpus of ``val_hard`` hard and ``val_rest`` other scenes, scored at the end of each run."""
    from hardmine.data.synth import HARD_SHARE, make_dataset

    drawn = math.ceil(max(size.val_hard / HARD_SHARE, size.val_rest / (1 - HARD_SHARE))) + 1
    make_dataset(root, seed=EVAL_SEED + seed, target_size=1, source_sizes={}, val_size=drawn, target_preset=size.preset)
    lines = (root / "target" / "val.jsonl").read_text(encoding="utf-8").splitlines()
    hard = [l for l in lines if json.loads(l)["metadata"]["slice"] == "hard"][: size.val_hard]
    rest = [l for l in lines if json.loads(l)["metadata"]["slice"] != "hard"][: size.val_rest]
    path = root / "target" / "eval.jsonl"  # beside val.jsonl: the images' relative paths hold
    path.write_text("".join(l + "\n" for l in hard + rest), encoding="utf-8")
    return path, np.asarray([True] * len(hard) + [False] * len(rest))


def eval_dataset(path: Path, like):
    """A caption dataset of the records in ``path``, encoded as the dataset ``like`` encodes."""
    from hardmine.data.dataset import CaptionDataset, RecordPool
    from hardmine.data.records import read_jsonl

    records, _ = read_jsonl(path)
    pool = RecordPool(like.pools[0].name, tuple(records), augment=False)
    return CaptionDataset([pool], like.processor, seed=like.seed, augmentation=like.augmentation, max_length=like.max_length)


def wrong_description(desc: str, rng: np.random.Generator) -> str:
    """Another colour (of the true one's group) and another shape than the true ones: a label error, not a paraphrase."""
    colour, shape = desc.split(" ", 1)
    group = next(g for g in COLOUR_GROUPS if colour in g)
    colours = [c for c in group if c != colour]
    shapes = [s for s in SHAPE_WORDS if s != shape]
    return f"{colours[int(rng.integers(len(colours)))]} {shapes[int(rng.integers(len(shapes)))]}"


def run_vl(
    size: VLSize, data: dict, *, condition: str, seed: int, arm: str, mine_from: int | None, out_dir: Path,
    settings=None, observer: Callable | None = None,
) -> dict:
    """One VL run through the YAML entry point; ``settings`` and ``observer`` as for :func:`run_text`."""
    import yaml

    from hardmine.config import load_config
    from hardmine.recipe.run import CHECKS, run_training

    if settings is None:
        settings = arm_settings(arm, mine_from=mine_from, train_size=len(data["train_hard"]))
    tree = {
        "model": {"model": "builtin:tiny-qwen2-vl"},
        "training": {
            "output_dir": str(out_dir), "num_train_epochs": size.epochs, "per_device_train_batch_size": size.batch,
            "per_device_eval_batch_size": 16, "learning_rate": size.lr, "warmup_steps": 10,
            "lr_scheduler_type": "cosine", "weight_decay": 0.0, "logging_steps": 10_000, "save_strategy": "no",
            "eval_strategy": "no", "report_to": [], "seed": seed, "disable_tqdm": True, "use_cpu": True,
        },
        "data": {"num_workers": 0, "max_length": 512, "pin_memory": False},
        "custom": {
            "train_jsonl": str(data["train_jsonl"][condition]),
            "val_jsonl": str(data["val_jsonl"]),
            "augmentation": {"enabled": False},
            "hard_sample_mining": {**dataclasses.asdict(settings), "start_epoch": min(settings.start_epoch, size.epochs - 2)},
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / "config.yaml"
    config.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    # The YAML holds the arm's section with the start epoch clamped into the run
    # (the entry point rightly rejects a trigger that can never fire, the
    # control's); the engine then gets the arm's settings exactly.
    cfg = load_config(config, checks=CHECKS)
    cfg = cfg.model_copy(update={"custom": cfg.custom.model_copy(update={"hard_sample_mining": settings})})
    with observing(observer) if observer is not None else contextlib.nullcontext():
        result = run_training(cfg, slice_eval=True)
    trainer = result.trainer
    val_ds = next(iter(trainer.eval_dataset.values()))
    batches = caption_batches(eval_dataset(data["eval_jsonl"], val_ds), trainer.data_collator)
    tokenizer = getattr(val_ds.processor, "tokenizer", val_ds.processor)
    final = slice_metrics(
        score_batches(trainer.model, batches, tokenizer), data["eval_hard"], float(np.mean(data["train_hard"]))
    )
    epochs = [
        {"epoch": r["epoch"], "hard": {"loss": r["slice/hard_loss"]}, "rest": {"loss": r["slice/easy_loss"]}}
        for r in result.slice_history
    ]
    share = float(np.mean(data["val_hard"]))
    for row in epochs:
        row["all"] = {"loss": share * row["hard"]["loss"] + (1 - share) * row["rest"]["loss"]}
    epochs[-1].update(final)  # the last epoch's full scores (token accuracy too)
    return {"epochs": epochs, "mining": [dict(r) for r in result.mining_history], "steps": int(trainer.state.global_step)}


# ------------------------------------------------------------------ mined sets and trigger
def read_mined_sets(run_dir: Path) -> dict[int, np.ndarray]:
    """Epoch -> mined base_idx, from the run's dumps (``hard_samples_epoch_{n}.json``)."""
    out = {}
    for path in sorted(run_dir.glob("hard_samples_epoch_*.json")):
        dump = json.loads(path.read_text(encoding="utf-8"))
        out[int(dump["epoch"])] = np.asarray([s["base_idx"] for s in dump["samples"]], dtype=np.int64)
    return out


def mined_shares(mined: dict[int, np.ndarray], is_hard: np.ndarray, corrupted: np.ndarray | None) -> list[dict]:
    rows = []
    is_corrupted = np.zeros(is_hard.size, bool)
    if corrupted is not None:
        is_corrupted[corrupted] = True
    for epoch, base in sorted(mined.items()):
        rows.append(
            {
                "epoch": epoch,
                "num_mined": int(base.size),
                "hard_share": float(is_hard[base].mean()) if base.size else None,
                "corrupted_share": (float(is_corrupted[base].mean()) if base.size else None) if corrupted is not None else None,
            }
        )
    return rows


def replay_trigger(monitored: dict[int, float], **trigger_kwargs) -> int | None:
    """The epoch at whose end a trigger with these settings (mode ``plateau`` unless given) fires (None: never)."""
    from hardmine.core import TriggerSettings
    from hardmine.core.trigger import Trigger

    trigger = Trigger(TriggerSettings(**{"mode": "plateau", **trigger_kwargs}))
    for epoch in sorted(monitored):
        if trigger.update(epoch, monitored[epoch]):
            return trigger.activated_at
    return None


# ------------------------------------------------------------------ the suite
def run_suite(opts) -> dict:
    import torch

    torch.set_num_threads(1)
    # Import every part of hardmine the runs use now, so that one suite runs one
    # version of the code from start to end.
    import hardmine.config  # noqa: F401
    import hardmine.data.synth  # noqa: F401
    import hardmine.recipe.run  # noqa: F401
    import hardmine.train.library  # noqa: F401
    sizes = QUICK if opts.quick else FULL
    if opts.epochs is not None:
        sizes = {t: dataclasses.replace(size, epochs=opts.epochs) for t, size in sizes.items()}
    out = Path(opts.out)
    work = Path(opts.work)
    meta = machine_meta()  # the commit the runs are made with, not the one at the end
    runs = []
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "quality.partial.jsonl"
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    for task in opts.tasks:
        size = sizes[task]
        seeds, arms = opts.plan[task]
        for seed in seeds:
            data_dir = work / task / f"seed{seed}"
            data = make_vl_data(size, seed, data_dir / "data") if task == "vl" else make_text_data(size, seed)
            for condition in opts.conditions:
                for arm in arms:
                    run_dir = data_dir / condition / arm
                    shutil.rmtree(run_dir, ignore_errors=True)  # dumps of an earlier run would be read as this one's
                    t0 = time.perf_counter()
                    runner = run_vl if task == "vl" else run_text
                    with oracle_recording(data["train_hard"]) if arm == "oracle" else contextlib.nullcontext():
                        result = runner(
                            size, data, condition=condition, seed=seed, arm=arm, mine_from=opts.mine_from, out_dir=run_dir
                        )
                    corrupted = data["corrupted"] if condition == "noisy" else None
                    result.update(
                        task=task, condition=condition, seed=seed, arm=arm, wall_s=round(time.perf_counter() - t0, 2),
                        mined=mined_shares(read_mined_sets(run_dir), data["train_hard"], corrupted),
                        base_rates={
                            "hard": float(np.mean(data["train_hard"])),
                            "corrupted": NOISE_SHARE if corrupted is not None else 0.0,
                        },
                    )
                    runs.append(result)
                    print(progress_line(result), flush=True)
                    with open(partial, "a", encoding="utf-8") as f:  # a crash late in the suite keeps the runs
                        f.write(json.dumps(result, default=_json_default) + "\n")
    report = {
        "benchmark": "hardmine.quality/1",
        "mode": "quick" if opts.quick else "full",
        "meta": meta,
        "setup": {
            "tasks": {t: dataclasses.asdict(sizes[t]) for t in opts.tasks},
            "plan": {t: {"seeds": opts.plan[t][0], "arms": opts.plan[t][1]} for t in opts.tasks},
            "arms": [a for a in ARMS if any(a in opts.plan[t][1] for t in opts.tasks)],
            "conditions": list(opts.conditions),
            "seeds": sorted({s for t in opts.tasks for s in opts.plan[t][0]}),
            "mine_from": opts.mine_from, "noise_share": NOISE_SHARE,
            "arm_settings": recorded_arm_settings(opts.plan, sizes, opts.mine_from),
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    report["summary"] = summarize(runs, opts.mine_from)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n", encoding="utf-8")
    partial.unlink(missing_ok=True)
    return report


def recorded_arm_settings(plan: dict, sizes: dict, mine_from: int | None) -> dict:
    """Each arm's MiningSettings as run, per task: what "defaults" meant at this commit."""
    return {
        task: {arm: dataclasses.asdict(arm_settings(arm, mine_from=mine_from, train_size=sizes[task].train)) for arm in arms}
        for task, (_, arms) in plan.items()
    }


def progress_line(r: dict) -> str:
    last = r["epochs"][-1]
    corrupted = [m["corrupted_share"] for m in r["mined"] if m["corrupted_share"] is not None]
    return (
        f"{r['task']:>4} {r['condition']:>5} seed {r['seed']} {r['arm']:>14}: hard loss {last['hard']['loss']:.4f} "
        f"rest {last['rest']['loss']:.4f} all {last['all']['loss']:.4f}"
        + (f" acc hard {last['hard']['token_acc']:.3f}" if "token_acc" in last["hard"] else "")
        + (f" mined corrupted {np.mean(corrupted):.2f}" if corrupted else "")
        + f" ({r['wall_s']:.0f} s)"
    )


# ------------------------------------------------------------------ summary
def _group(runs, *keys):
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def final_metric(run: dict, slice_name: str, metric: str) -> float | None:
    value = run["epochs"][-1].get(slice_name, {}).get(metric)
    return None if value is None else float(value)


def fired_epoch(run: dict) -> int | None:
    for row in run["mining"]:
        if row.get("hsm/active"):
            return int(row["epoch"])
    return None


def identical_until_plan(run: dict, control: dict) -> bool | None:
    """Whether ``run`` equals its control (eval scores and monitored train loss) until its first plan applies."""
    fired = fired_epoch(run)
    if fired is None:
        return None
    evals = {r["epoch"]: r for r in run["epochs"]}
    ctrl_evals = {r["epoch"]: r for r in control["epochs"]}
    mon = {r["epoch"]: r.get("hsm/monitored") for r in run["mining"]}
    ctrl_mon = {r["epoch"]: r.get("hsm/monitored") for r in control["mining"]}
    for epoch in range(fired + 1):
        if evals.get(epoch, {}).get("hard") != ctrl_evals.get(epoch, {}).get("hard"):
            return False
        if mon.get(epoch) != ctrl_mon.get(epoch):
            return False
    return True


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "min": float(a.min()), "max": float(a.max())}


METRICS = [(s, m) for m in ("loss", "token_acc", "exact", "desc_acc") for s in ("hard", "rest", "all")]
LOWER_IS_BETTER = {"loss"}


#: Arms read head to head against another arm (``paired_reference``): one setting changed from it.
#: The first of the candidates that ran: in the suite at 10e3ae0 today's defaults were arm
#: ``trigger_start`` (``defaults`` then ran the plateau trigger).
HEAD_TO_HEAD = {
    "rest_stalled": ("trigger_start", "defaults"), "rest_half": ("trigger_start", "defaults"),
    "rest_none": ("trigger_start", "defaults"), "mixed": ("defaults",), "mixed_weight2": ("defaults",),
    "descriptions": ("defaults",), "descriptions_weight2": ("defaults",),
}


def summarize(runs: list[dict], mine_from: int | None) -> dict:
    """Per task, condition and arm: final metrics over seeds and paired differences to uniform
    (and to ``placebo`` and ``defaults``, where those ran: the sweep arms are read against ``defaults``)."""
    summary: dict[str, Any] = {}
    for (task, condition), group in sorted(_group(runs, "task", "condition").items()):
        controls = {r["seed"]: r for r in group if r["arm"] == "uniform"}
        placebos = {r["seed"]: r for r in group if r["arm"] == "placebo"}
        defaults = {r["seed"]: r for r in group if r["arm"] == "defaults"}
        entry: dict[str, Any] = {"arms": {}, "trigger": trigger_summary(controls, mine_from)}
        ran = {r["arm"] for r in group}
        for (arm,), arm_runs in sorted(_group(group, "arm").items()):
            arm_runs = sorted(arm_runs, key=lambda r: r["seed"])
            head = next((h for h in HEAD_TO_HEAD.get(arm, ()) if h in ran), None)
            references = {r["seed"]: r for r in group if r["arm"] == head} if head else {}
            a: dict[str, Any] = {"seeds": [r["seed"] for r in arm_runs], "metrics": {}, "paired": {}, "paired_placebo": {},
                                 "paired_defaults": {}, "paired_reference": {}, "reference": head}
            for slice_name, metric in METRICS:
                values = [final_metric(r, slice_name, metric) for r in arm_runs]
                if any(v is None for v in values):
                    continue
                key = f"{slice_name}_{metric}"
                a["metrics"][key] = stats(values)
                for field, refs, own in (
                    ("paired", controls, "uniform"), ("paired_placebo", placebos, "placebo"), ("paired_defaults", defaults, "defaults"),
                    ("paired_reference", references, head),
                ):
                    if arm not in ("uniform", own) and refs and all(r["seed"] in refs for r in arm_runs):
                        base = [final_metric(refs[r["seed"]], slice_name, metric) for r in arm_runs]
                        a[field][key] = paired_stats(values, base, lower_is_better=metric in LOWER_IS_BETTER)
            a["fired_epoch"] = [fired_epoch(r) for r in arm_runs]
            if arm != "uniform":
                a["identical_until_first_plan"] = [
                    identical_until_plan(r, controls[r["seed"]]) if r["seed"] in controls else None for r in arm_runs
                ]
            a["mined"] = mined_summary(arm_runs)
            a["guard_exclusions"] = guard_summary(arm_runs)
            entry["arms"][arm] = a
        add_oracle_shares(entry["arms"])
        entry["control_train_fall"] = {str(seed): train_falls(run) for seed, run in sorted(controls.items())}
        summary[f"{task}/{condition}"] = entry
    return summary


def add_oracle_shares(arms: dict[str, dict]) -> None:
    """Each arm's mean paired gain over the control as a share of the oracle's, per metric
    (``share_of_oracle``; absent where the oracle did not run or gained nothing)."""
    oracle = arms.get("oracle", {}).get("paired", {})
    for a in arms.values():
        a["share_of_oracle"] = {
            key: a["paired"][key]["mean_diff"] / ref["mean_diff"]
            for key, ref in oracle.items()
            if key in a["paired"] and ref["mean_diff"] != 0
        }


def train_falls(run: dict) -> list[float]:
    """The relative fall of the monitored training loss from each epoch to the next."""
    values = [float(r["hsm/monitored"]) for r in sorted(run["mining"], key=lambda r: r["epoch"]) if r.get("hsm/monitored") is not None]
    return [(a - b) / a for a, b in zip(values, values[1:]) if a]


def paired_stats(values: list[float], base: list[float], *, lower_is_better: bool) -> dict[str, Any]:
    """Per-seed differences of an arm to its reference run of the same seed."""
    diffs = [v - b for v, b in zip(values, base)]
    rel = [(v - b) / b if b else None for v, b in zip(values, base)]
    better = [(d < 0) if lower_is_better else (d > 0) for d in diffs]
    known = [x for x in rel if x is not None]
    return {
        "diff": diffs, "relative": rel, "mean_diff": float(np.mean(diffs)),
        "mean_relative": float(np.mean(known)) if known else None,
        "better_in": int(sum(better)), "of": len(better),
    }


def applied_plans(run: dict) -> list[dict]:
    """The mined sets that trained: a plan made at the end of the last epoch applies to nothing."""
    last = max(e["epoch"] for e in run["epochs"])
    return [m for m in run["mined"] if m["epoch"] < last]


def mined_summary(arm_runs: list[dict]) -> dict:
    """Mean over seeds, per epoch and overall, of the hard and corrupted shares of the mined sets that trained."""
    by_epoch: dict[int, dict[str, list]] = {}
    for r in arm_runs:
        for m in applied_plans(r):
            row = by_epoch.setdefault(m["epoch"], {"num_mined": [], "hard_share": [], "corrupted_share": []})
            for k in row:
                if m[k] is not None:
                    row[k].append(m[k])
    per_epoch = {
        str(e): {k: (float(np.mean(v)) if v else None) for k, v in row.items()} for e, row in sorted(by_epoch.items())
    }
    overall = {}
    for k in ("hard_share", "corrupted_share"):
        values = [m[k] for r in arm_runs for m in applied_plans(r) if m[k] is not None]
        overall[k] = float(np.mean(values)) if values else None
    base = arm_runs[0]["base_rates"]
    overall["hard_ratio_to_base"] = overall["hard_share"] / base["hard"] if overall["hard_share"] is not None and base["hard"] else None
    overall["corrupted_ratio_to_base"] = (
        overall["corrupted_share"] / base["corrupted"] if overall["corrupted_share"] is not None and base["corrupted"] else None
    )
    return {"per_epoch": per_epoch, "overall": overall, "base_rates": base}


def guard_summary(arm_runs: list[dict]) -> dict:
    """Per epoch, the guard's exclusions by rule, mean over seeds."""
    by_epoch: dict[int, dict[str, list]] = {}
    for r in arm_runs:
        for row in r["mining"]:
            if not row.get("hsm/active"):
                continue
            slot = by_epoch.setdefault(int(row["epoch"]), {})
            for k, v in row.items():
                if k.startswith("hsm/excluded_") or k in ("hsm/eligible", "hsm/num_hard"):
                    slot.setdefault(k.removeprefix("hsm/"), []).append(float(v))
    return {str(e): {k: float(np.mean(v)) for k, v in slot.items()} for e, slot in sorted(by_epoch.items())}


def trigger_summary(controls: dict[int, dict], mine_from: int | None) -> dict:
    """When plateau triggers would fire on the control runs (exact: runs match until mining starts)."""
    from hardmine.core import MiningSettings

    default = MiningSettings().trigger_settings()
    out: dict[str, Any] = {"forced_epoch": mine_from, "default_settings": dataclasses.asdict(default), "default": {}, "candidates": {}}
    for seed, run in sorted(controls.items()):
        monitored = {int(r["epoch"]): float(r["hsm/monitored"]) for r in run["mining"] if r.get("hsm/monitored") is not None}
        out.setdefault("monitored", {})[str(seed)] = monitored
        out["default"][str(seed)] = replay_trigger(monitored, start_epoch=default.start_epoch, mode=default.mode,
                                                   plateau_delta=default.plateau_delta, patience=default.patience)
        out.setdefault("plateau_default", {})[str(seed)] = replay_trigger(
            monitored, start_epoch=default.start_epoch, plateau_delta=default.plateau_delta, patience=default.patience
        )
        for delta in (0.05, 0.1, 0.2, 0.3, 0.5):  # 0.05: the default before these measurements
            out["candidates"].setdefault(f"plateau_delta={delta}", {})[str(seed)] = replay_trigger(
                monitored, start_epoch=default.start_epoch, plateau_delta=delta, patience=default.patience
            )
    return out


# ------------------------------------------------------------------ provenance
def machine_meta() -> dict[str, Any]:
    import torch
    import transformers

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "started_commit": _git("rev-parse", "HEAD"),
        "started_at": now,
        "dirty": code_is_dirty(),
        "timestamp": now,
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }


#: Paths the benchmarks write: a suite started after another wrote its results
#: (``make bench``) runs committed code all the same.
RESULT_PATHS = (":!benchmarks/results", ":!docs")


def code_is_dirty() -> bool:
    """Whether tracked files other than results and docs differ from HEAD."""
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *RESULT_PATHS))


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


#: What the suites' machines must share to be merged into one report.
MERGE_SAME_MACHINE = ("python", "torch", "transformers", "cpus")


def merge_reports(reports: list[dict]) -> dict:
    """One report of suites run in parallel at one commit, in one mode: each ran other tasks, or
    other seeds of a task (with the same sizes and arms)."""
    first = reports[0]
    for r in reports[1:]:
        for key in ("benchmark", "mode"):
            if r[key] != first[key]:
                raise ValueError(f"cannot merge: {key} {r[key]!r} differs from {first[key]!r}")
        if r["meta"]["started_commit"] != first["meta"]["started_commit"] or r["meta"]["dirty"] or first["meta"]["dirty"]:
            raise ValueError("cannot merge: the suites ran different or uncommitted code")
        if r["setup"]["mine_from"] != first["setup"]["mine_from"]:
            raise ValueError("cannot merge: the suites forced different start epochs")
        for key in MERGE_SAME_MACHINE:
            if r["meta"].get(key) != first["meta"].get(key):
                raise ValueError(f"cannot merge: {key} {r['meta'].get(key)!r} differs from {first['meta'].get(key)!r}")
    setup = dict(first["setup"])
    for key in ("tasks", "plan", "arm_settings"):
        setup[key] = {}
    conditions_of: dict[str, list[str]] = {}
    for r in reports:
        for task, plan in r["setup"]["plan"].items():
            if task not in setup["plan"]:
                for key in ("tasks", "plan", "arm_settings"):
                    setup[key][task] = r["setup"][key][task]
                conditions_of[task] = r["setup"]["conditions"]
                continue
            for key in ("tasks", "arm_settings"):
                if r["setup"][key][task] != setup[key][task]:
                    raise ValueError(f"cannot merge: task {task} ran with different {key} in two suites")
            known = setup["plan"][task]
            if sorted(r["setup"]["conditions"]) != sorted(conditions_of[task]):
                raise ValueError(f"cannot merge: task {task} ran conditions {r['setup']['conditions']} in one suite "
                                 f"and {conditions_of[task]} in another")
            if plan["arms"] != known["arms"]:
                raise ValueError(f"cannot merge: task {task} ran arms {plan['arms']} in one suite and {known['arms']} in another")
            if set(plan["seeds"]) & set(known["seeds"]):
                raise ValueError(f"cannot merge: task {task} ran seeds {sorted(set(plan['seeds']) & set(known['seeds']))} in two suites")
            setup["plan"][task] = {**known, "seeds": sorted(known["seeds"] + plan["seeds"])}
    setup["arms"] = [a for a in ARMS if any(a in p["arms"] for p in setup["plan"].values())]
    setup["seeds"] = sorted({s for p in setup["plan"].values() for s in p["seeds"]})
    setup["conditions"] = sorted({c for r in reports for c in r["setup"]["conditions"]}, key=CONDITIONS.index)
    runs = [run for r in reports for run in r["runs"]]
    parts = [w for r in reports for w in r.get("wall_s_parts", [r["wall_s"]])]
    starts = [_dt.datetime.fromisoformat(r["meta"]["started_at"]) for r in reports if r["meta"].get("started_at")]
    ends = [_dt.datetime.fromisoformat(r["meta"]["started_at"]) + _dt.timedelta(seconds=r.get("elapsed_s", r["wall_s"]))
            for r in reports if r["meta"].get("started_at")]
    return {
        **first, "setup": setup, "runs": runs,
        # When the first suite began (a suite without a start time cannot be the first).
        "meta": min((r["meta"] for r in reports), key=lambda m: m.get("started_at") or "~"),
        "wall_s": max(r["wall_s"] for r in reports),
        "wall_s_parts": parts,
        "elapsed_s": (max(ends) - min(starts)).total_seconds() if len(starts) == len(reports) else None,
        "parallel_suites": len(parts),
        "summary": summarize(runs, setup["mine_from"]),
    }


def extend_report(base: dict, new: dict) -> dict:
    """``base`` with the mining arms of ``new``, a suite run later (at a later commit) with the same
    sizes, whose controls reproduced ``base``'s exactly: every ``uniform`` run of ``new`` equals the
    one of ``base`` for its task, condition and seed, epoch by epoch. The control is then the same
    reference for both suites' arms; the commit each arm ran at is recorded (``setup.arm_commits``)."""
    if base["mode"] != new["mode"] or base["setup"]["mine_from"] != new["setup"]["mine_from"]:
        raise ValueError("cannot extend: the suites ran in different modes or forced different start epochs")
    controls = {(r["task"], r["condition"], r["seed"]): r for r in base["runs"] if r["arm"] == "uniform"}
    for run in new["runs"]:
        if run["arm"] != "uniform":
            continue
        key = (run["task"], run["condition"], run["seed"])
        if key not in controls:
            raise ValueError(f"cannot extend: the first suite has no control for {key}")
        if run["epochs"] != controls[key]["epochs"] or run["mining"] != controls[key]["mining"]:
            raise ValueError(f"cannot extend: the control {key} did not reproduce; rerun the whole suite")
    setup = json.loads(json.dumps(base["setup"]))
    commits = setup.setdefault("arm_commits", {})
    for task, plan in new["setup"]["plan"].items():
        if new["setup"]["tasks"][task] != setup["tasks"].get(task):
            raise ValueError(f"cannot extend: task {task} ran with other sizes")
        known = setup["plan"][task]
        added = [a for a in plan["arms"] if a != "uniform"]
        clash = sorted(set(added) & set(known["arms"]))
        if clash or sorted(plan["seeds"]) != sorted(known["seeds"]):
            raise ValueError(f"cannot extend: task {task} ran arms {clash} twice, or other seeds")
        known["arms"] = [*known["arms"], *added]
        for arm in added:
            setup["arm_settings"][task][arm] = new["setup"]["arm_settings"][task][arm]
            commits.setdefault(task, {})[arm] = new["meta"]["started_commit"]
    setup["arms"] = list(dict.fromkeys(a for p in setup["plan"].values() for a in p["arms"]))
    runs = base["runs"] + [r for r in new["runs"] if r["arm"] != "uniform"]
    return {**base, "setup": setup, "runs": runs, "summary": summarize(runs, setup["mine_from"]),
            "extended_by": [*base.get("extended_by", []), {"commit": new["meta"]["started_commit"], "wall_s": new["wall_s"]}]}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one seed, two arms, clean and noisy (~2 min)")
    ap.add_argument("--tasks", nargs="+", default=None, choices=TASKS)
    ap.add_argument("--arms", nargs="+", default=None, choices=ARMS)
    ap.add_argument("--sweep", action="store_true",
                    help="the sensitivity sweep: uniform, placebo, defaults and every sweep arm (default task: text)")
    ap.add_argument("--conditions", nargs="+", default=None, choices=CONDITIONS)
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None,
                    help="train this many epochs instead of the task's own (long runs: when the model memorises wrong labels)")
    ap.add_argument("--mine-from", type=int, default=None,
                    help="force every mining arm to mine first at the end of this epoch (default: hardmine's trigger; quick: 1)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--work", default="/tmp/hardmine-quality", help="corpora, runs and dumps")
    ap.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                    help="merge the quality.json of runs made in parallel (same commit; other tasks, or other seeds of a task) "
                         "into <out>; train nothing")
    ap.add_argument("--extend", nargs=2, metavar=("BASE", "NEW"), default=None,
                    help="add the mining arms of the suite in NEW (run later; its controls must reproduce BASE's) to the "
                         "suite in BASE, into <out>; train nothing")
    ap.add_argument("--resummarize", action="store_true", help="recompute the summary of <out>/quality.json from its runs; train nothing")
    opts = ap.parse_args(argv)
    if opts.sweep and opts.arms:
        ap.error("--sweep names its own arms; leave --arms out")
    if opts.sweep and (opts.quick or opts.mine_from is not None or (opts.tasks and opts.tasks != ["text"])):
        # A forced start epoch would turn the start-epoch and patience arms into copies of the defaults.
        ap.error("--sweep runs the full text task with hardmine's trigger; leave out --quick, --mine-from and other tasks")
    if opts.sweep:
        opts.arms = ["uniform", "placebo", "defaults", *SWEEP_ARMS]
    opts.tasks = opts.tasks or (["text"] if opts.sweep else list(TASKS))
    opts.conditions = opts.conditions or list(CONDITIONS)
    if opts.quick and opts.mine_from is None:
        opts.mine_from = 1  # 3 quick epochs: the default trigger would first mine in the last one
    opts.plan = {}
    for task in opts.tasks:
        seeds, arms = ([0], ["uniform", "defaults"]) if opts.quick else FULL_PLAN[task]
        seeds = opts.seeds if opts.seeds is not None else seeds
        arms = opts.arms or arms
        if task != "vl":
            arms = [a for a in arms if a not in VL_ONLY_ARMS]
        if "uniform" not in arms:
            arms = ["uniform", *arms]  # every comparison is paired with the control
        opts.plan[task] = (list(seeds), [a for a in ARMS if a in arms])
    return opts


def main(argv=None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    opts = parse_args(argv)
    if opts.merge:
        report = merge_reports([json.loads((Path(d) / "quality.json").read_text(encoding="utf-8")) for d in opts.merge])
        path = Path(opts.out) / "quality.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=_json_default) + "\n", encoding="utf-8")
        print(f"merged {len(opts.merge)} reports into {path}")
        return 0
    if opts.extend:
        base, new = (json.loads((Path(d) / "quality.json").read_text(encoding="utf-8")) for d in opts.extend)
        path = Path(opts.out) / "quality.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(extend_report(base, new), indent=1, default=_json_default) + "\n", encoding="utf-8")
        print(f"extended {opts.extend[0]} by {opts.extend[1]} into {path}")
        return 0
    if opts.resummarize:
        path = Path(opts.out) / "quality.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        report["summary"] = summarize(report["runs"], report["setup"]["mine_from"])
        setup = report["setup"]
        if "arm_settings" not in setup:  # results written before settings were recorded
            sizes = QUICK if report["mode"] == "quick" else FULL
            plan = {t: (p["seeds"], p["arms"]) for t, p in setup["plan"].items()}
            setup["arm_settings"] = recorded_arm_settings(plan, sizes, setup["mine_from"])
            setup["arm_settings_note"] = f"recorded after the runs, from commit {machine_meta()['commit']}"
        meta = report["meta"]
        if "started_commit" not in meta:  # meta written at the end of the suite: find the commit it started from
            end = _dt.datetime.fromisoformat(meta["timestamp"])
            started = (end - _dt.timedelta(seconds=report["wall_s"])).isoformat()
            meta["started_commit"] = _git("rev-list", "-1", f"--before={started}", "HEAD")
            meta["started_at"] = started
        path.write_text(json.dumps(report, indent=1, default=_json_default) + "\n", encoding="utf-8")
        print(f"resummarized {path}")
        return 0
    report = run_suite(opts)
    print(f"wrote {Path(opts.out) / 'quality.json'} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
