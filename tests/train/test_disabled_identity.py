"""Mining off changes nothing: per-step losses equal a plain Trainer's, bit for bit."""

import random

import pytest
import torch
from transformers import Trainer, TrainingArguments

from hardmine.core import Pool
from hardmine.data.collate import METADATA_KEYS
from hardmine.models.builtin import load_model_and_processor
from hardmine.train.library import MetadataCollator, MinedDataset
from hardmine.train.sampler import ScheduleSampler
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
    """A stock Trainer fed the same order; it never sees hardmine's metadata."""

    def __init__(self, *args, sampler, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampler = sampler

    def _get_train_sampler(self, train_dataset=None):
        return self.sampler


def strip_then_collate(features):
    return collate([{k: v for k, v in f.items() if k not in METADATA_KEYS} for f in features])


def run(tmp_path, trainer_cls, **extra):
    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    data = MinedDataset(examples(tokenizer), "train")
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=8, learning_rate=3e-3,
        logging_steps=1, report_to=[], disable_tqdm=True, seed=0, save_strategy="no",
        remove_unused_columns=False, dataloader_pin_memory=False, use_cpu=True,
    )
    sampler = ScheduleSampler([Pool("train", len(data))], seed=0)
    if trainer_cls is PlainTrainer:
        trainer = PlainTrainer(model=model, args=args, train_dataset=data, data_collator=strip_then_collate, sampler=sampler)
    else:
        trainer = HardmineTrainer(
            model=model, args=args, train_dataset=data, data_collator=MetadataCollator(collate), train_sampler=sampler
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
