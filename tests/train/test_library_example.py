"""The README's library example runs and mines (tiny text model, CPU)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "library_trainer.py"


def test_library_example_mines_with_a_plain_trainer_subclass(tmp_path):
    spec = importlib.util.spec_from_file_location("library_trainer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer = module.main(["--output-dir", str(tmp_path), "--epochs", "3", "--samples", "80"])
    logged = [h for h in trainer.state.log_history if "hsm/active" in h]
    assert [h["hsm/active"] for h in logged] == [0.0, 1.0, 1.0]
    assert logged[1]["hsm/num_hard"] > 0
    dump = json.loads((tmp_path / "hard_samples_epoch_1.json").read_text())
    assert {s["dataset"] for s in dump["samples"]} == {"train"}
    # Reweighting keeps the epoch length: 80 samples / 16 = 5 steps an epoch.
    assert trainer.state.global_step == 15
