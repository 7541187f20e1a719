"""What the mining stage writes for auditing: dump rows, the population file, the epoch log, hsm/epoch."""

import json
from dataclasses import replace

import numpy as np

from hardmine.core import GuardSettings, MiningSettings, Pool, SelectorSettings, sample_ids
from hardmine.core.audit import SampleCatalog, read_population, recompute_selection
from hardmine.train.mining import EPOCH_LOG, HardMining
from hardmine.train.sampler import ScheduleSampler
from simulation import simulate_epoch

SETTINGS = MiningSettings(
    start_epoch=1, plateau_delta=0.9,
    selector=SelectorSettings(mode="top_k", k=5, value=None),
    noise_guard=GuardSettings(enabled=False),  # the simulated hard samples stay hard: none is a wrong label
)
POOLS = [Pool("target", 40), Pool("src", 20, 0.5)]
CATALOG = SampleCatalog(
    source="/data/target.jsonl", lines=[i + 2 for i in range(40)],  # a blank first line
    images=[(f"/data/img/{i}.png",) for i in range(40)], slices=["hard" if i < 8 else "easy" for i in range(40)],
)


def run_epochs(mining, epochs):
    return [simulate_epoch(mining, epoch, spread=0.01) for epoch in range(epochs)]


def test_dumps_population_and_epoch_log(tmp_path):
    mining = HardMining(replace(SETTINGS, dump_population=True), POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path,
                        catalogs={"target": CATALOG})
    metrics = run_epochs(mining, 3)
    assert [m["hsm/epoch"] for m in metrics] == [0.0, 1.0, 2.0]
    assert [m.get("hsm/selection_mode") for m in metrics] == [None, "top_k", "top_k"]  # a name beside the metrics
    dump = json.loads((tmp_path / "hard_samples_epoch_2.json").read_text())
    assert dump["format"] == "hardmine.hard_samples/2" and dump["population"] == "hard_samples_epoch_2.population.npz"
    assert dump["datasets"] == {"target": {"size": 40, "source": "/data/target.jsonl", "slices": {"easy": 32, "hard": 8}}}
    assert dump["decision"]["eligible"] == metrics[2]["hsm/eligible"] and dump["decision"]["monitor"] == "train_loss"
    for row in dump["samples"]:
        assert row["line"] == row["base_idx"] + 2 and row["images"] == [f"/data/img/{row['base_idx']}.png"]
        assert row["slice"] == "hard" and row["count"] >= 1 and row["last_loss"] > 0 and row["weight"] == 3.0
    population = read_population(tmp_path / dump["population"])
    chosen = recompute_selection(population)
    assert set(population.columns["base_idx"][chosen].tolist()) == {r["base_idx"] for r in dump["samples"]}
    assert population.meta["slices"] == ["easy", "hard"]
    log = [json.loads(line) for line in (tmp_path / EPOCH_LOG).read_text().splitlines()]
    assert [(r["epoch"], r["selection_mode"], r["hsm/active"]) for r in log] == [
        (0, None, 0.0), (1, "top_k", 1.0), (2, "top_k", 1.0)
    ]


def test_histograms_for_tensorboard_and_no_population_by_default(tmp_path):
    mining = HardMining(SETTINGS, POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path)
    run_epochs(mining, 1)
    assert mining.histograms is None  # inactive epoch: nothing to plot
    mining.sampler.set_epoch(1)  # one more epoch on the same stage, with made-up losses
    refs = list(mining.sampler)
    ids = [int(sample_ids(POOLS[r.pool].name, [r.base_idx])[0]) for r in refs]
    mining.record(ids, np.linspace(1, 2, len(ids)), [r.position for r in refs], step=200)
    mining.end_epoch(1)
    hist = mining.histograms
    assert hist["hsm/aggregated_loss_hard"].size == 5 and hist["hsm/aggregated_loss_target"].size == 40
    assert hist["hsm/aggregated_loss_hard"].min() >= np.median(hist["hsm/aggregated_loss_target"])
    dump = json.loads((tmp_path / "hard_samples_epoch_1.json").read_text())
    assert dump["population"] is None and "source" not in dump["samples"][0]  # no catalog: ids only
    assert not list(tmp_path.glob("*.npz"))


def test_a_finished_stage_logs_it_writes_no_dump_and_hands_the_sampler_an_empty_plan(tmp_path):
    mining = HardMining(replace(SETTINGS, max_active_epochs=1), POOLS, ScheduleSampler(POOLS, seed=0), output_dir=tmp_path)
    metrics = run_epochs(mining, 4)
    assert [(m["hsm/active"], m["hsm/finished"]) for m in metrics] == [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 1.0)]
    assert sorted(p.name for p in tmp_path.glob("hard_samples_epoch_*.json")) == ["hard_samples_epoch_1.json"]
    assert mining.sampler.plan.num_hard == 0  # every target sample once an epoch again
    log = [json.loads(line) for line in (tmp_path / EPOCH_LOG).read_text().splitlines()]
    assert [r["hsm/finished"] for r in log] == [0.0, 0.0, 1.0, 1.0]
