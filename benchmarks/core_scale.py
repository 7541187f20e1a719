"""Scale of the mining engine: update, selection, schedule and memory at N samples.

    python benchmarks/core_scale.py --samples 10000000

Prints one JSON line. Targets (issue 2, 2-core CPU, N = 10M): update <= 0.1 us
per sample observed (batches of 1,024), any selection <= 1 s, a full epoch
schedule <= 1.5 s, tracker state <= 32 bytes per sample.

* ``update_us_per_sample``: one epoch of observations in schedule order, fed to
  ``LossTracker.update`` in batches of ``--batch`` (one training step each);
  the median over ``--repeats`` epochs.
* ``ingest_us_per_sample``: the same epoch given in one call (how rank 0
  ingests an epoch's gathered records).
* ``select_s``: the slowest of the three selectors (medians), guard on.
* ``schedule_s``: median time of a full epoch schedule with a plan (10% of the
  target at weight 3) and two fusion sources at ratio 0.25.
* ``bytes_per_sample``: tracker arrays / N.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from hardmine.core import HardSamplePlan, MiningSettings, Pool, SelectorSettings, build_epoch_schedule, sample_ids
from hardmine.core.selection import select_hard
from hardmine.core.tracker import LossTracker


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3, help="epochs fed / timing repeats (>= 3 so the guard can judge)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.samples
    rng = np.random.default_rng(args.seed)
    name = "target"
    pools = [Pool(name, n), Pool("source_a", n // 2, 0.25), Pool("source_b", n // 3, 0.25)]

    # hardmine's defaults: the tracker keeps what the default guard reads.
    defaults = MiningSettings(start_epoch=0)
    guard = defaults.noise_guard

    def fresh_tracker() -> LossTracker:
        return LossTracker({name: n}, defaults.tracker_settings())

    tracker = fresh_tracker()
    ids = sample_ids(name, rng.permutation(n))
    base_loss = rng.gamma(2.0, 1.0, n).astype(np.float32)
    steps_per_epoch = -(-n // args.batch)
    update_times = []
    for epoch in range(args.repeats):
        # Most samples learn (loss falls 20% an epoch), so the guard passes them.
        losses = base_loss * np.float32(0.8**epoch) * rng.lognormal(0.0, 0.05, n).astype(np.float32)
        t0 = time.perf_counter()
        for i, start in enumerate(range(0, n, args.batch)):
            stop = start + args.batch
            tracker.update(ids[start:stop], losses[start:stop], epoch=epoch, steps=epoch * steps_per_epoch + i)
        tracker.flush()  # the fold is part of the cost of an update
        update_times.append(time.perf_counter() - t0)
        tracker.close_epoch(epoch)
    update_us = statistics.median(update_times) / n * 1e6

    steps = np.arange(n, dtype=np.int64) // args.batch
    ingest_times = []
    for _ in range(args.repeats):
        t = fresh_tracker()
        t0 = time.perf_counter()
        t.update(ids, losses, epoch=0, steps=steps)
        t.flush()
        ingest_times.append(time.perf_counter() - t0)
    ingest_us = statistics.median(ingest_times) / n * 1e6

    epoch = args.repeats - 1
    select_times = {}
    selections = {}
    for mode, settings in {
        "top_k": SelectorSettings(mode="top_k", k=n // 10, value=None),
        "percentile": SelectorSettings(mode="percentile", value=0.1),
        "threshold": SelectorSettings(mode="threshold", value=float(np.quantile(losses, 0.9))),
    }.items():
        def run(mode=mode, settings=settings):
            selections[mode] = select_hard(tracker, [name], epoch, settings, guard)

        select_times[mode] = _time(run, args.repeats)

    sel = selections["percentile"]
    plan = HardSamplePlan(epoch=epoch, version=1, hard_weight=3.0, mode=sel.mode, params=sel.params,
                          base_idx=dict(sel.datasets), losses=dict(sel.losses))
    rested = np.flatnonzero(rng.random(n) < 1 / 6)
    schedule_s = _time(lambda: build_epoch_schedule(pools, plan, seed=1, epoch=epoch + 1, rested=rested), args.repeats)
    plain_s = _time(lambda: build_epoch_schedule(pools, None, seed=1, epoch=epoch + 1), args.repeats)

    print(json.dumps({
        "benchmark": "core_scale",
        "samples": n,
        "batch": args.batch,
        "repeats": args.repeats,
        "update_us_per_sample": round(update_us, 4),
        "ingest_us_per_sample": round(ingest_us, 4),
        "select_s": round(max(select_times.values()), 4),
        "select_s_by_mode": {k: round(v, 4) for k, v in select_times.items()},
        "num_hard": sel.num_hard,
        "schedule_s": round(schedule_s, 4),
        "schedule_no_plan_s": round(plain_s, 4),
        "bytes_per_sample": round(tracker.nbytes / n, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
