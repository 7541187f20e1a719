"""What the trainer records per sample: the mean token loss, or the mean of its worst tokens, from the same forward."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

from hardmine.core import MiningSettings
from hardmine.core.miner import WORST_TOKENS
from hardmine.train.library import HardMiningMixin
from hardmine.train.loss import per_sample_loss, sample_index_for_padded

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "library_trainer.py"


class MinedTrainer(HardMiningMixin, Trainer):
    pass


def example_module():
    spec = importlib.util.spec_from_file_location("library_trainer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tiled_loss", [True, False])  # the tiled head, or the model's own logits
@pytest.mark.parametrize("statistic", ["mean", "worst_tokens"])
def test_recorded_losses_equal_the_reference_from_full_logits(tmp_path, load_builtin, tiled_loss, statistic):
    example = example_module()
    model, tokenizer = load_builtin("text")
    features = example.reversal_examples(tokenizer, 6, seed=1)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no")
    settings = MiningSettings(sample_loss={"statistic": statistic})
    trainer = MinedTrainer(
        model=model, args=args, train_dataset=features, data_collator=example.pad_collator(tokenizer.eos_token_id),
        mining=settings, tiled_loss=tiled_loss,
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(6)]))
    model.train()
    trainer.compute_loss(model, dict(batch))
    columns = trainer.mining.log.drain()
    recorded = torch.as_tensor(columns["loss"])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        sums, counts, worst = per_sample_loss(logits, labels, sample_index_for_padded(*labels.shape), 6, worst_tokens=WORST_TOKENS)
    expected = sums / counts if statistic == "mean" else worst
    torch.testing.assert_close(recorded, expected, rtol=1e-5, atol=1e-6)
    if statistic == "worst_tokens":  # the mean rides along, for the trigger's train_loss
        torch.testing.assert_close(torch.as_tensor(columns["mean_loss"]), sums / counts, rtol=1e-5, atol=1e-6)
    else:
        assert "mean_loss" not in columns
    # The two statistics differ on these samples, so the comparison tells them apart.
    assert not torch.allclose(sums / counts, worst, rtol=1e-3)


def test_a_worst_tokens_run_monitors_the_same_train_loss_until_its_first_plan(tmp_path, load_builtin):
    """The statistic changes what is mined, not when: the trigger sees the training loss either way."""
    example = example_module()
    monitored = {}
    for statistic in ("mean", "worst_tokens"):
        model, tokenizer = load_builtin("text")
        args = TrainingArguments(
            output_dir=str(tmp_path / statistic), num_train_epochs=3, per_device_train_batch_size=8, learning_rate=3e-3,
            report_to=[], use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True, logging_steps=100,
        )
        settings = MiningSettings(start_epoch=1, plateau_delta=10.0, sample_loss={"statistic": statistic}, dump=False)
        trainer = MinedTrainer(model=model, args=args, train_dataset=example.reversal_examples(tokenizer, 32, seed=2),
                               data_collator=example.pad_collator(tokenizer.eos_token_id), mining=settings)
        trainer.train()
        monitored[statistic] = [h["hsm/monitored"] for h in trainer.state.log_history if "hsm/monitored" in h]
    # Epochs 0 and 1 train identically (the first plan applies from epoch 2).
    assert monitored["worst_tokens"][:2] == pytest.approx(monitored["mean"][:2], rel=1e-5)
    assert len(monitored["mean"]) == 3


def focus_collator(collate):
    """The example's collator, plus each sample's ``loss_focus`` padded with zeros."""
    def with_focus(features):
        batch = collate(features)
        width = batch["input_ids"].shape[1]
        batch["loss_focus"] = torch.tensor([f["loss_focus"] + [0] * (width - len(f["loss_focus"])) for f in features])
        return batch

    return with_focus


@pytest.mark.parametrize("statistic", ["fields", "mixed"])
@pytest.mark.parametrize("tiled_loss", [True, False])
def test_fields_records_the_mean_over_the_focus_tokens_and_the_mean_beside_it(tmp_path, load_builtin, tiled_loss, statistic):
    example = example_module()
    model, tokenizer = load_builtin("text")
    features = example.reversal_examples(tokenizer, 6, seed=1)
    for i, f in enumerate(features):  # every other token counts; sample 5 has none
        f["loss_focus"] = [j % 2 if i != 5 else 0 for j in range(len(f["input_ids"]))]
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no")
    trainer = MinedTrainer(
        model=model, args=args, train_dataset=features, data_collator=focus_collator(example.pad_collator(tokenizer.eos_token_id)),
        mining=MiningSettings(sample_loss={"statistic": statistic}), tiled_loss=tiled_loss,
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(6)]))
    model.train()
    trainer.compute_loss(model, dict(batch))
    columns = trainer.mining.log.drain()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        index = sample_index_for_padded(*labels.shape)
        sums, counts, focused = per_sample_loss(logits, labels, index, 6, token_focus=batch["loss_focus"])
    means = sums / counts
    assert torch.isnan(focused[5]) and not torch.isnan(focused[:5]).any()
    # fields: the focus tokens' mean (NaN without any, which mining skips); mixed: half each, the mean without focus.
    expected = focused if statistic == "fields" else torch.where(torch.isnan(focused), means, (means + focused) / 2)
    torch.testing.assert_close(torch.as_tensor(columns["loss"]), expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(torch.as_tensor(columns["mean_loss"]), means, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected[:5], means[:5], rtol=1e-3)  # the focus changed what was recorded


def test_fields_without_loss_focus_in_the_batch_is_an_error_that_says_what_to_add(tmp_path, load_builtin):
    from hardmine.train.mining import MiningError

    example = example_module()
    model, tokenizer = load_builtin("text")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no")
    trainer = MinedTrainer(
        model=model, args=args, train_dataset=example.reversal_examples(tokenizer, 4, seed=1),
        data_collator=example.pad_collator(tokenizer.eos_token_id), mining=MiningSettings(sample_loss={"statistic": "fields"}),
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    model.train()
    with pytest.raises(MiningError, match="the batch has no 'loss_focus'"):
        trainer.compute_loss(model, dict(batch))
