from pathlib import Path

import pytest
import yaml

from hardmine.config import ConfigError, apply_overrides, dump_config, load_config, load_tree
from hardmine.core import MiningSettings


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def data_file(tmp_path):
    return write(tmp_path / "train.jsonl", "")


def problems(excinfo) -> dict[str, str]:
    return {p.key: p.message for p in excinfo.value.problems}


def test_minimal_config_has_documented_defaults(tmp_path, data_file):
    cfg = load_config(write(tmp_path / "c.yaml", {"custom": {"train_jsonl": "train.jsonl"}}))
    assert cfg.model.model == "builtin:tiny-qwen2-vl"
    assert cfg.custom.train_jsonl == str(data_file.resolve())
    mining = cfg.custom.hard_sample_mining
    assert mining.enabled is False
    assert mining == MiningSettings(enabled=False)  # the engine's own settings, off unless enabled
    assert "hard_sample_mining" in dump_config(cfg)


def test_every_problem_is_listed_at_once_with_dotted_keys(tmp_path, data_file):
    path = write(
        tmp_path / "c.yaml",
        {
            "training": {"learning_rat": 1e-3, "per_device_train_batch_size": 4},
            "data": {"num_worker": 2, "max_length": "long"},
            "custom": {
                "train_jsonl": "train.jsonl",
                "val_jsonl": "missing.jsonl",
                "hard_sample_mining": {
                    "enabled": True,
                    "start_epoch": -1,
                    "selector": {"mode": "percentile", "value": 1.5},
                    "noise_guard": {"window": 0},
                    "sample_loss": {"statistic": "worst"},
                    "hard_weigth": 3,
                },
            },
        },
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    found = problems(excinfo)
    assert "did you mean 'training.learning_rate'" in found["training.learning_rat"]
    assert "did you mean 'data.num_workers'" in found["data.num_worker"]
    assert "got 'long'" in found["data.max_length"]
    assert "did you mean 'custom.hard_sample_mining.hard_weight'" in found["custom.hard_sample_mining.hard_weigth"]
    assert found["custom.hard_sample_mining.start_epoch"] == "got -1; expected an integer >= 0"
    assert found["custom.hard_sample_mining.selector.value"] == "got 1.5; expected a finite number in (0.0, 1.0]"
    assert "custom.hard_sample_mining.noise_guard.window" in found
    assert found["custom.hard_sample_mining.sample_loss.statistic"] == "got 'worst'; expected one of ['mean', 'worst_tokens', 'fields', 'mixed']"
    assert str(path) in str(excinfo.value)


def test_missing_files_and_data_choice(tmp_path, data_file):
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path / "a.yaml", {"custom": {"train_jsonl": "nope.jsonl"}}))
    assert "does not exist" in problems(excinfo)["custom.train_jsonl"]
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path / "b.yaml", {"model": {"model": "x"}}))
    assert "custom.train_jsonl or custom.fusion_config" in problems(excinfo)["custom"]
    with pytest.raises(ConfigError) as excinfo:
        load_config(
            write(tmp_path / "c.yaml", {"custom": {"train_jsonl": "train.jsonl"}, "deepspeed": {"enabled": True, "config": "zero9"}})
        )
    assert "zero2" in problems(excinfo)["deepspeed.config"]


def test_selector_mode_needs_its_parameter(tmp_path, data_file):
    path = write(tmp_path / "c.yaml", {"custom": {"train_jsonl": "train.jsonl", "hard_sample_mining": {"selector": {"mode": "top_k"}}}})
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert problems(excinfo)["custom.hard_sample_mining.selector.k"].startswith("got None")


