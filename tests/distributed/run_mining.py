"""One rank of a 2-rank mining run (launched by torchrun from test_distributed.py).

Trains the tiny VL model on the synthetic fusion corpus with mining active from
the end of epoch 1, and writes what each rank saw to OUT/rank{r}.json: per
epoch the plan digest, the schedule digest, the positions this rank processed,
and on rank 0 the observations the engine was fed (to recompute the plan in one
process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

from hardmine.config import load_config
from hardmine.train import distributed
from hardmine.recipe.run import CHECKS, run_training
from hardmine.train.mining import HardMining


def digest(plan) -> str | None:
    if plan is None:
        return None
    return hashlib.sha256(json.dumps(plan.to_json_dict(), sort_keys=True).encode()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fusion", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--zero2", action="store_true")
    ap.add_argument("--save", action="store_true", help="checkpoint every epoch")
    ap.add_argument("--resume", default=None, help="checkpoint to resume from")
    ap.add_argument("--worst-tokens", action="store_true", help="record each sample's worst tokens' mean (and its mean)")
    ap.add_argument("--trigger", default="plateau", help="custom.hard_sample_mining.trigger")
    opts = ap.parse_args()
    out = Path(opts.out)

    record = {"epochs": {}, "fed": {}}
    original_record, original_end = HardMining.record, HardMining.end_epoch

    def spy_record(self, sample_id, loss, position, step, mean_loss=None):
        epoch = self.sampler.epoch
        record["epochs"].setdefault(str(epoch), {}).setdefault("positions", []).extend(int(p) for p in position)
        return original_record(self, sample_id, loss, position, step, mean_loss)

    def spy_end(self, epoch, monitored=None):
        if self.miner is not None:
            observe = self.miner.observe

            def spy_observe(ids, losses, *, epoch, steps):
                record["fed"][str(epoch)] = {"ids": ids.tolist(), "losses": losses.tolist(), "steps": steps.tolist()}
                return observe(ids, losses, epoch=epoch, steps=steps)

            self.miner.observe = spy_observe
        metrics = original_end(self, epoch, monitored)
        entry = record["epochs"].setdefault(str(epoch), {})
        entry["plan"] = digest(self.sampler.plan)
        entry["next_schedule"] = self.sampler.schedule(epoch + 1).digest()
        entry["this_schedule_len"] = len(self.sampler.schedule(epoch))
        if self.miner is not None:
            entry["observations"] = int(self.miner.tracker.stats["observations"])
            entry["monitored"] = metrics.get("hsm/monitored")
        return metrics

    HardMining.record, HardMining.end_epoch = spy_record, spy_end
    tree = {
        "model": {"model": "builtin:tiny-qwen2-vl"},
        "training": {
            "output_dir": str(out / "run"),
            "num_train_epochs": 3,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 2,
            "learning_rate": 2e-3,
            "logging_steps": 2,
            "report_to": [],
            "disable_tqdm": True,
            "seed": 0,
            "use_cpu": True,
            "ddp_backend": "gloo",
            "save_strategy": "epoch" if opts.save or opts.resume else "no",
            "ddp_find_unused_parameters": False,
        },
        "data": {"num_workers": 0, "max_length": 512},
        "deepspeed": {"enabled": opts.zero2, "config": "zero2"},
        "custom": {
            "fusion_config": opts.fusion,
            "augmentation": {"enabled": True},
            "hard_sample_mining": {
                "enabled": True,
                "start_epoch": 1,
                "plateau_delta": 1.0,
                "trigger": opts.trigger,
                "noise_guard": {"enabled": False},
                "selector": {"mode": "top_k", "k": 6},
                "dump": True,
                **({"sample_loss": {"statistic": "worst_tokens"}} if opts.worst_tokens else {}),
            },
        },
    }
    # Every rank writes the same file and reads it back at once: each writes its own
    # copy and renames it into place (atomic), so that no rank reads a file another
    # rank is halfway through rewriting (a truncated config, missing keys). The copy
    # is named by process id: the process group does not exist yet, so every rank
    # would call itself rank 0.
    config_path = out / "config.yaml"
    own_copy = out / f"config.{os.getpid()}.yaml"
    own_copy.write_text(yaml.safe_dump(tree))
    os.replace(own_copy, config_path)
    result = run_training(load_config(config_path, checks=CHECKS), resume_from_checkpoint=opts.resume)
    record["global_step"] = result.trainer.state.global_step
    record["deepspeed"] = bool(result.trainer.is_deepspeed_enabled)
    record["rank"] = distributed.current_ranks().rank
    record["world_size"] = distributed.current_ranks().world_size
    (out / f"rank{distributed.current_ranks().rank}.json").write_text(json.dumps(record))
    distributed.shutdown()


if __name__ == "__main__":
    main()
    # The results are on disk and the process group is closed. Skip the
    # interpreter's teardown: DeepSpeed's CPU communication threads have been
    # seen to abort it ("terminate called without an active exception") after
    # all the work was done, which would fail the launch for no real reason.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
