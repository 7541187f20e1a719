"""The library API checks its arguments when called, not at the first batch."""

from __future__ import annotations

import pytest
from transformers import TrainingArguments

from hardmine.core import MiningSettings
from hardmine.train.library import LibraryArgumentError, mining_kwargs


@pytest.fixture
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True)


DATASET = [{"input_ids": [1, 2], "labels": [1, 2]}] * 4


def collate(features):
    return features


@pytest.mark.parametrize(
    "change, names",
    [
        ({"train_dataset": iter(DATASET)}, "train_dataset"),
        ({"train_dataset": []}, "train_dataset: got an empty dataset"),
        ({"data_collator": None}, "data_collator: got None"),
        ({"settings": None}, "settings: got None"),
        ({"settings": {"start_epoch": 1}}, "settings: got {'start_epoch': 1}"),
        ({"name": ""}, "name: got ''"),
        ({"settings": MiningSettings(monitor="accuracy")}, "settings.monitor: got 'accuracy'"),
        ({"args": object()}, "args: got object"),
    ],
)
def test_a_bad_argument_fails_when_called_and_names_itself(args, tmp_path, change, names):
    call = {"train_dataset": DATASET, "data_collator": collate, "args": args, "settings": MiningSettings(), **change}
    with pytest.raises(LibraryArgumentError, match="mining_kwargs: ") as info:
        mining_kwargs(call.pop("train_dataset"), call.pop("data_collator"), **call)
    assert names in str(info.value)
    assert not (tmp_path / "run").exists()


def test_an_eval_monitor_reaches_the_mining_stage(args):
    kwargs = mining_kwargs(DATASET, collate, args=args, settings=MiningSettings(monitor="eval_loss"))
    assert kwargs["mining"].monitor == "eval_loss"
