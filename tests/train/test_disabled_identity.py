"""Mining off changes nothing: per-step losses equal a plain Trainer's, bit for bit."""

import json
import random
from dataclasses import replace

import pytest
import torch
from transformers import Trainer, TrainingArguments

from hardmine.core import MiningSettings, Pool, SelectorSettings
from hardmine.data.collate import METADATA_KEYS
from hardmine.models import load_model_and_processor
from hardmine.train.library import MetadataCollator, MinedDataset
from hardmine.train.sampler import ScheduleSampler
from hardmine.train.mining import HardMining
from hardmine.train.trainer import HardMiningCallback, HardmineTrainer

pytestmark = pytest.mark.integration


def examples(tokenizer, n=48):
    rng = random.Random(0)
    out = []
    for _ in range(n):
        word = "".join(rng.choice("abcdef") for _ in range(rng.randint(3, 8)))
        prompt = tokenizer(f"reverse {word} =", add_special_tokens=False)["input_ids"]
        answer = tokenizer(f" {word[::-1]}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def collate(features):
    width = max(len(f["input_ids"]) for f in features)
    return {
        "input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
        "labels": torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in features]),
        "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]),
    }


class PlainTrainer(Trainer):
    """The stock Trainer, its own sampler included; it never sees hardmine's metadata."""


def strip_then_collate(features):
    return collate([{k: v for k, v in f.items() if k not in METADATA_KEYS} for f in features])


