"""What mining costs per training step: hardmine's loss path against the stock Trainer's.

For each configuration (tiny text and tiny Qwen2-VL, padded and packed) one
fixed batch is run through ``Trainer.compute_loss`` + backward by

* ``stock``: a plain ``transformers.Trainer`` (the model's own loss), and
* ``mining``: a :class:`hardmine.train.trainer.HardmineTrainer` with mining on
  (tiled LM head at supervised positions, per-sample losses recorded),
* ``worst_tokens``: the same recording each sample's mean of its 3 highest
  token losses (``sample_loss.statistic: worst_tokens``: two sorts of the
  step's supervised tokens more),

interleaved (the arms take turns going first, a different one each round) so
that machine noise hits all alike; the results are ratios of medians to
``stock``. Peak memory is measured per arm in a fresh
subprocess (peak RSS of the process, which holds the model, the batch and one
step's activations, so the ratio understates the saving on the loss alone).

    python benchmarks/overhead.py [--repeats 30] [--out benchmarks/results/overhead.json]

Prints one JSON object and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

CONFIGS = ("text-padded", "text-packed", "vl-padded", "vl-packed")
#: TRL's SFTTrainer with and without mining (run where trl is installed: .venv-trl).
TRL_CONFIGS = ("trl-text",)
ARMS = ("stock", "mining", "worst_tokens")


def arm_settings(arm: str):
    """The MiningSettings of a mining arm (no dumps: a step's cost only)."""
    from hardmine.core import MiningSettings

    worst = {"sample_loss": {"statistic": "worst_tokens"}} if arm == "worst_tokens" else {}
    return MiningSettings(dump=False, **worst)


def build_trl(arm: str, workdir: str):
    """(trainer, batch): TRL's SFTTrainer (its fused loss and metrics), with hardmine's mining or without."""
    import random

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from hardmine.models import load_model_and_processor
    from hardmine.train.library import HardMiningMixin

    class MinedSFTTrainer(HardMiningMixin, SFTTrainer):
        pass

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 12))) for _ in range(64)]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"reverse {w}"}],
                                  "completion": [{"role": "assistant", "content": w[::-1]}]} for w in words])
    model, tokenizer, _ = load_model_and_processor("builtin:tiny-text")
    args = SFTConfig(output_dir=workdir, report_to=[], use_cpu=True, disable_tqdm=True, per_device_train_batch_size=8)
    if arm == "stock":
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    else:
        trainer = MinedSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                  mining=arm_settings(arm))
    model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    return trainer, trainer._prepare_inputs(batch)


def build(config: str, arm: str, workdir: str):
    """(trainer, batch) for one configuration and arm; the batch is already on the trainer's device."""
    if config in TRL_CONFIGS:
        return build_trl(arm, workdir)
    import numpy as np
    from PIL import Image
    from transformers import Trainer, TrainingArguments

    from hardmine.core import Pool
    from hardmine.data.collate import PackedCollator, PaddedCollator, split_metadata
    from hardmine.data.encode import dense_caption_messages, encode_chat
    from hardmine.models import load_model_and_processor
    from hardmine.train.library import MetadataCollator, MinedDataset
    from hardmine.train.mining import HardMining
    from hardmine.train.sampler import ScheduleSampler
    from hardmine.train.trainer import HardmineTrainer

    task, layout = config.split("-")
    model, processor, _ = load_model_and_processor("builtin:tiny-qwen2-vl" if task == "vl" else "builtin:tiny-text")
    rng = np.random.default_rng(0)
    features = []
    for i in range(8):
        words = " ".join(rng.choice(["red", "blue", "square", "line", "green", "triangle"], size=int(rng.integers(4, 12))))
        if task == "vl":
            image = Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
            objects = json.dumps([{"desc": words, "bbox_2d": rng.integers(0, 1001, 4).tolist()}])
            features.append(encode_chat(processor, dense_caption_messages(objects), [image]))
        else:
            chat = [{"role": "user", "content": f"Reverse: {words}"}, {"role": "assistant", "content": words[::-1]}]
            features.append(encode_chat(processor, chat))
    tokenizer = getattr(processor, "tokenizer", processor)
    collate = PackedCollator(model=model) if layout == "packed" else PaddedCollator(pad_token_id=tokenizer.pad_token_id)
    dataset = MinedDataset(features, "target")
    batch = MetadataCollator(collate)([dataset[i] for i in range(len(dataset))])
    args = TrainingArguments(output_dir=workdir, report_to=[], use_cpu=True, remove_unused_columns=False, disable_tqdm=True)
    if arm == "stock":
        trainer = Trainer(model=model, args=args)
        batch, _ = split_metadata(batch)
    else:
        pools = [Pool("target", len(dataset))]
        sampler = ScheduleSampler(pools, seed=0)
        mining = HardMining(arm_settings(arm), pools, sampler, output_dir=workdir)
        trainer = HardmineTrainer(model=model, args=args, train_sampler=sampler, mining=mining)
    model.train()
    return trainer, trainer._prepare_inputs(batch)


def step(trainer, batch) -> None:
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    trainer.model.zero_grad(set_to_none=True)


