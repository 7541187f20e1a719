"""The ``hardmine`` command.

Subcommands import what they need when they run, so ``hardmine --help`` and
the engine's self-check start fast and never load torch.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _selfcheck(args: argparse.Namespace) -> int:
    from .selfcheck import Scenario, format_selfcheck, run_selfcheck

    result = run_selfcheck(Scenario(size=args.samples, epochs=args.epochs, seed=args.seed))
    print(json.dumps(result) if args.json else format_selfcheck(result))
    return 0


def _demo(args: argparse.Namespace) -> int:
    # The training demo (tiny VL model on synthetic dense captions) is built on
    # the training entry point; until it lands, the demo shows the engine.
    print("hardmine demo: the training demo is not built yet; running the engine self-check.\n")
    return _selfcheck(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hardmine", description="Hard-sample mining for fine-tuning.")
    parser.add_argument("--version", action="version", version=f"hardmine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("selfcheck", _selfcheck, "mine simulated losses with and without hardmine's safeguards"),
        ("demo", _demo, "the end-to-end demo (for now: the engine self-check)"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--samples", type=int, default=2000, help="simulated pool size (default 2000)")
        p.add_argument("--epochs", type=int, default=10, help="simulated epochs (default 10)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key in ("samples", "epochs"):
        if getattr(args, key, 1) < 1:
            print(f"hardmine {args.command}: --{key} must be >= 1, got {getattr(args, key)}", file=sys.stderr)
            return 2
    return args.func(args)
