"""End-to-end: a YAML config trains the tiny VL model on synthetic fusion data."""

import json

import numpy as np
import pytest
import yaml

from hardmine.config import load_config
from hardmine.data.synth import make_dataset
from hardmine.recipe.run import CHECKS, run_training

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return make_dataset(out, seed=0, target_size=48, source_sizes={"shapes_a": 24, "shapes_b": 24}, val_size=8)


#: Mining forced from the end of epoch 1 (of 3): 5 hard target samples, no guard.
MINED_FROM_EPOCH_1 = dict(
    enabled=True, start_epoch=1, plateau_delta=1.0, noise_guard={"enabled": False}, selector={"mode": "top_k", "k": 5}
)


def config(tmp_path, fusion, **mining):
    tree = {
        "model": {"model": "builtin:tiny-qwen2-vl"},
        "training": {
            "output_dir": str(tmp_path / "run"),
            "num_train_epochs": 3,
            "per_device_train_batch_size": 8,
            "learning_rate": 2e-3,
            "logging_steps": 2,
            "report_to": [],
            "disable_tqdm": True,
            "seed": 0,
        },
        "data": {"num_workers": 0, "max_length": 512},
        "custom": {"fusion_config": str(fusion), "augmentation": {"enabled": True}, "hard_sample_mining": mining},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_config(path, checks=CHECKS)


def test_train_save_reload(tmp_path, corpus):
    from hardmine.models import load_model_and_processor

    result = run_training(config(tmp_path, corpus))
    history = [h for h in result.trainer.state.log_history if "loss" in h]
    assert history and history[-1]["loss"] < history[0]["loss"]
    # Every epoch has the same number of optimizer steps: 48 target + 12 + 7 source draws = 67 -> 9 batches.
    assert result.trainer.state.global_step == 27
    model, processor, task = load_model_and_processor(str(result.final_dir))
    assert task == "vl"
    assert "eval_target_loss" in result.metrics and np.isfinite(result.metrics["eval_target_loss"])
    assert not list((tmp_path / "run").glob("hard_samples_epoch_*.json"))


def test_mining_run_dumps_and_logs(tmp_path, corpus):
    result = run_training(config(tmp_path, corpus, **MINED_FROM_EPOCH_1))
    dumps = sorted((tmp_path / "run").glob("hard_samples_epoch_*.json"))
    assert [d.name for d in dumps] == ["hard_samples_epoch_1.json", "hard_samples_epoch_2.json"]
    data = json.loads(dumps[0].read_text())
    assert data["num_hard"] == 5 and {s["dataset"] for s in data["samples"]} == {"target"}
    logged = [h for h in result.trainer.state.log_history if "hsm/active" in h]
    assert [h["hsm/active"] for h in logged] == [0.0, 1.0, 1.0]
    assert logged[1]["hsm/num_hard"] == 5 and logged[1]["hsm/weight_max"] == 3.0
    # Every target occurrence was observed exactly once per epoch.
    assert logged[0]["hsm/observations"] == 48 + 12 + 7
    assert result.trainer.state.global_step == 27


@pytest.mark.parametrize("packing", [False, True])
def test_a_run_can_mine_on_the_description_words_alone(tmp_path, corpus, packing):
    cfg = config(tmp_path, corpus, **MINED_FROM_EPOCH_1, sample_loss={"statistic": "fields", "fields": ["desc"]})
    if packing:
        cfg = cfg.model_copy(update={"training": {**cfg.training, "packing": True}})
    result = run_training(cfg)
    logged = [h for h in result.trainer.state.log_history if "hsm/active" in h]
    # Every sample has descriptions, so every observation is finite; the trigger still saw the mean loss.
    assert [h["hsm/nonfinite"] for h in logged] == [0.0, 0.0, 0.0] and logged[1]["hsm/num_hard"] == 5
    dump = json.loads((tmp_path / "run" / "hard_samples_epoch_1.json").read_text())
    assert dump["decision"]["sample_loss"]["statistic"] == "fields"


def test_plan_reaches_persistent_workers_and_packing_trains(tmp_path, corpus, monkeypatch):
    from collections import Counter

    from hardmine.train.mining import HardMining

    seen: dict[int, Counter] = {}
    schedules = {}
    original = HardMining.record

    def spy(self, sample_id, loss, position, step, mean_loss=None):
        epoch = self.sampler.epoch
        schedules.setdefault(epoch, self.sampler.schedule(epoch))  # the one this epoch runs on
        seen.setdefault(epoch, Counter()).update(int(s) for s in sample_id)
        return original(self, sample_id, loss, position, step, mean_loss)

    monkeypatch.setattr(HardMining, "record", spy)
    cfg = config(
        tmp_path, corpus, enabled=True, start_epoch=0, plateau_delta=1.0, noise_guard={"enabled": False},
        selector={"mode": "top_k", "k": 8},
    )
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"num_workers": 1, "persistent_workers": True}),
            "training": {**cfg.training, "packing": True},
        }
    )
    result = run_training(cfg)
    sampler = result.trainer.train_sampler
    assert sampler.plan is not None and result.trainer.state.global_step == 27
    from hardmine.core import sample_ids
    from hardmine.core.identity import dataset_key

    target = schedules[2]
    expected = Counter(sample_ids("target", target.base_idx[target.pool == 0]).tolist())
    observed = Counter({k: v for k, v in seen[2].items() if k >> 40 == dataset_key("target")})
    # The worker, started in epoch 0 and kept alive, served epoch 2 in the mined order.
    assert observed == expected
    assert max(expected.values()) >= 2  # some mined samples were shown more than once


def test_an_eval_monitor_mines_once_per_epoch_and_not_at_the_final_evaluation(tmp_path, corpus):
    result = run_training(config(tmp_path, corpus, **MINED_FROM_EPOCH_1, monitor="eval_target_loss"))
    logged = [h for h in result.trainer.state.log_history if "hsm/active" in h]
    # One row per epoch, each after that epoch's evaluation, carrying its eval loss.
    assert [h["hsm/active"] for h in logged] == [0.0, 1.0, 1.0]
    evals = [h["eval_target_loss"] for h in result.trainer.state.log_history if "eval_target_loss" in h]
    assert [h["hsm/monitored"] for h in logged] == pytest.approx(evals[:3])
    assert "hsm/failed" not in str(result.trainer.state.log_history)
    assert "eval_target_loss" in result.metrics  # the final evaluate() ran and mined nothing
    assert result.trainer.mining.mined_epoch == 2


def test_hardmine_train_says_where_everything_is(tmp_path, corpus, capsys, monkeypatch):
    from hardmine import cli

    monkeypatch.setattr(cli, "_console_logging", lambda: None)
    config(tmp_path, corpus, **MINED_FROM_EPOCH_1)
    assert cli.main(["train", "--config", str(tmp_path / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"everything is in {tmp_path / 'run'}" in out and f"final model:  {tmp_path / 'run' / 'final'}" in out
    assert "hard samples: 2 dump(s)" in out
