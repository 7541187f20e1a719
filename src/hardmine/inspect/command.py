"""``hardmine inspect RUN_DIR``: read, compute everything, then write.

Every output is computed in memory first and written only when all inputs
were read, each atomically (a temporary file in the destination folder, then
a rename): a bad input leaves no file, half-written or otherwise.

A missing image in ``--sheet`` is drawn as a placeholder and the sheet is
written; the command then still reports the missing files and exits with
status 2, so a script notices.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..core.files import write_atomically as atomic_write
from .report import compare_runs, format_comparison, format_report, run_report
from .run import InspectError, load_run


@dataclass(frozen=True)
class InspectOptions:
    run_dir: Path
    json: str | None = None  # "-": stdout instead of the text report; else a file
    plot: Path | None = None
    sheet: Path | None = None
    top: int = 10
    epoch: int | None = None  # whose hardest samples to list and draw; None: the last mining epoch
    against: Path | None = None


def write_atomically(path: Path, data: bytes) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InspectError(f"{path}: cannot write, folder {folder} does not exist")
    atomic_write(path, data)


def _check_options(opts: InspectOptions) -> None:
    if opts.top < 1:
        raise InspectError(f"--top: got {opts.top}; expected an integer >= 1")
    for flag, path in (("--plot", opts.plot), ("--sheet", opts.sheet)):
        if path is not None and path.suffix.lower() != ".png":
            raise InspectError(f"{flag} {path}: expected a .png file name")
    # Checked before anything is computed: no output is written unless all can be.
    for path in (opts.plot, opts.sheet, None if opts.json in (None, "-") else Path(opts.json)):
        if path is not None and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise InspectError(f"{path}: cannot write, folder {path.parent} does not exist")


def sheet_rows(run, epoch: int | None, top: int) -> tuple[int, list[dict]]:
    if not run.dumps:
        raise InspectError(f"{run.path}: no hard_samples_epoch_*.json: mining never made a hard set to show")
    if epoch is None:
        epoch = max(run.dumps)
    elif epoch not in run.dumps:
        raise InspectError(f"--epoch {epoch}: {run.path} has no hard_samples_epoch_{epoch}.json (dumps: {sorted(run.dumps)})")
    return epoch, run.dumps[epoch]["samples"][:top]


def inspect_run(opts: InspectOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Do the whole command; raises :class:`InspectError` for bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    _check_options(opts)
    run = load_run(opts.run_dir)
    epoch, rows = sheet_rows(run, opts.epoch, opts.top) if opts.sheet is not None or opts.epoch is not None else (None, [])
    report = run_report(run, top=opts.top)
    outputs: dict[Path, bytes] = {}
    other = comparison = None
    if opts.against is not None:
        other = load_run(opts.against, mining=False)
        comparison = compare_runs(run, other)
        report["against"] = comparison
    missing: list[str] = []
    warnings: list[str] = []
    if opts.sheet is not None:
        from .sheet import render_sheet

        title = f"{run.path}: the {len(rows)} hardest target samples of epoch {epoch} (aggregated loss; ground truth drawn)"
        sheet = render_sheet(rows, title)
        outputs[opts.sheet] = sheet.png
        warnings += sheet.warnings
        missing += sheet.missing_images
    if opts.plot is not None:
        from .plot import render_figure

        outputs[opts.plot] = render_figure(run, report, other=other, comparison=comparison)
    text = json.dumps(report, indent=1, allow_nan=False)
    if opts.json not in (None, "-"):
        outputs[Path(opts.json)] = (text + "\n").encode("utf-8")
    for path, data in outputs.items():
        write_atomically(path, data)
    if opts.json == "-":
        print(text, file=out)
    else:
        print(format_report(report, top=opts.top, epoch=epoch), file=out)
        if comparison is not None:
            print("", file=out)
            print(format_comparison(comparison), file=out)
        for path in outputs:
            print(f"wrote {path}", file=out)
    for warning in warnings:
        print(f"hardmine inspect: warning: {warning}", file=err)
    if missing:
        raise InspectError(
            f"{len(missing)} image(s) of the sheet missing, first {missing[0]}; the sheet shows placeholders for them"
        )
    return 0
