"""The population file: every target sample's statistics, enough to recompute a selection."""

import numpy as np
import pytest

from hardmine.core import GuardSettings, HardSampleMiner, MiningSettings, SelectorSettings, sample_ids
from hardmine.core.audit import (
    EXCLUSION_RULES,
    SampleCatalog,
    add_slices,
    loss_summary,
    read_population,
    recompute_selection,
    write_population,
)

N = 200


def mine(selector: SelectorSettings, guard: GuardSettings, epochs: int = 5, seed: int = 0):
    """A simulated run: 20 hard samples, 10 noisy ones that never improve, 30 never seen before epoch 2."""
    miner = HardSampleMiner(
        {"target": N, "src": 50},
        ["target"],
        MiningSettings(start_epoch=1, plateau_delta=1.0, selector=selector, noise_guard=guard),
    )
    rng = np.random.default_rng(seed)
    reports = []
    for epoch in range(epochs):
        seen = np.arange(N) if epoch >= 2 else np.arange(30, N)
        loss = rng.uniform(0.5, 1.5, seen.size) * 0.8**epoch
        loss[seen < 20] *= 3.0
        noisy = (seen >= 20) & (seen < 30)
        loss[noisy] = 2.0  # flat, at the start level: the guard's at_start_level test
        ids = np.concatenate([sample_ids("target", seen), sample_ids("src", np.arange(50))])
        losses = np.concatenate([loss, rng.uniform(0.5, 1.5, 50) * 0.8**epoch]).astype(np.float32)
        order = rng.permutation(ids.size)
        steps = np.arange(ids.size) // 16
        miner.observe(ids[order], losses[order], epoch=epoch, steps=steps)
        reports.append(miner.end_epoch(epoch, population=True))
    return reports


@pytest.mark.parametrize(
    "selector",
    [
        SelectorSettings(mode="top_k", k=15, value=None),
        SelectorSettings(mode="percentile", value=0.1),
        SelectorSettings(mode="threshold", value=1.0),
    ],
)
@pytest.mark.parametrize("guard_on", [True, False])
def test_the_selection_is_recomputed_from_the_file_alone(tmp_path, selector, guard_on):
    guard = GuardSettings(enabled=guard_on, window=2, max_hard_streak=2)
    for report in mine(selector, guard)[1:]:
        path = write_population(report.population, tmp_path)
        population = read_population(path)
        chosen = recompute_selection(population)
        cols = population.columns
        expected = set(report.plan.base_idx["target"].tolist())
        assert set(cols["base_idx"][chosen].tolist()) == expected
        assert np.array_equal(chosen, cols["hard"])
        assert population.meta["num_hard"] == len(expected)
        sel = report.selection
        assert int(cols["eligible"].sum()) == sel.eligible
        assert int((cols["count"] > 0).sum()) == sel.observed
        # Every rule's count matches the selection's, and a sample is eligible exactly when no rule excluded it.
        for rule, count in sel.excluded.items():
            assert int(population.rule_mask(rule).sum()) == count, rule
        assert np.array_equal(cols["excluded"] == 0, cols["eligible"])


def test_flags_for_good_are_recorded_and_replayed(tmp_path):
    guard = GuardSettings(window=1, max_hard_streak=2, rule="start_level")
    reports = mine(SelectorSettings(mode="percentile", value=0.1), guard)
    last = reports[-1]
    pop = read_population(write_population(last.population, tmp_path))
    assert int(pop.rule_mask("flagged_earlier").sum()) == last.selection.excluded["flagged_earlier"] > 0
    assert np.array_equal(recompute_selection(pop), pop.columns["hard"])
    assert np.array_equal(pop.columns["excluded"] == 0, pop.columns["eligible"])


def test_rules_name_why_samples_were_left_out(tmp_path):
    guard = GuardSettings(window=2, max_hard_streak=2, rule="start_level")
    reports = mine(SelectorSettings(mode="top_k", k=15, value=None), guard)
    pop = reports[1].population  # epoch 1: samples 0..29 not seen yet
    base = pop.columns["base_idx"]
    assert set(base[pop.rule_mask("unobserved")].tolist()) == set(range(30))
    pop = reports[4].population
    assert set(range(20, 30)) <= set(base[pop.rule_mask("at_start_level")].tolist())  # the flat, noisy ones
    assert pop.rule_mask("hard_streak").sum() > 0  # hard in the plans of epochs 2 and 3
    assert pop.meta["rules"] == list(EXCLUSION_RULES)
    assert pop.meta["selector"] == {"mode": "top_k", "params": {"k": 15}}


def test_unobserved_samples_carry_only_their_own_rule():
    miner = HardSampleMiner(
        {"target": 10}, ["target"], MiningSettings(start_epoch=0, plateau_delta=1.0,
                                                   selector=SelectorSettings(mode="top_k", k=2, value=None))
    )
    for epoch in range(2):
        loss = (np.linspace(1, 2, 6) * 0.5**epoch).astype(np.float32)
        miner.observe(sample_ids("target", np.arange(6)), loss, epoch=epoch, steps=epoch)
        pop = miner.end_epoch(epoch, population=True).population
    unobserved = pop.rule_mask("unobserved")
    assert pop.columns["base_idx"][unobserved].tolist() == [6, 7, 8, 9]
    assert (pop.columns["excluded"][unobserved] == 1).all()
    assert np.isnan(pop.columns["last"][unobserved]).all() and np.isnan(pop.columns["loss"][unobserved]).all()
    assert np.isfinite(pop.columns["loss"][~unobserved]).all()


def test_slices_and_summary(tmp_path):
    reports = mine(SelectorSettings(mode="percentile", value=0.1), GuardSettings(enabled=False))
    report = reports[-1]
    catalog = SampleCatalog(
        source="t.jsonl", lines=list(range(1, N + 1)), images=[("x.png",)] * N,
        slices=["hard" if i < 20 else ("easy" if i % 2 else None) for i in range(N)],
    )
    add_slices(report.population, {"target": catalog})
    pop = read_population(write_population(report.population, tmp_path))
    assert pop.meta["slices"] == ["easy", "hard"]
    codes = pop.columns["slice"]
    assert (codes[pop.columns["base_idx"] < 20] == 1).all() and (codes == -1).sum() == (N - 20) // 2
    summary = loss_summary(report.selection)
    hist = summary["histogram"]
    assert sum(hist["all"]) == report.selection.observed and sum(hist["hard"]) == report.selection.num_hard
    assert len(hist["edges"]) == len(hist["all"]) + 1
    q = summary["quantiles"]
    assert q["hard"]["min"] == pytest.approx(summary["cut"]) and q["hard"]["q50"] > q["all"]["q50"]


def test_a_foreign_or_truncated_population_file_is_named(tmp_path):
    bad = tmp_path / "x.population.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="x.population.npz: not a readable hardmine population file"):
        read_population(bad)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.frombuffer(b'{"format": "else"}', np.uint8), sample_id=np.zeros(1))
    with pytest.raises(ValueError, match="other.npz: format 'else'"):
        read_population(other)
