"""Engine self-check: mining on simulated losses, with and without the safeguards.

No model is trained: each sample's loss is drawn from a small model of
training, so the check runs in a second and shows what the engine does.

* ``easy`` samples (most of the pool) start at loss 1.0 x level.
* ``hard`` samples (the slice mining should find) start at 2.2 x level and
  learn only as they are seen: each exposure lowers their own factor by 8%.
* ``noisy`` samples (mislabelled) sit at a flat raw loss that nothing lowers.
* The training loss level falls through every epoch towards a plateau, so a sample seen early
  in an epoch looks harder than the same sample seen late (progress bias).

The same simulated run is mined twice: with hardmine's defaults (progress
correction and noise guard on) and naively (both off). Reported per epoch:
how many samples were mined, and which share of them were hard or noisy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .core import HardSampleMiner, MiningSettings, Pool, build_epoch_schedule, sample_ids

TARGET = "target"


@dataclass(frozen=True)
class Scenario:
    size: int = 2000
    hard_share: float = 0.1
    noisy_share: float = 0.05
    epochs: int = 10
    batch: int = 16
    seed: int = 0


def simulate(settings: MiningSettings, scenario: Scenario = Scenario()) -> list[dict]:
    """Run the simulated training; one summary dict per epoch."""
    rng = np.random.default_rng([scenario.seed, 1])
    n = scenario.size
    kind = np.zeros(n, np.int8)  # 0 easy, 1 hard, 2 noisy
    shuffled = rng.permutation(n)
    n_hard, n_noisy = int(n * scenario.hard_share), int(n * scenario.noisy_share)
    kind[shuffled[:n_hard]] = 1
    kind[shuffled[n_hard : n_hard + n_noisy]] = 2
    factor = np.where(kind == 1, 2.2, 1.0)
    noisy_loss = 2.5
    miner = HardSampleMiner({TARGET: n}, [TARGET], settings)
    pools = [Pool(TARGET, n)]
    steps_per_epoch = -(-n // scenario.batch)
    rested = None
    step = 0
    out = []
    for epoch in range(scenario.epochs):
        schedule = build_epoch_schedule(pools, miner.plan, scenario.seed, epoch, rested)
        rested = schedule.sat_out
        for start in range(0, len(schedule), scenario.batch):
            base = schedule.base_idx[start : start + scenario.batch]
            level = 0.5 + 1.5 * np.exp(-step / steps_per_epoch)  # plateaus at 0.5
            noise = rng.lognormal(0.0, 0.1, base.size)
            loss = np.where(kind[base] == 2, noisy_loss, factor[base] * level) * noise
            miner.observe(sample_ids(TARGET, base), loss, epoch=epoch, steps=step)
            seen_hard = base[kind[base] == 1]
            np.multiply.at(factor, seen_hard, 0.92)
            step += 1
        report = miner.end_epoch(epoch)
        row = {"epoch": epoch, "active": report.active, "num_hard": 0, "hard_share": None, "noisy_share": None}
        if report.selection is not None and report.selection.num_hard:
            chosen = report.selection.datasets[TARGET]
            row.update(
                num_hard=int(chosen.size),
                hard_share=round(float(np.mean(kind[chosen] == 1)), 3),
                noisy_share=round(float(np.mean(kind[chosen] == 2)), 3),
            )
        out.append(row)
    return out


def naive(settings: MiningSettings) -> MiningSettings:
    """The same settings with progress correction and the noise guard off."""
    return replace(
        settings,
        aggregation=replace(settings.aggregation, progress_correction=False),
        noise_guard=replace(settings.noise_guard, enabled=False),
    )


def run_selfcheck(scenario: Scenario = Scenario()) -> dict:
    defaults = MiningSettings()
    return {
        "scenario": scenario.__dict__,
        "base_rates": {"hard": scenario.hard_share, "noisy": scenario.noisy_share},
        "hardmine": simulate(defaults, scenario),
        "naive": simulate(naive(defaults), scenario),
    }


def format_selfcheck(result: dict) -> str:
    lines = [
        "hardmine engine self-check (simulated losses; no model is trained)",
        f"pool: {result['scenario']['size']} samples, {result['base_rates']['hard']:.0%} hard, "
        f"{result['base_rates']['noisy']:.0%} mislabelled",
        "",
        f"{'epoch':>5}  {'hardmine: mined / hard / noisy':>32}  {'naive: mined / hard / noisy':>29}",
    ]
    for ours, theirs in zip(result["hardmine"], result["naive"]):
        lines.append(f"{ours['epoch']:>5}  {_cell(ours):>32}  {_cell(theirs):>29}")
    return "\n".join(lines)


def _cell(row: dict) -> str:
    if not row["active"]:
        return "inactive"
    if not row["num_hard"]:
        return "0 mined"
    return f"{row['num_hard']} / {row['hard_share']:.0%} / {row['noisy_share']:.0%}"


__all__ = ["Scenario", "format_selfcheck", "naive", "run_selfcheck", "simulate"]
