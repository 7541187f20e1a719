"""Hard-sample mining in your own Trainer: the marked lines are all it takes.

A tiny text model learns to reverse strings; one sample in ten is a long
string (the hard slice). Mining starts after epoch 1 and shows the samples
the model still gets wrong three times as often.

    python examples/library_trainer.py --output-dir runs/library-example
"""

from __future__ import annotations

import argparse
import random

import torch
from transformers import Trainer, TrainingArguments

from hardmine.core import MiningSettings
from hardmine.models import load_model_and_processor
from hardmine.train.library import HardMiningMixin  # (1) import


class MinedTrainer(HardMiningMixin, Trainer):  # (2) mix into your Trainer class
    pass


def reversal_examples(tokenizer, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        hard = i % 10 == 0
        word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(9, 12) if hard else rng.randint(3, 5)))
        prompt = tokenizer(f"reverse {word} =", add_special_tokens=False)["input_ids"]
        answer = tokenizer(f" {word[::-1]}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        examples.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return examples


def pad_collator(pad_id: int):
    def collate(features):
        width = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [pad_id] * (width - len(f["input_ids"])) for f in features]
        labels = [f["labels"] + [-100] * (width - len(f["labels"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    return collate


def main(argv: list[str] | None = None) -> MinedTrainer:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default="runs/library-example")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=200)
    opts = ap.parse_args(argv)

    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    train = reversal_examples(tokenizer, opts.samples, seed=0)
    args = TrainingArguments(
        output_dir=opts.output_dir, num_train_epochs=opts.epochs, per_device_train_batch_size=16,
        learning_rate=3e-3, logging_steps=5, report_to=[], disable_tqdm=True, seed=0, save_strategy="no",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    settings = MiningSettings(
        start_epoch=1, plateau_delta=1.0,  # mine from the end of epoch 1 on
        selector={"mode": "percentile", "value": 0.1},  # the YAML's keys and shapes
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = MinedTrainer(model=model, args=args, train_dataset=train, data_collator=pad_collator(pad_id),
                           mining=settings)  # (3) mining settings; mining=None trains exactly as the stock Trainer
    trainer.train()
    for row in trainer.state.log_history:
        if "hsm/active" in row:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k.startswith("hsm/")})
    return trainer


if __name__ == "__main__":
    main()