def test_extends_merges_and_detects_cycles(tmp_path, data_file):
    write(tmp_path / "base.yaml", {"training": {"num_train_epochs": 3, "seed": 1}, "custom": {"train_jsonl": "train.jsonl"}})
    write(tmp_path / "child.yaml", {"extends": "base.yaml", "training": {"seed": 7}})
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.training == {"num_train_epochs": 3, "seed": 7, "output_dir": str(tmp_path / "runs" / "hardmine")}
    write(tmp_path / "x.yaml", {"extends": "y.yaml"})
    write(tmp_path / "y.yaml", {"extends": "x.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_tree(tmp_path / "x.yaml")
    write(tmp_path / "z.yaml", {"extends": "absent.yaml"})
    with pytest.raises(ConfigError, match="absent.yaml"):
        load_tree(tmp_path / "z.yaml")


def test_overrides_parse_values_as_yaml(tmp_path, data_file):
    path = write(tmp_path / "c.yaml", {"custom": {"train_jsonl": "train.jsonl"}})
    cfg = load_config(path, ["training.learning_rate=1e-4", "custom.hard_sample_mining.enabled=true", "model.model=foo"])
    assert cfg.training["learning_rate"] == 1e-4
    assert cfg.custom.hard_sample_mining.enabled is True and cfg.model.model == "foo"
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides({"model": "x"}, ["model.sub=1"])


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "model:\n  model: [unclosed\ntraining: {}\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_scientific_notation_in_a_file_is_a_float(tmp_path, data_file):
    path = write(tmp_path / "c.yaml", "training:\n  learning_rate: 1e-4\ncustom:\n  train_jsonl: train.jsonl\n")
    assert load_config(path).training["learning_rate"] == 1e-4


def test_relative_output_dir_is_resolved_against_the_config_folder(tmp_path, data_file, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "train.jsonl").write_text(data_file.read_text())
    write(folder / "c.yaml", {"training": {"output_dir": "runs/a"}, "custom": {"train_jsonl": "train.jsonl"}})
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/c.yaml")
    assert cfg.training["output_dir"] == str(folder / "runs" / "a")
    cfg = load_config("configs/c.yaml", ["training.output_dir=elsewhere"])
    assert cfg.training["output_dir"] == str(folder / "elsewhere")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("num_train_epochs", "six", "float"),
        ("per_device_train_batch_size", 2.5, "int"),
        ("bf16", "yes", "bool"),
        ("report_to", [1], "list[str]"),
        ("learning_rate", True, "float"),
    ],
)
def test_training_values_are_checked_against_training_arguments_types(tmp_path, data_file, key, value, expected):
    path = write(tmp_path / "c.yaml", {"training": {key: value}, "custom": {"train_jsonl": "train.jsonl"}})
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = problems(excinfo)[f"training.{key}"]
    assert message.startswith(f"got {value!r}; expected") and expected in message


def test_training_values_of_the_right_types_pass(tmp_path, data_file):
    training = {"num_train_epochs": 2, "learning_rate": 1e-4, "report_to": ["tensorboard"], "eval_strategy": "epoch",
                "save_total_limit": None, "lr_scheduler_kwargs": {"num_cycles": 1}, "bf16": False}
    path = write(tmp_path / "c.yaml", {"training": training, "custom": {"train_jsonl": "train.jsonl"}})
    assert load_config(path).training["learning_rate"] == 1e-4


def test_validating_a_config_imports_no_transformers(tmp_path, data_file):
    import subprocess
    import sys

    path = write(tmp_path / "c.yaml", {"training": {"seed": "x"}, "custom": {"train_jsonl": "train.jsonl"}})
    code = (
        "import sys\n"
        "from hardmine.config import load_config, ConfigError\n"
        "from hardmine.recipe.checks import CONFIG_CHECKS\n"
        f"try:\n    load_config({str(path)!r}, checks=CONFIG_CHECKS)\nexcept ConfigError:\n    pass\n"
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mining_settings_from_a_file_of_their_own(tmp_path):
    from hardmine.config import load_mining_settings

    path = tmp_path / "mining.yaml"
    path.write_text("start_epoch: 1\nselector: {mode: top_k, k: 8}\nnoise_guard: {rule: learning}\n")
    settings = load_mining_settings(path)
    assert settings.enabled and settings.start_epoch == 1 and settings.selector.k == 8
    assert settings.noise_guard.rule == "learning"
    path.write_text("hard_sample_mining: {enabled: false}\n")
    assert load_mining_settings(path).enabled is False
    # No rule named: the recorded statistic's (start_level for the mean, learning for fields).
    path.write_text("noise_guard: {window: 2}\n")
    assert load_mining_settings(path).noise_guard.rule == "start_level"
    path.write_text("sample_loss: {statistic: fields}\nnoise_guard: {window: 2}\n")
    assert load_mining_settings(path).noise_guard.rule == "learning"
    path.write_text("selector: {mode: top_k}\nstartepoch: 1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_mining_settings(path)
    keys = problems(excinfo)
    assert keys["custom.hard_sample_mining.selector.k"].startswith("got None") and "startepoch" in keys
