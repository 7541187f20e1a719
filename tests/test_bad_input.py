"""Every user-input error: one message naming where, exit 2, no traceback, nothing written.

Each case breaks one thing in an otherwise valid run folder (config, data,
fusion, checkpoint) and runs the command line on it in-process. The run's
``output_dir`` must not exist afterwards: nothing is written on an input error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from hardmine import cli
from hardmine.data.synth import make_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_dataset(out, seed=0, target_size=6, source_sizes={"shapes_a": 3}, val_size=2)
    return out


def base_config() -> dict:
    return {
        "model": {"model": "builtin:tiny-qwen2-vl"},
        "training": {"output_dir": "run", "num_train_epochs": 3, "report_to": [], "disable_tqdm": True},
        "data": {"max_length": 512},
        "custom": {"fusion_config": "data/fusion.yaml", "hard_sample_mining": {"enabled": True, "start_epoch": 1}},
    }


def jsonl_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# -------------------------------------------------------------- the breakages
# Each takes the run folder (config.yaml + data/), breaks one thing, and returns
# (extra command-line arguments, text the message must contain).
def set_key(dotted: str, value):
    def breaker(folder: Path):
        tree = yaml.safe_load((folder / "config.yaml").read_text())
        node = tree
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        (folder / "config.yaml").write_text(yaml.safe_dump(tree))
        return [], dotted

    return breaker


def raw_config(text: str, expect: str):
    def breaker(folder: Path):
        (folder / "config.yaml").write_text(text)
        return [], expect

    return breaker


def edit_line(relative: str, line_no: int, change):
    """Replace line ``line_no`` (1-based) of a JSONL file by ``change(record)``."""

    def breaker(folder: Path):
        path = folder / "data" / relative
        lines = jsonl_lines(path)
        lines[line_no - 1] = change(json.loads(lines[line_no - 1]))
        path.write_text("\n".join(lines) + "\n")
        return [], f"{path}:{line_no}"

    return breaker


def edit_fusion(change, expect: str):
    def breaker(folder: Path):
        path = folder / "data" / "fusion.yaml"
        tree = yaml.safe_load(path.read_text())
        change(tree)
        path.write_text(yaml.safe_dump(tree))
        return [], f"{path}: {expect}" if not expect.startswith("!") else expect[1:]

    return breaker


def bbox_out_of_bounds(record):
    record["objects"][0] = {"desc": "red square", "bbox_2d": [0, 0, 500, 10]}
    return json.dumps(record)


def empty_file(folder: Path):
    path = folder / "data" / "target" / "val.jsonl"
    path.write_text("\n")
    return [], f"{path}: holds no records"


def missing_image(folder: Path):
    record = json.loads(jsonl_lines(folder / "data" / "target" / "train.jsonl")[2])
    (folder / "data" / "target" / record["images"][0]).unlink()
    return [], f"{folder / 'data' / 'target' / 'train.jsonl'}:3"


def too_long(folder: Path):
    set_key("data.max_length", 64)(folder)
    return [], "longer than data.max_length=64"


def resume(target: str, prepare=None):
    def breaker(folder: Path):
        checkpoint = folder / target
        if prepare is not None:
            prepare(checkpoint)
        return ["--resume", str(checkpoint)], str(checkpoint)

    return breaker


def interrupted_checkpoint(folder: Path):
    folder.mkdir()
    (folder / "config.json").write_text("")
    (folder / "trainer_state.json").write_text("{}")
    from hardmine.train.checkpoints import INCOMPLETE_MARKER

    (folder / INCOMPLETE_MARKER).write_text("")


CASES = {
    # config
    "unknown key": (set_key("model.modle", "x"), "validate"),
    "unknown training key": (set_key("training.num_train_epoch", 3), "validate"),
    "training value of the wrong type": (set_key("training.num_train_epochs", "six"), "validate"),
    "training bool as a string": (set_key("training.bf16", "yes"), "validate"),
    "wrong model dtype": (set_key("model.dtype", "float8"), "validate"),
    "eval monitor the run does not produce": (set_key("custom.hard_sample_mining.monitor", "eval_loss"), "validate"),
    "start_epoch never reached": (set_key("custom.hard_sample_mining.start_epoch", 5), "train"),
    "selector without its parameter": (set_key("custom.hard_sample_mining.selector", {"mode": "top_k"}), "validate"),
    "hard_weight below 1": (set_key("custom.hard_sample_mining.hard_weight", 0.5), "validate"),
    "unknown trigger mode": (set_key("custom.hard_sample_mining.trigger", "tail"), "validate"),
    "shadow not a bool": (set_key("custom.hard_sample_mining.shadow", "yes"), "validate"),
    "percentile above 1": (set_key("custom.hard_sample_mining.selector", {"mode": "percentile", "value": 1.5}), "validate"),
    "negative max_length": (set_key("data.max_length", -1), "validate"),
    "missing deepspeed file": (set_key("deepspeed", {"enabled": True, "config": "ds.json"}), "validate"),
    "augmentation key": (set_key("custom.augmentation", {"enabeld": True}), "validate"),
    "yaml syntax": (raw_config("model: [unclosed\n", "line 2"), "validate"),
    "missing extends": (raw_config("extends: nowhere.yaml\n", "extends"), "validate"),
    "remove_unused_columns": (set_key("training.remove_unused_columns", True), "train"),
    # data
    "missing train file": (set_key("custom.fusion_config", "data/none.yaml"), "validate"),
    "not JSON": (edit_line("target/train.jsonl", 2, lambda r: "{not json"), "validate"),
    "bbox outside the image": (edit_line("target/train.jsonl", 4, bbox_out_of_bounds), "train"),
    "unknown record key": (edit_line("shapes_a/train.jsonl", 1, lambda r: json.dumps({**r, "objs": []})), "validate"),
    "missing image": (missing_image, "validate"),
    "empty JSONL": (empty_file, "train"),
    "sample longer than max_length": (too_long, "train"),
    # fusion
    "source without ratio": (edit_fusion(lambda t: t["sources"][0].pop("ratio"), "!sources[0].ratio"), "validate"),
    "fusion file names a missing JSONL": (
        edit_fusion(lambda t: t["sources"][0].update(train_jsonl="gone.jsonl"), "!sources[0].train_jsonl"),
        "validate",
    ),
    "duplicate dataset names": (edit_fusion(lambda t: t["sources"][0].update(name="target"), "!distinct"), "validate"),
    "target with a ratio": (edit_fusion(lambda t: t["target"].update(ratio=0.5), "!target.ratio"), "validate"),
    # resume
    "resume from nothing": (resume("no-such-checkpoint"), "train"),
    "resume from an interrupted save": (resume("checkpoint-9", interrupted_checkpoint), "train"),
    "resume from a folder that is not a checkpoint": (resume("data"), "train"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_located_message_and_exit_2(name, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_console_logging", lambda: None)
    shutil.copytree(corpus, tmp_path / "data")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base_config()))
    breaker, command = CASES[name]
    extra, expect = breaker(tmp_path)
    status = cli.main([command, "--config", str(tmp_path / "config.yaml"), *extra])
    err = capsys.readouterr().err
    assert status == 2, err
    assert expect in err, err
    assert err.startswith(f"hardmine {command}: ") and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "an input error wrote to output_dir"


def test_the_valid_base_passes_validate(corpus, tmp_path, capsys, monkeypatch):
    # The cases above fail because of their one change, not because the base is broken.
    monkeypatch.setattr(cli, "_console_logging", lambda: None)
    shutil.copytree(corpus, tmp_path / "data")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base_config()))
    assert cli.main(["validate", "--config", str(tmp_path / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "# data checked" in out and "train target: 6 records" in out
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(corpus, tmp_path, monkeypatch):
    from hardmine.config import ConfigError

    monkeypatch.setattr(cli, "_console_logging", lambda: None)
    (tmp_path / "config.yaml").write_text("model: {modle: x}\n")
    with pytest.raises(ConfigError):
        cli.main(["--debug", "validate", "--config", str(tmp_path / "config.yaml")])
