"""Hard-sample mining in TRL's SFTTrainer: the marked lines are all it takes.

TRL keeps its own loss (its fused LM head, which never builds the logits) and
its metrics; hardmine reads each sample's loss from the per-token
log-probabilities of that same forward, so mining adds no forward pass.

    pip install -e ".[trl]"
    python examples/trl_sft.py --output-dir runs/trl-example
"""

from __future__ import annotations

import argparse
import random

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from hardmine.core import MiningSettings  # (1) import
from hardmine.models import load_model_and_processor
from hardmine.train.library import HardMiningMixin  # (1)


class MinedSFTTrainer(HardMiningMixin, SFTTrainer):  # (2) mix into TRL's trainer
    pass


def reversal_dataset(n: int, seed: int) -> Dataset:
    """Prompt-completion pairs; one in ten is a long string (the hard slice)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(9, 12) if i % 10 == 0 else rng.randint(3, 5)))
        rows.append({"prompt": [{"role": "user", "content": f"reverse {word}"}],
                     "completion": [{"role": "assistant", "content": word[::-1]}]})
    return Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> MinedSFTTrainer:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default="runs/trl-example")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=200)
    opts = ap.parse_args(argv)

    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    args = SFTConfig(
        output_dir=opts.output_dir, num_train_epochs=opts.epochs, per_device_train_batch_size=16, learning_rate=3e-3,
        logging_steps=5, report_to=[], disable_tqdm=True, seed=0, save_strategy="no", use_cpu=True,
    )
    settings = MiningSettings(  # (3) when and what to mine
        start_epoch=1, plateau_delta=1.0, selector={"mode": "percentile", "value": 0.1}
    )
    trainer = MinedSFTTrainer(model=model, args=args, train_dataset=reversal_dataset(opts.samples, seed=0),
                              processing_class=tokenizer, mining=settings)  # (4)
    trainer.train()
    for row in trainer.state.log_history:
        if "hsm/active" in row:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k.startswith("hsm/")})
    return trainer


if __name__ == "__main__":
    main()