def time_config(config: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        arms = {arm: build(config, arm, f"{work}/{arm}") for arm in ARMS}
        for arm in arms.values():  # warm-up: allocator, autograd graph caches
            for _ in range(3):
                step(*arm)
        times: dict[str, list[float]] = {name: [] for name in ARMS}
        for rep in range(repeats):
            # Rotate which arm goes first, so none always runs on a warmer cache.
            shift = rep % len(ARMS)
            for name in ARMS[shift:] + ARMS[:shift]:
                start = time.perf_counter()
                step(*arms[name])
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "step_ms_median": {name: round(1000 * value, 3) for name, value in medians.items()},
        "time_ratio": round(medians["mining"] / medians["stock"], 4),
        "time_ratio_worst_tokens": round(medians["worst_tokens"] / medians["stock"], 4),
        "repeats": repeats,
    }


def peak_rss_mib(config: str, arm: str, steps: int = 5) -> float:
    """Peak RSS of a fresh process that builds one arm and runs ``steps`` steps."""
    code = (
        "import resource, sys, tempfile\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from overhead import build, step\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        f"    t, b = build({config!r}, {arm!r}, d)\n"
        f"    [step(t, b) for _ in range({steps})]\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # Linux reports KiB


def mining_step_at_scale(size: int, epochs: int = 3) -> dict:
    """The end-of-epoch mining work on ``size`` target samples: observe, select, plan, dump, schedule.

    Time of each part at the last epoch (mining active from epoch 1), and the
    peak of memory allocated during that epoch end (numpy reports its
    allocations to tracemalloc), beside the tracker's own footprint.
    """
    import tracemalloc

    import numpy as np

    from hardmine.core import HardSampleMiner, MiningSettings, Pool, SelectorSettings, build_epoch_schedule, sample_ids

    settings = MiningSettings(start_epoch=1, plateau_delta=10.0,
                              selector=SelectorSettings(mode="percentile", value=0.1))
    pools = [Pool("target", size), Pool("source", size // 4, 0.25)]
    miner = HardSampleMiner({"target": size}, ["target"], settings)
    rng = np.random.default_rng(0)
    ids = sample_ids("target", np.arange(size))
    steps = np.repeat(np.arange(size // 1024 + 1), 1024)[:size]
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as out:
        for epoch in range(epochs):
            losses = rng.gamma(2.0, 0.5, size).astype(np.float32) * (0.9**epoch)
            last = epoch == epochs - 1
            if last:
                tracemalloc.start()
            start = time.perf_counter()
            miner.observe(ids, losses, epoch=epoch, steps=steps + epoch * (size // 1024 + 1))
            observed = time.perf_counter()
            report = miner.end_epoch(epoch)
            selected = time.perf_counter()
            if report.plan is not None:
                report.plan.dump(out)
            dumped = time.perf_counter()
            schedule = build_epoch_schedule(pools, miner.plan, seed=0, epoch=epoch + 1)
            scheduled = time.perf_counter()
            if last:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                timings = {"observe_s": observed - start, "select_and_plan_s": selected - observed,
                           "dump_s": dumped - selected, "schedule_s": scheduled - dumped}
    return {
        "target_samples": size,
        "hard": int(report.plan.num_hard) if report.plan is not None else 0,
        "schedule_length": len(schedule),
        **{k: round(v, 4) for k, v in timings.items()},
        "total_s": round(sum(timings.values()), 4),
        "peak_alloc_mib": round(peak / 2**20, 1),
        "tracker_bytes_per_sample": round(miner.tracker.nbytes / size, 1),
    }


def git_state() -> tuple[str, bool]:
    """The commit the measurement runs, and whether its code differs from it (results and docs aside)."""
    from quality import _git, code_is_dirty  # one provenance rule for every benchmark (this folder is on the path)

    return _git("rev-parse", "HEAD") or "unknown", code_is_dirty()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS + TRL_CONFIGS)
    parser.add_argument("--out", default="benchmarks/results/overhead.json")
    parser.add_argument("--scale", type=int, default=1_000_000, help="target samples of the end-of-epoch measurement")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    commit, dirty = git_state()  # at the start: the code that is measured, not what HEAD is by the end
    results = {}
    for config in args.configs:
        row = time_config(config, args.repeats)
        memory = {arm: round(peak_rss_mib(config, arm), 1) for arm in ARMS}
        row["peak_rss_mib"] = memory
        row["memory_ratio"] = round(memory["mining"] / memory["stock"], 4)
        row["memory_ratio_worst_tokens"] = round(memory["worst_tokens"] / memory["stock"], 4)
        results[config] = row
        print(f"{config}: time x{row['time_ratio']} (worst tokens x{row['time_ratio_worst_tokens']}), "
              f"peak RSS x{row['memory_ratio']} (x{row['memory_ratio_worst_tokens']})", file=sys.stderr)
    scale = mining_step_at_scale(args.scale)
    print(f"end of epoch at {args.scale:,} samples: {scale['total_s']} s, peak {scale['peak_alloc_mib']} MiB", file=sys.stderr)
    report = {
        "benchmark": "hardmine.overhead/1",
        "commit": commit,
        "dirty": dirty,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": "cpu"},
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
        "mining_step_at_scale": scale,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