def run(tmp_path, trainer_cls, tiled_loss=None, mining=None, **extra):
    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    data = MinedDataset(examples(tokenizer), "train")
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=extra.pop("epochs", 2), per_device_train_batch_size=8, learning_rate=3e-3,
        logging_steps=1, report_to=[], disable_tqdm=True, seed=0, save_strategy="no",
        remove_unused_columns=False, dataloader_pin_memory=False, use_cpu=True, **extra,
    )
    pools = [Pool("train", len(data))]
    sampler = ScheduleSampler(pools, seed=0)
    if trainer_cls is PlainTrainer:
        trainer = PlainTrainer(model=model, args=args, train_dataset=data, data_collator=strip_then_collate)
    else:
        trainer = HardmineTrainer(
            model=model, args=args, train_dataset=data, data_collator=MetadataCollator(collate), train_sampler=sampler,
            tiled_loss=tiled_loss, mining=None if mining is None else HardMining(mining, pools, sampler, output_dir=tmp_path),
        )
    trainer.train()
    return trainer, [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_mining_off_equals_plain_trainer_bitwise(tmp_path):
    plain, plain_losses = run(tmp_path / "plain", PlainTrainer)
    ours, our_losses = run(tmp_path / "ours", HardmineTrainer)
    assert len(our_losses) == 12
    assert our_losses == plain_losses  # exact float equality, step by step
    assert not any(isinstance(cb, HardMiningCallback) for cb in ours.callback_handler.callbacks)
    assert [type(cb) for cb in ours.callback_handler.callbacks] == [type(cb) for cb in plain.callback_handler.callbacks]


def test_the_tiled_loss_trains_like_the_stock_loss_with_gradient_accumulation(tmp_path):
    # Normalised as Trainer normalises (tokens of the whole accumulation window):
    # the same losses step by step, up to float32 summation order.
    _, plain_losses = run(tmp_path / "plain", PlainTrainer, gradient_accumulation_steps=2)
    ours, tiled_losses = run(tmp_path / "tiled", HardmineTrainer, tiled_loss=True, gradient_accumulation_steps=2)
    assert ours.tiled_loss and ours._tiled_loss_applies(ours.model) and len(tiled_losses) == 6
    assert tiled_losses == pytest.approx(plain_losses, rel=1e-5)


def test_mining_on_trains_as_its_control_until_the_first_plan_applies(tmp_path):
    # The control: the stock order (no sampler of hardmine's) and the same loss option.
    settings = MiningSettings(
        start_epoch=1, plateau_delta=10.0, selector=SelectorSettings(mode="top_k", k=8, value=None)
    )
    mined, mined_losses = run(tmp_path / "mined", HardmineTrainer, mining=settings, epochs=3)
    _, control_losses = run(tmp_path / "control", PlainTrainer, epochs=3)
    _, tiled_control = run(tmp_path / "tiled", HardmineTrainer, tiled_loss=True, epochs=3)
    # Plans at the ends of epochs 1 and 2: the first applies from epoch 2.
    assert [row["hsm/active"] for row in mined.mining.history] == [0.0, 1.0, 1.0]
    steps_before_plan = 2 * 6
    assert mined_losses[:steps_before_plan] == tiled_control[:steps_before_plan]  # bitwise
    assert mined_losses[steps_before_plan:] != tiled_control[steps_before_plan:]  # the plan changed epoch 2
    assert mined_losses[:steps_before_plan] == pytest.approx(control_losses[:steps_before_plan], rel=1e-5)


def test_a_trainer_that_ignores_hardmines_sampler_is_stopped_before_training(tmp_path):
    from hardmine.train.mining import MiningError

    class OwnSamplerTrainer(HardmineTrainer):
        """Builds its dataloader without asking for the training sampler (as ms-swift's trainer does)."""

        def get_train_dataloader(self):
            from torch.utils.data import DataLoader

            return DataLoader(self.train_dataset, batch_size=8, collate_fn=self.data_collator)

    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, report_to=[], use_cpu=True, save_strategy="no")
    trainer = OwnSamplerTrainer(model=model, args=args, train_dataset=examples(tokenizer), data_collator=collate,
                                mining=MiningSettings())
    with pytest.raises(MiningError, match="does not draw from hardmine's sampler"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_shadow_mode_is_the_exact_control_of_the_same_settings(tmp_path):
    """Shadow mines as when on (same plans, same dumps) and never applies a plan: bitwise equal to the
    active run (losses, grad norms, order) until the active run's first plan applies, then the stock order."""
    settings = MiningSettings(start_epoch=1, trigger="start", selector=SelectorSettings(mode="top_k", k=8, value=None))
    active, active_losses = run(tmp_path / "active", HardmineTrainer, mining=settings, epochs=3)
    shadow, shadow_losses = run(tmp_path / "shadow", HardmineTrainer, mining=replace(settings, shadow=True), epochs=3)
    _, tiled_control = run(tmp_path / "tiled", HardmineTrainer, tiled_loss=True, epochs=3)
    steps_before_plan = 2 * 6  # the plan made at the end of epoch 1 applies from epoch 2

    def norms(trainer):
        return [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]

    assert shadow_losses[:steps_before_plan] == active_losses[:steps_before_plan]  # bitwise
    assert norms(shadow)[:steps_before_plan] == norms(active)[:steps_before_plan]
    assert active_losses[steps_before_plan:] != shadow_losses[steps_before_plan:]
    assert shadow_losses == tiled_control  # never a plan applied: the control on the same loss path, to the end
    assert shadow.train_sampler.plan is None and active.train_sampler.plan is not None
    assert [r["hsm/active"] for r in shadow.mining.history] == [r["hsm/active"] for r in active.mining.history]
    assert all(r["hsm/shadow"] == 1.0 for r in shadow.mining.history)
    for epoch in (1, 2):  # the same hard sets were mined and dumped (the epoch-1 plan saw identical losses)
        a = json.loads((tmp_path / "active" / f"hard_samples_epoch_{epoch}.json").read_text())
        b = json.loads((tmp_path / "shadow" / f"hard_samples_epoch_{epoch}.json").read_text())
        if epoch == 1:
            assert [s["base_idx"] for s in a["samples"]] == [s["base_idx"] for s in b["samples"]]
        assert b["num_hard"] == 8
