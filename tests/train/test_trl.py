"""TRL's SFTTrainer with hardmine: its fused loss and metrics, one forward a step, identity through its dataset.

Runs where TRL is installed (the ``trl`` extra: ``pip install -e .[trl]``); skipped elsewhere.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

trl = pytest.importorskip("trl", minversion="1.16")  # the fused LM head came with TRL 1.x
datasets = pytest.importorskip("datasets")

from hardmine.core import MiningSettings, SelectorSettings  # noqa: E402
from hardmine.core.miner import WORST_TOKENS  # noqa: E402
from hardmine.models import load_model_and_processor  # noqa: E402
from hardmine.train.library import HardMiningMixin  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    # SFTConfig itself sets a TrainingArguments field that transformers 5.24 deprecates.
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning"),
]


class MinedSFTTrainer(HardMiningMixin, trl.SFTTrainer):
    pass


def words(n=32):
    import random

    rng = random.Random(0)
    return ["".join(rng.choice("abcdef") for _ in range(rng.randint(3, 9 if i % 8 == 0 else 5))) for i in range(n)]


def sft_dataset():
    return datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"reverse {w}"}], "completion": [{"role": "assistant", "content": w[::-1]}]}
         for w in words()]
    )


def config(tmp_path, **extra):
    return trl.SFTConfig(
        output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=8, learning_rate=3e-3,
        logging_steps=1, report_to=[], disable_tqdm=True, seed=0, save_strategy="no", use_cpu=True,
        dataloader_pin_memory=False, **extra,
    )


SETTINGS = MiningSettings(start_epoch=1, plateau_delta=10.0,
                          selector=SelectorSettings(mode="top_k", k=4, value=None))


@pytest.mark.parametrize("padding_free", [False, True])
def test_sft_trainer_mines_from_its_own_fused_forward(tmp_path, padding_free):
    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    forwards = []
    model.register_forward_hook(lambda m, a, k, o: forwards.append(bool(k.get("fused_lm_head"))), with_kwargs=True)
    trainer = MinedSFTTrainer(
        model=model, args=config(tmp_path, **({"padding_free": True, "max_length": None} if padding_free else {})),
        train_dataset=sft_dataset(),
        processing_class=tokenizer, mining=SETTINGS,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the deprecated return_outputs path is never taken
        trainer.train()
    steps = trainer.state.global_step
    assert steps == 12 and forwards == [True] * steps  # one fused forward per step, no logits forward
    logged = [h for h in trainer.state.log_history if "hsm/active" in h]
    assert [h["hsm/active"] for h in logged] == [0.0, 1.0, 1.0]
    assert all(h["hsm/observations"] == 32 for h in logged)
    assert any("mean_token_accuracy" in h and "entropy" in h for h in trainer.state.log_history)
    assert (tmp_path / "hard_samples_epoch_1.json").is_file()


@pytest.mark.parametrize("statistic", ["mean", "worst_tokens"])
def test_per_sample_losses_equal_the_reference_from_full_logits(tmp_path, statistic):
    from hardmine.train.loss import per_sample_loss, sample_index_for_padded

    settings = dataclasses.replace(SETTINGS, sample_loss={"statistic": statistic})
    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    trainer = MinedSFTTrainer(
        model=model, args=config(tmp_path), train_dataset=sft_dataset(), processing_class=tokenizer, mining=settings
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(6)]))
    model.train()
    trainer.compute_loss(model, dict(batch))
    recorded = trainer.mining.log.drain()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        sums, counts, worst = per_sample_loss(logits, labels, sample_index_for_padded(*labels.shape), 6, worst_tokens=WORST_TOKENS)
    expected = (sums / counts).float() if statistic == "mean" else worst
    torch.testing.assert_close(torch.as_tensor(recorded["loss"]), expected, rtol=1e-5, atol=1e-6)


def test_fields_statistic_is_refused_when_the_trainer_is_made(tmp_path):
    from hardmine.train.mining import MiningError

    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    settings = dataclasses.replace(SETTINGS, sample_loss={"statistic": "fields"})
    with pytest.raises(MiningError, match="'fields' is not supported under TRL's fused loss yet"):
        MinedSFTTrainer(model=model, args=config(tmp_path), train_dataset=sft_dataset(), processing_class=tokenizer,
                        mining=settings)


def test_the_trl_example_runs_and_mines(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "trl_sft.py"
    spec = importlib.util.spec_from_file_location("trl_sft", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer = module.main(["--output-dir", str(tmp_path), "--epochs", "3", "--samples", "64"])
    logged = [h for h in trainer.state.log_history if "hsm/active" in h]
    assert [h["hsm/active"] for h in logged] == [0.0, 1.0, 1.0] and logged[1]["hsm/num_hard"] > 0
