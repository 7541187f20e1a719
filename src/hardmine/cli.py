"""The ``hardmine`` command: ``train``, ``validate``, ``demo``, ``make-data``, ``selfcheck``, ``inspect``.

Subcommands import what they need when they run, so ``hardmine --help``,
``validate`` of a bad config and the engine's self-check start fast and load
no model. Every input error (config, data, checkpoint, arguments) is a
:class:`hardmine.core.UserInputError`: printed as one message, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__


def _load(args: argparse.Namespace):
    from .config import load_config
    from .recipe.checks import CONFIG_CHECKS

    return load_config(args.config, args.overrides, checks=CONFIG_CHECKS)


def _validate(args: argparse.Namespace) -> int:
    from .config import dump_config

    cfg = _load(args)  # the config alone: no transformers, no data
    print(dump_config(cfg), end="")
    if args.config_only:
        return 0
    from .recipe.checks import check_data

    checked = check_data(cfg)
    # YAML comments, so that the output stays a loadable config.
    print("# data checked: every record, every image, every encoded length")
    for line in checked.summary(cfg.data.max_length):
        print(f"#   {line}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .recipe.run import train_and_leave

    result = train_and_leave(_load(args), resume_from_checkpoint=args.resume)
    if result is None:  # not the main process
        return 0
    print(f"hardmine: run finished; everything is in {result.output_dir}")
    print(f"  final model:  {result.final_dir}")
    if result.logging_dir is not None:
        print(f"  TensorBoard:  tensorboard --logdir {result.logging_dir}")
    dumps = sorted(result.output_dir.glob("hard_samples_epoch_*.json"))
    if dumps:
        print(f"  hard samples: {len(dumps)} dump(s), {result.output_dir}/hard_samples_epoch_*.json")
    if result.metrics:
        print(json.dumps(result.metrics, indent=1))
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from .data.synth import make_dataset

    fusion = make_dataset(
        Path(args.output_dir),
        seed=args.seed,
        target_size=args.target_size,
        source_sizes={"shapes_a": args.source_size, "shapes_b": args.source_size},
        val_size=args.val_size,
    )
    print(f"hardmine: wrote the corpus; fusion config: {fusion}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .recipe.demo import run_demo

    return run_demo(Path(args.output_dir), fast=args.fast)


def _selfcheck(args: argparse.Namespace) -> int:
    from .selfcheck import Scenario, format_selfcheck, run_selfcheck

    for key in ("samples", "epochs"):
        if getattr(args, key) < 1:
            print(f"hardmine selfcheck: --{key} must be >= 1, got {getattr(args, key)}", file=sys.stderr)
            return 2
    result = run_selfcheck(Scenario(size=args.samples, epochs=args.epochs, seed=args.seed))
    print(json.dumps(result) if args.json else format_selfcheck(result))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .inspect.command import InspectOptions, inspect_run

    options = InspectOptions(
        run_dir=args.run_dir, json=args.json, plot=args.plot, sheet=args.sheet, top=args.top, epoch=args.epoch,
        against=args.against,
    )
    return inspect_run(options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hardmine", description="Hard-sample mining for fine-tuning.")
    parser.add_argument("--version", action="version", version=f"hardmine {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    # The deepspeed launcher passes --local_rank before the subcommand; LOCAL_RANK
    # in the environment says the same, and that is what hardmine reads.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, help_text in (
        ("train", _train, "train from a YAML config"),
        ("validate", _validate, "print the resolved config, or every problem in it"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", required=True, help="the YAML config")
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config values")
        if name == "train":
            p.add_argument("--resume", default=None, help="a checkpoint directory to resume from")
        else:
            p.add_argument("--config-only", action="store_true", help="check the config alone, not the data")

        p.set_defaults(func=func)

    p = sub.add_parser("demo", help="generate a synthetic corpus and train the tiny VL model on it")
    p.add_argument("--output-dir", default="runs/demo", help="where data, logs and checkpoints go (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="a smaller corpus, 3 epochs, mining from the end of epoch 1 (used by the tests)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("make-data", help="write the synthetic dense-caption corpus (target + two sources)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-size", type=int, default=600)
    p.add_argument("--source-size", type=int, default=300)
    p.add_argument("--val-size", type=int, default=60)
    p.set_defaults(func=_make_data)

    p = sub.add_parser("selfcheck", help="mine simulated losses with and without hardmine's safeguards")
    p.add_argument("--samples", type=int, default=2000, help="simulated pool size (default 2000)")
    p.add_argument("--epochs", type=int, default=10, help="simulated epochs (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_selfcheck)

    p = sub.add_parser(
        "inspect",
        help="what mining picked and whether it helped: tables, a figure, a contact sheet",
        description="Read a run's output folder (dumps, epoch log, trainer_state.json); no model is loaded.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run's output_dir (where hard_samples_epoch_*.json are)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="machine-readable report: to stdout, or to FILE")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="one figure: loss distributions, hard set, curves, slices")
    p.add_argument("--sheet", type=Path, metavar="FILE.png", help="contact sheet of the hardest samples with their ground truth")
    p.add_argument("--top", type=int, default=10, help="how many hardest samples to list and draw (default 10)")
    p.add_argument("--epoch", type=int, default=None, help="whose hardest samples to list and draw (default: the last mining epoch)")
    p.add_argument("--against", type=Path, metavar="OTHER_RUN", help="compare eval and slice losses with another run")
    p.set_defaults(func=_inspect)
    return parser


def _console_logging() -> None:
    """hardmine's one-line summaries (mining per epoch) go to the console."""
    import logging

    logger = logging.getLogger("hardmine")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .core.errors import UserInputError

    _console_logging()
    try:
        return args.func(args)
    except UserInputError as e:
        # Bad config, data, paths or arguments: one message that names the
        # file:line or key, no traceback (unless --debug), exit 2.
        if args.debug:
            raise
        print(f"hardmine {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"hardmine {args.command}: interrupted", file=sys.stderr)
        return 130
