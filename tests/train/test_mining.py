import json
from dataclasses import replace

import numpy as np
import pytest

from hardmine.core import GuardSettings, MiningSettings, Pool, SelectorSettings, sample_ids
from hardmine.train.mining import HardMining, MiningError, ObservationLog, deduplicate, load_state, save_state
from hardmine.train.sampler import ScheduleSampler
from simulation import simulate_epoch

SETTINGS = MiningSettings(
    start_epoch=1, plateau_delta=0.9,
    selector=SelectorSettings(mode="top_k", k=5, value=None),
    noise_guard=GuardSettings(enabled=False),  # the simulated hard samples stay hard: none is a wrong label
)
POOLS = [Pool("target", 40), Pool("src", 20, 0.5)]


def run_epoch(mining, epoch):
    """One simulated epoch: target samples 0..7 are hard."""
    return simulate_epoch(mining, epoch)


def test_log_and_deduplicate_by_position():
    log = ObservationLog()
    log.append([5, 6], [1.0, 2.0], [0, 1], step=3)
    log.append([5], [9.0], [0], step=4)  # a padding duplicate of position 0
    cols = deduplicate(log.drain())
    assert cols["sample_id"].tolist() == [5, 6] and cols["loss"].tolist() == [1.0, 2.0]
    assert len(log) == 0


def test_mining_produces_a_plan_that_reaches_the_sampler_and_dumps(tmp_path):
    mining = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path)
    m0 = run_epoch(mining, 0)
    assert m0["hsm/active"] == 0.0 and mining.sampler.plan is None
    m1 = run_epoch(mining, 1)
    assert m1["hsm/active"] == 1.0 and m1["hsm/num_hard"] == 5
    assert m1["hsm/weight_min"] == 1.0 and m1["hsm/weight_max"] == 3.0 and m1["hsm/epoch"] == 1.0
    assert m1["hsm/hard_loss_mean"] > m1["hsm/all_loss_mean"]
    assert set(mining.sampler.plan.base_idx["target"].tolist()) <= set(range(8))
    dump = json.loads((tmp_path / "hard_samples_epoch_1.json").read_text())
    assert dump["num_hard"] == 5 and {s["dataset"] for s in dump["samples"]} == {"target"}
    # Every target sample occurrence was observed once; sources only set the level.
    assert mining.miner.tracker.stats["observations"] == 80


def test_checkpoint_round_trip_continues_identically(tmp_path):
    straight = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path / "a")
    for e in range(4):
        run_epoch(straight, e)
    first = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path / "b")
    for e in range(2):
        run_epoch(first, e)
    first.save(tmp_path / "ckpt")
    resumed = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path / "b")
    resumed.load(tmp_path / "ckpt")
    for e in range(2, 4):
        run_epoch(resumed, e)
    assert resumed.plan.to_json_dict() == straight.plan.to_json_dict()
    assert resumed.history == straight.history


def test_state_file_holds_arrays_without_pickle(tmp_path):
    state = {"a": np.arange(3), "b": {"c": [1, np.float32(2.5)], "d": None}, "e": np.zeros((2, 2), np.float16)}
    save_state(tmp_path / "s.npz", state)
    back = load_state(tmp_path / "s.npz")
    np.testing.assert_array_equal(back["a"], state["a"])
    assert back["b"] == {"c": [1, 2.5], "d": None} and back["e"].dtype == np.float16


def test_a_bug_in_mining_fails_the_run_instead_of_a_log_line(tmp_path):
    mining = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path)
    run_epoch(mining, 0)

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    mining.miner.end_epoch = broken
    with pytest.raises(MiningError, match="mining failed at the end of epoch 1 on rank 0: KeyError"):
        run_epoch(mining, 1)


def test_an_epoch_is_mined_at_most_once(tmp_path):
    mining = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path)
    run_epoch(mining, 0)
    with pytest.raises(MiningError, match="epoch 0 was already mined"):
        mining.end_epoch(0)


def test_a_dump_that_cannot_be_written_keeps_the_plan_and_the_run(tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the output folder should be")
    mining = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=blocked)
    for e in range(3):
        metrics = run_epoch(mining, e)
    assert metrics["hsm/active"] == 1.0 and metrics["hsm/dump_failed"] == 1.0
    assert mining.sampler.plan is not None and mining.sampler.plan.epoch == 2
    assert "could not write the dump of epoch 2" in caplog.text


@pytest.fixture
def host_copies(monkeypatch):
    """The sizes of every device-to-host copy (``Tensor.cpu``) made while the test runs."""
    import torch

    copies = []
    original = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        copies.append(self.numel())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    return copies


def test_losses_on_the_device_are_copied_to_the_host_once_per_flush(host_copies):
    import torch

    copies = host_copies
    log = ObservationLog()
    for micro_batch in range(4):  # one optimizer step of 4 accumulated micro-batches
        log.append([micro_batch * 2, micro_batch * 2 + 1], torch.tensor([1.0, 2.0]) * micro_batch, [0, 1], step=0)
    assert copies == []
    log.flush()
    assert copies == [8]  # one copy of the whole step
    log.append([9], [5.0], [2], step=1)  # host losses mix in
    cols = log.drain()
    assert cols["loss"].tolist() == [0.0, 0.0, 1.0, 2.0, 2.0, 4.0, 3.0, 6.0, 5.0] and cols["loss"].dtype == np.float32
    assert copies == [8]


def test_a_mean_loss_beside_the_recorded_one_travels_in_the_same_copy(host_copies):
    import torch

    copies = host_copies
    log = ObservationLog(with_mean_loss=True)
    for micro_batch in range(2):
        worst = torch.tensor([4.0, 6.0]) + micro_batch
        log.append([micro_batch * 2, micro_batch * 2 + 1], worst, [0, 1], step=0, mean_loss=worst / 2)
    cols = log.drain()
    assert copies == [8]  # both columns of both micro-batches, one copy
    assert cols["loss"].tolist() == [4.0, 6.0, 5.0, 7.0] and cols["mean_loss"].tolist() == [2.0, 3.0, 2.5, 3.5]
    # Empty, the log still has the column: every rank gathers the same columns.
    assert log.drain()["mean_loss"].size == 0 and "mean_loss" not in ObservationLog().drain()
    with pytest.raises(ValueError, match="expects mean_loss with every observation; got one without it"):
        log.append([1], [1.0], [1], step=1)
    with pytest.raises(ValueError, match="takes no mean_loss; got one"):
        ObservationLog().append([1], [1.0], [1], step=1, mean_loss=[0.5])


def test_the_trigger_monitors_the_mean_loss_when_another_statistic_is_recorded(tmp_path):
    settings = replace(SETTINGS, sample_loss={"statistic": "worst_tokens"})
    mining = HardMining(settings, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path)
    ids = sample_ids("target", np.arange(POOLS[0].size))
    mining.record(ids, np.full(ids.size, 9.0), np.arange(ids.size), step=0, mean_loss=np.full(ids.size, 2.0))
    metrics = mining.end_epoch(0)
    assert metrics["hsm/monitored"] == 2.0  # the training loss, not the worst tokens' mean
